"""bilevel-bench: the experiments of the paper and the leader benchmark, on top of ``leaders``.

The command line is ``bilevel-bench`` (:mod:`bilevel_bench.cli`). Each experiment is a
subpackage of :mod:`bilevel_bench.experiments` that declares an
:class:`~bilevel_bench.experiment.Experiment`: its spec (a frozen dataclass,
:mod:`bilevel_bench.specs`), how one spec runs, how the command's arguments become specs and
how results are summarised. :mod:`bilevel_bench.runner` runs specs on local processes or a Ray
cluster and keeps one result file per spec; :mod:`bilevel_bench.stats` and
:mod:`bilevel_bench.plotting` are shared by the summaries.
"""
