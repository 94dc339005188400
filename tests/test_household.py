"""Household economics (pure functions): variants, derivatives against finite differences, the
asset noise law (sampling, densities, cell integrals) and the action grid."""

import numpy as np
import pytest
from scipy import integrate, stats

from bilevel_envs.envs.tax_design import model as hh

VARIANTS = ("code", "paper")
L = 100.0


def central_difference(f, x, h):
    """``(f(x + h e_i) − f(x − h e_i)) / 2h`` for every coordinate ``i`` of ``x`` (last axis)."""
    x = np.asarray(x, dtype=np.float64)
    cols = []
    for i in range(x.shape[-1]):
        e = np.zeros_like(x)
        e[..., i] = h
        cols.append((f(x + e) - f(x - e)) / (2 * h))
    return np.stack(cols, axis=-1)


def random_batch(rng, params, n=500):
    hours, cons = hh.action_table(params)
    a = rng.integers(0, params.n_actions, size=n)
    s = rng.uniform(-60, 60, size=n)
    return s, hours[a], cons[a]


# ---------------------------------------------------------------------------- variants
def test_code_variant_is_the_authors_configuration():
    p = hh.make_params()
    assert p.variant == "code" and p.n_goods == 3 and p.n_actions == 1250
    np.testing.assert_allclose(p.hours_levels, 0.89 * np.arange(10))
    np.testing.assert_allclose(p.consumption_levels, [0, 1.25, 2.5, 3.75, 5])
    assert (p.tax_max, p.gamma, p.lam, p.revenue_offset, p.noise) == (2.0, 0.9, 0.2, 1.0,
                                                                      "truncated")
    assert p.alpha.tolist() == [[0.6, 0.3, 0.1], [0.1, 0.7, 0.2]]


def test_paper_variant_differs_exactly_where_the_paper_text_does():
    code, paper = hh.make_params("code"), hh.make_params("paper")
    np.testing.assert_allclose(paper.hours_levels, np.linspace(0, 8, 10))
    assert (paper.tax_max, paper.noise, paper.debt_utility) == (3.0, "censored", "zero")
    s = np.array([-30.0, -5.0, 0.0, 20.0])
    np.testing.assert_allclose(hh.asset_utility(s, code), [-30, -5, 0, np.log(2)])
    np.testing.assert_allclose(hh.asset_utility(s, paper), [0, 0, 0, np.log(2)])
    # Welfare: the code has log(1 + R), the text log(R) (+1e-6 so that R = 0 stays finite).
    args = (np.array([3.0]), np.array([2.0]), np.array([[1.25, 0.0, 2.5]]), 0.3,
            np.array([0.3, 0.5, 0.2]))
    revenue = hh.tax_revenue(*args[1:], code)[0]
    diff = hh.social_welfare(*args, code) - hh.social_welfare(*args, paper)
    np.testing.assert_allclose(diff, 5 * (np.log1p(revenue) - np.log(revenue + 1e-6)))
    same = {f: getattr(code, f) for f in ("prices", "preferences", "group_probs", "theta", "phi",
                                          "noise_std", "wage", "gamma", "lam", "episode_length",
                                          "consumption_levels", "tax_init", "s0_std")}
    assert same == {f: getattr(paper, f) for f in same}


@pytest.mark.parametrize("kwargs, pattern", [
    ({"variant": "authors"}, r"variant must be one of \('code', 'paper'\); got 'authors'"),
    ({"thetta": 0.2}, r"unknown household parameter\(s\) \['thetta'\]"),
    ({"prices": (1.0, -1.0, 1.0)}, r"prices must be positive"),
    ({"preferences": ((0.5, 0.5),)}, r"preferences must have one non-negative exponent per good"),
    ({"group_probs": (0.7, 0.7)}, r"group_probs must be 2 non-negative probabilities"),
    ({"noise_std": 0.0}, r"noise_std must be a finite number in \(0, inf\)"),
    ({"gamma": 1.0}, r"gamma must be a finite number in \[0, 1\)"),
    ({"tax_init": 2.5}, r"tax_init must be a finite number in \[0, 2\]"),
    ({"hours_levels": ()}, r"hours_levels must be a non-empty list"),
    ({"noise": "laplace"}, r"noise must be one of"),
])
def test_bad_parameters_are_rejected_by_name(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        hh.make_params(**kwargs)


def test_configurable_goods_groups_and_grids():
    p = hh.make_params(prices=(1.0, 2.0), preferences=((0.5, 0.5), (0.2, 0.8), (1.0, 0.0)),
                       group_probs=(0.2, 0.3, 0.5), hours_levels=(0, 4, 8),
                       consumption_levels=(0, 2.5, 5))
    assert (p.n_goods, p.n_groups, p.n_actions, p.n_params) == (2, 3, 27, 3)


# ---------------------------------------------------------------------------- actions
def test_flat_actions_round_trip_in_row_major_order():
    p = hh.make_params()
    hours, cons = hh.action_table(p)
    a = np.arange(p.n_actions)
    h_idx, c_idx = hh.unflatten_action(a, p)
    np.testing.assert_array_equal(hh.flatten_action(h_idx, c_idx, p), a)
    np.testing.assert_allclose(hours, np.asarray(p.hours_levels)[h_idx])
    np.testing.assert_allclose(cons, np.asarray(p.consumption_levels)[c_idx])
    assert hh.flatten_action(1, [0, 0, 1], p) == 125 + 1  # hours index is the slowest axis
    from bilevel_envs.envs.tax_design.problem import TaxDesign

    problem = TaxDesign()
    h, c = problem.unflatten_action(444)
    assert (int(h), c.tolist()) == (3, [2, 3, 4]) and problem.flatten_action(h, c) == 444
    assert problem.hours[444] == 3 * 0.89 and problem.consumption[444].tolist() == [2.5, 3.75, 5]


# ---------------------------------------------------------------------------- reward derivatives
@pytest.mark.parametrize("variant", VARIANTS)
def test_vat_derivative_of_utility_matches_finite_differences(variant):
    rng = np.random.default_rng(0)
    p = hh.make_params(variant)
    s, hours, cons = random_batch(rng, p)
    vat = rng.uniform(0.1, 1.8, size=3)
    alpha = p.alpha[rng.integers(0, 2, size=s.size)]  # one group per row

    def utility(v):
        return np.stack([hh.household_utility(s, hours, cons, vi, alpha, p) for vi in v], 0)

    fd = central_difference(lambda v: utility(v[None])[0], vat, 1e-6)
    grad = hh.grad_consumption_utility_vat(cons, vat, alpha, np.asarray(p.prices))
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-9)


def test_vat_derivative_is_zero_not_nan_when_a_consumption_is_zero():
    """Zero consumption of a good with α > 0: C ≡ 0 in y, so ∂C/∂y = 0 (the authors' code got
    NaN there and substituted −0.1, docs/reference.md §7.15)."""
    p = hh.make_params()
    cons = np.array([[0.0, 2.5, 5.0], [1.25, 0.0, 0.0]])
    grad = hh.grad_consumption_utility_vat(cons, np.full(3, 0.3), p.alpha[0], np.ones(3))
    assert np.all(np.isfinite(grad)) and np.all(grad == 0.0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_welfare_derivative_matches_finite_differences(variant):
    rng = np.random.default_rng(1)
    p = hh.make_params(variant)
    s, hours, cons = random_batch(rng, p)
    x = rng.uniform(0.1, 1.8, size=4)

    def welfare(xx):
        return hh.social_welfare(s, hours, cons, xx[0], xx[1:], p)

    fd = central_difference(welfare, x, 1e-6)
    grad = hh.grad_social_welfare(s, hours, cons, x[0], x[1:], p)
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------- transition law
MEANS = np.array([-100.0, -97.0, -40.0, 0.0, 3.0, 88.0, 96.5, 100.0])


@pytest.mark.parametrize("variant", VARIANTS)
def test_transition_mean_and_its_income_tax_derivative(variant):
    rng = np.random.default_rng(2)
    p = hh.make_params(variant)
    s, hours, cons = random_batch(rng, p)
    s = np.concatenate([s, [99.0, -99.5]])  # where the code variant's clip is active
    hours = np.concatenate([hours, [8.01, 0.0]])
    cons = np.concatenate([cons, [[0.0, 0.0, 0.0], [5.0, 5.0, 5.0]]])
    x_inc = 0.37
    mean, d_mean = hh.transition_mean(s, hours, cons, x_inc, p)
    raw = s + (1 - x_inc) * hours - cons.sum(1)
    np.testing.assert_allclose(mean, np.clip(raw, -L, L) if variant == "code" else raw)
    fd = (hh.transition_mean(s, hours, cons, x_inc + 1e-7, p)[0]
          - hh.transition_mean(s, hours, cons, x_inc - 1e-7, p)[0]) / 2e-7
    np.testing.assert_allclose(d_mean, fd, atol=1e-6)


@pytest.mark.parametrize("variant", VARIANTS)
def test_transition_density_is_normalised(variant):
    p = hh.make_params(variant)
    for m in MEANS:
        mass, _ = integrate.quad(
            lambda y: np.exp(hh.log_transition_density(np.array(y), np.array(m), p)), -L, L,
            points=[m] if -L < m < L else None, limit=200)
        if variant == "paper":  # + the atoms at ±L
            mass += sum(np.exp(hh.log_transition_density(np.array(b), np.array(m), p))
                        for b in (-L, L))
        assert mass == pytest.approx(1.0, abs=1e-8), m


@pytest.mark.parametrize("variant", VARIANTS)
def test_score_of_the_transition_density_matches_finite_differences(variant):
    """``∂m log p(s'|m)``, normalising constant included (code) and atoms included (paper)."""
    p = hh.make_params(variant)
    rng = np.random.default_rng(3)
    m = np.repeat(MEANS[1:-1], 20)  # the clipped centres ±100 have ∂m/∂x = 0 anyway
    s_next = np.clip(m + rng.normal(0, 8, size=m.size), -L, L)
    if variant == "paper":
        s_next[:3], s_next[3:6] = L, -L  # atoms
    fd = (hh.log_transition_density(s_next, m + 1e-6, p)
          - hh.log_transition_density(s_next, m - 1e-6, p)) / 2e-6
    np.testing.assert_allclose(hh.grad_log_transition_density(s_next, m, p), fd, rtol=1e-6,
                               atol=1e-8)


def test_score_without_the_normaliser_fails_near_the_bounds():
    """Negative control: the (almost) untruncated score the authors computed (§7.16) is off by
    the normaliser term, far more than the finite-difference tolerance above."""
    p = hh.make_params("code")
    m, s_next = np.array([97.0]), np.array([95.0])
    naive = (s_next - m) / p.noise_std ** 2
    exact = hh.grad_log_transition_density(s_next, m, p)
    assert abs(exact - naive)[0] > 0.05


def moments_agree(samples, mean, var, n_se=4.0):
    """Sample mean and variance within ``n_se`` standard errors (from the sample) of the truth."""
    n = samples.size
    se_mean = samples.std() / np.sqrt(n)
    se_var = np.sqrt(np.var((samples - samples.mean()) ** 2) / n)
    return (abs(samples.mean() - mean) < n_se * se_mean
            and abs(samples.var() - var) < n_se * se_var)


@pytest.mark.parametrize("m", [-100.0, -98.0, 0.0, 95.0, 100.0])
def test_truncated_sampler_matches_scipy_truncnorm(m):
    p = hh.make_params("code")
    u = np.random.default_rng(4).random(40_000)
    samples = hh.sample_next_assets(np.full(u.size, m), u, p)
    law = stats.truncnorm((-L - m) / 5, (L - m) / 5, loc=m, scale=5)
    assert samples.min() >= -L and samples.max() <= L
    assert moments_agree(samples, law.mean(), law.var())
    assert stats.kstest(samples, law.cdf).pvalue > 1e-3
    if abs(m) > 90:  # negative control: the untruncated normal is rejected near the bounds
        assert stats.kstest(samples, stats.norm(m, 5).cdf).pvalue < 1e-3


@pytest.mark.parametrize("m", [-98.0, 0.0, 99.0])
def test_censored_sampler_has_the_paper_law(m):
    p = hh.make_params("paper")
    u = np.random.default_rng(5).random(40_000)
    samples = hh.sample_next_assets(np.full(u.size, m), u, p)
    at_top, at_bottom = np.mean(samples == L), np.mean(samples == -L)
    p_top, p_bottom = stats.norm.sf(L, m, 5), stats.norm.cdf(-L, m, 5)
    for observed, expected in ((at_top, p_top), (at_bottom, p_bottom)):
        se = np.sqrt(max(expected * (1 - expected), 1e-12) / u.size)
        assert abs(observed - expected) < 4 * se + 1e-12
    interior = samples[np.abs(samples) < L]
    law = stats.truncnorm((-L - m) / 5, (L - m) / 5, loc=m, scale=5)
    assert stats.kstest(interior, law.cdf).pvalue > 1e-3


# ---------------------------------------------------------------------------- cell integrals
@pytest.mark.parametrize("variant", VARIANTS)
def test_cell_probabilities_and_their_derivative(variant):
    p = hh.make_params(variant)
    edges = hh.uniform_asset_edges(41, p)
    P, dP = hh.cell_probabilities(MEANS, edges, p, with_grad=True)
    np.testing.assert_allclose(P.sum(-1), 1.0, atol=1e-12)
    lo, hi = hh.noise_bounds(p)
    for i, m in enumerate(MEANS):
        law = stats.truncnorm((lo - m) / 5, (hi - m) / 5, loc=m, scale=5)
        cdf = law.cdf(np.concatenate([[lo], edges[1:-1], [hi]]))
        np.testing.assert_allclose(P[i], np.diff(cdf), atol=1e-12)
    fd = (hh.cell_probabilities(MEANS + 1e-6, edges, p)[0]
          - hh.cell_probabilities(MEANS - 1e-6, edges, p)[0]) / 2e-6
    np.testing.assert_allclose(dP, fd, atol=1e-8)


@pytest.mark.parametrize("variant", VARIANTS)
def test_cells_of_sampled_assets_follow_the_cell_probabilities(variant):
    """Sampling ``s'`` and reporting its cell has exactly the law the tabular model integrates."""
    p = hh.make_params(variant)
    edges = hh.uniform_asset_edges(21, p)
    u = np.random.default_rng(6).random(50_000)
    for m in (-99.0, 7.0, 100.0):
        cells = hh.cell_of(hh.sample_next_assets(np.full(u.size, m), u, p), edges)
        probs = hh.cell_probabilities(np.array(m), edges, p)[0]
        assert chi_square_p(np.bincount(cells, minlength=21), probs) > 1e-3


def test_initial_cell_probabilities_match_sampled_starts():
    p = hh.make_params()
    edges = hh.uniform_asset_edges(41, p)
    u = np.random.default_rng(7).random(50_000)
    starts = hh.sample_initial_assets(u, p)
    assert moments_agree(starts, 0.0, 2.0)
    counts = np.bincount(hh.cell_of(starts, edges), minlength=41)
    assert chi_square_p(counts, hh.initial_cell_probabilities(edges, p)) > 1e-3


def chi_square_p(counts, probs, min_expected=5.0):
    """Chi-square p-value of ``counts`` against ``probs``; cells with expected counts below
    ``min_expected`` are pooled into one bin (the test is unreliable for tiny expectations)."""
    counts, probs = np.asarray(counts), np.asarray(probs)
    expected = counts.sum() * probs
    assert counts[probs == 0].sum() == 0, "a sample fell where the model puts probability 0"
    big = expected >= min_expected
    obs = np.append(counts[big], counts[~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    keep = exp > 0
    exp = exp[keep] * obs[keep].sum() / exp[keep].sum()  # remove round-off in the totals
    return stats.chisquare(obs[keep], exp).pvalue


def test_multidiscrete_action_space_is_the_same_economy():
    """``action_space="multidiscrete"``: the index vector steps exactly as its flat index."""
    import gymnasium as gym
    from gymnasium import spaces

    import bilevel_envs  # noqa: F401  (registers the ids)

    flat_env = gym.make("bilevel/Household-v0", context=1)
    multi_env = gym.make("bilevel/Household-v0", context=1, action_space="multidiscrete")
    assert multi_env.action_space == spaces.MultiDiscrete([10, 5, 5, 5])
    problem = flat_env.unwrapped.problem
    flat_env.reset(seed=3)
    multi_env.reset(seed=3)
    rng = np.random.default_rng(0)
    for _ in range(20):
        index = np.array([rng.integers(10), *rng.integers(5, size=3)])
        flat = int(problem.flatten_action(index[0], index[1:]))
        a = flat_env.step(flat)
        b = multi_env.step(index)
        assert a[0] == pytest.approx(b[0]) and a[1] == b[1] and b[4]["action"] == flat
    with pytest.raises(ValueError, match=r"indices below \[10, 5, 5, 5\]"):
        multi_env.step(np.array([10, 0, 0, 0]))
    with pytest.raises(ValueError, match="action_space must be one of"):
        gym.make("bilevel/Household-v0", action_space="box")
