"""Dynamic contract design as a :class:`~bilevel_envs.BilevelProblem` (paper App. B): a principal
pays an agent on the transitions it observes.

An agent of type ξ acts in a finite MDP and pays an effort cost ``c_ξ(s, a)``; the principal
earns ``r(s, s')`` and, not seeing actions, pays ``x(s, s') ≥ 0`` whenever the MDP moves from ``s``
to ``s'`` (limited liability). Agent reward ``x(s, s') − c_ξ(s, a)``, principal reward
``r(s, s') − x(s, s')``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from bilevel_envs.envs.contract_design.model import (
    DEFAULT_GAMMA,
    DEFAULT_X_MAX,
    INSTANCES,
    MAX_EPISODE_STEPS,
    build_spec,
    expected_rewards,
    payment_jacobian,
    payment_matrix,
)
from bilevel_envs.problem import BilevelProblem
from bilevel_envs.tabular import TabularModel
from bilevel_envs.validation import (
    check_array,
    check_choice,
    check_float,
    check_probabilities,
)


class ContractDesign(BilevelProblem):
    """Contextual dynamic contract design (paper App. B) as a :class:`BilevelProblem`.

    * ``x ∈ [0, x_max]^n``: the payment on each payable transition ``(s, s')`` (``spec.payments``).
      Contracts that pay on observed transitions are a restricted, Markov class: the principal
      could in general condition on the whole observed history.
    * Contexts: agent types ``type0, type1, ...`` with cost multipliers ``cost_scales`` (the type
      pays ``θ_ξ c(s, a)``) and probabilities ``type_probs`` (uniform by default).
    * Follower reward ``x(s, s') − θ_ξ c(s, a)``; leader reward ``r(s, s') − x(s, s')``. Both
      levels discount with ``gamma``.

    Args:
        instance: ``"project"``, ``"tree"`` or ``"grid"`` (see the module functions
            :func:`~.model.project_spec`, :func:`~.model.tree_spec`, :func:`~.model.grid_spec`).
        lam: follower entropy weight λ > 0.
        gamma: discount factor of both levels, in [0, 1).
        cost_scales: one cost multiplier θ > 0 per agent type (``TWO_TYPES`` for two types).
        type_probs: probabilities of the types (default uniform).
        x_max: upper bound of every payment (> 0).
        **instance_kwargs: ``effort_probs``, ``effort_costs``, ``revenue`` (project); ``depth``,
            ``seed`` (tree); ``move_prob`` (grid).
    """

    is_tabular = True
    follower_env_id = "bilevel/ContractAgent-v0"

    def __init__(self, instance: str = "project", lam: float = 0.05, gamma: float = DEFAULT_GAMMA,
                 cost_scales=(1.0,), type_probs=None, x_max: float = DEFAULT_X_MAX,
                 **instance_kwargs: Any):
        lam = check_float("lam", lam, 0.0, low_open=True)
        gamma = check_float("gamma", gamma, 0.0, 1.0, high_open=True)
        x_max = check_float("x_max", x_max, 0.0, low_open=True)
        check_choice("instance", instance, INSTANCES)
        scales = np.atleast_1d(check_array("cost_scales (one per agent type)", cost_scales,
                                           low=0.0, low_open=True))
        if scales.ndim != 1 or scales.size == 0:
            raise ValueError(f"cost_scales must be a non-empty sequence of positive numbers; got "
                             f"{cost_scales!r}")
        probs = (np.full(scales.size, 1.0 / scales.size) if type_probs is None
                 else check_probabilities("type_probs", type_probs, scales.size))
        self.instance = instance
        self.instance_kwargs = dict(instance_kwargs)
        self.spec = build_spec(instance, **instance_kwargs)
        self.lam, self.x_max = float(lam), float(x_max)
        self.gamma = self.leader_gamma = float(gamma)
        self.cost_scales = scales
        self.context_values = tuple(f"type{i}" for i in range(scales.size))
        self.context_probs = probs
        self.x_space = spaces.Box(0.0, self.x_max, shape=(self.spec.n_payments,),
                                  dtype=np.float64)
        self.follower_action_space = spaces.Discrete(self.spec.n_actions)
        self.follower_observation_space = spaces.Discrete(self.spec.n_states)
        self.max_episode_steps = MAX_EPISODE_STEPS
        self._jac = payment_jacobian(self.spec)
        self._jac.setflags(write=False)
        self._cache: dict = {}  # sampling tables: P is the same for every x and type

    @property
    def x_init(self) -> np.ndarray:
        """No payments."""
        return np.zeros(self.spec.n_payments)

    def revenue_share(self, share: float) -> np.ndarray:
        """The contract paying ``share`` of the principal's revenue ``r(s, s')`` on each payable
        transition (clipped to ``x_max``); ``share`` in ``[0, 1]``."""
        share = check_float("share", share, 0.0, 1.0)
        spec = self.spec
        return np.minimum(share * spec.revenue[spec.payments[:, 0], spec.payments[:, 1]],
                          self.x_max)

    def context_name(self, context: Any) -> str:
        i = self.context_index(context)
        return f"type{i} (cost x{self.cost_scales[i]:g})"

    # ------------------------------------------------------------------ models and envs
    def tabular(self, x: np.ndarray, context: Any) -> TabularModel:
        x, ctx = self.check_x(x), self.context_index(context)
        r, r_leader = expected_rewards(self.spec, x, self.cost_scales[ctx])
        return TabularModel(P=self.spec.P, r=r, r_leader=r_leader, mu=self.spec.mu,
                            gamma=self.gamma, leader_gamma=self.leader_gamma,
                            dr=self._jac, dr_leader=-self._jac, cache=self._cache)

    # ------------------------------------------------------------------ per-transition terms
    # On termination the rollouts repeat s as s'; (s, s) is then never payable and has no
    # revenue (terminal states have zero rows), and terminal states cost nothing.
    def follower_reward(self, x, context, obs, actions, next_obs) -> np.ndarray:
        scale = self.cost_scales[self.context_index(context)]
        return payment_matrix(self.spec, x)[obs, next_obs] - scale * self.spec.costs[obs, actions]

    def leader_reward(self, x, context, obs, actions, next_obs) -> np.ndarray:
        return self.spec.revenue[obs, next_obs] - payment_matrix(self.spec, x)[obs, next_obs]

    def grad_follower_reward(self, x, context, obs, actions, next_obs, weights=None):
        k = self.spec.payment_index[np.asarray(obs), np.asarray(next_obs)]
        paid = k >= 0
        n = self.spec.n_payments
        if weights is not None:
            return np.bincount(k[paid], weights=np.asarray(weights, np.float64)[paid],
                               minlength=n)
        out = np.zeros((k.size, n))
        out[np.flatnonzero(paid), k[paid]] = 1.0
        return out

    def grad_leader_reward(self, x, context, obs, actions, next_obs, weights=None):
        return -self.grad_follower_reward(x, context, obs, actions, next_obs, weights)

    def __repr__(self) -> str:
        return (f"ContractDesign(instance={self.instance!r}, lam={self.lam}, gamma={self.gamma}, "
                f"types={self.cost_scales.tolist()}, d={self.n_params})")
