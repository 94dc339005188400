"""Self-grading for the teaching assignments in ``examples/teaching/``.

    python -m bilevel_teaching soft_vi examples/teaching/soft_vi/soft_vi.py

=================  ===================================================  ==========================
assignment         what the student implements                          checked against
=================  ===================================================  ==========================
``soft_vi``        soft Bellman backup, soft value iteration (Alg. 3),  exact soft solutions,
                   soft policy evaluation                               exact policy values
``hpgd_estimator`` HPGD's trajectory estimators (Alg. 2 and Alg. 5)     exact ∂Q, ∂A, Q̄ and
                                                                        ``exact_hypergradient``
``design``         the agent's soft best response and a contract        closed forms,
                   designed with a leader from ``leaders``              ``exact_objective``,
                                                                        ``project_optimum``
=================  ===================================================  ==========================

Each assignment module defines ``TITLE``, ``CHECKS`` (the auto-graded :class:`~.core.Check` s) and
``WRITTEN`` (the parts a TA marks). :func:`grade` imports the submission in a separate process
with a time limit per check (:mod:`.runner`) and returns a :class:`~.core.Report`.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from bilevel_teaching.core import CheckResult, Report
from bilevel_teaching.runner import DEFAULT_TIMEOUT, run_checks

#: assignment name -> grader module
ASSIGNMENTS: dict[str, str] = {
    "soft_vi": "bilevel_teaching.assignments.soft_vi",
    "hpgd_estimator": "bilevel_teaching.assignments.hpgd_estimator",
    "design": "bilevel_teaching.assignments.design",
}


def assignment_module(name: str) -> ModuleType:
    """The grader module of assignment ``name``.

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    if name not in ASSIGNMENTS:
        raise ValueError(f"unknown assignment {name!r}; expected one of {sorted(ASSIGNMENTS)}")
    return importlib.import_module(ASSIGNMENTS[name])


def grade(assignment: str, submission: str | Path, timeout: float = DEFAULT_TIMEOUT,
          seed: int = 0) -> Report:
    """Grade the file ``submission`` for ``assignment``.

    Args:
        assignment: one of :data:`ASSIGNMENTS`.
        submission: path of the student's ``.py`` file.
        timeout: seconds each check (and the import of the file) may take.
        seed: seed of every random number the checks draw (same seed -> same score).

    Raises:
        ValueError: for an unknown assignment, a bad timeout or seed.
        FileNotFoundError: if ``submission`` is not an existing ``.py`` file.
    """
    module = assignment_module(assignment)
    path = Path(submission).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"submission file {str(submission)!r} does not exist (or is not a "
                                "file)")
    if path.suffix != ".py":
        raise ValueError(f"submission must be a Python file ending in .py; got "
                         f"{str(submission)!r}")
    if not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds; got {timeout!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    results = run_checks(assignment, list(module.CHECKS), path, float(timeout), seed)
    return Report(assignment=assignment, title=module.TITLE, submission=str(path),
                  results=results, written=module.WRITTEN)


__all__ = ["ASSIGNMENTS", "CheckResult", "DEFAULT_TIMEOUT", "Report", "assignment_module", "grade"]
