"""Contract design: instances, closed forms of the project, exact gradients, env vs model,
checkers."""

import gymnasium as gym
import numpy as np
import pytest
from scipy.optimize import minimize_scalar

import bilevel_envs  # noqa: F401  (registers the ids)
from bilevel_envs.envs.contract_design.closed_forms import (
    cheapest_effort_bonus,
    project_hard_optimum,
    project_objective_closed_form,
    project_optimum,
)
from bilevel_envs.envs.contract_design.envs import ContractAgentEnv
from bilevel_envs.envs.contract_design.model import (
    HIGH,
    INSTANCES,
    LOW,
    PROJECT_EFFORT_COSTS,
    PROJECT_EFFORT_PROBS,
    RIGHT,
    SUCCESS,
    TWO_TYPES,
    WORK,
    tree_spec,
)
from bilevel_envs.envs.contract_design.problem import ContractDesign
from bilevel_envs.exact import ExactSolver, exact_hypergradient, exact_objective
from bilevel_envs.rollouts import Rollouts
from bilevel_envs.tabular import evaluate_policy
from bilevel_envs.testing import chi_square_p
from tests.conftest import check_env_strict, z_score

SMALL = {"n_envs": 2, "n_rollout_steps": 50}
P_LOW, P_HIGH = PROJECT_EFFORT_PROBS
COST = PROJECT_EFFORT_COSTS[1]
BONUS = COST / (P_HIGH - P_LOW)  # c/(p_H − p_L) = 0.5


def success_contract(problem, u):
    x = np.zeros(problem.n_params)
    x[problem.spec.payment_index[WORK, SUCCESS]] = u
    return x


# ---------------------------------------------------------------------------- instances
@pytest.mark.parametrize("instance, n_states, n_actions, n_payments", [
    ("project", 3, 2, 4), ("tree", 15, 2, 14), ("grid", 12, 5, 43),
])
def test_instance_sizes_and_payment_index(instance, n_states, n_actions, n_payments):
    spec = ContractDesign(instance).spec
    assert (spec.n_states, spec.n_actions, spec.n_payments) == (n_states, n_actions, n_payments)
    s, t = spec.payments.T
    np.testing.assert_array_equal(spec.payment_index[s, t], np.arange(n_payments))
    assert (spec.payment_index >= 0).sum() == n_payments
    # Payable ⇔ some action causes the transition.
    np.testing.assert_array_equal(spec.payment_index >= 0, spec.P.max(axis=1) > 0)
    rows = spec.P.sum(-1)
    assert np.all(np.isclose(rows, 1) | (rows == 0))


def test_tree_depth_and_seed():
    a, b = tree_spec(depth=4, seed=1), tree_spec(depth=4, seed=1)
    c = tree_spec(depth=4, seed=2)
    assert a.n_states == 31 and a.n_payments == 30 and a.terminal.sum() == 16
    np.testing.assert_array_equal(a.revenue, b.revenue)
    assert not np.array_equal(a.revenue, c.revenue)
    np.testing.assert_allclose(a.P[0, HIGH, [1, 2]], [0.9, 0.1])
    np.testing.assert_allclose(a.P[0, LOW, [1, 2]], [0.1, 0.9])


# ---------------------------------------------------------------------------- project: closed forms
@pytest.mark.parametrize("lam", [0.3, 0.05, 0.01])
@pytest.mark.parametrize("types", [(1.0,), TWO_TYPES])
def test_exact_objective_equals_project_closed_form(lam, types):
    problem = ContractDesign("project", lam=lam, cost_scales=types, type_probs=None)
    rng = np.random.default_rng(int(100 * lam))
    solver = ExactSolver(problem, tol=1e-13)
    for _ in range(5):
        x = rng.uniform(0, 1.5, size=4)
        u, v = x[0] + problem.gamma * x[2], x[1] + problem.gamma * x[3]
        assert solver.objective(x) == pytest.approx(
            project_objective_closed_form(problem, u, v), rel=1e-10, abs=1e-12)


def hard_best_response(model):
    """Unregularised policy iteration; greedy ties broken towards the higher action."""
    pi = np.eye(model.n_actions)[np.zeros(model.n_states, dtype=int)]
    for _ in range(50):
        v = evaluate_policy(model, pi)
        q = model.r + model.gamma * np.einsum("sap,p->sa", model.P, v)
        best = q >= q.max(axis=1, keepdims=True) - 1e-12
        greedy = np.eye(model.n_actions)[model.n_actions - 1 - np.argmax(best[:, ::-1], axis=1)]
        if np.array_equal(greedy, pi):
            return q, pi
        pi = greedy
    raise AssertionError("policy iteration did not converge")


def hard_objective(problem, x):
    model = problem.tabular(x, 0)
    _, pi = hard_best_response(model)
    return float(model.mu @ evaluate_policy(model, pi, model.r_leader, model.leader_gamma)), pi


def test_hard_best_response_cheapest_effort_contract_is_c_over_dp():
    problem = ContractDesign("project")
    assert cheapest_effort_bonus(P_LOW, P_HIGH, COST) == pytest.approx(0.5)
    # The incentive constraint binds exactly at c/(p_H − p_L): effort just above, none below.
    value, pi = hard_objective(problem, success_contract(problem, BONUS * (1 + 1e-9)))
    assert pi[WORK, HIGH] == 1
    assert hard_objective(problem, success_contract(problem, BONUS * (1 - 1e-6)))[1][
        WORK, HIGH] == 0
    # Its value is the closed form p_H (R − c/Δp)/(1 − γ²), the hard optimum.
    u_star, j_star = project_hard_optimum(problem)
    assert u_star == pytest.approx(BONUS) and value == pytest.approx(j_star, rel=1e-8)
    assert j_star == pytest.approx(P_HIGH * (2.0 - BONUS) / (1 - 0.9 ** 2))
    # No contract that induces effort is cheaper (random contracts over all four payments).
    rng = np.random.default_rng(0)
    induced = 0
    for x in rng.uniform(0, 1.2, size=(300, 4)):
        v, pi = hard_objective(problem, x)
        if pi[WORK, HIGH] == 1:
            induced += 1
            assert v <= j_star + 1e-9
    assert induced > 50


def test_hard_optimum_with_two_types_pays_the_lazy_type_bonus():
    problem = ContractDesign("project", cost_scales=TWO_TYPES)
    u, j = project_hard_optimum(problem)
    # Inducing both (bonus 0.75) beats inducing only the diligent type (bonus 0.5).
    both = P_HIGH * (2 - 0.75) / 0.19
    only_first = 0.5 * (P_HIGH + P_LOW) * (2 - 0.5) / 0.19
    assert both > only_first
    assert u == pytest.approx(0.75) and j == pytest.approx(both)


@pytest.mark.parametrize("lam", [0.1, 0.01])
@pytest.mark.parametrize("types", [(1.0,), TWO_TYPES])
def test_project_optimum_is_a_kkt_point_and_matches_the_closed_form(lam, types):
    problem = ContractDesign("project", lam=lam, cost_scales=types)
    opt = project_optimum(problem)
    closed = minimize_scalar(lambda u: -project_objective_closed_form(problem, u),
                             bounds=(opt.success_pay - 0.05, opt.success_pay + 0.05),
                             method="bounded", options={"xatol": 1e-12})
    assert opt.success_pay == pytest.approx(closed.x, abs=1e-6)
    assert opt.objective == pytest.approx(-closed.fun, rel=1e-12)
    # KKT over all of X = [0, 5]^4: zero slope along both success payments, negative slopes
    # at the bound 0 of both failure payments (the solver's accuracy limits the zero).
    g = exact_hypergradient(problem, opt.x, tol=1e-13)
    scale = np.abs(g).max()
    assert abs(g[0]) < 1e-6 * scale and abs(g[2]) < 1e-6 * scale
    assert g[1] < -0.1 * scale and g[3] < -0.1 * scale
    # And it is a maximum: nearby contracts, also ones paying on failure, do worse.
    rng = np.random.default_rng(1)
    solver = ExactSolver(problem)
    for step in rng.normal(0, 0.02, size=(20, 4)):
        x = np.clip(opt.x + step, 0, None)
        assert solver.objective(x) <= opt.objective + 1e-10


@pytest.mark.parametrize("types", [(1.0,), TWO_TYPES])
def test_soft_optimum_approaches_the_hard_one_as_lam_vanishes(types):
    """u*(λ) − k and J_hard − J*(λ) vanish like λ log(1/λ), as the first-order condition predicts:
    ``u* − k ≈ (λ/Δp) log(Δp² (R − k)/(λ p_H))`` and
    ``J_hard − J* ≈ p_H (u* − k + λ/Δp)/(1 − γ²)``."""
    problem = ContractDesign("project", cost_scales=types)
    k, j_hard = project_hard_optimum(problem)
    dp, R, w = P_HIGH - P_LOW, 2.0, 1 - 0.9 ** 2
    gaps = []
    for lam in (0.01, 0.003, 0.001):
        opt = project_optimum(ContractDesign("project", lam=lam, cost_scales=types))
        gap_u, gap_j = opt.success_pay - k, j_hard - opt.objective
        if len(types) == 1:  # the asymptotics of one type
            predicted_u = lam / dp * np.log(dp ** 2 * (R - k) / (lam * P_HIGH))
            assert gap_u == pytest.approx(predicted_u, rel=0.1)
            assert gap_j == pytest.approx(P_HIGH * (gap_u + lam / dp) / w, rel=0.1)
        gaps.append((gap_u, gap_j))
    gaps = np.array(gaps)
    assert np.all(gaps > 0) and np.all(np.diff(gaps, axis=0) < 0)
    assert gaps[-1, 0] < 0.03 and gaps[-1, 1] < 0.01 * j_hard


# ---------------------------------------------------------------------------- exact gradients
@pytest.mark.parametrize("instance, kwargs", [
    ("project", {}), ("tree", {"depth": 3, "seed": 4}), ("grid", {}),
])
def test_hypergradient_matches_central_finite_differences(instance, kwargs):
    problem = ContractDesign(instance, lam=0.1, cost_scales=TWO_TYPES,
                                type_probs=(0.3, 0.7), **kwargs)
    solver = ExactSolver(problem, tol=1e-13)
    rng = np.random.default_rng(7)
    h = 1e-5
    for _ in range(2):
        x = rng.uniform(0.05, 1.0, size=problem.n_params)
        grad = exact_hypergradient(problem, x, tol=1e-13)
        fd = np.array([(solver.objective(x + h * e) - solver.objective(x - h * e)) / (2 * h)
                       for e in np.eye(problem.n_params)])
        rel = np.linalg.norm(grad - fd) / np.linalg.norm(fd)
        assert rel < 1e-4, f"relative error {rel:.2e} on {instance}"


def test_finite_difference_check_detects_a_wrong_derivative():
    """Power check: dropping the transition probability from ∂r (∂x r = 1 on every action) fails."""
    problem = ContractDesign("project", lam=0.1)
    x = np.array([0.6, 0.1, 0.2, 0.05])
    model = problem.tabular(x, 0)
    wrong = model.with_updates(dr=(problem._jac > 0).astype(float),
                               dr_leader=-(problem._jac > 0).astype(float))
    from bilevel_envs.hypergradient import leader_values
    from bilevel_envs.tabular import soft_policy_iteration

    pi = soft_policy_iteration(model, problem.lam, tol=1e-13).pi
    g_wrong = leader_values(wrong, pi, problem.lam).gradient
    g = exact_hypergradient(problem, x, tol=1e-13)
    assert np.linalg.norm(g_wrong - g) / np.linalg.norm(g) > 1e-2


# ---------------------------------------------------------------------------- model vs env
def _counts(env, state, action, n, n_states, seed):
    counts = np.zeros(n_states, dtype=np.int64)
    env.reset(seed=seed)
    for _ in range(n):
        env.reset(options={"state": state})
        counts[env.step(action)[0]] += 1
    return counts


SAMPLED = {"project": [(0, 0), (0, 1), (1, 0), (2, 1)],
           "tree": [(0, 0), (0, 1), (2, 1), (6, 0)],
           "grid": [(0, 2), (2, 3), (6, 4), (5, 0), (10, 2)]}


@pytest.mark.parametrize("instance", INSTANCES)
def test_env_transitions_match_tabular_model(instance):
    env = ContractAgentEnv(instance=instance)
    P = ContractDesign(instance).spec.P
    for i, (s, a) in enumerate(SAMPLED[instance]):
        counts = _counts(env, s, a, 4000, P.shape[0], seed=10 + i)
        assert chi_square_p(counts, P[s, a]) > 0.001, (s, a)


def test_chi_square_check_detects_a_wrong_move_probability():
    env = ContractAgentEnv(instance="grid", move_prob=0.8)
    wrong = ContractDesign("grid", move_prob=0.7).spec.P
    counts = _counts(env, 0, RIGHT, 4000, wrong.shape[0], seed=0)
    assert chi_square_p(counts, wrong[0, RIGHT]) < 0.001


@pytest.mark.parametrize("instance", INSTANCES)
def test_env_and_per_transition_rewards_match_the_model(instance):
    problem = ContractDesign(instance, cost_scales=TWO_TYPES)
    spec = problem.spec
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 2, size=problem.n_params)
    S, A = spec.n_states, spec.n_actions
    s, a, t = (g.ravel() for g in np.meshgrid(np.arange(S), np.arange(A), np.arange(S),
                                                indexing="ij"))
    prob = spec.P[s, a, t]
    for c in (0, 1):
        model = problem.tabular(x, c)
        args = (x, c, s, a, t)
        for fn, table in ((problem.follower_reward, model.r),
                          (problem.leader_reward, model.r_leader)):
            expected = np.bincount(s * A + a, weights=prob * fn(*args), minlength=S * A)
            np.testing.assert_allclose(expected.reshape(S, A), table, atol=1e-12)
        for fn, table in ((problem.grad_follower_reward, model.dr),
                          (problem.grad_leader_reward, model.dr_leader)):
            grads = fn(*args)
            expected = np.stack([np.bincount(s * A + a, weights=prob * grads[:, k],
                                             minlength=S * A) for k in range(problem.n_params)],
                                axis=-1).reshape(S, A, -1)
            np.testing.assert_allclose(expected, table, atol=1e-12)
            w = rng.normal(size=s.size)
            np.testing.assert_allclose(fn(*args, weights=w), w @ grads, atol=1e-12)
        # The Gymnasium env pays exactly the per-transition rewards.
        env = ContractAgentEnv(x=x, context=c, instance=instance, cost_scales=TWO_TYPES)
        env.reset(seed=c)
        for state in range(S):
            for action in range(A):
                env.reset(options={"state": state})
                nxt, r, terminated, _, info = env.step(action)
                nxt_model = state if terminated else nxt
                one = (x, c, np.array([state]), np.array([action]), np.array([nxt_model]))
                assert r == pytest.approx(problem.follower_reward(*one)[0], abs=1e-12)
                assert info["leader_reward"] == pytest.approx(problem.leader_reward(*one)[0],
                                                              abs=1e-12)
                assert terminated == bool(spec.terminal[state])


def test_leader_env_monte_carlo_objective_agrees_with_exact():
    env = gym.make("bilevel/ContractDesign-v0", instance="tree", lam=0.1,
                   cost_scales=TWO_TYPES, contexts="all", n_envs=20, n_rollout_steps=1000)
    env.reset(seed=0)
    problem = env.unwrapped.problem
    x = np.random.default_rng(0).uniform(0, 1, size=problem.n_params)
    _, reward, _, _, info = env.step(x)
    rollouts = info["rollouts"]
    variances = []
    for c in (0, 1):
        part = Rollouts.from_dict({k: v[rollouts["context"][:, 0] == c]
                                   for k, v in rollouts.items()})
        returns = part.episode_returns(problem.leader_gamma)
        variances.append(returns.var() / returns.size)
    se = 0.5 * np.sqrt(sum(variances))
    assert z_score(reward, exact_objective(problem, x), se) < 4


# ---------------------------------------------------------------------------- gymnasium API
@pytest.mark.parametrize("instance", INSTANCES)
def test_follower_env_passes_checkers(instance):
    check_env_strict(gym.make("bilevel/ContractAgent-v0", instance=instance).unwrapped)
    pytest.importorskip("stable_baselines3")
    from stable_baselines3.common.env_checker import check_env

    check_env(gym.make("bilevel/ContractAgent-v0", instance=instance, x=None, context=0,
                       cost_scales=TWO_TYPES).unwrapped, warn=True)


@pytest.mark.parametrize("instance", INSTANCES)
def test_leader_env_passes_checker(instance):
    check_env_strict(gym.make("bilevel/ContractDesign-v0", instance=instance, **SMALL).unwrapped)


def test_registered_follower_env_has_time_limit_and_project_never_terminates():
    env = gym.make("bilevel/ContractAgent-v0", x=np.full(4, 0.5))
    env.reset(seed=0)
    for t in range(200):
        _, _, terminated, truncated, _ = env.step(t % 2)
        assert not terminated and truncated == (t == 199)


def test_tree_episode_lasts_depth_plus_one_steps():
    env = ContractAgentEnv(instance="tree", depth=5, seed=3)
    env.reset(seed=0)
    ends = [env.step(1)[2] for _ in range(6)]
    assert ends == [False] * 5 + [True]


def test_render_ansi():
    env = ContractAgentEnv(instance="grid", render_mode="ansi")
    env.reset(seed=0)
    assert env.render().splitlines()[0].startswith("A")
    env = ContractAgentEnv(render_mode="ansi")
    env.reset(seed=0)
    assert "work" in env.render()


def _episode(env, seed, steps=30):
    env.reset(seed=seed)
    return [env.step(t % env.action_space.n) for t in range(steps)]


def test_follower_env_seeded_determinism():
    a = _episode(ContractAgentEnv(instance="grid"), 5)
    b = _episode(ContractAgentEnv(instance="grid"), 5)
    c = _episode(ContractAgentEnv(instance="grid"), 6)
    assert a == b and a != c


def test_leader_env_seeded_determinism():
    def run(seed):
        env = gym.make("bilevel/ContractDesign-v0", instance="grid", **SMALL)
        env.reset(seed=seed)
        xs = np.random.default_rng(0).uniform(0, 1, size=(2, 43))
        return [env.step(x) for x in xs]

    a, b, c = run(1), run(1), run(2)
    for sa, sb in zip(a, b):
        assert sa[1] == sb[1]
        for key, value in sa[4]["rollouts"].items():
            np.testing.assert_array_equal(value, sb[4]["rollouts"][key])
    assert any(not np.array_equal(sa[4]["rollouts"]["obs"], sc[4]["rollouts"]["obs"])
               for sa, sc in zip(a, c))


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("bad, pattern", [
    (np.full(4, -0.1), r"action is outside x_space: action\[0\] = -0.1 is not in \[0, 5\]"),
    (np.full(4, 5.5), r"not in \[0, 5\]"),
    (np.full(4, np.nan), r"action must be finite"),
    (np.zeros(5), r"action must have shape \(4,\) \(entries in \[0, 5\]\)"),
])
def test_leader_env_rejects_bad_x(bad, pattern):
    env = gym.make("bilevel/ContractDesign-v0", **SMALL)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=pattern):
        env.step(bad)


@pytest.mark.parametrize("kwargs, error, pattern", [
    ({"instance": "auction"}, ValueError, r"instance must be one of \['project', 'tree', 'grid'\]"),
    ({"instance": "project", "depth": 3}, ValueError,
     r"\['depth'\] do not apply to instance='project'; its arguments are"),
    ({"instance": "tree", "depth": 0}, ValueError, r"depth must be an integer in 1..8"),
    ({"instance": "grid", "move_prob": 0.0}, ValueError, r"move_prob must be a finite"),
    ({"effort_probs": (0.2, 1.2)}, ValueError, r"effort_probs must lie in \[0, 1\]"),
    ({"effort_costs": (0.0,)}, ValueError, r"effort_probs and effort_costs must be"),
    ({"cost_scales": (1.0, -1.0)}, ValueError, r"cost_scales \(one per agent type\) must be a "
                                               r"finite array with entries > 0"),
    ({"cost_scales": (1.0, 2.0), "type_probs": (0.5,)}, ValueError,
     r"type_probs must be a finite array of shape \(2,\)"),
    ({"x_max": 0.0}, ValueError, r"x_max must be a finite number in \(0, inf\)"),
    ({"lam": 0.0}, ValueError, r"lam must be a finite number in \(0, inf\)"),
    ({"gamma": 1.0}, ValueError, r"gamma must be a finite number in \[0, 1\)"),
])
def test_problem_and_leader_env_reject_bad_arguments(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        ContractDesign(**kwargs)
    with pytest.raises(error, match=pattern):
        gym.make("bilevel/ContractDesign-v0", **kwargs, **SMALL)


@pytest.mark.parametrize("kwargs, error, pattern", [
    ({"x": np.full(4, 6.0)}, ValueError, r"x is outside x_space: x\[0\] = 6 is not in \[0, 5\]"),
    ({"x": np.zeros(3)}, ValueError, r"x must have shape \(4,\)"),
    ({"context": 1}, KeyError, r"unknown context 1; expected an index in 0..0 or one of"),
    ({"context": "type7", "cost_scales": TWO_TYPES}, KeyError, r"unknown context 'type7'"),
])
def test_follower_env_rejects_bad_arguments(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        gym.make("bilevel/ContractAgent-v0", **kwargs)


def test_follower_env_rejects_unknown_render_mode():
    # TypeError: what SB3's make_vec_env catches to retry without a render mode
    with pytest.raises(TypeError, match=r"render_mode must be one of \['ansi'\]"):
        ContractAgentEnv(render_mode="human")


def test_reset_state_option_is_validated():
    env = ContractAgentEnv(instance="tree")
    with pytest.raises(ValueError, match=r"options\['state'\] must be an integer in 0..14"):
        env.reset(options={"state": 15})


def test_closed_forms_refuse_other_instances():
    with pytest.raises(ValueError, match="closed forms hold for the 'project' instance"):
        project_optimum(ContractDesign("tree"))
    with pytest.raises(ValueError, match="need p_high > p_low"):
        cheapest_effort_bonus(0.5, 0.5, 0.1)


@pytest.mark.slow
@pytest.mark.parametrize("lam", [0.3, 0.03])
def test_hypergradient_matches_finite_differences_on_a_deep_tree(lam):
    problem = ContractDesign("tree", lam=lam, depth=6, seed=11, cost_scales=TWO_TYPES)
    solver = ExactSolver(problem, tol=1e-13)
    x = np.random.default_rng(0).uniform(0.05, 1.5, size=problem.n_params)
    h = 1e-5
    grad = exact_hypergradient(problem, x, tol=1e-13)
    fd = np.array([(solver.objective(x + h * e) - solver.objective(x - h * e)) / (2 * h)
                   for e in np.eye(problem.n_params)])
    assert np.linalg.norm(grad - fd) / np.linalg.norm(fd) < 1e-4
