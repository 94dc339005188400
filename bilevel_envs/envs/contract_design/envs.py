"""Dynamic contract design as Gymnasium envs: the agent's MDP (``bilevel/ContractAgent-v0``) and
the principal's env (``bilevel/ContractDesign-v0``)."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from bilevel_envs.env_base import BilevelEnvBase
from bilevel_envs.envs.contract_design.model import (
    DEFAULT_GAMMA,
    DEFAULT_X_MAX,
    GRID_CELLS,
    GRID_MAP,
    INSTANCE_KWARGS,
    payment_matrix,
)
from bilevel_envs.envs.contract_design.problem import ContractDesign
from bilevel_envs.leader_env import LeaderEnv
from bilevel_envs.validation import check_int, check_options

#: The default contract of ``bilevel/ContractAgent-v0``: this share of the principal's revenue.
DEFAULT_REVENUE_SHARE = 0.5


class ContractAgentEnv(BilevelEnvBase):
    """## Description
    The agent's side of dynamic contract design (paper App. B). The agent acts in a finite MDP,
    pays effort costs, and is paid ``x(s, s')`` by a principal who observes transitions but not
    actions. Instances (``instance=``):

    * ``"project"`` — one repeated work state. In ``work`` the agent picks an effort level
      (default: low/high, success probability 0.2/0.8, cost 0/0.3); the period ends in ``success``
      or ``failure``, from where the next period starts (no decision there). Principal revenue 2
      on ``work→success``.
    * ``"tree"`` — a complete binary tree of ``depth`` effort decisions (heap-indexed nodes ``n0``,
      ``n1``, ...); high effort reaches the good child with probability 0.9, low effort with 0.1;
      seeded random revenues and costs
      (:func:`~bilevel_envs.envs.contract_design.model.tree_spec`); leaves are terminal.
    * ``"grid"`` — walk from ``S`` to the terminal ``G`` on the map below; moves succeed with
      probability ``move_prob`` (else the agent stays) and cost 0.1 (0.3 out of mud ``~``); resting
      is free. Principal revenue 2 on entering ``G``.

    ```
    S.~.
    .~..
    ...G
    ```

    ## Contract x
    ``x ∈ [0, x_max]^n`` (default ``x_max = 5``): the payment on each payable transition, i.e. each
    ``(s, s')`` some action can cause, in row-major order (``problem.spec.payments``; project:
    ``work→success, work→failure, success→work, failure→work``; tree: one per edge; grid: one per
    move or stay). Paying on transitions is a restricted (Markov) class of contracts: the
    principal could in general condition on the whole observed history.
    Default (``x=None``): :data:`DEFAULT_REVENUE_SHARE` = half the principal's revenue on each
    payable transition (``problem.revenue_share(0.5)``; project: 1 on ``work→success``), a
    contract under which effort pays (high effort is the better choice in the project), so the
    default agent has something to learn; ``x=np.zeros(n)`` is the contract that pays nothing.

    ## Contexts
    ``context``: the agent type ``i`` with cost multiplier ``cost_scales[i]`` (default one type;
    ``cost_scales=TWO_TYPES`` for two).

    ## Action Space
    ``Discrete(A)``: effort levels (project; ``0`` low, ``1`` high by default), ``0`` low /
    ``1`` high (tree), ``0`` rest, ``1`` up, ``2`` right, ``3`` down, ``4`` left (grid).

    ## Observation Space
    ``Discrete(S)``: the state index (project: 0 work, 1 success, 2 failure; tree: node; grid:
    row-major cell).

    ## Starting State
    ``work``, the root, or ``S``; ``options={"state": s}`` in ``reset`` starts in state ``s``.

    ## Rewards
    On a transition ``s → s'`` after action ``a``: agent ``r = x(s, s') − θ_ξ c(s, a)``; principal
    (``info["leader_reward"]``) ``r̄ = r_P(s, s') − x(s, s')``.

    ## Episode End
    Tree: terminates on the step taken from a leaf (reward 0, the state stays). Grid: terminates
    on the step taken from ``G`` (likewise). Project: never terminates. The registered id and
    :meth:`ContractDesign.follower_env` truncate after 200 steps.

    ## Information
    ``"leader_reward"`` (float), ``"context"`` (int), ``"payment"`` (``x(s, s')``, float),
    ``"cost"`` (``θ_ξ c(s, a)``, float).

    ## Arguments
    ```python
    gym.make("bilevel/ContractAgent-v0", x=None, context=0, instance="project",
             cost_scales=(1.0,), type_probs=None, x_max=5.0, render_mode=None,
             **instance_kwargs)  # effort_probs, effort_costs, revenue | depth, seed | move_prob
    ```
    ``x=None``: half the revenue (see Contract x). ``render_mode="ansi"`` gives a text view (other
    modes raise ``TypeError``). ``problem=`` (a
    :class:`~bilevel_envs.envs.contract_design.problem.ContractDesign`) replaces the instance
    arguments; :meth:`ContractDesign.follower_env` passes itself this way.

    ## References
    Thoma et al., "Contextual Bilevel Reinforcement Learning for Incentive Alignment", NeurIPS
    2024, App. B; Wu et al., "Contractual Reinforcement Learning", 2024; Ivanov et al.,
    "Principal-Agent Reinforcement Learning", 2024.

    ## Version History
    * v0: initial release.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(self, x: np.ndarray | None = None, context: Any = 0, instance: str = "project",
                 cost_scales=(1.0,), type_probs=None, x_max: float = DEFAULT_X_MAX,
                 render_mode: str | None = None, problem: ContractDesign | None = None,
                 **instance_kwargs: Any):
        self._check_render_mode(render_mode)
        if problem is None:
            problem = ContractDesign(instance=instance, lam=1.0, cost_scales=cost_scales,
                                     type_probs=type_probs, x_max=x_max, **instance_kwargs)
        self.problem = problem
        spec = self._spec = self.problem.spec
        self.x = self.problem.check_x(
            self.problem.revenue_share(DEFAULT_REVENUE_SHARE) if x is None else x)
        self.context = self.problem.context_index(context)
        self.render_mode = render_mode
        self._payment = payment_matrix(spec, self.x)
        self._cost = self.problem.cost_scales[self.context] * spec.costs
        cdf = np.cumsum(spec.P, axis=-1)
        self._cdf = cdf / np.where(cdf[..., -1:] > 0, cdf[..., -1:], 1.0)  # exact 1.0 at the end
        self._start = int(np.argmax(spec.mu))  # every instance starts in one state
        self._terminal = spec.terminal
        self.observation_space = spaces.Discrete(spec.n_states)
        self.action_space = spaces.Discrete(spec.n_actions)
        self.s = self._start

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        options = check_options(options, ("state",))
        super().reset(seed=seed)
        self.s = self._start
        if "state" in options:
            self.s = check_int("options['state']", options["state"], 0, self._spec.n_states - 1)
        return self.s, {"context": self.context}

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"action must be an integer in 0..{self._spec.n_actions - 1}; "
                             f"got {action!r}")
        s, a = self.s, int(action)
        cost = float(self._cost[s, a])
        terminated = bool(self._terminal[s])
        if not terminated:
            u = self.np_random.random()
            self.s = int(np.searchsorted(self._cdf[s, a], u, side="right"))
        payment = float(self._payment[s, self.s]) if not terminated else 0.0
        leader_reward = float(self._spec.revenue[s, self.s]) - payment if not terminated else 0.0
        info = {"leader_reward": leader_reward, "context": self.context, "payment": payment,
                "cost": cost}
        return self.s, payment - cost, terminated, False, info

    def render(self):
        if self.render_mode != "ansi":
            self._warn_no_render_mode()
            return None
        if self._spec.name != "grid":
            return f"{self._spec.name}: state {self._spec.state_names[self.s]}\n"
        grid = [list(row) for row in GRID_MAP]
        r, c = GRID_CELLS[self.s]
        grid[r][c] = "A"
        return "\n".join("".join(row) for row in grid) + "\n"


class ContractDesignEnv(LeaderEnv):
    """## Description
    The principal's side of dynamic contract design (paper App. B): each step applies a contract
    ``x`` to the agents' MDP (:class:`ContractAgentEnv`), lets every agent type respond (by default
    exact soft value iteration) and returns the principal's objective.

    ## Contract x (Action Space)
    ``Box(0, x_max, (n,), float64)`` (``x_max = 5`` by default): a payment per payable transition
    ``(s, s')`` (``env.unwrapped.problem.spec.payment_names()``). Out-of-box values raise
    ``ValueError``. Payments on transitions are a restricted (Markov) class of contracts.

    ## Contexts
    Agent types with cost multipliers ``cost_scales`` (``TWO_TYPES = (1, 1.5)`` for two types) and
    probabilities ``type_probs``. ``contexts="sample"`` draws ``n_followers`` types per step;
    ``"all"`` serves one follower per type every step.

    ## Observation Space
    The last ``x`` applied (zeros after ``reset``), same box as the action space.

    ## Rewards
    An estimate of ``J(x) = E_ξ E_π*[Σ_t γ^t (r_P(s_t, s_{t+1}) − x(s_t, s_{t+1}))]`` with the
    types' regularised best responses ``π*_{x,ξ}`` to ``x(s, s') − θ_ξ c(s, a)``: the Monte-Carlo
    mean discounted return of the finished episodes (``objective="monte_carlo"``) or the exact
    value of the followers' policies (``objective="exact"``). Closed forms for the project instance:
    :mod:`bilevel_envs.envs.contract_design.closed_forms`.
    ``J`` is not concave: for the project with λ ≲ 0.07 (one type; ≲ 0.1 with two) paying nothing
    (``x = 0``, the default start) is a local maximum — a small bonus does not move a soft agent,
    so it only costs — and gradient leaders started there stay; start them from a contract that
    already pays for success (e.g. half the revenue, as ``bilevel-bench contract`` does).

    ## Episode End
    Never terminates; the registered id truncates after 1000 leader steps
    (``max_episode_steps``; ``gym.make(..., max_episode_steps=N)`` changes it).

    ## Rendering
    ``render_mode="ansi"``: the step, the last contract, the ``J`` estimate and the agent types
    served.

    ## Information
    ``"rollouts"`` (dict of ``(n_envs·n_followers, T)`` arrays, see
    :class:`~bilevel_envs.rollouts.Rollouts`), ``"contexts"``, ``"context_weights"``,
    ``"objective_estimate"``, ``"follower_stats"`` (and ``"objective_exact"`` with
    ``objective="exact"``).

    ## Arguments
    ```python
    gym.make("bilevel/ContractDesign-v0", instance="project", lam=0.05, gamma=0.9,
             cost_scales=(1.0,), type_probs=None, x_max=5.0, follower="soft_vi",
             contexts="sample", n_followers=1, n_envs=5, n_rollout_steps=2000,
             objective="monte_carlo", render_mode=None)
    # + instance kwargs: depth=3, seed=0 (tree), ...
    ```

    ## References
    Thoma et al., "Contextual Bilevel Reinforcement Learning for Incentive Alignment", NeurIPS
    2024, App. B.

    ## Version History
    * v0: initial release.
    """

    def __init__(self, instance: str = "project", lam: float = 0.05,
                 gamma: float = DEFAULT_GAMMA, cost_scales=(1.0,), type_probs=None,
                 x_max: float = DEFAULT_X_MAX, **kwargs: Any):
        self._check_render_mode(kwargs.get("render_mode"))
        instance_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in INSTANCE_KWARGS}
        problem = ContractDesign(instance=instance, lam=lam, gamma=gamma, cost_scales=cost_scales,
                                 type_probs=type_probs, x_max=x_max, **instance_kwargs)
        super().__init__(problem, **kwargs)
