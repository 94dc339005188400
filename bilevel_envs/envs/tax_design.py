"""Multi-household tax design (paper §5.2, App. B, App. F.3): a government sets an income tax and
one VAT per good; households of several preference groups choose hours and consumption.

The economics are the pure functions of :mod:`bilevel_envs.envs.household`; this module holds the
API glue:

* :class:`TaxDesign` — the :class:`~bilevel_envs.BilevelProblem` with continuous assets (the
  paper's problem) and its vectorised simulator :class:`HouseholdOracle`;
* :class:`TaxDesignTabular` — assets discretised on a grid: an exact finite model
  (``exact_objective``, ``exact_hypergradient``, soft VI and AMD work on it);
* :class:`HouseholdEnv` (``bilevel/Household-v0``) — one household as a Gymnasium env;
* :class:`TaxDesignEnv` (``bilevel/TaxDesign-v0``) — the leader's env.

Facts behind the choices: ``shared/reference/hpgd-reference-notes.md`` §5 and §7.14–21.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numba as nb
import numpy as np
from gymnasium import spaces
from gymnasium.wrappers import TimeLimit

from bilevel_envs.envs import household as hh
from bilevel_envs.followers import FOLLOWERS
from bilevel_envs.followers.base import Follower, FollowerResponse
from bilevel_envs.leader_env import LeaderEnv
from bilevel_envs.problem import BilevelProblem, contract
from bilevel_envs.rollouts import (Rollouts, TrajectoryOracle, _entropy_rows, _sample_rows,
                                   _with_rewards)
from bilevel_envs.tabular import DEFAULT_TOL, SOLVERS, TabularModel, solve_follower

if TYPE_CHECKING:
    from bilevel_envs.followers.base import Policy

#: Default size of the asset grid of the tabular variant (odd: a cell is centred on 0).
DEFAULT_ASSET_CELLS = 41
#: Default number of asset cells HPGD's batch estimator aggregates continuous assets into.
DEFAULT_OBSERVATION_CELLS = DEFAULT_ASSET_CELLS


class TaxDesign(BilevelProblem):
    """Tax design with continuous assets (paper §5.2) as a :class:`BilevelProblem`.

    * ``x = (x_inc, y_1, ..., y_M) ∈ [0, tax_max]^{1+M}``: income tax, then one VAT per good
      (``tax_max`` = 2 in the code variant, 3 in the paper variant); initial value 0.3 each.
    * Contexts: the household preference groups (α vectors), with ``group_probs``.
    * Follower: observation ``[s]`` (assets), action = flat index of (hours, consumption per
      good), reward ``u = σ(s) − θ n² + Π_i (c_i/(p_i(1+y_i)))^{α_i}``.
    * Leader reward ``v = ω(s) + κ Σ_i c_i/(1+y_i) + ϕ log(Σ_i c_i y_i/(1+y_i) + w x_inc n + δ)``.
    * Transitions: ``s' ~`` Gaussian around ``s + (1 − x_inc) w n − Σ_i c_i`` kept in
      ``[−100, 100]``; the income tax moves the transition law (``∂x log P ≠ 0``), the VATs move
      the rewards.

    See :mod:`bilevel_envs.envs.household` for the formulas, derivatives and both variants.

    State aggregation (for HPGD's ``"every_visit"`` batch estimator): ``observation_index``
    maps assets to ``observation_cells`` equal cells of ``[−L, L]``.

    Args:
        variant: ``"code"`` (default, the authors' code) or ``"paper"`` (the paper's text).
        observation_cells: number of asset cells of the state aggregation (default 41, the
            tabular variant's grid: width 4.9 ≈ ς).
        **overrides: any field of :class:`~bilevel_envs.envs.household.HouseholdParams`
            (``lam``, ``gamma``, ``prices``, ``preferences``, ``group_probs``, ``hours_levels``,
            ``consumption_levels``, ``theta``, ``phi``, ``noise_std``, ``wage``, ...).
    """

    transitions_depend_on_x = True

    def __init__(self, variant: str = "code", *,
                 observation_cells: int = DEFAULT_OBSERVATION_CELLS, **overrides: Any):
        self.params = p = hh.make_params(variant, **overrides)
        self.observation_edges = hh.uniform_asset_edges(observation_cells, p)
        self.lam, self.gamma = float(p.lam), float(p.gamma)
        self.leader_gamma = float(p.gamma)
        self.x_space = spaces.Box(0.0, p.tax_max, shape=(p.n_params,), dtype=np.float64)
        self.follower_action_space = spaces.Discrete(p.n_actions)
        self.follower_observation_space = spaces.Box(-p.asset_bound, p.asset_bound, shape=(1,),
                                                     dtype=np.float64)
        self.max_episode_steps = int(p.episode_length)
        self.context_values = p.preferences
        self.context_probs = np.asarray(p.group_probs, dtype=np.float64)
        self.hours, self.consumption = hh.action_table(p)
        self._discretised: dict[int, TaxDesignTabular] = {}

    @property
    def variant(self) -> str:
        return self.params.variant

    @property
    def x_init(self) -> np.ndarray:
        return np.full(self.params.n_params, self.params.tax_init)

    @property
    def tax_groups(self) -> list[list[int]]:
        """``[[0], [1, ..., M]]``: the income tax and the VATs, the two groups whose gradients
        the authors clip separately (``Leader(clip_groups=problem.tax_groups)``)."""
        return [[0], list(range(1, self.n_params))]

    def context_name(self, context: Any) -> str:
        i = self.context_index(context)
        return f"group {i + 1} α={self.context_values[i]}"

    # ------------------------------------------------------------------ observations
    def assets_of(self, obs: Any) -> np.ndarray:
        """Asset levels ``(N,)`` of a batch of follower observations."""
        obs = np.asarray(obs, dtype=np.float64)
        return obs.reshape(obs.shape[0], -1)[:, 0] if obs.ndim else obs.reshape(1)

    def obs_of(self, assets: np.ndarray) -> np.ndarray:
        """Follower observations of asset levels ``(N,)``: ``(N, 1)`` floats."""
        return np.asarray(assets, dtype=np.float64).reshape(-1, 1)

    @property
    def n_observation_cells(self) -> int:
        """Cells of the state aggregation :meth:`observation_index`."""
        return len(self.observation_edges) - 1

    def observation_index(self, obs: Any) -> np.ndarray:
        """The asset cell of each observation: ``(...)`` ints for observations ``(..., 1)``."""
        obs = np.asarray(obs, dtype=np.float64)
        return hh.cell_of(obs[..., 0] if obs.ndim else obs, self.observation_edges)

    def check_obs(self, obs: Any, name: str = "state") -> np.ndarray:
        """Validate one observation (an asset level) and return it in the env's format."""
        arr = np.asarray(obs, dtype=np.float64) if np.ndim(obs) <= 1 else None
        L = self.params.asset_bound
        if arr is None or arr.size != 1 or not np.isfinite(arr).all() or abs(arr.item()) > L:
            raise ValueError(f"{name} must be one asset level in [{-L:g}, {L:g}]; got {obs!r}")
        return arr.reshape(1)

    # ------------------------------------------------------------------ batched simulator
    def sample_initial_obs(self, u: np.ndarray) -> np.ndarray:
        """Initial observations of ``len(u)`` households from uniforms ``u`` (inversion)."""
        return self.obs_of(hh.sample_initial_assets(np.asarray(u), self.params))

    def sample_next_obs(self, x: np.ndarray, obs: Any, actions: Any, u: np.ndarray) -> np.ndarray:
        """Next observations of a batch of households from uniforms ``u`` (one per row).

        The asset dynamics do not depend on the preference group, so households of every group
        are stepped together.
        """
        mean, _ = self._mean(x, obs, actions)
        return self.obs_of(hh.sample_next_assets(mean, np.asarray(u), self.params))

    def _mean(self, x, obs, actions) -> tuple[np.ndarray, np.ndarray]:
        a = np.asarray(actions, dtype=np.int64)
        return hh.transition_mean(self.assets_of(obs), self.hours[a], self.consumption[a],
                                  float(x[0]), self.params)

    def flatten_action(self, hours_index: Any, consumption_index: Any) -> np.ndarray:
        """Flat action(s) from an hours index and ``M`` consumption indices (last axis)."""
        return hh.flatten_action(hours_index, consumption_index, self.params)

    def unflatten_action(self, action: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(hours index, consumption indices (..., M))`` of flat action(s); the values are
        ``problem.hours[action]`` and ``problem.consumption[action]``."""
        return hh.unflatten_action(action, self.params)

    def make_oracle(self, x: np.ndarray, context: Any, policy: Policy,
                    **kwargs: Any) -> TrajectoryOracle | None:
        """The vectorised simulator :class:`HouseholdOracle` (picked up by ``make_oracle``)."""
        return HouseholdOracle(self, x, context, policy, **kwargs)

    # ------------------------------------------------------------------ per-transition terms
    def _alpha(self, context: Any) -> np.ndarray:
        return self.params.alpha[self.context_index(context)]

    def follower_reward(self, x, context, obs, actions, next_obs) -> np.ndarray:
        a = np.asarray(actions, dtype=np.int64)
        return hh.household_utility(self.assets_of(obs), self.hours[a], self.consumption[a],
                                    np.asarray(x)[1:], self._alpha(context), self.params)

    def leader_reward(self, x, context, obs, actions, next_obs) -> np.ndarray:
        a = np.asarray(actions, dtype=np.int64)
        income_tax, vat = hh.split_taxes(x)
        return hh.social_welfare(self.assets_of(obs), self.hours[a], self.consumption[a],
                                 income_tax, vat, self.params)

    def grad_follower_reward(self, x, context, obs, actions, next_obs, weights=None):
        a = np.asarray(actions, dtype=np.int64)
        grads = np.zeros((a.size, self.n_params))  # the income tax does not enter u
        grads[:, 1:] = hh.grad_consumption_utility_vat(
            self.consumption[a], np.asarray(x)[1:], self._alpha(context), self.params.prices)
        return contract(grads, weights)

    def grad_leader_reward(self, x, context, obs, actions, next_obs, weights=None):
        a = np.asarray(actions, dtype=np.int64)
        income_tax, vat = hh.split_taxes(x)
        return contract(hh.grad_social_welfare(self.assets_of(obs), self.hours[a],
                                               self.consumption[a], income_tax, vat,
                                               self.params), weights)

    def grad_log_transition(self, x, context, obs, actions, next_obs, weights=None):
        """``∂x log p(s'|s, a)``: the income tax shifts the centre ``m`` of the asset law, so
        ``∂x_inc log p = ∂m log p · ∂m/∂x_inc``; the VAT columns are zero."""
        mean, d_mean = self._mean(x, obs, actions)
        score = hh.grad_log_transition_density(self.assets_of(next_obs), mean, self.params)
        return self._income_column(score * d_mean, weights)

    def _income_column(self, column: np.ndarray, weights) -> np.ndarray:
        if weights is not None:
            out = np.zeros(self.n_params)
            out[0] = np.asarray(weights, dtype=np.float64) @ column
            return out
        grads = np.zeros((column.size, self.n_params))
        grads[:, 0] = column
        return grads

    # ------------------------------------------------------------------ envs and models
    def follower_env(self, x: np.ndarray, context: Any, **kwargs: Any) -> gym.Env:
        env = HouseholdEnv(x=self.check_x(x), context=self.context_index(context), problem=self,
                           **kwargs)
        return TimeLimit(env, max_episode_steps=self.max_episode_steps)

    def discretised(self, asset_cells: int = DEFAULT_ASSET_CELLS) -> TaxDesignTabular:
        """The same economy with assets on a grid of ``asset_cells`` cells (cached per size)."""
        cache = self._discretised
        if asset_cells not in cache:
            fields = {f: getattr(self.params, f) for f in self.params.__dataclass_fields__
                      if f != "variant"}
            cache[asset_cells] = TaxDesignTabular(self.variant, asset_cells=asset_cells,
                                                  **fields)
        return cache[asset_cells]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(variant={self.variant!r}, lam={self.lam}, "
                f"gamma={self.gamma}, goods={self.params.n_goods}, "
                f"groups={self.params.n_groups})")


class TaxDesignTabular(TaxDesign):
    """Tax design with assets on a grid: a finite model with exact ``P``, ``dP``, ``dr``, ``dr̄``.

    The asset range ``[−L, L]`` is cut into ``asset_cells`` equal cells; state ``k`` is the cell,
    its asset level the cell's centre ``g_k``. From state ``k`` under action ``a`` the household
    draws ``s'`` from exactly the continuous law (centred at ``m(g_k, a)``) and moves to the cell
    holding ``s'``::

        P(k'|k, a) = (Φ(β_k') − Φ(α_k')) / Z,   α, β = (cell edges − m)/ς

    (outer cells extended to the truncation bounds, see
    :func:`~bilevel_envs.envs.household.cell_probabilities`), ``μ(k) = P(s_0 ∈ cell k)``. Rewards
    use ``s = g_k``. ``dP[..., 0] = ∂P/∂m · ∂m/∂x_inc``; the VAT columns of ``dP`` are zero but the
    array is dense ``(S, A, S, 1+M)`` (``S = 41``, ``A = 1250``: 67 MB per context).

    The model is the infinite-horizon discounted MDP (γ = 0.9: the 200-step time limit of the
    Gymnasium env changes values by less than ``0.9^200 ≈ 7e-10`` of their scale).

    Args:
        variant: ``"code"`` or ``"paper"``.
        asset_cells: number of asset cells ``S`` (default 41: width 4.9 ≈ ς).
        **overrides: household parameters, as for :class:`TaxDesign`.
    """

    is_tabular = True

    def __init__(self, variant: str = "code", asset_cells: int = DEFAULT_ASSET_CELLS,
                 **overrides: Any):
        super().__init__(variant, **overrides)
        self.edges = hh.uniform_asset_edges(asset_cells, self.params)
        self.points = 0.5 * (self.edges[:-1] + self.edges[1:])
        self.n_cells = int(asset_cells)
        self.follower_observation_space = spaces.Discrete(self.n_cells)
        self.mu = hh.initial_cell_probabilities(self.edges, self.params)
        self._transition_cache: tuple[float, np.ndarray, np.ndarray] | None = None
        self._model_cache: dict[str, Any] = {}  # sampling tables, shared by both contexts

    # ------------------------------------------------------------------ observations
    def assets_of(self, obs: Any) -> np.ndarray:
        return self.points[np.asarray(obs, dtype=np.int64).reshape(-1)]

    def obs_of(self, assets: np.ndarray) -> np.ndarray:
        return hh.cell_of(assets, self.edges)

    def check_obs(self, obs: Any, name: str = "state") -> int:
        if not (isinstance(obs, (int, np.integer)) and 0 <= int(obs) < self.n_cells):
            raise ValueError(f"{name} must be an asset cell index in 0..{self.n_cells - 1}; got "
                             f"{obs!r}")
        return int(obs)

    @property
    def n_observation_cells(self) -> int:
        return self.n_cells  # the states are the cells: no aggregation

    def observation_index(self, obs: Any) -> np.ndarray:
        return np.asarray(obs, dtype=np.int64)

    def make_oracle(self, x, context, policy, **kwargs) -> TrajectoryOracle | None:
        return None  # the generic tabular fast path (numba) is faster

    def discretised(self, asset_cells: int | None = None) -> TaxDesignTabular:
        if asset_cells not in (None, self.n_cells):
            return super().discretised(asset_cells)
        return self

    # ------------------------------------------------------------------ the model
    def transitions(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``P (S, A, S)`` and ``dP (S, A, S, d)``; they depend on the income tax only (cached)."""
        income_tax = float(x[0])
        if self._transition_cache is not None and self._transition_cache[0] == income_tax:
            return self._transition_cache[1], self._transition_cache[2]
        S, A = self.n_cells, self.params.n_actions
        mean, d_mean = hh.transition_mean(np.repeat(self.points, A), np.tile(self.hours, S),
                                          np.tile(self.consumption, (S, 1)), income_tax,
                                          self.params)
        # Many (s, a) share a centre (it depends on a only through hours and Σ_i c_i): integrate
        # the law once per distinct centre.
        centres, inverse = np.unique(mean, return_inverse=True)
        P_u, dP_u = hh.cell_probabilities(centres, self.edges, self.params, with_grad=True)
        P = P_u[inverse].reshape(S, A, S)
        dP = np.zeros((S, A, S, self.n_params))
        dP[..., 0] = dP_u[inverse].reshape(S, A, S) * d_mean.reshape(S, A, 1)
        for array in (P, dP):
            array.setflags(write=False)
        self._transition_cache = (income_tax, P, dP)
        self._model_cache = {}
        return P, dP

    def tabular(self, x: np.ndarray, context: Any) -> TabularModel:
        x = self.check_x(x)
        P, dP = self.transitions(x)
        S, A = self.n_cells, self.params.n_actions
        states = np.repeat(np.arange(S), A)
        actions = np.tile(np.arange(A), S)
        args = (x, context, states, actions, states)
        shape = (S, A, self.n_params)
        return TabularModel(
            P=P, r=self.follower_reward(*args).reshape(S, A),
            r_leader=self.leader_reward(*args).reshape(S, A), mu=self.mu,
            gamma=self.gamma, leader_gamma=self.leader_gamma,
            dr=self.grad_follower_reward(*args).reshape(shape),
            dr_leader=self.grad_leader_reward(*args).reshape(shape), dP=dP, dmu=None,
            cache=self._model_cache)

    def grad_log_transition(self, x, context, obs, actions, next_obs, weights=None):
        """``∂x log P(k'|k, a) = ∂x P / P`` of the grid model (zero where ``P = 0``)."""
        mean, d_mean = self._mean(x, obs, actions)
        P, dP = hh.cell_probabilities(mean, self.edges, self.params, with_grad=True)
        rows = np.arange(mean.size)
        k = np.asarray(next_obs, dtype=np.int64).reshape(-1)
        p, dp = P[rows, k], dP[rows, k]
        score = np.divide(dp, p, out=np.zeros_like(dp), where=p > 0) * d_mean
        return self._income_column(score, weights)

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", asset_cells={self.n_cells})"


# ---------------------------------------------------------------------------- the simulator
class HouseholdOracle(TrajectoryOracle):
    """Vectorised simulator of :class:`TaxDesign`: all chains step together in NumPy.

    One Python iteration per time step (not per transition): the policy is queried once for the
    whole batch of live chains, actions and noise are drawn by inversion from pre-drawn uniforms
    (so equal seeds give equal trajectories) and the assets move in one array operation.
    Rewards and leader rewards are filled in one batched call at the end.

    ``start_states`` are asset levels (or observations of the problem), one per chain; ``NaN``
    draws that chain's start from μ. ``start_actions`` as in :class:`TrajectoryOracle`.
    """

    def rollout(self, rng, n_envs, n_steps, *, start_states=None, start_actions=None,
                lengths=None, auto_reset=True, time_limit=True) -> Rollouts:
        problem: TaxDesign = self.problem  # type: ignore[assignment]
        _, first_actions, lens = self._prepare(n_envs, n_steps, None, start_actions, lengths,
                                               None)
        u_init = rng.random(n_envs)
        u = rng.random((n_envs, n_steps, 3))  # action, noise, reset state
        current = problem.sample_initial_obs(u_init)
        if start_states is not None:
            given = np.asarray(start_states, dtype=np.float64).reshape(-1)
            if given.shape != (n_envs,):
                raise ValueError(f"start_states must hold {n_envs} asset levels; got shape "
                                 f"{np.shape(start_states)}")
            chosen = ~np.isnan(given)
            for e in np.flatnonzero(chosen):
                current[e] = problem.check_obs(
                    given[e] if current.ndim > 1 else int(given[e]), name="start_states entry")

        shape = (n_envs, n_steps)
        obs = np.zeros(shape + current.shape[1:], current.dtype)
        next_obs = np.zeros_like(obs)
        actions, episode_step = np.zeros(shape, np.int64), np.zeros(shape, np.int64)
        action_probs, entropy = np.zeros(shape), np.zeros(shape)
        terminated, truncated, mask = (np.zeros(shape, np.bool_) for _ in range(3))
        limit = self.max_episode_steps if (time_limit and self.max_episode_steps) else 0
        alive = np.ones(n_envs, dtype=bool)
        tau = np.zeros(n_envs, dtype=np.int64)
        no_forcing = np.full(n_envs, -1, dtype=np.int64)
        # Policies that know their entropies (tables) spare a log per action and transition.
        policy_entropy = getattr(self.policy, "entropy", None)
        for t in range(n_steps):
            alive &= t < lens
            live = np.flatnonzero(alive)
            if live.size == 0:
                break
            state = current[live]
            probs = np.ascontiguousarray(self.policy.action_probs(state), dtype=np.float64)
            known_entropy = policy_entropy is not None
            chosen_actions, taken, row_entropy = sample_categorical(
                probs, u[live, t, 0], not known_entropy, first_actions[live] if t == 0 else
                no_forcing[:live.size])
            successor = problem.sample_next_obs(self.x, state, chosen_actions, u[live, t, 1])
            obs[live, t], next_obs[live, t], actions[live, t] = state, successor, chosen_actions
            action_probs[live, t] = taken
            entropy[live, t] = policy_entropy(state) if known_entropy else row_entropy
            episode_step[live, t], mask[live, t] = tau[live], True
            tau[live] += 1
            current[live] = successor
            if limit:
                ended = live[tau[live] >= limit]
                truncated[ended, t] = True
                if auto_reset:
                    current[ended] = problem.sample_initial_obs(u[ended, t, 2])
                    tau[ended] = 0
                else:
                    alive[ended] = False
        return _with_rewards(problem, self.x, self.context, obs, actions, next_obs, terminated,
                             truncated, episode_step, mask, action_probs, entropy)


@nb.njit(cache=True, nogil=True)
def sample_categorical(probs, u, with_entropy, forced):
    """One action per row of ``probs`` by inversion of ``u`` (``forced[i] >= 0`` overrides it).

    Returns the actions, their probabilities and (if ``with_entropy``) the rows' entropies; one
    pass over each row, no temporaries (1,250 actions per household make NumPy's cumsum and log
    the simulator's bottleneck).
    """
    n, n_actions = probs.shape
    actions = np.empty(n, np.int64)
    taken = np.empty(n)
    entropy = np.zeros(n)
    for i in range(n):
        total = 0.0
        for a in range(n_actions):
            total += probs[i, a]
        k = forced[i]
        if k < 0:
            target = u[i] * total
            acc = 0.0
            k = n_actions - 1
            for a in range(n_actions):
                acc += probs[i, a]
                if acc > target:
                    k = a
                    break
        actions[i] = k
        taken[i] = probs[i, k]
        if with_entropy:
            h = 0.0
            for a in range(n_actions):
                p = probs[i, a] / total
                if p > 0.0:
                    h -= p * np.log(p)
            entropy[i] = h
    return actions, taken, entropy


# ---------------------------------------------------------------------------- a grid follower
class GridPolicy:
    """A policy table over asset cells, evaluated at any observation of a tax problem.

    Args:
        table: ``(S, A)`` action probabilities per cell of ``grid``.
        grid: the discretised problem that defines the cells.
        source: the problem whose observations are passed to :meth:`action_probs` (continuous
            assets or cell indices).
    """

    def __init__(self, table: np.ndarray, grid: TaxDesignTabular, source: TaxDesign):
        self.table = np.asarray(table, dtype=np.float64)
        self.n_actions = self.table.shape[1]
        self.grid, self.source = grid, source
        self._entropy = _entropy_rows(self.table)

    def cells(self, obs: Any) -> np.ndarray:
        return self.grid.obs_of(self.source.assets_of(obs))

    def action_probs(self, obs: Any) -> np.ndarray:
        return self.table[self.cells(obs)]

    def entropy(self, obs: Any) -> np.ndarray:
        """``H(π(·|s))`` per observation (precomputed per cell)."""
        return self._entropy[self.cells(obs)]

    def sample(self, obs: Any, rng: np.random.Generator) -> np.ndarray:
        probs = self.action_probs(obs)
        return _sample_rows(probs, rng.random(probs.shape[0]))


class GridSoftVI(Follower):
    """Households that play the exact soft-optimal policy of the discretised economy.

    Solves :class:`TaxDesignTabular` (``asset_cells`` cells, same parameters) exactly and applies
    the policy of the cell holding the current assets. On the continuous problem it is a cheap,
    deterministic approximate best response (the discretisation is the only error); on the
    tabular variant with the same grid it equals ``"soft_vi"``.

    Args:
        asset_cells: size of the asset grid.
        tol: accuracy of the soft solve (``‖V − V*‖∞``).
        method: ``"policy_iteration"`` or ``"value_iteration"``.
    """

    name = "grid_soft_vi"

    def __init__(self, asset_cells: int = DEFAULT_ASSET_CELLS, tol: float = DEFAULT_TOL,
                 method: str = "policy_iteration"):
        hh.uniform_asset_edges(asset_cells, hh.make_params())  # validates asset_cells
        if not tol > 0:
            raise ValueError(f"tol must be positive; got {tol}")
        if method not in SOLVERS:
            raise ValueError(f"method must be one of {sorted(SOLVERS)}; got {method!r}")
        self.asset_cells, self.tol, self.method = int(asset_cells), float(tol), method

    def supports(self, problem: BilevelProblem) -> bool:
        return isinstance(problem, TaxDesign)

    def respond(self, problem, x, context, seed=None, warm_start=None) -> FollowerResponse:
        if not isinstance(problem, TaxDesign):
            raise ValueError(f"follower 'grid_soft_vi' solves tax-design problems only; got "
                             f"{problem!r}")
        grid = problem.discretised(self.asset_cells)
        solution = solve_follower(grid.tabular(x, context), problem.lam, tol=self.tol,
                                  warm_start=warm_start, method=self.method)
        return FollowerResponse(policy=GridPolicy(solution.pi, grid, problem),
                                warm_start=solution.q,
                                stats={"iterations": solution.iterations,
                                       "residual": solution.residual})

    def __repr__(self) -> str:
        return f"GridSoftVI(asset_cells={self.asset_cells}, tol={self.tol:g})"


# ---------------------------------------------------------------------------- Gymnasium envs
class HouseholdEnv(gym.Env):
    """## Description
    One household of the multi-household tax-design problem (paper §5.2, App. F.3), the follower's
    MDP ``M_{x,ξ}``. Each step the household, holding assets ``s``, chooses how many hours ``n`` to
    work and how much to spend on each of ``M`` goods (``c_1..c_M``, VAT included); its income is
    taxed at ``x_inc`` and goods carry VAT ``y_i``. Assets follow
    ``s' = s + (1 − x_inc) w n − Σ_i c_i + noise``, kept inside ``[−100, 100]``.

    ## Leader parameter x
    ``x = (x_inc, y_1, ..., y_M)`` (default M = 3): income tax then VAT per good, in natural units,
    each in ``[0, 2]`` (``variant="code"``) or ``[0, 3]`` (``variant="paper"``); default 0.3 each.
    Out-of-range, NaN or wrongly shaped ``x`` raises ``ValueError`` naming the bounds.

    ## Contexts
    ``context`` = preference group (index or α tuple): α = (0.6, 0.3, 0.1) or (0.1, 0.7, 0.2) by
    default (equally likely); unknown groups raise ``KeyError`` listing the known ones.

    ## Action Space
    ``Discrete(n_hours · n_cons^M)`` (default 10 · 5³ = 1250): the row-major flat index of
    ``(hours index, c_1 index, ..., c_M index)``; hours ``0.89 h`` (code) or ``8h/9`` (paper),
    ``h = 0..9``; consumption ``1.25 k``, ``k = 0..4``. Convert with
    :func:`~bilevel_envs.envs.household.flatten_action` /
    :func:`~bilevel_envs.envs.household.unflatten_action`.

    ## Observation Space
    ``Box(−100, 100, (1,), float64)``: the assets. With ``asset_cells=K`` (the tabular variant's
    dynamics): ``Discrete(K)``, the index of the asset cell.

    ## Starting State
    ``s_0 = clip(√2 · N(0, 1), −100, 100)`` (its cell with ``asset_cells``), or
    ``reset(options={"state": s})`` with an asset level (a cell index with ``asset_cells``).

    ## Transition
    ``m = s + (1 − x_inc) w n − Σ_i c_i`` (w = 1). Code variant: ``s' ~ N(clip(m, ±100), 5²)``
    truncated to ``[−100, 100]``; paper variant: ``s' = clip(m + N(0, 5²), −100, 100)``. With
    ``asset_cells``, ``s`` is the centre of its cell and ``s'`` is replaced by its cell.

    ## Rewards
    Household (the env's reward), on the pre-step state:
    ``u = σ(s) − θ n² + Π_i (c_i / (p_i (1 + y_i)))^{α_i}`` with θ = 0.1, unit prices,
    ``σ(s) = log(1 + s/20)`` for ``s > 0`` and ``s`` (code) or 0 (paper) for ``s ≤ 0``.
    Leader (``info["leader_reward"]``), the social welfare:
    ``v = min(s, 0) + Σ_i c_i/(1 + y_i) + ϕ log(Σ_i c_i y_i/(1 + y_i) + w x_inc n + δ)``,
    ϕ = 5, δ = 1 (code) or 1e-6 (paper). Discount γ = 0.9 for both.

    ## Episode End
    Never terminates; the registered env truncates after 200 steps (``max_episode_steps``).

    ## Information
    ``"leader_reward"`` (float), ``"context"`` (int), ``"assets"`` (float, after the step),
    ``"hours"`` and ``"consumption"`` (the chosen values; step only).

    ## Arguments
    ```python
    gym.make("bilevel/Household-v0", x=np.full(4, 0.3), context=0, variant="code",
             asset_cells=None, render_mode=None, **household_params)
    ```
    ``household_params``: any field of :class:`~bilevel_envs.envs.household.HouseholdParams`
    (``prices``, ``preferences``, ``hours_levels``, ``consumption_levels``, ``theta``, ``phi``,
    ``noise_std``, ``wage``, ...). ``render_mode="ansi"`` prints one line per step.

    ## References
    Thoma et al., "Contextual Bilevel Reinforcement Learning for Incentive Alignment", NeurIPS 2024
    (§5.2, App. B, App. F.3); Hill et al., "Solving Heterogeneous General Equilibrium Economic
    Models with Deep RL" (2021); Curry et al., "Analyzing Micro-Founded General Equilibrium Models
    with Many Agents using Deep RL" (2022).

    ## Version History
    * v0: initial release (variants ``"code"`` and ``"paper"``, optional asset grid).
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(self, x: np.ndarray | None = None, context: Any = 0,
                 variant: str | None = None, asset_cells: int | None = None,
                 render_mode: str | None = None, problem: TaxDesign | None = None,
                 **household_params: Any):
        if problem is None:
            variant = "code" if variant is None else variant
            problem = (TaxDesign(variant, **household_params) if asset_cells is None else
                       TaxDesignTabular(variant, asset_cells=asset_cells, **household_params))
        elif variant is not None or asset_cells is not None or household_params:
            raise ValueError("pass either problem= or variant/asset_cells/household parameters")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None;"
                             f" got {render_mode!r}")
        self.problem = problem
        self.x = problem.check_x(problem.x_init if x is None else x)
        self.context = problem.context_index(context)
        self.render_mode = render_mode
        self.observation_space = problem.follower_observation_space
        self.action_space = spaces.Discrete(problem.params.n_actions)
        self._tabular = problem.is_tabular
        self._obs: Any = problem.sample_initial_obs(np.array([0.5]))[0]
        self._last: str = ""

    def _batch(self, obs: Any) -> np.ndarray:
        return np.asarray([obs])

    def _output(self, obs: Any) -> Any:
        return int(obs) if self._tabular else np.array(obs, dtype=np.float64)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if options and "state" in options:
            self._obs = self.problem.check_obs(options["state"], name="options['state']")
        else:
            self._obs = self.problem.sample_initial_obs(self.np_random.random(1))[0]
        self._last = ""
        assets = float(self.problem.assets_of(self._batch(self._obs))[0])
        return self._output(self._obs), {"context": self.context, "assets": assets}

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"action must be an integer in 0..{self.action_space.n - 1}; got "
                             f"{action!r}")
        problem, batch, a = self.problem, self._batch(self._obs), np.array([int(action)])
        args = (self.x, self.context, batch, a, batch)
        reward = float(problem.follower_reward(*args)[0])
        leader_reward = float(problem.leader_reward(*args)[0])
        self._obs = problem.sample_next_obs(self.x, batch, a, self.np_random.random(1))[0]
        hours = float(problem.hours[a[0]])
        consumption = tuple(float(c) for c in problem.consumption[a[0]])
        assets = float(problem.assets_of(self._batch(self._obs))[0])
        self._last = (f"hours {hours:5.2f} | consumption {consumption} | assets {assets:8.2f} | "
                      f"u {reward:8.3f} | welfare {leader_reward:8.3f}")
        info = {"leader_reward": leader_reward, "context": self.context, "assets": assets,
                "hours": hours, "consumption": consumption}
        return self._output(self._obs), reward, False, False, info

    def render(self):
        if self.render_mode == "ansi":
            assets = float(self.problem.assets_of(self._batch(self._obs))[0])
            return (self._last or f"assets {assets:8.2f}") + "\n"
        return None


class TaxDesignEnv(LeaderEnv):
    """## Description
    The government's side of multi-household tax design (paper §5.2, Fig. 3): each step applies
    taxes ``x`` to the households' economy (:class:`HouseholdEnv`), lets the households of the
    sampled preference groups respond (entropy-regularised best response) and returns the
    discounted social welfare they generate.

    ## Leader parameter x (Action Space)
    ``Box(0, 2, (1 + M,), float64)`` (``[0, 3]`` with ``variant="paper"``): ``x[0]`` income tax,
    ``x[1:]`` VAT of goods 1..M (plots index goods from 1). Initial value
    ``problem.x_init = 0.3``. Out-of-bounds or NaN ``x`` raises ``ValueError``.

    ## Contexts
    Household preference groups α = (0.6, 0.3, 0.1) and (0.1, 0.7, 0.2), probability ½ each.
    ``contexts="sample"`` (default: one group per step, as the authors did) or ``"all"``.

    ## Observation Space
    The last ``x`` applied (zeros after ``reset``), same box as the action space.

    ## Starting State
    ``reset`` clears the followers' warm starts and returns zeros; leaders start from
    ``env.unwrapped.problem.x_init`` (all taxes 0.3, as in the paper). Each step's households
    start their episodes from ``s_0 = clip(√2 N(0, 1), ±100)``.

    ## Rewards
    An estimate of ``J(x) = E_ξ E_π*[Σ_t 0.9^t v_t]`` with the welfare
    ``v = min(s, 0) + Σ_i c_i/(1 + y_i) + 5 log(Σ_i c_i y_i/(1 + y_i) + x_inc n + δ)`` over 200-step
    episodes (``objective="monte_carlo"``, from ``n_envs × n_rollout_steps`` follower transitions),
    or the exact value of the followers' policies (``objective="exact"``, ``tabular=True`` only).
    Follower reward ``u = σ(s) − 0.1 n² + Π_i (c_i/(1 + y_i))^{α_i}``; formulas and variants:
    :class:`HouseholdEnv`, :mod:`bilevel_envs.envs.household`.

    ## Continuous or tabular
    ``tabular=False`` (default): continuous assets (:class:`TaxDesign`), rollouts from the
    vectorised simulator :class:`HouseholdOracle`. ``tabular=True``: assets on ``asset_cells``
    grid cells (:class:`TaxDesignTabular`): exact J, exact hypergradients, soft VI, AMD.

    ## Followers
    ``follower=None`` picks ``"soft_vi"`` for ``tabular=True`` and, for continuous assets, the
    paper's soft DQN (``"soft_dqn"``) — or, where that follower is not installed,
    ``"grid_soft_vi"`` (the exact soft-optimal policy of the discretised economy, applied to the
    continuous assets; :class:`GridSoftVI`). Any follower name or instance can be passed.

    ## Episode End
    Truncated after ``horizon`` leader steps (default 1000, the paper's iterations).

    ## Information
    ``"rollouts"``: dict of ``(n_envs, T)`` arrays ``obs``, ``actions``, ``next_obs``, ``rewards``,
    ``leader_rewards``, ``terminated``, ``truncated``, ``context``, ``action_probs``, ``entropy``,
    ``episode_step``, ``mask`` (``obs``/``next_obs`` are ``(n_envs, T, 1)`` assets, or
    ``(n_envs, T)`` cells with ``tabular=True``); ``"contexts"``, ``"context_weights"``,
    ``"objective_estimate"``, ``"follower_stats"`` (and ``"objective_exact"`` with
    ``objective="exact"``).

    ## Arguments
    ```python
    gym.make("bilevel/TaxDesign-v0", variant="code", lam=None, tabular=False, asset_cells=None,
             follower=None, follower_kwargs=None, contexts="sample", n_followers=1, n_envs=300,
             n_rollout_steps=200, horizon=1000, objective="monte_carlo", oracle="auto",
             observation_cells=None, **household_params)
    ```
    ``observation_cells`` (continuous assets only, default 41): the asset cells HPGD's
    ``"every_visit"`` estimator tabulates its values on (:meth:`TaxDesign.observation_index`).
    ``lam=None`` keeps the variant's λ (0.2). ``n_envs × n_rollout_steps`` = 60,000 transitions
    = 300 complete 200-step episodes per step: the authors' estimation budget (they ran 10 chains
    × 6,000 steps with auto-reset, the same 300 episodes); 300 chains side by side are 30× fewer
    simulator steps. ``household_params`` as for :class:`HouseholdEnv`.

    ## References
    Thoma et al., "Contextual Bilevel Reinforcement Learning for Incentive Alignment", NeurIPS 2024.

    ## Version History
    * v0: initial release.
    """

    def __init__(self, variant: str = "code", lam: float | None = None, tabular: bool = False,
                 asset_cells: int | None = None, follower: Any = None,
                 follower_kwargs: dict[str, Any] | None = None, contexts: Any = "sample",
                 n_followers: int = 1, n_envs: int = 300, n_rollout_steps: int = 200,
                 horizon: int = 1000, objective: str = "monte_carlo", oracle: str = "auto",
                 observation_cells: int | None = None, **household_params: Any):
        if tabular and observation_cells is not None:
            raise ValueError("observation_cells aggregates continuous assets; with tabular=True "
                             "the asset cells are the states (use asset_cells)")
        if tabular:
            problem: TaxDesign = TaxDesignTabular(
                variant, asset_cells=DEFAULT_ASSET_CELLS if asset_cells is None else asset_cells,
                lam=lam, **household_params)
        elif asset_cells is not None:
            raise ValueError("asset_cells needs tabular=True (for the grid follower on continuous "
                             "assets use follower_kwargs={'asset_cells': ...})")
        else:
            problem = TaxDesign(variant, lam=lam, observation_cells=(
                DEFAULT_OBSERVATION_CELLS if observation_cells is None else observation_cells),
                **household_params)
        super().__init__(problem, follower=default_follower(tabular) if follower is None
                         else follower, follower_kwargs=follower_kwargs, contexts=contexts,
                         n_followers=n_followers, n_envs=n_envs, n_rollout_steps=n_rollout_steps,
                         horizon=horizon, objective=objective, oracle=oracle)


def default_follower(tabular: bool) -> str:
    """``"soft_vi"`` on the tabular variant; the paper's ``"soft_dqn"`` on continuous assets,
    or ``"grid_soft_vi"`` where ``"soft_dqn"`` is not installed."""
    if tabular:
        return "soft_vi"
    return "soft_dqn" if "soft_dqn" in FOLLOWERS else "grid_soft_vi"
