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

Each assignment module defines ``TITLE``, ``CHECKS`` (the auto-graded :class:`~.core.Check` s),
``WRITTEN`` (the parts a TA marks), ``IMPORTS`` (the modules a submission may use) and
``SIGNATURES``. :func:`grade` runs the submission in a confined child process that only
executes the calls and returns their raw outputs; everything is judged in this process
(:mod:`.runner`, threat model in ``examples/teaching/README.md``).
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from types import ModuleType

from bilevel_teaching.core import CheckResult, Report
from bilevel_teaching.runner import DEFAULT_TIMEOUT, run_checks
from bilevel_teaching.sandbox import Limits

#: assignment name -> grader module
ASSIGNMENTS: dict[str, str] = {
    "soft_vi": "bilevel_teaching.assignments.soft_vi",
    "hpgd_estimator": "bilevel_teaching.assignments.hpgd_estimator",
    "design": "bilevel_teaching.assignments.design",
}
#: the longest time limit accepted (seconds)
MAX_TIMEOUT = 24 * 3600.0


def assignment_module(name: str) -> ModuleType:
    """The grader module of assignment ``name``.

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    if name not in ASSIGNMENTS:
        raise ValueError(f"unknown assignment {name!r}; expected one of {sorted(ASSIGNMENTS)}")
    return importlib.import_module(ASSIGNMENTS[name])


def check_timeout(value: float, name: str = "timeout") -> float:
    """``value`` as seconds if it is a finite number in ``(0, MAX_TIMEOUT]``.

    Raises:
        ValueError: naming ``name`` and the allowed range otherwise.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not (math.isfinite(value) and 0 < value <= MAX_TIMEOUT):
        raise ValueError(f"{name} must be a number of seconds in (0, {MAX_TIMEOUT:g}]; got "
                         f"{value!r}")
    return float(value)


def grade(assignment: str, submission: str | Path, timeout: float = DEFAULT_TIMEOUT,
          seed: int = 0, total_timeout: float | None = None, limits: Limits | None = None
          ) -> Report:
    """Grade the file ``submission`` for ``assignment``.

    Args:
        assignment: one of :data:`ASSIGNMENTS`.
        submission: path of the student's ``.py`` file.
        timeout: seconds the submission may take to answer one check (or to be imported).
        seed: seed of every random number the checks draw (same seed -> same score).
        total_timeout: seconds the whole grading may take (default: ``timeout`` times the
            number of checks plus one).
        limits: resource limits of the child process (default :class:`~.sandbox.Limits`).

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
    timeout = check_timeout(timeout)
    if total_timeout is not None:
        total_timeout = check_timeout(total_timeout, "total_timeout")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValueError(f"seed must be an integer in [0, 2**63); got {seed!r}")
    results = run_checks(assignment, module, path, timeout, seed, total_timeout, limits)
    return Report(assignment=assignment, title=module.TITLE, submission=str(path),
                  results=results, written=module.WRITTEN)


__all__ = [
    "ASSIGNMENTS",
    "DEFAULT_TIMEOUT",
    "CheckResult",
    "Limits",
    "Report",
    "assignment_module",
    "check_timeout",
    "grade",
]
