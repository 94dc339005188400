"""Multi-household tax design as :class:`~bilevel_envs.BilevelProblem` s (paper §5.2, App. B,
App. F.3): a government sets an income tax and one VAT per good; households of several
preference groups choose hours and consumption.

* :class:`TaxDesign` — continuous assets (the paper's problem), simulated by
  :class:`~bilevel_envs.envs.tax_design.simulator.HouseholdOracle`;
* :class:`TaxDesignTabular` — assets discretised on a grid: an exact finite model
  (``exact_objective``, ``exact_hypergradient``, soft VI and AMD work on it).

The economics are the pure functions of :mod:`bilevel_envs.envs.tax_design.model`;
``docs/reference.md`` records the facts behind the choices (both variants).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from bilevel_envs.envs.tax_design import model as hh
from bilevel_envs.envs.tax_design.simulator import HouseholdOracle
from bilevel_envs.oracles import TrajectoryOracle
from bilevel_envs.policies import Policy
from bilevel_envs.problem import BilevelProblem, weighted_sum
from bilevel_envs.tabular import TabularModel
from bilevel_envs.validation import check_choice, check_int

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

    See :mod:`bilevel_envs.envs.tax_design.model` for the formulas, derivatives and both variants.

    State aggregation (for HPGD's ``"every_visit"`` batch estimator): ``observation_index``
    maps assets to ``observation_cells`` equal cells of ``[−L, L]``.

    Args:
        variant: ``"code"`` (default, the authors' code) or ``"paper"`` (the paper's text).
        observation_cells: number of asset cells of the state aggregation (default 41, the
            tabular variant's grid: width 4.9 ≈ ς).
        **overrides: any field of :class:`~bilevel_envs.envs.tax_design.model.HouseholdParams`
            (``lam``, ``gamma``, ``prices``, ``preferences``, ``group_probs``, ``hours_levels``,
            ``consumption_levels``, ``theta``, ``phi``, ``noise_std``, ``wage``, ...).
    """

    transitions_depend_on_x = True
    follower_env_id = "bilevel/Household-v0"

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
        try:
            arr = np.asarray(obs, dtype=np.float64) if np.ndim(obs) <= 1 else None
        except (TypeError, ValueError, OverflowError):  # a string, a ragged list, a huge int
            arr = None
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

    def follower_action_features(self, encoding: str = "values") -> np.ndarray:
        """Features of each flat action for a joint-action Q-network
        (:class:`~bilevel_envs.followers.joint_q.JointActionHead`).

        ``encoding="values"``: ``(A, 1 + M)``, its hours and its consumption of each good, each
        divided by the largest level (values in ``[0, 1]``). ``"values+onehot"``: those columns
        and the one-hot code of each dimension's level (``n_hours + M · n_cons`` more columns), so
        that a utility with kinks at zero consumption (Cobb–Douglas ``c^0.1``) is easy to fit.

        Raises:
            ValueError: for another ``encoding``.
        """
        check_choice("encoding", encoding, ("values", "values+onehot"))
        hours_scale = max(max(self.params.hours_levels), 1e-12)
        cons_scale = max(max(self.params.consumption_levels), 1e-12)
        columns = [self.hours / hours_scale, self.consumption / cons_scale]
        if encoding == "values+onehot":
            hours_index, cons_index = self.unflatten_action(np.arange(self.params.n_actions))
            columns.append(np.eye(len(self.params.hours_levels))[hours_index])
            n_cons = len(self.params.consumption_levels)
            columns += [np.eye(n_cons)[cons_index[:, i]] for i in range(cons_index.shape[1])]
        return np.column_stack(columns)

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
        return weighted_sum(grads, weights)

    def grad_leader_reward(self, x, context, obs, actions, next_obs, weights=None):
        a = np.asarray(actions, dtype=np.int64)
        income_tax, vat = hh.split_taxes(x)
        return weighted_sum(hh.grad_social_welfare(self.assets_of(obs), self.hours[a],
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
    def discretised(self, asset_cells: int = DEFAULT_ASSET_CELLS) -> TaxDesignTabular:
        """The same economy with assets on a grid of ``asset_cells`` cells (cached per size)."""
        cache = self._discretised
        if asset_cells not in cache:
            fields = {f: getattr(self.params, f) for f in self.params.__dataclass_fields__
                      if f != "variant"}
            cache[asset_cells] = TaxDesignTabular(self.variant, asset_cells=asset_cells,
                                                  **fields)
        return cache[asset_cells]

    def tabular_twin(self) -> TaxDesignTabular:
        """The economy on the default asset grid (:meth:`discretised`): its exact model measures
        the households (:mod:`bilevel_envs.follower_quality`)."""
        return self.discretised()

    def twin_observations(self, twin: BilevelProblem) -> np.ndarray:
        """The observation of each grid cell: the cell's centre (the cell index on the grid)."""
        return self.obs_of(twin.points)

    def twin_states(self, twin: BilevelProblem, obs: Any) -> np.ndarray:
        """The grid cell holding the assets of each observation."""
        return twin.obs_of(self.assets_of(obs))

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
    :func:`~bilevel_envs.envs.tax_design.model.cell_probabilities`),
    ``μ(k) = P(s_0 ∈ cell k)``. Rewards
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

    # ------------------------------------------------------------------ observations
    def assets_of(self, obs: Any) -> np.ndarray:
        return self.points[np.asarray(obs, dtype=np.int64).reshape(-1)]

    def obs_of(self, assets: np.ndarray) -> np.ndarray:
        return hh.cell_of(assets, self.edges)

    def check_obs(self, obs: Any, name: str = "state") -> int:
        return check_int(f"{name} (an asset cell)", obs, 0, self.n_cells - 1)

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
        """``P (S, A, S)`` and ``dP (S, A, S, d)``; they depend on the income tax only (the same
        for every preference group)."""
        income_tax = float(x[0])
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
        return P, dP

    def tabular(self, x: np.ndarray, context: Any) -> TabularModel:
        return self.tabular_models(x, [context])[0]

    def tabular_models(self, x: np.ndarray, contexts: list[int]) -> list[TabularModel]:
        """The models of ``contexts`` at ``x``; they share one transition law (built once)."""
        x = self.check_x(x)
        P, dP = self.transitions(x)
        cache: dict[str, Any] = {}  # sampling tables of this P, shared by the contexts' models
        S, A = self.n_cells, self.params.n_actions
        states = np.repeat(np.arange(S), A)
        actions = np.tile(np.arange(A), S)
        shape = (S, A, self.n_params)
        models = []
        for context in contexts:
            args = (x, context, states, actions, states)
            models.append(TabularModel(
                P=P, r=self.follower_reward(*args).reshape(S, A),
                r_leader=self.leader_reward(*args).reshape(S, A), mu=self.mu,
                gamma=self.gamma, leader_gamma=self.leader_gamma,
                dr=self.grad_follower_reward(*args).reshape(shape),
                dr_leader=self.grad_leader_reward(*args).reshape(shape), dP=dP, dmu=None,
                cache=cache))
        return models

    def follower_afterstates(self, x: np.ndarray, context: Any) -> tuple[np.ndarray, np.ndarray]:
        """What a household knows before the asset shock: its utility ``r(k, a)`` ``(S, A)``
        and the savings ``m(g_k, a)`` it carries into the next period, as the feature
        ``m / L`` ``(S, A, 1)``; ``P(·|k, a)`` depends on ``(k, a)`` only through ``m``
        (:class:`~bilevel_envs.followers.afterstate_q.AfterstateQNetwork`)."""
        x = self.check_x(x)
        S, A = self.n_cells, self.params.n_actions
        states, actions = np.repeat(np.arange(S), A), np.tile(np.arange(A), S)
        rewards = self.follower_reward(x, context, states, actions, states).reshape(S, A)
        mean, _ = self._mean(x, states, actions)
        return rewards, (mean / self.params.asset_bound).reshape(S, A, 1)

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
