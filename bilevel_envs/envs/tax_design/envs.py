"""Tax design as Gymnasium envs: one household (``bilevel/Household-v0``) and the government's
env (``bilevel/TaxDesign-v0``)."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from bilevel_envs.env_base import BilevelEnvBase
from bilevel_envs.envs.tax_design.problem import (
    DEFAULT_ASSET_CELLS,
    DEFAULT_OBSERVATION_CELLS,
    TaxDesign,
    TaxDesignTabular,
)
from bilevel_envs.follower_quality import DEFAULT_GAP_THRESHOLD
from bilevel_envs.leader_env import LeaderEnv
from bilevel_envs.validation import check_choice, check_options


class HouseholdEnv(BilevelEnvBase):
    """## Description
    One household of the multi-household tax-design problem (paper §5.2, App. F.3), the follower's
    MDP ``M_{x,ξ}``. Each step the household, holding assets ``s``, chooses how many hours ``n`` to
    work and how much to spend on each of ``M`` goods (``c_1..c_M``, VAT included); its income is
    taxed at ``x_inc`` and goods carry VAT ``y_i``. Assets follow
    ``s' = s + (1 − x_inc) w n − Σ_i c_i + noise``, kept inside ``[−100, 100]``.

    ## Leader parameter x
    ``x = (x_inc, y_1, ..., y_M)`` (default M = 3): income tax then VAT per good, in natural units,
    each in ``[0, 2]`` (``variant="code"``) or ``[0, 3]`` (``variant="paper"``). Default
    (``x=None``): 0.3 each, the paper's initial taxes (``problem.x_init``), where working and
    buying pay and the household has a real choice between saving and spending.
    Out-of-range, NaN or wrongly shaped ``x`` raises ``ValueError`` naming the bounds.

    ## Contexts
    ``context`` = preference group (index or α tuple): α = (0.6, 0.3, 0.1) or (0.1, 0.7, 0.2) by
    default (equally likely); unknown groups raise ``KeyError`` listing the known ones.

    ## Action Space
    ``Discrete(n_hours · n_cons^M)`` (default 10 · 5³ = 1250): the row-major flat index of
    ``(hours index, c_1 index, ..., c_M index)``; hours ``0.89 h`` (code) or ``8h/9`` (paper),
    ``h = 0..9``; consumption ``1.25 k``, ``k = 0..4``. Convert with
    :func:`~bilevel_envs.envs.tax_design.model.flatten_action` /
    :func:`~bilevel_envs.envs.tax_design.model.unflatten_action`. With
    ``action_space="multidiscrete"``: ``MultiDiscrete([n_hours, n_cons, ..., n_cons])`` (default
    ``[10, 5, 5, 5]``), the indices themselves — for agents with one output head per dimension
    (e.g. SB3 PPO/A2C); the economy is the same (``info["action"]`` is the flat index).

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
    ``"hours"`` and ``"consumption"`` (the chosen values), ``"action"`` (the flat index; step
    only).

    ## Arguments
    ```python
    gym.make("bilevel/Household-v0", x=np.full(4, 0.3), context=0, variant="code",
             asset_cells=None, action_space="discrete", render_mode=None, **household_params)
    ```
    ``household_params``: any field of :class:`~bilevel_envs.envs.tax_design.model.HouseholdParams`
    (``prices``, ``preferences``, ``hours_levels``, ``consumption_levels``, ``theta``, ``phi``,
    ``noise_std``, ``wage``, ...). ``render_mode="ansi"`` gives one line per step (other modes
    raise ``TypeError``).

    ## References
    Thoma et al., "Contextual Bilevel Reinforcement Learning for Incentive Alignment", NeurIPS 2024
    (§5.2, App. B, App. F.3); Hill et al., "Solving Heterogeneous General Equilibrium Economic
    Models with Deep RL" (2021); Curry et al., "Analyzing Micro-Founded General Equilibrium Models
    with Many Agents using Deep RL" (2022).

    ## Version History
    * v0: initial release (variants ``"code"`` and ``"paper"``, optional asset grid); the
      ``action_space="multidiscrete"`` option.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(self, x: np.ndarray | None = None, context: Any = 0,
                 variant: str | None = None, asset_cells: int | None = None,
                 action_space: str = "discrete", render_mode: str | None = None,
                 problem: TaxDesign | None = None, **household_params: Any):
        self.render_mode = self._check_render_mode(render_mode)
        if problem is None:
            variant = "code" if variant is None else variant
            problem = (TaxDesign(variant, **household_params) if asset_cells is None else
                       TaxDesignTabular(variant, asset_cells=asset_cells, **household_params))
        elif variant is not None or asset_cells is not None or household_params:
            raise ValueError("pass either problem= or variant/asset_cells/household parameters")
        self.problem = problem
        self.x = problem.check_x(problem.x_init if x is None else x)
        self.context = problem.context_index(context)
        self.observation_space = problem.follower_observation_space
        self._multi = check_choice("action_space", action_space,
                                   ("discrete", "multidiscrete")) == "multidiscrete"
        self.action_space = (spaces.MultiDiscrete(problem.params.action_dims) if self._multi
                             else spaces.Discrete(problem.params.n_actions))
        self._tabular = problem.is_tabular
        self._obs: Any = problem.sample_initial_obs(np.array([0.5]))[0]
        self._last: str = ""

    def _batch(self, obs: Any) -> np.ndarray:
        return np.asarray([obs])

    def _output(self, obs: Any) -> Any:
        return int(obs) if self._tabular else np.array(obs, dtype=np.float64)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        options = check_options(options, ("state",))
        super().reset(seed=seed)
        if "state" in options:
            self._obs = self.problem.check_obs(options["state"], name="options['state']")
        else:
            self._obs = self.problem.sample_initial_obs(self.np_random.random(1))[0]
        self._last = ""
        assets = float(self.problem.assets_of(self._batch(self._obs))[0])
        return self._output(self._obs), {"context": self.context, "assets": assets}

    def step(self, action):
        if not self.action_space.contains(action if not self._multi else np.asarray(action)):
            allowed = (f"indices below {self.action_space.nvec.tolist()}" if self._multi else
                       f"an integer in 0..{self.action_space.n - 1}")
            raise ValueError(f"action must be {allowed}; got {action!r}")
        flat = (int(self.problem.flatten_action(action[0], np.asarray(action)[1:]))
                if self._multi else int(action))
        problem, batch, a = self.problem, self._batch(self._obs), np.array([flat])
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
                "hours": hours, "consumption": consumption, "action": flat}
        return self._output(self._obs), reward, False, False, info

    def render(self):
        if self.render_mode == "ansi":
            assets = float(self.problem.assets_of(self._batch(self._obs))[0])
            return (self._last or f"assets {assets:8.2f}") + "\n"
        self._warn_no_render_mode()
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
    :class:`HouseholdEnv`, :mod:`bilevel_envs.envs.tax_design.model`.

    ## Continuous or tabular
    ``tabular=False`` (default): continuous assets (:class:`TaxDesign`), rollouts from the
    vectorised simulator :class:`HouseholdOracle`. ``tabular=True``: assets on ``asset_cells``
    grid cells (:class:`TaxDesignTabular`): exact J, exact hypergradients, soft VI, AMD.

    ## Followers
    ``follower=None`` picks ``"soft_vi"`` for ``tabular=True`` and, for continuous assets,
    ``"grid_soft_vi"``: the exact soft-optimal policy of the discretised economy (41 asset cells),
    applied to the continuous assets (:class:`GridSoftVI`). With it the registered default costs
    about 1 s to construct and 0.5 s of CPU per step (60,000 household transitions), usable in an
    RL loop. The paper's households, soft DQN trained per step, are one argument away:
    ``follower="soft_dqn"`` (needs the ``sb3`` extra); they cost about 60 s of CPU per step at
    their default budget (20,000 training steps per household, measured on a 2-core machine).
    Any follower name or instance can be passed.

    ## Episode End
    Never terminates; the registered id truncates after 1000 leader steps (the paper's
    iterations; ``max_episode_steps``, ``gym.make(..., max_episode_steps=N)`` changes it).

    ## Rendering
    ``render_mode="ansi"``: the step, the last taxes, the ``J`` estimate (welfare) and the
    preference groups served.

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
             n_rollout_steps=200, objective="monte_carlo", oracle="auto",
             observation_cells=None, follower_quality=None, quality_threshold=0.05,
             render_mode=None, **household_params)
    ```
    ``follower_quality``: measure the households exactly on the grid economy (soft-optimality
    gap and visited TV in ``"follower_stats"``, a warning above ``quality_threshold``; see
    :class:`~bilevel_envs.LeaderEnv`): on by default with ``tabular=True`` and a follower that is
    not exact; ``True`` turns it on for every follower, also on continuous assets (the 41-cell
    grid economy is then built at every step).
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
                 objective: str = "monte_carlo", oracle: str = "auto",
                 observation_cells: int | None = None, follower_quality: bool | None = None,
                 quality_threshold: float = DEFAULT_GAP_THRESHOLD,
                 render_mode: str | None = None, **household_params: Any):
        self._check_render_mode(render_mode)
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
                         objective=objective, oracle=oracle, follower_quality=follower_quality,
                         quality_threshold=quality_threshold, render_mode=render_mode)

    def describe_x(self, x: np.ndarray) -> str:
        income, vat = float(x[0]), ", ".join(f"{v:.3g}" for v in np.ravel(x[1:]))
        return f"income tax {income:.3g}; VAT per good {vat}"


def default_follower(tabular: bool) -> str:
    """``"soft_vi"`` on the tabular variant, ``"grid_soft_vi"`` on continuous assets (seconds
    per step; the paper's ``"soft_dqn"`` costs about a minute per step and is opt-in)."""
    return "soft_vi" if tabular else "grid_soft_vi"
