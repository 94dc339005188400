"""The versioned leader benchmark ``cbrl-suite``: its tasks (:mod:`.tasks`), their reference
optima ``J*`` (:mod:`.references`) and the scoring of any leader on them (:func:`evaluate`,
:mod:`.evaluate`); ``bilevel-bench suite`` is its command line. Aggregates, the leaderboard and
its figures: :mod:`.aggregate`, :mod:`.leaderboard`, :mod:`.plots`.

    from bilevel_bench.suite import evaluate
    records = evaluate("hpgd", tasks=["contract/tree"], seeds=3)
"""

from bilevel_bench.suite.evaluate import RECORD_FORMAT, evaluate
from bilevel_bench.suite.references import load_references
from bilevel_bench.suite.tasks import SUITE_NAME, SUITE_VERSION, TASK_IDS, TASKS, Task, get_task

__all__ = ["RECORD_FORMAT", "SUITE_NAME", "SUITE_VERSION", "TASKS", "TASK_IDS", "Task",
           "evaluate", "get_task", "load_references"]
