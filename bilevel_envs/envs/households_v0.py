"""``households_v0``: the PettingZoo environment of tax design (one agent per household), in
PettingZoo's module layout (``from bilevel_envs.envs import households_v0``).

The implementation is :mod:`bilevel_envs.envs.tax_design.households`; needs the ``pettingzoo``
extra (``pip install "bilevel-envs[pettingzoo]"``).
"""

from bilevel_envs.envs.tax_design.households import HouseholdsParallelEnv, parallel_env

__all__ = ["HouseholdsParallelEnv", "parallel_env"]
