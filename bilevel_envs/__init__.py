"""bilevel-envs: contextual bilevel (leader–follower) RL environments with exact hypergradients.

Importing the package registers every environment id with Gymnasium::

    import gymnasium as gym
    import bilevel_envs

    env = gym.make("bilevel/FourRoomsShaping-v0", lam=0.001, beta=1.0, follower="soft_vi")
"""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

from bilevel_envs.exact import ExactSolver, exact_hypergradient, exact_objective
from bilevel_envs.followers import (
    FOLLOWERS,
    Follower,
    FollowerResponse,
    TabularPolicy,
    make_follower,
)
from bilevel_envs.leader_env import LeaderEnv
from bilevel_envs.oracles import make_oracle
from bilevel_envs.problem import BilevelProblem, PairwiseObjective
from bilevel_envs.rollouts import Rollouts
from bilevel_envs.tabular import (
    TabularModel,
    evaluate_policy,
    soft_policy_iteration,
    soft_value_iteration,
)

__version__ = "0.1.0"

#: id -> (entry point, extra registration kwargs); leader-level ids first.
ENV_IDS: dict[str, tuple[str, dict]] = {
    "bilevel/FourRoomsShaping-v0": ("bilevel_envs.envs.four_rooms.envs:FourRoomsShapingEnv", {}),
    "bilevel/TaxDesign-v0": ("bilevel_envs.envs.tax_design.envs:TaxDesignEnv", {}),
    "bilevel/FourRooms-v0": ("bilevel_envs.envs.four_rooms.envs:FourRoomsEnv",
                             {"max_episode_steps": 200}),
    "bilevel/ContractDesign-v0": ("bilevel_envs.envs.contract_design.envs:ContractDesignEnv", {}),
    "bilevel/ContractAgent-v0": ("bilevel_envs.envs.contract_design.envs:ContractAgentEnv",
                                 {"max_episode_steps": 200}),
    "bilevel/RLHF-v0": ("bilevel_envs.envs.rlhf.envs:RLHFEnv", {}),
    "bilevel/PreferenceGrid-v0": ("bilevel_envs.envs.rlhf.envs:PreferenceGridEnv", {}),
    "bilevel/Household-v0": ("bilevel_envs.envs.tax_design.envs:HouseholdEnv",
                             {"max_episode_steps": 200}),
}

#: followers defined next to their application (name -> "module:Class", imported on first use)
APPLICATION_FOLLOWERS: dict[str, str] = {
    "grid_soft_vi": "bilevel_envs.envs.tax_design.followers:GridSoftVI",
}

def _register_all() -> None:
    for env_id, (entry_point, kwargs) in ENV_IDS.items():
        if env_id not in registry:
            register(id=env_id, entry_point=entry_point, **kwargs)
    for name, entry_point in APPLICATION_FOLLOWERS.items():
        FOLLOWERS.setdefault(name, entry_point)


_register_all()


__all__ = [
    "ENV_IDS", "BilevelProblem", "ExactSolver", "Follower", "FollowerResponse", "LeaderEnv",
    "PairwiseObjective", "Rollouts", "TabularModel", "TabularPolicy", "evaluate_policy",
    "exact_hypergradient", "exact_objective", "make_follower", "make_oracle",
    "soft_policy_iteration", "soft_value_iteration",
]
