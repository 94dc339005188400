"""Dynamic contract design (paper App. B): a principal pays an agent on the transitions it observes.

An agent of type ξ acts in a finite MDP and pays an effort cost ``c_ξ(s, a)``; the principal
earns ``r(s, s')`` and, not seeing actions, pays ``x(s, s') ≥ 0`` whenever the MDP moves from ``s``
to ``s'`` (limited liability). Agent reward ``x(s, s') − c_ξ(s, a)``, principal reward
``r(s, s') − x(s, s')``.

Model logic (the three instances, the payment index, rewards and their derivatives) is a set of
pure functions over a frozen :class:`ContractSpec` in :mod:`bilevel_envs.envs.contracts`; this
module adds the closed forms of the project instance, :class:`ContractDesign` is the :class:`~bilevel_envs.BilevelProblem`, :class:`ContractAgentEnv` the
agent's Gymnasium env and :class:`ContractDesignEnv` the registered leader env.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.wrappers import TimeLimit

from bilevel_envs.leader_env import LeaderEnv
from bilevel_envs.problem import BilevelProblem
from bilevel_envs.tabular import ExactSolver, TabularModel

from bilevel_envs.envs.contracts import (  # noqa: F401  (the pure model logic; re-exported)
    WORK,
    SUCCESS,
    FAILURE,
    LOW,
    HIGH,
    TREE_DEPTH,
    TREE_MAX_DEPTH,
    REST,
    UP,
    RIGHT,
    DOWN,
    LEFT,
    GRID_MOVE_COST,
    GRID_MUD_COST,
    BUILDERS,
    ContractSpec,
    DEFAULT_GAMMA,
    DEFAULT_X_MAX,
    GRID_CELLS,
    GRID_DIRECTIONS,
    GRID_MAP,
    GRID_MOVE_PROB,
    GRID_REVENUE,
    INSTANCES,
    INSTANCE_DEFAULTS,
    INSTANCE_KWARGS,
    MAX_EPISODE_STEPS,
    PROJECT_EFFORT_COSTS,
    PROJECT_EFFORT_PROBS,
    PROJECT_REVENUE,
    TREE_BAD_REVENUE,
    TREE_EFFORT_COST,
    TREE_GOOD_PROBS,
    TREE_GOOD_REVENUE,
    TWO_TYPES,
    build_spec,
    expected_rewards,
    grid_spec,
    make_spec,
    payable_transitions,
    payment_jacobian,
    payment_matrix,
    project_spec,
    tree_spec,
)

# ---------------------------------------------------------------------------- the problem
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
            :func:`project_spec`, :func:`tree_spec`, :func:`grid_spec`).
        lam: follower entropy weight λ > 0.
        gamma: discount factor of both levels, in [0, 1).
        cost_scales: one cost multiplier θ > 0 per agent type (``TWO_TYPES`` for two types).
        type_probs: probabilities of the types (default uniform).
        x_max: upper bound of every payment (> 0).
        **instance_kwargs: ``effort_probs``, ``effort_costs``, ``revenue`` (project); ``depth``,
            ``seed`` (tree); ``move_prob`` (grid).
    """

    is_tabular = True

    def __init__(self, instance: str = "project", lam: float = 0.05, gamma: float = DEFAULT_GAMMA,
                 cost_scales=(1.0,), type_probs=None, x_max: float = DEFAULT_X_MAX,
                 **instance_kwargs: Any):
        if not (np.isfinite(lam) and lam > 0):
            raise ValueError(f"lam must be a positive number; got {lam!r}")
        if not 0.0 <= gamma < 1.0:
            raise ValueError(f"gamma must be in [0, 1); got {gamma!r}")
        if not (np.isfinite(x_max) and x_max > 0):
            raise ValueError(f"x_max must be a positive number; got {x_max!r}")
        scales = np.atleast_1d(np.asarray(cost_scales, dtype=np.float64))
        if scales.ndim != 1 or scales.size == 0 or not np.all(np.isfinite(scales) & (scales > 0)):
            raise ValueError(f"cost_scales must be a non-empty sequence of positive numbers; got "
                             f"{cost_scales!r}")
        if type_probs is None:
            probs = np.full(scales.size, 1.0 / scales.size)
        else:
            probs = np.asarray(type_probs, dtype=np.float64)
            if probs.shape != scales.shape or (probs < 0).any() or not np.isclose(probs.sum(), 1):
                raise ValueError(f"type_probs must be {scales.size} non-negative numbers summing "
                                 f"to 1; got {type_probs!r}")
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

    def follower_env(self, x: np.ndarray, context: Any, **kwargs: Any) -> gym.Env:
        env = ContractAgentEnv(x=self.check_x(x), context=self.context_index(context),
                               instance=self.instance, cost_scales=self.cost_scales,
                               type_probs=self.context_probs, x_max=self.x_max,
                               **self.instance_kwargs, **kwargs)
        return TimeLimit(env, max_episode_steps=self.max_episode_steps)

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


# ---------------------------------------------------------------------------- closed forms
def cheapest_effort_bonus(p_low: float, p_high: float, cost: float) -> float:
    """The cheapest payment on success that makes high effort a (hard) best response:
    ``c / (p_H − p_L)``, nothing on failure (incentive constraint ``p_H b − c ≥ p_L b``)."""
    if not p_high > p_low:
        raise ValueError(f"need p_high > p_low; got {p_high} and {p_low}")
    return cost / (p_high - p_low)


def _project_parts(problem: ContractDesign):
    if not isinstance(problem, ContractDesign) or problem.instance != "project":
        raise ValueError(f"the closed forms hold for the 'project' instance; got {problem!r}")
    spec = problem.spec
    p = spec.P[WORK, :, SUCCESS]
    return p, spec.costs[WORK], float(spec.revenue[WORK, SUCCESS]), spec.payment_index


def project_objective_closed_form(problem: ContractDesign, success_pay: float,
                                  failure_pay: float = 0.0) -> float:
    """``J`` of the project in closed form for the soft follower.

    With ``u = x(work→success) + γ x(success→work)`` and ``v = x(work→failure) + γ x(failure→work)``
    the outcome states carry no decision, so type ξ's soft policy in ``work`` is
    ``π(a) ∝ exp((p_a (u − v) − θ_ξ c_a)/λ)`` (the continuation is the same for every action) and
    its success probability is ``p̄_ξ = Σ_a π(a) p_a``. One period lasts two steps, hence

    ``J = Σ_ξ P(ξ) [p̄_ξ (R − u) − (1 − p̄_ξ) v] / (1 − γ²)``.

    Args:
        problem: a ``"project"`` :class:`ContractDesign`.
        success_pay: ``u``; failure_pay: ``v`` (both in discounted period-start units).
    """
    p, c, R, _ = _project_parts(problem)
    z = (np.outer(problem.cost_scales, -c) + p * (success_pay - failure_pay)) / problem.lam
    z -= z.max(axis=1, keepdims=True)
    pi = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    p_bar = pi @ p
    per_type = (p_bar * (R - success_pay) - (1 - p_bar) * failure_pay) / (1 - problem.gamma ** 2)
    return float(problem.context_probs @ per_type)


def project_hard_optimum(problem: ContractDesign) -> tuple[float, float]:
    """The principal's optimum ``(u*, J*)`` against *hard* best responses (λ → 0), exactly.

    Type ξ picks ``argmax_a p_a u − θ_ξ c_a`` (ties broken towards the higher success
    probability, the principal's preferred response). ``J`` is then piecewise
    ``p̄(u)(R − u)/(1 − γ²)`` with ``p̄`` a non-decreasing step function, so the maximum sits at
    ``u = 0`` or at a breakpoint ``θ_ξ (c_b − c_a)/(p_b − p_a)`` — for two actions and one type,
    ``c/(p_H − p_L)`` (:func:`cheapest_effort_bonus`).
    """
    p, c, R, _ = _project_parts(problem)
    candidates = {0.0}
    for theta in problem.cost_scales:
        for a in range(p.size):
            for b in range(p.size):
                if p[b] > p[a] and c[b] >= c[a]:
                    candidates.add(float(theta * (c[b] - c[a]) / (p[b] - p[a])))
    best = (-np.inf, 0.0)
    for u in sorted(u for u in candidates if u <= R):
        utility = p * u - np.outer(problem.cost_scales, c)  # (types, A)
        ties = utility >= utility.max(axis=1, keepdims=True) - 1e-12 * max(1.0, abs(u))
        p_bar = np.where(ties, p, -np.inf).max(axis=1)
        value = float(problem.context_probs @ (p_bar * (R - u))) / (1 - problem.gamma ** 2)
        if value > best[0]:
            best = (value, u)
    return best[1], best[0]


@dataclass(frozen=True)
class ProjectOptimum:
    """The exact optimum of the project instance.

    Attributes:
        success_pay: ``u*``, the optimal payment on ``work→success``.
        objective: ``J(x*)``.
        x: the optimal contract ``x*`` (``u*`` on ``work→success``, zero elsewhere).
    """

    success_pay: float
    objective: float
    x: np.ndarray


def project_optimum(problem: ContractDesign, grid_size: int = 401, xatol: float = 1e-10,
                    tol: float = 1e-12) -> ProjectOptimum:
    """The exact optimum of the ``"project"`` instance by one-dimensional search on the exact
    ``J`` (:class:`~bilevel_envs.tabular.ExactSolver`), for any λ and any set of types.

    Why one dimension suffices: ``J`` depends on ``x`` only through ``u`` and ``v`` (see
    :func:`project_objective_closed_form`), and ``J(u − v, 0) − J(u, v) = v/(1 − γ²) ≥ 0`` for
    ``u ≥ v`` while for ``v > u`` ``J(u, v) ≤ J(0, 0)`` (the success probability is non-decreasing
    in ``u − v``). So the optimum pays nothing on failure, and ``u* ∈ [0, R]`` (beyond ``R`` every
    success loses money). The search evaluates a grid on ``[0, min(R, x_max)]`` and refines the
    best point by bounded Brent search between its neighbours.

    Args:
        problem: a ``"project"`` :class:`ContractDesign`.
        grid_size: number of grid points (spacing ``R/(grid_size − 1)`` must resolve the peak,
            whose width is about ``λ/(p_H − p_L)``).
        xatol: absolute tolerance of the refinement in ``u``.
        tol: accuracy of the follower solves.
    """
    from scipy.optimize import minimize_scalar

    _, _, R, index = _project_parts(problem)
    direction = np.zeros(problem.n_params)
    direction[index[WORK, SUCCESS]] = 1.0
    solver = ExactSolver(problem, tol=tol)

    def objective(u: float) -> float:
        return solver.objective(u * direction)

    grid = np.linspace(0.0, min(R, problem.x_max), grid_size)
    values = np.array([objective(u) for u in grid])
    i = int(np.argmax(values))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, grid_size - 1)]
    result = minimize_scalar(lambda u: -objective(u), bounds=(lo, hi), method="bounded",
                             options={"xatol": xatol})
    u, value = (float(result.x), -float(result.fun)) if -result.fun > values[i] \
        else (float(grid[i]), float(values[i]))
    return ProjectOptimum(success_pay=u, objective=value, x=u * direction)


# ---------------------------------------------------------------------------- Gymnasium glue
class ContractAgentEnv(gym.Env):
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
      seeded random revenues and costs (:func:`tree_spec`); leaves are terminal.
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
    ``x=None`` means no payments. ``render_mode="ansi"`` gives a text view.

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
                 render_mode: str | None = None, **instance_kwargs: Any):
        self.problem = ContractDesign(instance=instance, lam=1.0, cost_scales=cost_scales,
                                      type_probs=type_probs, x_max=x_max, **instance_kwargs)
        spec = self._spec = self.problem.spec
        self.x = self.problem.check_x(self.problem.x_init if x is None else x)
        self.context = self.problem.context_index(context)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None;"
                             f" got {render_mode!r}")
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
        super().reset(seed=seed)
        self.s = self._start
        if options and "state" in options:
            s = options["state"]
            n = self._spec.n_states
            if not (isinstance(s, (int, np.integer)) and 0 <= int(s) < n):
                raise ValueError(f"options['state'] must be a state index in 0..{n - 1}; "
                                 f"got {s!r}")
            self.s = int(s)
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
    :func:`project_hard_optimum`, :func:`project_optimum`, :func:`project_objective_closed_form`.
    ``J`` is not concave: for the project with λ ≲ 0.07 (one type; ≲ 0.1 with two) paying nothing
    (``x = 0``, the default start) is a local maximum — a small bonus does not move a soft agent,
    so it only costs — and gradient leaders started there stay; start them from a contract that
    already pays for success (e.g. half the revenue, as ``bilevel-bench contract`` does).

    ## Episode End
    Truncated after ``horizon`` leader steps; never terminates.

    ## Information
    ``"rollouts"`` (dict of ``(n_envs·n_followers, T)`` arrays, see
    :class:`~bilevel_envs.rollouts.Rollouts`), ``"contexts"``, ``"context_weights"``,
    ``"objective_estimate"``, ``"follower_stats"`` (and ``"objective_exact"`` with
    ``objective="exact"``).

    ## Arguments
    ```python
    gym.make("bilevel/ContractDesign-v0", instance="project", lam=0.05, gamma=0.9,
             cost_scales=(1.0,), type_probs=None, x_max=5.0, follower="soft_vi",
             contexts="sample", n_followers=1, n_envs=5, n_rollout_steps=2000, horizon=1000,
             objective="monte_carlo")  # + instance kwargs: depth=3, seed=0 (tree), ...
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
        instance_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in INSTANCE_KWARGS}
        problem = ContractDesign(instance=instance, lam=lam, gamma=gamma, cost_scales=cost_scales,
                                 type_probs=type_probs, x_max=x_max, **instance_kwargs)
        super().__init__(problem, **kwargs)
