"""``bilevel-bench suite``: the versioned leader benchmark on the command line —
:mod:`.command` (arguments, planning, ``--tune``), :mod:`.tune` (the grid search) and
:mod:`.report` (the per-task summary and the aggregate leaderboard). The suite itself (tasks,
references, :func:`~bilevel_bench.suite.evaluate.evaluate`) is :mod:`bilevel_bench.suite`."""
