"""The trajectory-level objective hook: ``BilevelProblem.decomposable`` and ``estimate_objective``
(used by LeaderEnv) and the exact layer's dispatch."""

import gymnasium as gym
import numpy as np
import pytest

import bilevel_envs  # noqa: F401
from bilevel_envs.envs.garnet import GarnetProblem
from bilevel_envs.exact import ExactSolver, exact_hypergradient, exact_objective
from bilevel_envs.leader_env import LeaderEnv
from bilevel_envs.rollouts import Rollouts


class MeanActionObjective(GarnetProblem):
    """A toy trajectory-level objective: the mean action index of the rollouts."""

    decomposable = False

    def estimate_objective(self, x, context, rollouts, rng):
        return float(rollouts.actions[rollouts.mask].mean()) + 10 * context


def test_default_estimate_is_the_mean_discounted_leader_return():
    env = gym.make("bilevel/FourRoomsShaping-v0", lam=0.003, contexts="all", n_envs=3,
                   n_rollout_steps=400)
    env.reset(seed=0)
    _, reward, _, _, info = env.step(np.zeros(105))
    rollouts = info["rollouts"]
    means = [Rollouts.from_dict({k: v[3 * c:3 * (c + 1)] for k, v in rollouts.items()})
             .episode_returns(0.99).mean() for c in (0, 1)]
    assert reward == pytest.approx(0.5 * means[0] + 0.5 * means[1], rel=1e-12)
    assert env.unwrapped.problem.decomposable


def test_leader_env_uses_the_problem_estimate():
    env = LeaderEnv(MeanActionObjective(), contexts="all", n_envs=2, n_rollout_steps=30)
    env.reset(seed=0)
    _, reward, _, _, info = env.step(np.zeros(4))
    actions = info["rollouts"]["actions"]
    weights = env.problem.context_probs
    expected = weights @ np.array([actions[2 * c:2 * c + 2].mean() + 10 * c for c in (0, 1)])
    assert reward == pytest.approx(expected) and info["objective_estimate"] == reward


def test_exact_quantities_refuse_or_dispatch_for_trajectory_level_objectives():
    problem = MeanActionObjective()
    with pytest.raises(ValueError, match="has a trajectory-level objective and no "
                                         r"exact_objective\(x\) method"):
        exact_objective(problem, np.zeros(4))
    with pytest.raises(ValueError, match=r"no exact_hypergradient\(x\) method"):
        exact_hypergradient(problem, np.zeros(4))
    with pytest.raises(ValueError, match="trajectory-level objective; use exact_objective"):
        ExactSolver(problem)
    with pytest.raises(ValueError, match="objective='exact' needs a tabular problem with a "
                                         "decomposable objective"):
        LeaderEnv(problem, objective="exact", n_rollout_steps=0)
