"""Tax design: the problem's estimator terms, the tabular variant (exact hypergradient, model vs
Gymnasium env), the vectorised simulator, the registered envs and bad input."""

import pickle

import gymnasium as gym
import numpy as np
import pytest

import bilevel_envs
from bilevel_envs.budget import CountedSampler
from bilevel_envs.envs.four_rooms.problem import FourRoomsShaping
from bilevel_envs.envs.tax_design import model as hh
from bilevel_envs.envs.tax_design.envs import HouseholdEnv, default_follower
from bilevel_envs.envs.tax_design.followers import GridPolicy, GridSoftVI
from bilevel_envs.envs.tax_design.problem import TaxDesign, TaxDesignTabular
from bilevel_envs.envs.tax_design.simulator import HouseholdOracle
from bilevel_envs.exact import ExactSolver, exact_hypergradient
from bilevel_envs.followers import TabularPolicy
from bilevel_envs.hypergradient import leader_values
from bilevel_envs.oracles import GymOracle, TabularOracle, make_oracle
from bilevel_envs.rollouts import Rollouts
from bilevel_envs.tabular import TabularModel
from tests.conftest import check_env_strict
from tests.test_household import chi_square_p, moments_agree

VARIANTS = ("code", "paper")
SMALL = {"n_envs": 4, "n_rollout_steps": 30}


@pytest.fixture(scope="module", params=VARIANTS)
def tabular(request):
    return TaxDesignTabular(request.param)


def transitions(problem, rng, n=400):
    """A batch of plausible transitions (s, a, s') of ``problem``."""
    a = rng.integers(0, problem.follower_action_space.n, size=n)
    if problem.is_tabular:
        obs = rng.integers(0, problem.n_cells, size=n)
    else:
        obs = rng.uniform(-99, 99, size=(n, 1))
    x = problem.x_init
    next_obs = problem.sample_next_obs(x, obs, a, rng.random(n))
    return obs, a, next_obs


# ---------------------------------------------------------------------------- estimator terms
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("cls", [TaxDesign, TaxDesignTabular])
def test_per_transition_derivatives_match_finite_differences(cls, variant):
    problem = cls(variant)
    rng = np.random.default_rng(0)
    obs, a, next_obs = transitions(problem, rng)
    x = rng.uniform(0.05, 1.9, size=4)
    h = 1e-6

    def fd(value):
        cols = []
        for i in range(4):
            e = np.zeros(4)
            e[i] = h
            cols.append((value(x + e) - value(x - e)) / (2 * h))
        return np.stack(cols, axis=1)

    args = (obs, a, next_obs)
    np.testing.assert_allclose(problem.grad_follower_reward(x, 1, *args),
                               fd(lambda xx: problem.follower_reward(xx, 1, *args)),
                               rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(problem.grad_leader_reward(x, 1, *args),
                               fd(lambda xx: problem.leader_reward(xx, 1, *args)),
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(problem.grad_log_transition(x, 1, *args),
                               fd(lambda xx: log_transition(problem, xx, *args)),
                               rtol=1e-5, atol=1e-7)
    assert np.all(problem.grad_log_initial(x, 1, obs) == 0)
    w = rng.normal(size=a.size)
    for grad in (problem.grad_follower_reward, problem.grad_leader_reward,
                 problem.grad_log_transition):
        np.testing.assert_allclose(grad(x, 1, *args, weights=w), w @ grad(x, 1, *args),
                                   rtol=1e-10, atol=1e-10)


def log_transition(problem, x, obs, actions, next_obs):
    """``log P(s'|s, a)``: the density (continuous) or the model's cell probability (tabular)."""
    mean, _ = problem._mean(x, obs, actions)
    if problem.is_tabular:
        P, _ = hh.cell_probabilities(mean, problem.edges, problem.params)
        return np.log(P[np.arange(mean.size), next_obs])
    return hh.log_transition_density(problem.assets_of(next_obs), mean, problem.params)


def test_tabular_model_matches_the_per_transition_terms_and_its_derivative(tabular):
    rng = np.random.default_rng(1)
    x = rng.uniform(0.05, 1.9, size=4)
    model = tabular.tabular(x, 0)
    model.check()
    obs, a, next_obs = transitions(tabular, rng)
    args = (x, 0, obs, a, next_obs)
    np.testing.assert_allclose(model.r[obs, a], tabular.follower_reward(*args))
    np.testing.assert_allclose(model.r_leader[obs, a], tabular.leader_reward(*args))
    np.testing.assert_allclose(model.dr[obs, a], tabular.grad_follower_reward(*args))
    np.testing.assert_allclose(model.dr_leader[obs, a], tabular.grad_leader_reward(*args))
    score = model.dP[obs, a, next_obs] / model.P[obs, a, next_obs][:, None]
    np.testing.assert_allclose(tabular.grad_log_transition(*args), score, rtol=1e-8,
                               atol=1e-12)
    e = np.array([1e-6, 0, 0, 0])
    fd = (tabular.tabular(x + e, 0).P - tabular.tabular(x - e, 0).P) / 2e-6
    np.testing.assert_allclose(model.dP[..., 0], fd, atol=1e-8)
    assert not model.dP[..., 1:].any()  # VAT does not move assets


@pytest.mark.parametrize("variant", VARIANTS)
def test_exact_hypergradient_matches_finite_differences(variant):
    """Relative error < 1e-4 per coordinate at random x (the income-tax coordinate goes through
    ∂P, the VAT coordinates through ∂r and ∂r̄)."""
    problem = TaxDesignTabular(variant)
    solver = ExactSolver(problem, tol=1e-12)
    rng = np.random.default_rng(2)
    h = 1e-4
    for _ in range(3):
        x = rng.uniform(0.05, 0.95 * problem.params.tax_max, size=4)
        grad = exact_hypergradient(problem, x, tol=1e-12)
        fd = np.array([(solver.objective(x + h * e) - solver.objective(x - h * e)) / (2 * h)
                       for e in np.eye(4)])
        rel = np.abs(grad - fd) / np.maximum(np.abs(fd), 1e-8)
        assert rel.max() < 1e-4, (x, grad, fd)


def test_hypergradient_without_the_transition_term_is_wrong():
    """Negative control: dropping dP (the income tax's route through the transitions) changes
    the income-tax coordinate by far more than the tolerance above."""
    problem = TaxDesignTabular("code")
    solver = ExactSolver(problem)
    x = problem.x_init
    models, solution, _ = solver.solve(x)
    model = TabularModel.stack(models)
    full = leader_values(model, solution.pi, problem.lam).gradient
    partial = leader_values(model.with_updates(dP=None), solution.pi, problem.lam).gradient
    assert np.all(np.abs(full[:, 0] - partial[:, 0]) > 1e-2 * np.abs(full[:, 0]))
    np.testing.assert_allclose(full[:, 1:], partial[:, 1:])


# ---------------------------------------------------------------------------- env vs model
SAMPLED_PAIRS = [(20, 0), (20, 1249), (25, 612), (3, 1000), (40, 9 * 125), (38, 437)]
#: chi-square level per (s, a) pair: 0.001 for each test function (Bonferroni over its pairs)
P_MIN = 1e-3 / len(SAMPLED_PAIRS)


def next_cells(env, state, action, n, seed):
    env.reset(seed=seed)
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        env.reset(options={"state": state})
        out[i] = env.step(action)[0]
    return out


@pytest.mark.parametrize("variant", VARIANTS)
def test_gridded_env_matches_tabular_model(variant):
    """The tabular variant's Gymnasium env samples P (chi-square, p > 0.001 over all pairs) and
    its next asset level has the model's mean and variance (within 4 standard errors)."""
    problem = TaxDesignTabular(variant)
    x = np.array([0.6, 0.2, 0.9, 1.4])
    model = problem.tabular(x, 0)
    env = HouseholdEnv(x=x, context=0, problem=problem)
    for i, (s, a) in enumerate(SAMPLED_PAIRS):
        cells = next_cells(env, s, a, 4000, seed=i)
        assert chi_square_p(np.bincount(cells, minlength=problem.n_cells), model.P[s, a]) > P_MIN
        mean = model.P[s, a] @ problem.points
        var = model.P[s, a] @ (problem.points - mean) ** 2
        assert moments_agree(problem.points[cells], mean, var), (s, a)


@pytest.mark.parametrize("variant", VARIANTS)
def test_continuous_env_binned_matches_tabular_model(variant):
    """The continuous household started at a cell centre, its next assets binned into cells,
    has exactly the tabular variant's transition law."""
    tabular = TaxDesignTabular(variant)
    x = np.array([0.6, 0.2, 0.9, 1.4])
    model = tabular.tabular(x, 1)
    env = HouseholdEnv(x=x, context=1, variant=variant)
    for i, (s, a) in enumerate(SAMPLED_PAIRS[:4]):
        env.reset(seed=100 + i)
        assets = np.empty(4000)
        for j in range(assets.size):
            env.reset(options={"state": tabular.points[s]})
            assets[j] = env.step(a)[0][0]
        counts = np.bincount(tabular.obs_of(assets), minlength=tabular.n_cells)
        assert chi_square_p(counts, model.P[s, a]) > P_MIN


def test_chi_square_detects_a_wrong_income_tax():
    """Power check: samples at x_inc = 0.6 against the model at x_inc = 0.8 are rejected."""
    problem = TaxDesignTabular("code")
    env = HouseholdEnv(x=np.array([0.6, 0.3, 0.3, 0.3]), context=0, problem=problem)
    wrong = problem.tabular(np.array([0.8, 0.3, 0.3, 0.3]), 0)
    cells = next_cells(env, 20, 9 * 125, 4000, seed=0)  # 8 hours: the income tax matters
    assert chi_square_p(np.bincount(cells, minlength=problem.n_cells), wrong.P[20, 9 * 125]) \
        < P_MIN


@pytest.mark.parametrize("variant", VARIANTS)
def test_env_rewards_equal_model_rewards(variant):
    problem = TaxDesignTabular(variant)
    x = np.array([0.4, 0.1, 0.5, 1.0])
    model = problem.tabular(x, 1)
    env = HouseholdEnv(x=x, context=1, problem=problem)
    env.reset(seed=0)
    for s, a in SAMPLED_PAIRS:
        env.reset(options={"state": s})
        _, r, terminated, truncated, info = env.step(a)
        assert r == pytest.approx(model.r[s, a]) and not terminated and not truncated
        assert info["leader_reward"] == pytest.approx(model.r_leader[s, a])


# ---------------------------------------------------------------------------- the simulator
@pytest.fixture(scope="module")
def continuous():
    problem = TaxDesign("code")
    x = np.array([0.5, 0.3, 0.1, 0.8])
    policy = GridSoftVI().respond(problem, x, 0).policy
    return problem, x, policy


class UniformPolicy:
    n_actions = 1250

    def action_probs(self, obs):
        return np.full((len(obs), self.n_actions), 1.0 / self.n_actions)


@pytest.mark.parametrize("variant", VARIANTS)
def test_continuous_env_and_simulator_agree_on_one_step(variant):
    problem = TaxDesign(variant)
    x = np.array([0.5, 0.3, 0.1, 0.8])
    env = HouseholdEnv(x=x, context=0, problem=problem)
    oracle = HouseholdOracle(problem, x, 0, UniformPolicy())
    n = 4000
    for i, (s, a) in enumerate([(95.0, 9 * 125), (-97.0, 124), (3.0, 600)]):
        env.reset(seed=i)
        from_env = np.empty(n)
        for j in range(n):
            env.reset(options={"state": s})
            from_env[j] = env.step(a)[0][0]
        r = oracle.rollout(np.random.default_rng(i), n, 1, start_states=np.full(n, s),
                           start_actions=np.full(n, a))
        from_sim = r.next_obs[:, 0, 0]
        assert np.all(r.obs[:, 0, 0] == s) and np.all(r.actions == a)
        se_mean = np.sqrt((from_env.var() + from_sim.var()) / n)
        assert abs(from_env.mean() - from_sim.mean()) < 4 * se_mean
        fourth = [np.var((v - v.mean()) ** 2) for v in (from_env, from_sim)]
        assert abs(from_env.var() - from_sim.var()) < 4 * np.sqrt(sum(fourth) / n)


def test_continuous_env_and_simulator_agree_over_episodes(continuous):
    """Multi-step check under the same follower policy: assets after 20 steps and the leader's
    discounted return over 30 steps."""
    problem, x, policy = continuous
    env = problem.follower_env(x, 0)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    n, T = 300, 30
    env_assets, env_returns = np.empty(n), np.empty(n)
    for i in range(n):
        obs, _ = env.reset()
        ret = 0.0
        for t in range(T):
            obs, _, _, _, info = env.step(int(policy.sample(obs[None], rng)[0]))
            ret += 0.9 ** t * info["leader_reward"]
            if t == 19:
                env_assets[i] = obs[0]
        env_returns[i] = ret
    r = HouseholdOracle(problem, x, 0, policy).rollout(np.random.default_rng(1), 3000, T)
    sim_assets = r.next_obs[:, 19, 0]
    sim_returns = r.leader_rewards @ (0.9 ** np.arange(T))
    for a, b in ((env_assets, sim_assets), (env_returns, sim_returns)):
        se = np.sqrt(a.var() / a.size + b.var() / b.size)
        assert abs(a.mean() - b.mean()) < 4 * se


def test_simulator_is_seeded_and_handles_lengths_and_limits(continuous):
    problem, x, policy = continuous
    oracle = HouseholdOracle(problem, x, 1, policy)
    a = oracle.rollout(np.random.default_rng(7), 5, 450)
    b = oracle.rollout(np.random.default_rng(7), 5, 450)
    c = oracle.rollout(np.random.default_rng(8), 5, 450)
    for key, value in a.to_dict().items():
        np.testing.assert_array_equal(value, b.to_dict()[key])
    assert not np.array_equal(a.obs, c.obs)
    assert a.episode_step.max() == 199 and np.all(a.episode_step[a.truncated] == 199)
    assert a.truncated.sum() == 5 * 2 and not a.terminated.any()
    np.testing.assert_allclose(a.rewards, problem.follower_reward(x, 1, a.obs.reshape(-1, 1),
                                                                  a.actions.ravel(), None)
                               .reshape(5, 450))
    np.testing.assert_allclose(a.action_probs, np.take_along_axis(
        policy.action_probs(a.obs.reshape(-1, 1)), a.actions.reshape(-1, 1), 1).reshape(5, 450))
    r = oracle.rollout(np.random.default_rng(0), 3, 300, lengths=[10, 300, 250],
                       auto_reset=False, start_states=[5.0, np.nan, -2.0])
    assert r.mask.sum(1).tolist() == [10, 200, 200] and r.obs[0, 0, 0] == 5.0
    assert not r.ends[0].any() and r.truncated[1, 199]
    r = oracle.rollout(np.random.default_rng(0), 2, 300, time_limit=False)
    assert not r.truncated.any() and r.mask.all()
    with pytest.raises(ValueError, match=r"start_states entry must be one asset level in "
                                         r"\[-100, 100\]"):
        oracle.rollout(np.random.default_rng(0), 2, 5, start_states=[0.0, 250.0])


def test_simulator_entropy_with_and_without_the_policy_entropy_shortcut(continuous):
    problem, x, policy = continuous

    class Plain:  # a policy without .entropy(): the kernel computes it from the probabilities
        n_actions = policy.n_actions
        action_probs = staticmethod(policy.action_probs)

    a = HouseholdOracle(problem, x, 0, policy).rollout(np.random.default_rng(3), 4, 50)
    b = HouseholdOracle(problem, x, 0, Plain()).rollout(np.random.default_rng(3), 4, 50)
    np.testing.assert_array_equal(a.actions, b.actions)
    np.testing.assert_allclose(a.entropy, b.entropy, rtol=1e-10)


def test_make_oracle_prefers_the_native_simulator(continuous):
    problem, x, policy = continuous
    assert isinstance(make_oracle(problem, x, 0, policy), HouseholdOracle)
    assert isinstance(make_oracle(problem, x, 0, policy, backend="native"), HouseholdOracle)
    assert isinstance(make_oracle(problem, x, 0, policy, backend="gym"), GymOracle)
    tab = TaxDesignTabular()
    table = TabularPolicy(np.full((tab.n_cells, 1250), 1 / 1250))
    assert isinstance(make_oracle(tab, tab.x_init, 0, table), TabularOracle)
    four_rooms = FourRoomsShaping()
    with pytest.raises(ValueError, match="has no native oracle"):
        make_oracle(four_rooms, np.zeros(105), 0, TabularPolicy(np.full((104, 4), 0.25)),
                    backend="native")


def test_gym_oracle_and_native_simulator_agree_in_law(continuous):
    """The generic Gymnasium path (stepping follower_env) and the simulator give the same mean
    leader return over short episodes."""
    problem, x, policy = continuous
    gym_r = GymOracle(problem, x, 0, policy).rollout(np.random.default_rng(4), 100, 20)
    sim_r = HouseholdOracle(problem, x, 0, policy).rollout(np.random.default_rng(5), 1000, 20)
    returns = [r.leader_rewards @ 0.9 ** np.arange(20) for r in (gym_r, sim_r)]
    se = np.sqrt(sum(v.var() / v.size for v in returns))
    assert abs(returns[0].mean() - returns[1].mean()) < 4 * se


# ---------------------------------------------------------------------------- followers
def test_grid_follower_equals_soft_vi_on_the_tabular_variant():
    problem = TaxDesignTabular()
    x = np.array([0.3, 0.5, 0.2, 0.7])
    grid = GridSoftVI().respond(problem, x, 1).policy
    exact = bilevel_envs.make_follower("soft_vi").respond(problem, x, 1).policy
    states = np.arange(problem.n_cells)
    np.testing.assert_allclose(grid.action_probs(states), exact.action_probs(states), atol=1e-12)


def test_grid_policy_reads_continuous_assets_by_cell():
    problem = TaxDesign()
    policy = GridSoftVI(asset_cells=21).respond(problem, problem.x_init, 0).policy
    assert isinstance(policy, GridPolicy) and policy.table.shape == (21, 1250)
    edges = policy.grid.edges
    np.testing.assert_array_equal(policy.cells(np.array([[edges[3] + 0.01], [100.0]])), [3, 20])


def test_default_followers():
    """Seconds per step by default: the exact grid follower on continuous assets (soft DQN is
    opt-in); soft VI on the tabular variant."""
    assert default_follower(True) == "soft_vi"
    assert default_follower(False) == "grid_soft_vi"
    assert gym.make("bilevel/TaxDesign-v0").unwrapped.follower.name == "grid_soft_vi"


# ---------------------------------------------------------------------------- registered envs
@pytest.mark.parametrize("kwargs", [{}, {"variant": "paper"}, {"asset_cells": 41}])
def test_household_env_passes_gymnasium_and_sb3_checkers(kwargs):
    env = gym.make("bilevel/Household-v0", **kwargs)
    assert env.spec.max_episode_steps == 200
    check_env_strict(env.unwrapped)
    pytest.importorskip("stable_baselines3")
    from stable_baselines3.common.env_checker import check_env

    check_env(gym.make("bilevel/Household-v0", **kwargs).unwrapped, warn=True)


def test_household_env_episode_is_truncated_at_200_steps():
    env = gym.make("bilevel/Household-v0", x=np.full(4, 0.3), context=1)
    env.reset(seed=0)
    ends = [env.step(0)[2:4] for _ in range(200)]
    assert ends[-1] == (False, True) and not any(any(e) for e in ends[:-1])


def test_household_env_render():
    env = HouseholdEnv(render_mode="ansi")
    env.reset(seed=0)
    assert "assets" in env.render()
    env.step(5)
    assert "hours" in env.render() and "welfare" in env.render()


GRID = {"follower": "grid_soft_vi", "follower_kwargs": {"asset_cells": 21}}


@pytest.mark.parametrize("kwargs", [{"tabular": True, **SMALL}, {**GRID, **SMALL},
                                    {"variant": "paper", "tabular": True, **SMALL}])
def test_tax_design_leader_env_passes_checker(kwargs):
    env = gym.make("bilevel/TaxDesign-v0", **kwargs)
    check_env_strict(env.unwrapped)
    assert env.action_space.shape == (4,)


def test_leader_env_uses_the_simulator_and_is_seeded():
    def run(seed):
        env = gym.make("bilevel/TaxDesign-v0", **GRID, **SMALL)
        env.reset(seed=seed)
        out = [env.step(np.full(4, 0.3 + 0.1 * k)) for k in range(2)]
        oracle = env.unwrapped.last_step.followers[0].oracle
        assert isinstance(oracle, CountedSampler)  # the env charges what it samples
        assert isinstance(oracle.sampler, HouseholdOracle)
        return out

    a, b, c = run(3), run(3), run(4)
    for step_a, step_b in zip(a, b):
        assert step_a[1] == step_b[1]
        for key, value in step_a[4]["rollouts"].items():
            np.testing.assert_array_equal(value, step_b[4]["rollouts"][key])
    assert a[0][4]["rollouts"]["obs"].shape == (4, 30, 1)
    assert any(not np.array_equal(sa[4]["rollouts"]["obs"], sc[4]["rollouts"]["obs"])
               for sa, sc in zip(a, c))


def test_tabular_leader_env_monte_carlo_agrees_with_exact_objective():
    env = gym.make("bilevel/TaxDesign-v0", tabular=True, contexts="all", n_envs=300,
                   n_rollout_steps=200)
    env.reset(seed=0)
    x = np.array([0.5, 0.2, 0.4, 0.9])
    info = env.step(x)[4]
    problem = env.unwrapped.problem
    rollouts = Rollouts.from_dict(info["rollouts"])
    variances = []
    for c, w in zip((0, 1), problem.context_probs):
        chains = rollouts.context[:, 0] == c
        part = Rollouts.from_dict({k: v[chains] for k, v in info["rollouts"].items()})
        returns = part.episode_returns(problem.leader_gamma)
        variances.append(w ** 2 * returns.var() / returns.size)
    exact = ExactSolver(problem).objective(x)
    assert abs(info["objective_estimate"] - exact) < 4 * np.sqrt(sum(variances))
    env = gym.make("bilevel/TaxDesign-v0", tabular=True, contexts="all", n_rollout_steps=0,
                   objective="exact")
    env.reset(seed=0)
    assert env.step(x)[1] == pytest.approx(exact, rel=1e-9)


@pytest.mark.parametrize("make", [
    lambda: gym.make("bilevel/Household-v0", x=np.array([0.1, 0.2, 0.3, 0.4]), context=1),
    lambda: gym.make("bilevel/Household-v0", asset_cells=41),
    lambda: gym.make("bilevel/TaxDesign-v0", **GRID, **SMALL),
])
def test_envs_pickle_mid_episode_and_continue_identically(make):
    env = make()
    env.reset(seed=0)
    action = np.full(4, 0.4) if "TaxDesign" in env.spec.id else 17
    env.step(action)
    clone = pickle.loads(pickle.dumps(env))
    a, b = env.step(action), clone.step(action)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == b[1]


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("bad, pattern", [
    (np.array([0.3, 0.3, 2.5, 0.3]), r"x is outside x_space: x\[2\] = 2.5 is not in \[0, 2\]"),
    (np.array([-0.1, 0.3, 0.3, 0.3]), r"x\[0\] = -0.1 is not in \[0, 2\]"),
    (np.array([0.3, np.nan, 0.3, 0.3]), r"x must be finite; NaN or inf at flat indices \[1\]"),
    (np.full(3, 0.3), r"x must have shape \(4,\) \(entries in \[0, 2\]\); got shape \(3,\)"),
    ("high", r"x must be a real array of shape \(4,\)"),
])
def test_bad_taxes_are_rejected_with_the_allowed_range(bad, pattern):
    with pytest.raises(ValueError, match=pattern):
        TaxDesign().check_x(bad)
    with pytest.raises(ValueError, match=pattern):
        gym.make("bilevel/Household-v0", x=bad)


def test_paper_variant_allows_taxes_up_to_three():
    TaxDesign("paper").check_x(np.full(4, 2.9))
    with pytest.raises(ValueError, match=r"is not in \[0, 3\]"):
        TaxDesign("paper").check_x(np.full(4, 3.1))


def test_leader_env_step_rejects_bad_taxes():
    env = gym.make("bilevel/TaxDesign-v0", tabular=True, **SMALL)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action is outside x_space.*\[0, 2\]"):
        env.step(np.full(4, 2.5))
    with pytest.raises(ValueError, match=r"action must be finite"):
        env.step(np.array([0.3, np.nan, 0.3, 0.3]))


@pytest.mark.parametrize("make, error, pattern", [
    (lambda: gym.make("bilevel/Household-v0", variant="authors"), ValueError,
     r"variant must be one of \('code', 'paper'\); got 'authors'"),
    (lambda: gym.make("bilevel/TaxDesign-v0", variant="book"), ValueError,
     r"variant must be one of"),
    (lambda: gym.make("bilevel/Household-v0", context=2), KeyError,
     r"unknown context 2; expected an index in 0..1"),
    (lambda: gym.make("bilevel/Household-v0", context=(0.5, 0.5, 0.0)), KeyError,
     r"unknown context"),
    (lambda: gym.make("bilevel/Household-v0", asset_cells=1), ValueError,
     r"asset_cells must be an integer >= 2"),
    (lambda: gym.make("bilevel/Household-v0", wages=2.0), ValueError,
     r"unknown household parameter\(s\) \['wages'\]"),
    (lambda: gym.make("bilevel/TaxDesign-v0", asset_cells=21), ValueError,
     r"asset_cells needs tabular=True"),
    (lambda: gym.make("bilevel/TaxDesign-v0", lam=-0.2), ValueError,
     r"lam must be a finite number in \(0, inf\)"),
    (lambda: GridSoftVI(asset_cells=0), ValueError, r"asset_cells must be an integer >= 2"),
])
def test_bad_constructor_arguments(make, error, pattern):
    with pytest.raises(error, match=pattern):
        make()


@pytest.mark.parametrize("kwargs, state, pattern", [
    ({}, 150.0, r"options\['state'\] must be one asset level in \[-100, 100\]; got 150.0"),
    ({}, np.nan, r"options\['state'\] must be one asset level"),
    ({"asset_cells": 41}, 41, r"options\['state'\] \(an asset cell\) must be an integer in 0..40"),
])
def test_reset_state_option_is_validated(kwargs, state, pattern):
    env = gym.make("bilevel/Household-v0", **kwargs)
    with pytest.raises(ValueError, match=pattern):
        env.reset(options={"state": state})


def test_step_rejects_bad_actions():
    env = HouseholdEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action must be an integer in 0..1249"):
        env.step(1250)
