"""Multi-household tax design (paper §5.2, App. B, App. F.3): a government sets an income tax and
VATs; households of several preference groups choose hours and consumption.

``model`` holds the economics (pure functions), ``problem`` the :class:`TaxDesign` problems,
``simulator`` the vectorised household simulator, ``followers`` the grid follower, ``envs`` the
registered Gymnasium envs and ``households`` the PettingZoo env
(:mod:`bilevel_envs.envs.households_v0`).
"""

from bilevel_envs.envs.tax_design.envs import HouseholdEnv, TaxDesignEnv
from bilevel_envs.envs.tax_design.problem import TaxDesign, TaxDesignTabular

__all__ = ["HouseholdEnv", "TaxDesign", "TaxDesignEnv", "TaxDesignTabular"]
