"""HPGD's estimators in the form :func:`bilevel_envs.testing.check_problem` takes them.

``check_problem(problem, estimator=hpgd_estimator)`` checks that HPGD's hypergradient estimate,
computed from the follower's trajectories and the problem's per-transition terms only, has the
exact hypergradient of the problem's model as its mean.
"""

from __future__ import annotations

import numpy as np

from bilevel_envs.oracles import TrajectoryOracle
from bilevel_envs.problem import BilevelProblem
from leaders.estimators import paper_estimate, trajectory_estimate


def hpgd_estimator(problem: BilevelProblem, x: np.ndarray, context: int,
                   oracle: TrajectoryOracle, rng: np.random.Generator,
                   n_samples: int) -> np.ndarray:
    """``(n_samples, d)`` unbiased estimates of ``dJ_ξ/dx``: paper Alg. 5 with coupled Alg. 2
    restarts (:func:`~leaders.estimators.paper_estimate`) for a decomposable objective, the
    trajectory-level estimator (:func:`~leaders.estimators.trajectory_estimate`, one estimate
    per pair of episodes) for a pairwise one."""
    if problem.decomposable:
        terms = paper_estimate(problem, x, context, oracle, rng, n_samples, coupled=True)
        return terms.per_segment(n_samples)
    length = problem.episode_length_bound or problem.max_episode_steps
    if length is None:
        raise ValueError(f"{problem!r} has neither episode_length_bound nor max_episode_steps: "
                         "no episode length for trajectory pairs")
    rollouts = oracle.rollout(rng, 2 * n_samples, int(length))
    return trajectory_estimate(problem, x, context, rollouts, oracle, rng).per_segment()
