"""Household economics of the tax-design problem (paper §5.2, App. B, App. F.3) as pure NumPy.

A household holds assets ``s ∈ [−L, L]`` (``L = 100``), chooses hours ``n`` and an expenditure
``c_i`` on each of ``M`` goods, and is taxed by the leader: ``x = (x_inc, y_1, ..., y_M)``, an
income tax and one value-added tax (VAT) per good, all in natural units (0.3 = 30 %).

* Follower (household) reward, on the pre-step state::

      u(s, n, c) = σ(s) − θ n² + Π_i (c_i / (p_i (1 + y_i)))^{α_i}

  (asset utility, disutility of work, Cobb–Douglas consumption utility with preferences α of the
  household's group; ``c_i`` is money spent on good ``i`` including VAT, so ``c_i/(p_i(1+y_i))``
  is the quantity bought).
* Leader reward (social welfare), on the pre-step state::

      v(s, n, c) = ω(s) + κ Σ_i c_i/(1 + y_i) + ϕ log(R + δ)
      R = Σ_i c_i y_i/(1 + y_i) + w x_inc n

  with ``ω(s) = min(s, 0)`` and tax revenue ``R`` (VAT plus income tax).
* Assets: ``m = s + (1 − x_inc) w n − Σ_i c_i`` plus Gaussian noise of standard deviation ς,
  kept inside ``[−L, L]`` (how: see the variants).
* Start: ``s_0 = clip(s0_std · N(0, 1), −L, L)``.

Every function takes batched arrays (leading axis ``N``); the preferences ``alpha`` may be one
vector ``(M,)`` or one per row ``(N, M)`` (households of different groups in one batch).

## Variants
``make_params("code")`` (default) is what the authors' code ran (it produced the paper's
Figure 3); ``make_params("paper")`` follows the paper's text. Every difference, code | paper:

* σ(s) for debt ``s ≤ 0``: ``s`` (a linear penalty) | ``max(0, log(s/20 + 1)) = 0`` (App. F.3.1).
  With the paper's σ debt costs the household nothing, so its households run into debt and
  the welfare (which counts ``min(s, 0)``) is strongly negative.
* Welfare log: ``ϕ log(1 + R)`` (δ = 1) | ``ϕ log(R)`` (§5.2); the paper variant uses δ = 1e-6
  so that the zero-revenue action (no work, no consumption) has a finite welfare.
* Hours grid: ``0.89 h`` for ``h = 0..9`` (0..8.01) | ``[0, 8]`` in 10 levels (step 8/9).
* Tax bounds: ``[0, 2]`` (as App. F.3.1) | ``[0, 3]`` (§5.2).
* Asset noise: normal truncated to ``[−L, L]`` around the clipped centre ``clip(m, −L, L)`` |
  normal noise added to ``m``, then the assets are clipped (censored: point masses at ``±L``).

Shared by both (stated in the paper or, where it is silent, taken from the code): M = 3 goods,
unit prices, groups α = (0.6, 0.3, 0.1) and (0.1, 0.7, 0.2) with probability ½ each, θ = 0.1,
ϕ = 5, ς = 5, w = 1, κ = 1, consumption levels ``{0, 1.25, 2.5, 3.75, 5}``, 200-step episodes,
initial taxes 0.3, ``s0_std = √2`` (the paper's "N(0, √2)" read as a standard deviation, as the
code does), γ = 0.9 (the paper gives none for tax design), λ = 0.2 (§5.2 and the main-figure
config; App. F.3.1 says 0.3, the code has configs for 0.1, 0.2 and 0.3). The code writes the
consumption term as ``15 · mean_i(c_i/(1+y_i)) / 5``, which is ``Σ_i c_i/(1+y_i)`` for M = 3;
we keep the sum (``κ = 1``) for any M.

Derivatives are exact. Two places where the authors' code differs and we deliberately do not
follow it (docs/reference.md §7.15–16): the VAT derivative of the Cobb–Douglas term is
``−α_j C/(1 + y_j)``, which is 0 (not NaN) when a consumption is zero — the code's autodiff gave
NaN there and replaced it by −0.1; and the score ``∂ log p(s'|s, a)/∂x_inc`` differentiates the
density truncated to ``[−L, L]`` including its normalising constant (the code passed ±100 as
*standardised* bounds, truncating at ``m ± 500``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from scipy import special

from bilevel_envs.validation import check_int

VARIANTS = ("code", "paper")
DEBT_UTILITIES = ("linear", "zero")
NOISE_MODELS = ("truncated", "censored")

_LOG_SQRT_2PI = 0.5 * np.log(2.0 * np.pi)


@dataclass(frozen=True)
class HouseholdParams:
    """Everything that configures the household economy (the leader's ``x`` is separate).

    Attributes:
        variant: name of the preset these values came from (informational).
        prices: ``(M,)`` producer price of each good, > 0.
        preferences: ``(G, M)`` Cobb–Douglas exponents α of each household group, ≥ 0.
        group_probs: ``(G,)`` probability of each group (the context distribution ``P_ξ``).
        hours_levels: the values ``n`` of the hours grid.
        consumption_levels: the values ``c_i`` of the expenditure grid (the same for every good).
        theta: disutility of work θ.
        phi: weight ϕ of the log tax revenue in the welfare.
        welfare_consumption_scale: weight κ of the net consumption in the welfare.
        revenue_offset: δ inside the welfare's ``log(R + δ)``.
        noise_std: standard deviation ς of the asset noise.
        wage: wage ``w`` per hour.
        asset_bound: ``L``: assets live in ``[−L, L]``.
        s0_std: standard deviation of the initial assets.
        debt_utility: σ(s) for ``s ≤ 0``: ``"linear"`` (``s``) or ``"zero"``.
        noise: ``"truncated"`` (normal truncated to ``[−L, L]`` around the clipped mean) or
            ``"censored"`` (normal noise, then clipping: point masses at ``±L``).
        tax_max: upper bound of every tax rate (lower bound 0).
        tax_init: initial value of every tax rate.
        gamma: discount factor of the household and of the leader.
        lam: the households' entropy weight λ.
        episode_length: steps per episode (time limit).
    """

    variant: str = "code"
    prices: tuple[float, ...] = (1.0, 1.0, 1.0)
    preferences: tuple[tuple[float, ...], ...] = ((0.6, 0.3, 0.1), (0.1, 0.7, 0.2))
    group_probs: tuple[float, ...] = (0.5, 0.5)
    hours_levels: tuple[float, ...] = tuple(0.89 * h for h in range(10))
    consumption_levels: tuple[float, ...] = (0.0, 1.25, 2.5, 3.75, 5.0)
    theta: float = 0.1
    phi: float = 5.0
    welfare_consumption_scale: float = 1.0
    revenue_offset: float = 1.0
    noise_std: float = 5.0
    wage: float = 1.0
    asset_bound: float = 100.0
    s0_std: float = float(np.sqrt(2.0))
    debt_utility: str = "linear"
    noise: str = "truncated"
    tax_max: float = 2.0
    tax_init: float = 0.3
    gamma: float = 0.9
    lam: float = 0.2
    episode_length: int = 200

    def __post_init__(self) -> None:
        # Normalise sequences to tuples of floats (hashable, so the params can key caches).
        for name in ("prices", "group_probs", "hours_levels", "consumption_levels"):
            object.__setattr__(self, name, tuple(float(v) for v in np.ravel(getattr(self, name))))
        prefs = np.asarray(self.preferences, dtype=np.float64)
        if prefs.ndim != 2:
            raise ValueError(f"preferences must be a (groups, goods) table of exponents α; got "
                             f"shape {prefs.shape}")
        object.__setattr__(self, "preferences", tuple(tuple(map(float, row)) for row in prefs))
        self._validate(prefs)

    def _validate(self, prefs: np.ndarray) -> None:
        M = len(self.prices)
        if M < 1 or not all(np.isfinite(p) and p > 0 for p in self.prices):
            raise ValueError(f"prices must be positive numbers (one per good); got {self.prices}")
        if prefs.shape[1] != M or not (np.isfinite(prefs).all() and (prefs >= 0).all()):
            raise ValueError(f"preferences must have one non-negative exponent per good "
                             f"({M} goods); got {self.preferences}")
        probs = np.asarray(self.group_probs)
        if probs.shape != (prefs.shape[0],) or (probs < 0).any() \
                or not np.isclose(probs.sum(), 1.0):
            raise ValueError(f"group_probs must be {prefs.shape[0]} non-negative probabilities "
                             f"summing to 1 (one per preference group); got {self.group_probs}")
        for name in ("hours_levels", "consumption_levels"):
            levels = np.asarray(getattr(self, name))
            if levels.size < 1 or not (np.isfinite(levels).all() and (levels >= 0).all()):
                raise ValueError(f"{name} must be a non-empty list of non-negative numbers; got "
                                 f"{getattr(self, name)}")
        positive = ("noise_std", "asset_bound", "s0_std", "tax_max", "lam", "revenue_offset")
        non_negative = ("theta", "phi", "welfare_consumption_scale", "wage")
        for name in positive + non_negative:
            value = getattr(self, name)
            ok = np.isfinite(value) and (value > 0 if name in positive else value >= 0)
            if not ok:
                kind = "positive" if name in positive else "non-negative"
                raise ValueError(f"{name} must be a {kind} number; got {value!r}")
        if not 0.0 <= self.tax_init <= self.tax_max:
            raise ValueError(f"tax_init must be in [0, tax_max] = [0, {self.tax_max}]; got "
                             f"{self.tax_init}")
        if not 0.0 <= self.gamma < 1.0:
            raise ValueError(f"gamma must be in [0, 1); got {self.gamma}")
        if not (isinstance(self.episode_length, (int, np.integer)) and self.episode_length >= 1):
            raise ValueError(f"episode_length must be an integer >= 1; got "
                             f"{self.episode_length!r}")
        if self.debt_utility not in DEBT_UTILITIES:
            raise ValueError(f"debt_utility must be one of {DEBT_UTILITIES}; got "
                             f"{self.debt_utility!r}")
        if self.noise not in NOISE_MODELS:
            raise ValueError(f"noise must be one of {NOISE_MODELS}; got {self.noise!r}")

    # ------------------------------------------------------------------ derived sizes
    @property
    def n_goods(self) -> int:
        return len(self.prices)

    @property
    def n_groups(self) -> int:
        return len(self.preferences)

    @property
    def n_params(self) -> int:
        """``d = 1 + M``: the income tax and one VAT per good."""
        return 1 + self.n_goods

    @property
    def action_dims(self) -> tuple[int, ...]:
        """``(n_hours, n_consumption, ..., n_consumption)``: the unflattened action grid."""
        return (len(self.hours_levels),) + (len(self.consumption_levels),) * self.n_goods

    @property
    def n_actions(self) -> int:
        return int(np.prod(self.action_dims))

    @property
    def alpha(self) -> np.ndarray:
        """``(G, M)`` preference table."""
        return np.asarray(self.preferences, dtype=np.float64)


def make_params(variant: str = "code", **overrides: Any) -> HouseholdParams:
    """The named preset (``"code"`` or ``"paper"``, see the module docstring) with overrides.

    Raises:
        ValueError: for an unknown variant, an unknown parameter name or an invalid value.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}; got {variant!r}")
    fields = {f.name for f in dataclasses.fields(HouseholdParams)} - {"variant"}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown household parameter(s) {unknown}; known: {sorted(fields)}")
    preset: dict[str, Any] = {"variant": variant}
    if variant == "paper":
        preset.update(debt_utility="zero", revenue_offset=1e-6, noise="censored", tax_max=3.0,
                      hours_levels=tuple(np.linspace(0.0, 8.0, 10)))
    preset.update({k: v for k, v in overrides.items() if v is not None})
    return HouseholdParams(**preset)


# ---------------------------------------------------------------------------- actions
@lru_cache(maxsize=32)
def action_table(params: HouseholdParams) -> tuple[np.ndarray, np.ndarray]:
    """``(hours (A,), consumption (A, M))``: the values of every flat action.

    Flat index = row-major (C-order) index of ``(hours index, c_1 index, ..., c_M index)``.
    """
    idx = np.unravel_index(np.arange(params.n_actions), params.action_dims)
    hours = np.asarray(params.hours_levels)[idx[0]]
    cons = np.stack([np.asarray(params.consumption_levels)[i] for i in idx[1:]], axis=-1)
    hours.setflags(write=False)
    cons.setflags(write=False)
    return hours, cons


def flatten_action(hours_index: Any, consumption_index: Any, params: HouseholdParams) -> np.ndarray:
    """Flat action(s) from an hours index and ``M`` consumption indices (last axis)."""
    cons = np.asarray(consumption_index)
    if cons.shape[-1:] != (params.n_goods,):
        raise ValueError(f"consumption_index needs a last axis of length {params.n_goods}; got "
                         f"shape {cons.shape}")
    return np.ravel_multi_index((np.asarray(hours_index),) + tuple(np.moveaxis(cons, -1, 0)),
                                params.action_dims)


def unflatten_action(action: Any, params: HouseholdParams) -> tuple[np.ndarray, np.ndarray]:
    """``(hours index, consumption indices (..., M))`` of flat action(s)."""
    idx = np.unravel_index(np.asarray(action), params.action_dims)
    return idx[0], np.stack(idx[1:], axis=-1)


# ---------------------------------------------------------------------------- utilities
def split_taxes(x: np.ndarray) -> tuple[float, np.ndarray]:
    """``(income tax, VAT vector)`` from ``x = (x_inc, y_1, ..., y_M)``."""
    x = np.asarray(x, dtype=np.float64)
    return float(x[0]), x[1:]


def asset_utility(s: np.ndarray, params: HouseholdParams) -> np.ndarray:
    """σ(s): ``log(s/20 + 1)`` for ``s > 0``; for ``s ≤ 0`` ``s`` (code) or 0 (paper)."""
    s = np.asarray(s, dtype=np.float64)
    positive = np.log1p(np.maximum(s, 0.0) / 20.0)
    debt = s if params.debt_utility == "linear" else np.zeros_like(s)
    return np.where(s > 0, positive, debt)


def asset_welfare(s: np.ndarray) -> np.ndarray:
    """ω(s) = min(s, 0): society counts household debt one for one."""
    return np.minimum(np.asarray(s, dtype=np.float64), 0.0)


def consumption_utility(c: np.ndarray, vat: np.ndarray, alpha: np.ndarray,
                        prices: np.ndarray) -> np.ndarray:
    """Cobb–Douglas ``C = Π_i (c_i / (p_i (1 + y_i)))^{α_i}`` per row of ``c`` ``(N, M)``."""
    quantity = np.asarray(c, dtype=np.float64) / (np.asarray(prices) * (1.0 + np.asarray(vat)))
    return np.prod(quantity ** np.asarray(alpha), axis=-1)  # 0**0 = 1: a good with α = 0


def grad_consumption_utility_vat(c: np.ndarray, vat: np.ndarray, alpha: np.ndarray,
                                 prices: np.ndarray) -> np.ndarray:
    """``∂C/∂y_j = −α_j C/(1 + y_j)``, shape ``(N, M)``.

    Exactly 0 when some consumption with ``α > 0`` is zero (then ``C ≡ 0`` in ``y``); the authors'
    autodiff produced NaN there, which their code replaced by −0.1 (docs/reference.md §7.15).
    """
    C = consumption_utility(c, vat, alpha, prices)
    return -np.asarray(alpha) * C[:, None] / (1.0 + np.asarray(vat))


def household_utility(s: np.ndarray, hours: np.ndarray, c: np.ndarray, vat: np.ndarray,
                      alpha: np.ndarray, params: HouseholdParams) -> np.ndarray:
    """The household's reward ``u = σ(s) − θ n² + C`` (pre-step state ``s``), shape ``(N,)``."""
    hours = np.asarray(hours, dtype=np.float64)
    return (asset_utility(s, params) - params.theta * hours ** 2
            + consumption_utility(c, vat, alpha, np.asarray(params.prices)))


def tax_revenue(hours: np.ndarray, c: np.ndarray, income_tax: float, vat: np.ndarray,
                params: HouseholdParams) -> np.ndarray:
    """``R = Σ_i c_i y_i/(1 + y_i) + w x_inc n`` (VAT plus income tax), shape ``(N,)``."""
    vat = np.asarray(vat)
    return (np.asarray(c) @ (vat / (1.0 + vat))
            + params.wage * income_tax * np.asarray(hours, dtype=np.float64))


def social_welfare(s: np.ndarray, hours: np.ndarray, c: np.ndarray, income_tax: float,
                   vat: np.ndarray, params: HouseholdParams) -> np.ndarray:
    """The leader's reward ``v = ω(s) + κ Σ_i c_i/(1 + y_i) + ϕ log(R + δ)``, shape ``(N,)``."""
    vat = np.asarray(vat)
    net_consumption = np.asarray(c) @ (1.0 / (1.0 + vat))
    revenue = tax_revenue(hours, c, income_tax, vat, params)
    return (asset_welfare(s) + params.welfare_consumption_scale * net_consumption
            + params.phi * np.log(revenue + params.revenue_offset))


def grad_social_welfare(s: np.ndarray, hours: np.ndarray, c: np.ndarray, income_tax: float,
                        vat: np.ndarray, params: HouseholdParams) -> np.ndarray:
    """``∂v/∂x``, shape ``(N, 1 + M)``::

        ∂v/∂x_inc = ϕ w n / (R + δ)
        ∂v/∂y_j   = c_j / (1 + y_j)² · (ϕ / (R + δ) − κ)
    """
    vat = np.asarray(vat)
    hours = np.asarray(hours, dtype=np.float64)
    inv_revenue = params.phi / (tax_revenue(hours, c, income_tax, vat, params)
                                + params.revenue_offset)
    d_income = params.wage * hours * inv_revenue
    d_vat = (np.asarray(c) / (1.0 + vat) ** 2
             * (inv_revenue[:, None] - params.welfare_consumption_scale))
    return np.concatenate([d_income[:, None], d_vat], axis=1)


# ---------------------------------------------------------------------------- asset dynamics
def transition_mean(s: np.ndarray, hours: np.ndarray, c: np.ndarray, income_tax: float,
                    params: HouseholdParams) -> tuple[np.ndarray, np.ndarray]:
    """The centre ``m`` of the next-asset law and ``∂m/∂x_inc``, each ``(N,)``.

    ``m = s + (1 − x_inc) w n − Σ_i c_i``; the code variant clips it to ``[−L, L]`` (so
    ``∂m/∂x_inc = −w n`` inside and 0 where the clip is active), the paper variant does not (its
    clip acts on the noisy assets instead, see :func:`sample_next_assets`).
    """
    hours = np.asarray(hours, dtype=np.float64)
    raw = (np.asarray(s, dtype=np.float64) + (1.0 - income_tax) * params.wage * hours
           - np.asarray(c).sum(axis=-1))
    d_income = -params.wage * hours
    if params.noise == "censored":
        return raw, d_income
    L = params.asset_bound
    inside = (raw > -L) & (raw < L)
    return np.clip(raw, -L, L), np.where(inside, d_income, 0.0)


def noise_bounds(params: HouseholdParams) -> tuple[float, float]:
    """The interval the Gaussian is truncated to: ``[−L, L]`` (code) or ``(−∞, ∞)`` (paper)."""
    if params.noise == "truncated":
        return -params.asset_bound, params.asset_bound
    return -np.inf, np.inf


def interval_mass(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``Φ(hi) − Φ(lo)`` for standardised ``lo ≤ hi``, accurate in both tails."""
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    upper = lo > 0  # both above 0: subtract survival functions instead of numbers close to 1
    return np.where(upper, special.ndtr(-lo) - special.ndtr(-hi),
                    special.ndtr(hi) - special.ndtr(lo))


def _pdf(z: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * np.square(z) - _LOG_SQRT_2PI)  # exp(-inf) = 0 at infinite bounds


def sample_next_assets(mean: np.ndarray, u: np.ndarray, params: HouseholdParams) -> np.ndarray:
    """Next assets from the law centred at ``mean`` by inversion of uniforms ``u`` ∈ [0, 1).

    Truncated: ``s' = m + ς z`` with ``z`` the standard normal restricted to
    ``[(−L − m)/ς, (L − m)/ς]``; censored: ``s' = clip(m + ς Φ⁻¹(u), −L, L)``.
    """
    mean = np.asarray(mean, dtype=np.float64)
    L, std = params.asset_bound, params.noise_std
    if params.noise == "censored":
        with np.errstate(divide="ignore"):  # Φ⁻¹(0) = −∞, clipped to −L just below
            return np.clip(mean + std * special.ndtri(u), -L, L)
    a, b = (-L - mean) / std, (L - mean) / std
    # Invert in the tail with relative precision: reflect when the interval lies mostly above 0.
    flip = (a + b) > 0
    lo, hi = np.where(flip, -b, a), np.where(flip, -a, b)
    p_lo, p_hi = special.ndtr(lo), special.ndtr(hi)
    z = special.ndtri(p_lo + u * (p_hi - p_lo))
    return np.clip(mean + std * np.where(flip, -z, z), -L, L)


def log_transition_density(s_next: np.ndarray, mean: np.ndarray,
                           params: HouseholdParams) -> np.ndarray:
    """``log p(s' | m)``: the truncated density, or (censored) the density on ``(−L, L)`` and the
    log-probability of the atoms at ``±L``."""
    s_next, mean = np.asarray(s_next, dtype=np.float64), np.asarray(mean, dtype=np.float64)
    L, std = params.asset_bound, params.noise_std
    z = (s_next - mean) / std
    gaussian = -0.5 * z ** 2 - _LOG_SQRT_2PI - np.log(std)
    if params.noise == "truncated":
        return gaussian - np.log(interval_mass((-L - mean) / std, (L - mean) / std))
    return np.where(s_next >= L, special.log_ndtr((mean - L) / std),
                    np.where(s_next <= -L, special.log_ndtr((-L - mean) / std), gaussian))


def grad_log_transition_density(s_next: np.ndarray, mean: np.ndarray,
                                params: HouseholdParams) -> np.ndarray:
    """``∂/∂m log p(s' | m)`` (multiply by ``∂m/∂x`` for the score in ``x``)::

        truncated:  (s' − m)/ς² + (φ(b) − φ(a)) / (ς Z),   a, b = (∓L − m)/ς,  Z = Φ(b) − Φ(a)
        censored:   (s' − m)/ς² on (−L, L);  φ(z)/(ς Φ(z)) at s' = L, z = (m − L)/ς;
                    −φ(z)/(ς Φ(z)) at s' = −L, z = (−L − m)/ς
    """
    s_next, mean = np.asarray(s_next, dtype=np.float64), np.asarray(mean, dtype=np.float64)
    L, std = params.asset_bound, params.noise_std
    interior = (s_next - mean) / std ** 2
    if params.noise == "truncated":
        a, b = (-L - mean) / std, (L - mean) / std
        return interior + (_pdf(b) - _pdf(a)) / (std * interval_mass(a, b))
    z_up, z_down = (mean - L) / std, (-L - mean) / std
    # φ(z)/Φ(z) via logs: stable when the atom is very unlikely (z ≪ 0).
    hazard_up = np.exp(-0.5 * z_up ** 2 - _LOG_SQRT_2PI - special.log_ndtr(z_up))
    hazard_down = np.exp(-0.5 * z_down ** 2 - _LOG_SQRT_2PI - special.log_ndtr(z_down))
    return np.where(s_next >= L, hazard_up / std,
                    np.where(s_next <= -L, -hazard_down / std, interior))


def sample_initial_assets(u: np.ndarray, params: HouseholdParams) -> np.ndarray:
    """``s_0 = clip(s0_std Φ⁻¹(u), −L, L)`` from uniforms ``u``."""
    with np.errstate(divide="ignore"):
        return np.clip(params.s0_std * special.ndtri(u), -params.asset_bound, params.asset_bound)


# ---------------------------------------------------------------------------- asset grid
def uniform_asset_edges(n_cells: int, params: HouseholdParams) -> np.ndarray:
    """``n_cells + 1`` equally spaced cell edges covering ``[−L, L]``."""
    n_cells = check_int("asset_cells", n_cells, 2)
    return np.linspace(-params.asset_bound, params.asset_bound, n_cells + 1)


def cell_of(assets: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Index of the cell ``[e_k, e_{k+1})`` holding each asset level (the top cell is closed)."""
    k = np.searchsorted(edges, np.asarray(assets, dtype=np.float64), side="right") - 1
    return np.clip(k, 0, len(edges) - 2)


def cell_probabilities(mean: np.ndarray, edges: np.ndarray, params: HouseholdParams,
                       with_grad: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """``P(s' ∈ cell k | m)`` for every ``m`` in ``mean`` (any shape ``B``): ``(*B, K)``.

    Integrates the same law :func:`sample_next_assets` samples from over the cells (the censored
    atoms at ``±L`` fall into the outer cells), so a model built from it is exact for the
    discretised process "draw ``s'``, report its cell". With ``with_grad`` also returns
    ``∂P/∂m``::

        P_k = (Φ(β_k) − Φ(α_k)) / Z,   α_k, β_k = (e_k − m)/ς, (e_{k+1} − m)/ς
        ∂P_k/∂m = (φ(α_k) − φ(β_k)) / (ς Z) − P_k (φ(a) − φ(b)) / (ς Z)
    """
    mean = np.asarray(mean, dtype=np.float64)[..., None]
    std = params.noise_std
    lo_bound, hi_bound = noise_bounds(params)
    e = np.asarray(edges, dtype=np.float64).copy()
    e[0], e[-1] = lo_bound, hi_bound  # outer cells catch the rest of the law
    z = (e - mean) / std  # (*B, K + 1)
    # Φ and its survival function once per edge (cells share edges); a cell above the centre
    # subtracts survival values, which keeps relative precision far in the tails.
    cdf, sf = special.ndtr(z), special.ndtr(-z)
    Z = np.where(z[..., :1] > 0, sf[..., :1] - sf[..., -1:], cdf[..., -1:] - cdf[..., :1])
    P = np.where(z[..., :-1] > 0, sf[..., :-1] - sf[..., 1:], cdf[..., 1:] - cdf[..., :-1]) / Z
    if not with_grad:
        return P, None
    pdf = _pdf(z)
    dP = ((pdf[..., :-1] - pdf[..., 1:]) - P * (pdf[..., :1] - pdf[..., -1:])) / (std * Z)
    return P, dP


def initial_cell_probabilities(edges: np.ndarray, params: HouseholdParams) -> np.ndarray:
    """``P(s_0 ∈ cell k)`` for :func:`sample_initial_assets` (clipped normal), shape ``(K,)``."""
    z = np.asarray(edges, dtype=np.float64).copy() / params.s0_std
    z[0], z[-1] = -np.inf, np.inf
    return interval_mass(z[:-1], z[1:])
