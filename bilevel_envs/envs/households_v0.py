"""``households_v0``: the PettingZoo environment of tax design (one agent per household), in
PettingZoo's module layout (``from bilevel_envs.envs import households_v0``): ``env()`` (AEC API
with the usual wrappers), ``raw_env()`` (AEC API, unwrapped) and ``parallel_env()`` (Parallel
API).

The implementation is :mod:`bilevel_envs.envs.tax_design.households`; needs the ``pettingzoo``
extra (``pip install "bilevel-envs[pettingzoo]"``).
"""

from bilevel_envs.envs.tax_design.households import (
    HouseholdsParallelEnv,
    env,
    parallel_env,
    raw_env,
)

__all__ = ["HouseholdsParallelEnv", "env", "parallel_env", "raw_env"]
