"""bilevel-bench: the experiments of the paper and the leader benchmark, on top of ``leaders``.

The command line is ``bilevel-bench`` (:mod:`bilevel_bench.cli`); each experiment is a module of
:mod:`bilevel_bench.experiments`; :mod:`bilevel_bench.runner` runs plain-data specs on local
processes or a Ray cluster and keeps one result file per spec.
"""
