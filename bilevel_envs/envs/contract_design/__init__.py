"""Dynamic contract design (paper App. B): a principal pays agents of several types on the
transitions it observes.

``model`` holds the pure model logic (the instances as arrays), ``problem`` the
:class:`ContractDesign` problem, ``closed_forms`` the project instance's exact optima and
``envs`` the registered Gymnasium envs.
"""

from bilevel_envs.envs.contract_design.envs import ContractAgentEnv, ContractDesignEnv
from bilevel_envs.envs.contract_design.problem import ContractDesign

__all__ = ["ContractAgentEnv", "ContractDesign", "ContractDesignEnv"]
