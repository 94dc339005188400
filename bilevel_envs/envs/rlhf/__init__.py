"""RLHF as bilevel RL (paper App. B): fit a reward model to preferences over the trajectories of
a soft-optimal follower.

``model`` holds the pure model logic (instances, the finite-horizon soft solver, Bradley–Terry
teachers, trajectory enumeration), ``problem`` the :class:`RLHFProblem` and ``envs`` the
registered Gymnasium envs.
"""

from bilevel_envs.envs.rlhf.envs import PreferenceGridEnv, RLHFEnv
from bilevel_envs.envs.rlhf.problem import RLHFProblem

__all__ = ["PreferenceGridEnv", "RLHFEnv", "RLHFProblem"]
