"""Consistency checks for bilevel problems: :func:`check_problem` and the statistics it uses.

``check_problem(problem)`` compares every part of a :class:`~bilevel_envs.BilevelProblem` with
the others (sampler vs model, derivatives vs finite differences, an estimator vs the exact
hypergradient, Gymnasium's ``check_env``) and names the term that disagrees. The library's own
tests run it on every registered problem (``tests/test_check_problem.py``); run it on yours
(docs/add_your_environment.md).
"""

from bilevel_envs.testing.check import check_problem, default_x
from bilevel_envs.testing.estimator import HypergradientEstimator
from bilevel_envs.testing.report import CheckResult, ProblemCheckError, ProblemReport
from bilevel_envs.testing.statistics import (
    bonferroni_z,
    chi_square_p,
    merged_pearson,
    pooled_mode_chi_square_p,
    z_scores,
)

__all__ = [
    "CheckResult", "HypergradientEstimator", "ProblemCheckError", "ProblemReport",
    "bonferroni_z", "check_problem", "chi_square_p", "default_x", "merged_pearson",
    "pooled_mode_chi_square_p", "z_scores",
]
