"""The exact layer: sanity values, solvers, hypergradient vs finite differences."""

import numpy as np
import pytest

from bilevel_envs.envs.four_rooms.problem import FourRoomsShaping
from bilevel_envs.exact import ExactSolver, exact_hypergradient, exact_objective
from bilevel_envs.tabular import (
    TabularModel,
    evaluate_policy,
    soft_policy_iteration,
    soft_value_iteration,
)

# Notes §1.6: V̄ from the start at the reference init, move_prob 0.56, β = 1.
SANITY = {0.001: (-0.1475, 0.726), 0.003: (-0.1443, 0.546), 0.005: (-0.1293, 0.494)}


@pytest.mark.parametrize("lam", sorted(SANITY))
def test_sanity_values_from_reference_notes(lam):
    problem = FourRoomsShaping(lam=lam, beta=1.0, move_prob=0.56)
    values = ExactSolver(problem, tol=1e-12).per_context(np.zeros(105)).objective
    g1, g2 = SANITY[lam]
    # G1 is insensitive to the authors' random N(0, 0.01²) init; G2's policy is near a tie
    # between two routes, so the authors' value (docs/reference.md §1.6) at a random init
    # differs in the third decimal.
    assert values[0] == pytest.approx(g1, abs=5e-4)
    assert values[1] == pytest.approx(g2, abs=0.01)
    if lam == 0.001:  # the statement: about −0.147 and 0.72
        assert values[0] == pytest.approx(-0.147, abs=1e-3)
        assert values[1] == pytest.approx(0.72, abs=0.01)


@pytest.mark.parametrize("lam", [0.001, 0.003, 0.005])
@pytest.mark.parametrize("beta", [1.0, 3.0])
def test_hypergradient_matches_central_finite_differences(lam, beta):
    problem = FourRoomsShaping(lam=lam, beta=beta)
    solver = ExactSolver(problem, tol=1e-13)
    rng = np.random.default_rng(int(1000 * lam + beta))
    h = 1e-5
    for _ in range(5):
        x = rng.normal(0.0, 1.0, size=105)
        grad = exact_hypergradient(problem, x, tol=1e-13)
        fd = np.array([(solver.objective(x + h * e) - solver.objective(x - h * e)) / (2 * h)
                       for e in np.eye(105)])
        rel = np.linalg.norm(grad - fd) / np.linalg.norm(fd)
        assert rel < 1e-4, f"relative error {rel:.2e} at lam={lam}, beta={beta}"


def test_value_iteration_and_policy_iteration_agree():
    problem = FourRoomsShaping(lam=0.005, beta=1.0)
    model = problem.tabular(np.random.default_rng(0).normal(size=105), 0)
    vi = soft_value_iteration(model, problem.lam, tol=1e-9)
    pi = soft_policy_iteration(model, problem.lam, tol=1e-12)
    assert np.max(np.abs(vi.v - pi.v)) < 1e-8
    assert np.max(np.abs(vi.pi - pi.pi)) < 1e-6
    assert pi.iterations < 30 < vi.iterations


def test_solution_is_soft_bellman_fixed_point():
    problem = FourRoomsShaping(lam=0.003, beta=1.0)
    model = problem.tabular(np.zeros(105), 1)
    sol = soft_policy_iteration(model, problem.lam, tol=1e-12)
    # Q = r + γ P V with V the soft value, and V equals the exact regularised value of π.
    q = model.r + model.gamma * np.einsum("sap,p->sa", model.P, sol.v)
    assert np.max(np.abs(q - sol.q)) < 1e-10
    v_pi = evaluate_policy(model, sol.pi, lam=problem.lam)
    assert np.max(np.abs(v_pi - sol.v)) < 1e-10


def test_warm_start_needs_few_iterations():
    problem = FourRoomsShaping(lam=0.001, beta=1.0)
    x = np.random.default_rng(1).normal(0, 0.01, size=105)
    cold = soft_policy_iteration(problem.tabular(x, 0), problem.lam)
    step = np.random.default_rng(2).normal(0, 0.01, size=105)
    warm = soft_policy_iteration(problem.tabular(x + step, 0), problem.lam, warm_start=cold.q)
    assert warm.iterations < cold.iterations


def test_exact_objective_is_context_average():
    problem = FourRoomsShaping(lam=0.003, beta=2.0)
    x = np.random.default_rng(3).normal(size=105)
    per_context = ExactSolver(problem).per_context(x).objective
    assert exact_objective(problem, x) == pytest.approx(per_context.mean(), abs=1e-12)


def test_goal_is_terminal_and_model_is_valid():
    problem = FourRoomsShaping()
    for context, goal in enumerate((7, 103)):
        model = problem.tabular(np.zeros(105), context)
        model.check()
        assert model.P[goal].sum() == 0.0
        assert np.allclose(np.delete(model.P.sum(-1), goal, axis=0), 1.0)


def test_model_check_rejects_inconsistent_shapes():
    model = FourRoomsShaping().tabular(np.zeros(105), 0)
    bad = model.with_updates(r=np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"TabularModel.r has shape \(3, 4\)"):
        bad.check()


def test_stacked_models_solve_like_single_ones():
    problem = FourRoomsShaping(lam=0.003)
    x = np.random.default_rng(4).normal(size=105)
    models = [problem.tabular(x, c) for c in (0, 1)]
    stacked = soft_policy_iteration(TabularModel.stack(models), problem.lam, tol=1e-12)
    for c, model in enumerate(models):
        single = soft_policy_iteration(model, problem.lam, tol=1e-12)
        assert np.max(np.abs(stacked.q[c] - single.q)) < 1e-10


def test_solvers_reject_bad_lambda():
    model = FourRoomsShaping().tabular(np.zeros(105), 0)
    with pytest.raises(ValueError, match="lam"):
        soft_policy_iteration(model, 0.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hypergradient_with_x_dependent_transitions_and_start(seed):
    """Every term (∂r, ∂r̄, ∂P, ∂μ, γ ≠ γ̄) against central finite differences."""
    from bilevel_envs.envs.garnet import GarnetProblem

    problem = GarnetProblem(seed=seed, lam=0.05 * (seed + 1))
    solver = ExactSolver(problem, tol=1e-13)
    x = np.random.default_rng(seed).uniform(-1, 1, size=problem.n_params)
    _, grad = solver.value_and_grad(x)
    h = 1e-6
    fd = np.array([(solver.objective(x + h * e) - solver.objective(x - h * e)) / (2 * h)
                   for e in np.eye(problem.n_params)])
    assert np.linalg.norm(grad - fd) / np.linalg.norm(fd) < 1e-6


def test_garnet_score_terms_match_model_derivatives():
    from bilevel_envs.envs.garnet import GarnetProblem

    problem = GarnetProblem(seed=3)
    x = np.random.default_rng(0).uniform(-1, 1, size=problem.n_params)
    model = problem.tabular(x, 0)
    s, a, s2 = np.meshgrid(np.arange(6), np.arange(3), np.arange(6), indexing="ij")
    s, a, s2 = s.ravel(), a.ravel(), s2.ravel()
    score = problem.grad_log_transition(x, 0, s, a, s2)
    np.testing.assert_allclose(score * model.P[s, a, s2][:, None], model.dP[s, a, s2], atol=1e-12)
    states = np.arange(6)
    np.testing.assert_allclose(problem.grad_log_initial(x, 0, states) * model.mu[:, None],
                               model.dmu, atol=1e-12)


@pytest.mark.parametrize("lam", [0.001, 0.01])
def test_compiled_sparse_solver_matches_the_numpy_reference(lam):
    """The banded fast path (single model) and the dense NumPy path (a stack) agree."""
    problem = FourRoomsShaping(lam=lam, beta=1.0)
    x = np.random.default_rng(0).normal(size=105)
    for context in (0, 1):
        model = problem.tabular(x, context)
        fast = soft_policy_iteration(model, lam, tol=1e-12)
        reference = soft_policy_iteration(TabularModel.stack([model]), lam, tol=1e-12)
        assert np.max(np.abs(fast.q - reference.q[0])) < 1e-12
        assert np.max(np.abs(fast.pi - reference.pi[0])) < 1e-10


def test_banded_bellman_solve_matches_lapack():
    from bilevel_envs.tabular import policy_transitions, solve_bellman

    problem = FourRoomsShaping(lam=0.003)
    model = problem.tabular(np.zeros(105), 1)
    pi = soft_policy_iteration(model, problem.lam).pi
    P_pi = policy_transitions(model.P, pi)
    rhs = np.random.default_rng(0).normal(size=(104, 3))
    M = np.eye(104) - 0.99 * P_pi
    for transpose in (False, True):
        expected = np.linalg.solve(M.T if transpose else M, rhs)
        assert np.abs(solve_bellman(P_pi, 0.99, rhs, transpose) - expected).max() < 1e-12


def test_exact_solver_checks_its_arguments():
    problem = FourRoomsShaping(lam=0.003)
    for tol in (0.0, -1e-9):
        with pytest.raises(ValueError, match=r"^tol must be a finite number in \(0, inf\)"):
            ExactSolver(problem, tol=tol)
        with pytest.raises(ValueError, match=r"^tol must be a finite number in \(0, inf\)"):
            exact_objective(problem, np.zeros(problem.n_params), tol=tol)


def test_bellman_solve_broadcasts_a_shared_right_hand_side_over_the_batch():
    """A ``(2, 2)`` batch of ``P_π`` against one ``(S, k)`` right-hand side (S = k = 2, the shape
    of the batch itself): each batch entry solves its own system."""
    from bilevel_envs.tabular import solve_bellman

    rng = np.random.default_rng(3)
    P_pi = rng.dirichlet(np.ones(2), size=(2, 2, 2))
    rhs = rng.normal(size=(2, 2))
    out = solve_bellman(P_pi, 0.9, rhs)
    assert out.shape == (2, 2, 2, 2)
    for i in range(2):
        for j in range(2):
            expected = np.linalg.solve(np.eye(2) - 0.9 * P_pi[i, j], rhs)
            np.testing.assert_allclose(out[i, j], expected, rtol=1e-12)


# ---------------------------------------------------------------------------- terms of dJ/dx
def _split_objective(problem, context, x_follower_reward, x_follower_transitions,
                     x_leader_transitions, x_leader_reward, x_initial):
    """``J_ξ`` with a separate copy of ``x`` for each place it enters: the follower's reward and
    transitions (through ``π*``), the transitions and reward of the leader's value, and ``μ``.
    Its partial derivatives are the components of :func:`hypergradient_terms`."""
    from bilevel_envs.tabular import solve_follower

    def at(x):
        return problem.tabular(x, context)

    follower = at(x_follower_reward).with_updates(P=at(x_follower_transitions).P)
    pi = solve_follower(follower, problem.lam, tol=1e-14).pi
    leader = at(x_leader_transitions)
    v_bar = evaluate_policy(leader, pi, reward=at(x_leader_reward).r_leader,
                            gamma=leader.leader_gamma)
    return at(x_initial).mu @ v_bar


#: the argument of :func:`_split_objective` whose derivative is each component
SPLIT_ARGUMENT = {("best_response", "follower_reward"): 0, ("best_response", "log_transition"): 1,
                  ("transition_score", "log_transition"): 2, ("direct", "leader_reward"): 3,
                  ("initial_score", "log_initial"): 4}


@pytest.mark.parametrize("seed", [0, 1])
def test_hypergradient_terms_are_the_partial_derivatives_of_each_place_x_enters(seed):
    """Each component of ``hypergradient_terms`` against central differences of ``J_ξ`` in its
    own copy of ``x`` (relative error < 1e-6), and the components sum to ``leader_values``.
    Power: with any component off by ±5 % the relative error exceeds the tolerance by a factor
    5·10⁴ (the differences themselves are accurate to ~1e-9)."""
    from bilevel_envs.envs.garnet import GarnetProblem
    from bilevel_envs.hypergradient import (
        HYPERGRADIENT_COMPONENTS,
        hypergradient_terms,
        leader_values,
    )

    problem = GarnetProblem(seed=seed, n_contexts=1, lam=0.3)
    x = np.random.default_rng(seed).uniform(-1, 1, size=problem.n_params)
    _, solution, _ = ExactSolver(problem, tol=1e-14).solve(x)
    model, pi = problem.tabular(x, 0), solution.pi[0]
    terms = hypergradient_terms(model, pi, problem.lam)
    assert set(terms) == set(HYPERGRADIENT_COMPONENTS) == set(SPLIT_ARGUMENT)
    np.testing.assert_allclose(sum(terms.values()), leader_values(model, pi, problem.lam).gradient,
                               rtol=1e-12, atol=1e-14)
    h = 1e-5
    worst_control = np.inf
    for component, position in SPLIT_ARGUMENT.items():
        fd = np.zeros(problem.n_params)
        for i, e in enumerate(np.eye(problem.n_params)):
            plus, minus = [x] * 5, [x] * 5
            plus[position], minus[position] = x + h * e, x - h * e
            fd[i] = (_split_objective(problem, 0, *plus)
                     - _split_objective(problem, 0, *minus)) / (2 * h)
        exact = terms[component]
        assert np.linalg.norm(exact) > 1e-3  # every component is present here
        rel = np.linalg.norm(exact - fd) / np.linalg.norm(fd)
        assert rel < 1e-6, (component, rel)
        for scale in (0.95, 1.05):
            control = np.linalg.norm(scale * exact - fd) / np.linalg.norm(fd)
            worst_control = min(worst_control, control / 1e-6)
    assert worst_control > 1  # every control fails the check


def test_finite_difference_check_detects_a_five_percent_error_in_any_term():
    """Power of the whole-gradient check (relative error < 1e-6): the exact gradient with any one
    component of any context off by ±5 % fails it, by a factor ≥ 578 (the smallest
    component, context 1's ``∂log P`` score, is 1.2 % of ``dJ/dx``)."""
    from bilevel_envs.envs.garnet import GarnetProblem
    from bilevel_envs.hypergradient import hypergradient_terms

    problem = GarnetProblem(seed=0, lam=0.05)
    solver = ExactSolver(problem, tol=1e-13)
    x = np.random.default_rng(0).uniform(-1, 1, size=problem.n_params)
    models, solution, _ = solver.solve(x)
    _, grad = solver.value_and_grad(x)
    h = 1e-6
    fd = np.array([(solver.objective(x + h * e) - solver.objective(x - h * e)) / (2 * h)
                   for e in np.eye(problem.n_params)])
    assert np.linalg.norm(grad - fd) / np.linalg.norm(fd) < 1e-6
    worst = np.inf
    for c, (model, weight) in enumerate(zip(models, problem.context_probs)):
        for component, value in hypergradient_terms(model, solution.pi[c], problem.lam).items():
            for scale in (0.95, 1.05):
                wrong = grad + (scale - 1) * weight * value
                worst = min(worst, np.linalg.norm(wrong - fd) / np.linalg.norm(fd) / 1e-6)
    assert worst > 1  # every control fails the check


def test_exact_objective_uses_the_given_tolerance_and_names_what_is_missing():
    from bilevel_envs.envs.garnet import GarnetProblem

    problem = GarnetProblem(seed=2, lam=0.05)
    x = np.full(problem.n_params, 0.5)
    loose = ExactSolver(problem, tol=1e-2, method="value_iteration")
    assert exact_objective(problem, x, tol=1e-2) != exact_objective(problem, x, tol=1e-12)
    assert ExactSolver(problem, tol=1e-2).objective(x) == exact_objective(problem, x, tol=1e-2)
    assert loose.method == "value_iteration"

    class NoExactJ:
        decomposable = False

    with pytest.raises(ValueError, match="^NoExactJ has a trajectory-level objective and no "
                                         r"exact_objective\(x\) method; no exact value is "
                                         "available$"):
        exact_objective(NoExactJ(), x)
    with pytest.raises(ValueError, match=r"no exact_hypergradient\(x\) method"):
        exact_hypergradient(NoExactJ(), x)
