"""The tabular model container and soft value iteration: validation, stacking, caches, stopping."""

import numpy as np
import pytest

from bilevel_envs.envs.garnet import GarnetProblem
from bilevel_envs.hypergradient import leader_values
from bilevel_envs.tabular import (
    TabularModel,
    evaluate_policy,
    soft_max_value,
    soft_policy_iteration,
    soft_value_iteration,
    sparse_transitions,
)


def two_state_model(**changes):
    """A two-state, two-action model with full rows (changes replace fields)."""
    P = np.array([[[0.5, 0.5], [0.25, 0.75]], [[1.0, 0.0], [0.0, 1.0]]])
    model = TabularModel(P=P, r=np.array([[1.0, 0.0], [0.0, 2.0]]), r_leader=np.zeros((2, 2)),
                         mu=np.array([0.5, 0.5]), gamma=0.9, leader_gamma=0.8,
                         dr=np.zeros((2, 2, 1)), dr_leader=np.zeros((2, 2, 1)))
    return model.with_updates(**changes)


# ---------------------------------------------------------------------------- check
@pytest.mark.parametrize("changes, message", [
    ({"P": np.array([[[1.0, -1e-6], [0.5, 0.5]], [[1.0, 0.0], [0.0, 1.0]]])},
     r"^TabularModel.P rows must be non-negative with sums <= 1$"),
    ({"P": np.array([[[1.0, 0.5], [0.5, 0.5]], [[1.0, 0.0], [0.0, 1.0]]])},
     r"^TabularModel.P rows must be non-negative with sums <= 1$"),
    ({"mu": np.array([1.5, -0.5])}, r"^TabularModel.mu must be a probability distribution$"),
    ({"mu": np.array([0.5, 0.6])}, r"^TabularModel.mu must be a probability distribution$"),
    ({"gamma": 1.0}, r"^TabularModel.gamma must be in \[0, 1\); got 1.0$"),
    ({"gamma": 1.5}, r"^TabularModel.gamma must be in \[0, 1\); got 1.5$"),
    ({"leader_gamma": -0.1}, r"^TabularModel.leader_gamma must be in \[0, 1\); got -0.1$"),
])
def test_model_check_names_what_is_wrong(changes, message):
    two_state_model().check()
    with pytest.raises(ValueError, match=message):
        two_state_model(**changes).check()


def test_model_check_boundaries_are_allowed():
    """Exactly ``atol`` below 0 and above 1, a sub-stochastic row, γ = 0, a stack: all valid."""
    P = np.array([[[0.75, 0.5], [0.5, -0.25]], [[1.0, 0.0], [0.0, 0.0]]])
    two_state_model(P=P, mu=np.array([1.25, -0.25])).check(atol=0.25)
    two_state_model(mu=np.array([0.5, 0.55])).check(atol=0.1)  # |Σμ − 1| within atol
    two_state_model(gamma=0.0, leader_gamma=0.0).check()
    TabularModel.stack([two_state_model(), two_state_model()]).check()


# ---------------------------------------------------------------------------- stack, with_updates
def garnet_models(problem, x):
    return [problem.tabular(x, c) for c in range(problem.n_contexts)]


def test_stacked_leader_values_equal_the_single_ones():
    """Every field is stacked: J, dJ/dx (through ∂r, ∂r̄, ∂P, ∂μ, γ ≠ γ̄) and V̄ per model."""
    problem = GarnetProblem(n_contexts=3, seed=2, lam=0.3)
    x = np.random.default_rng(0).uniform(-1, 1, size=problem.n_params)
    models = garnet_models(problem, x)
    stacked = TabularModel.stack(models)
    assert stacked.batch_shape == (3,) and stacked.leader_gamma == problem.leader_gamma
    pi = soft_policy_iteration(stacked, problem.lam, tol=1e-12).pi
    together = leader_values(stacked, pi, problem.lam)
    for c, model in enumerate(models):
        alone = leader_values(model, pi[c], problem.lam)
        np.testing.assert_allclose(together.objective[c], alone.objective, rtol=1e-12)
        np.testing.assert_allclose(together.gradient[c], alone.gradient, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(together.v_leader[c], alone.v_leader, rtol=1e-12)


def test_stack_fills_missing_derivatives_with_zeros_and_can_skip_them():
    problem = GarnetProblem(n_contexts=2, seed=1)
    x = np.zeros(problem.n_params)
    full, bare = garnet_models(problem, x)
    bare = bare.with_updates(dP=None, dmu=None)
    mixed = TabularModel.stack([full, bare])
    np.testing.assert_array_equal(mixed.dP[0], full.dP)
    np.testing.assert_array_equal(mixed.dP[1], 0.0)
    np.testing.assert_array_equal(mixed.dmu[1], 0.0)
    assert TabularModel.stack([bare, bare]).dP is None
    light = TabularModel.stack([full, bare], derivatives=False)
    for name in ("dr", "dr_leader", "dP", "dmu"):
        array = getattr(light, name)
        assert array.shape == getattr(mixed, name).shape and array.dtype == np.float64
        assert not array.any()
        assert array.strides[0] == 0  # a broadcast view: nothing is copied
    np.testing.assert_array_equal(light.P, mixed.P)
    np.testing.assert_array_equal(light.r_leader, mixed.r_leader)
    np.testing.assert_array_equal(light.mu, mixed.mu)
    pi = soft_policy_iteration(light, problem.lam).pi
    np.testing.assert_allclose(leader_values(light, pi, problem.lam, with_gradient=False).objective,
                               leader_values(mixed, pi, problem.lam, with_gradient=False).objective)
    with pytest.raises(ValueError, match="^stacked models must share gamma and leader_gamma$"):
        TabularModel.stack([full, full.with_updates(leader_gamma=0.5)])


def test_with_updates_shares_the_transition_cache_only_with_the_same_p():
    model = two_state_model()
    model.cache["sampling_tables"] = "tables of P"
    assert model.with_updates(r=np.ones((2, 2))).cache is model.cache
    assert model.with_updates(r=np.ones((2, 2)), share_transition_cache=False).cache == {}
    moved = model.with_updates(P=model.P[:, ::-1])
    assert moved.cache == {} and moved.cache is not model.cache
    np.testing.assert_array_equal(model.with_updates().r, model.r)


@pytest.mark.parametrize("solver", [soft_value_iteration, soft_policy_iteration])
def test_solver_arguments_are_named_in_their_errors(solver):
    model = two_state_model()
    for kwargs, message in (({"max_iter": -1}, r"^max_iter must be an integer >= 0; got -1$"),
                            ({"tol": 0.0}, r"^tol must be a finite number in \(0, inf\)"),
                            ({"lam": 0.0}, r"^lam \(entropy weight λ\) must be a finite number")):
        with pytest.raises(ValueError, match=message):
            solver(model, **{"lam": 0.5, **kwargs})


def test_warm_start_errors_say_what_is_wrong():
    model = two_state_model()
    with pytest.raises(ValueError, match=r"^warm_start must be a finite soft Q-function of shape "
                       r"\(2, 2\); got shape \(2, 3\)$"):
        soft_policy_iteration(model, 0.5, warm_start=np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"got shape \(2, 2\) with NaN or inf$"):
        soft_policy_iteration(model, 0.5, warm_start=np.array([[0.0, np.nan], [0.0, 0.0]]))


def test_sparse_transitions_lists_successors_and_is_cached_per_p():
    """Successor lists padded with probability 0, the bandwidths, and the cache: reused while
    ``P`` is the same array (also by ``with_updates`` copies), recomputed for another ``P``."""
    model = two_state_model()
    tables = sparse_transitions(model)
    next_states, probs, lo, up = tables
    np.testing.assert_array_equal(next_states, [[[0, 1], [0, 1]], [[0, 1], [1, 0]]])
    np.testing.assert_array_equal(probs, [[[0.5, 0.5], [0.25, 0.75]], [[1.0, 0.0], [1.0, 0.0]]])
    assert (lo, up) == (1, 1)
    assert model.cache["sparse_transitions"] == (model.P, tables)
    assert sparse_transitions(model) is tables
    assert sparse_transitions(model.with_updates(r=np.ones((2, 2)))) is tables
    model.cache["sparse_transitions"] = (model.P.copy(), "tables of another P")
    np.testing.assert_array_equal(sparse_transitions(model)[1], probs)
    # no successor at all (every episode ends after one step): one padding slot, bandwidths 0
    next_states, probs, lo, up = sparse_transitions(two_state_model(P=np.zeros((2, 2, 2))))
    assert next_states.shape == probs.shape == (2, 2, 1) and not probs.any()
    assert (lo, up) == (0, 0)


# ---------------------------------------------------------------------------- value iteration
def bellman(model, lam, v):
    """One soft Bellman sweep ``λ logΣexp((r + γ P v)/λ)``."""
    return soft_max_value(model.r + model.gamma * np.einsum("sap,p->sa", model.P, v), lam)


def test_dense_policy_iteration_counts_its_steps():
    """The dense path (a stack of models): ``max_iter = k`` is k improvement steps from Q = 0.
    One step evaluates the uniform policy: ``Q = r + γ P V`` with ``V`` its soft value."""
    model = GarnetProblem(seed=0).tabular(np.zeros(4), 0)
    stack, lam = TabularModel.stack([model]), 0.2
    uniform = np.full((model.n_states, model.n_actions), 1 / model.n_actions)
    v = evaluate_policy(model, uniform, lam=lam)
    one = soft_policy_iteration(stack, lam, tol=1e-300, max_iter=1)
    assert one.iterations == 1
    np.testing.assert_allclose(one.q[0], model.r + model.gamma * model.P @ v, rtol=1e-12)
    for k in (2, 3):
        assert soft_policy_iteration(stack, lam, tol=1e-300, max_iter=k).iterations == k


def test_value_iteration_counts_its_sweeps():
    """``max_iter = k`` is k sweeps from V = 0, reported as ``iterations``; the returned V is
    the soft value of the final Q, ``T V_k``, and ``residual = ‖V_k − V_{k−1}‖∞``."""
    model = GarnetProblem(seed=0).tabular(np.zeros(4), 0)
    lam = 0.2
    v = [np.zeros(model.n_states)]
    for _ in range(4):
        v.append(bellman(model, lam, v[-1]))
    for k in (1, 2, 3):
        solution = soft_value_iteration(model, lam, tol=1e-300, max_iter=k)
        assert solution.iterations == k
        np.testing.assert_allclose(solution.v, v[k + 1], rtol=1e-13)
        assert solution.residual == pytest.approx(np.abs(v[k] - v[k - 1]).max(), rel=1e-12)
        np.testing.assert_allclose(solution.q, model.r + model.gamma * model.P @ v[k], rtol=1e-13)


@pytest.mark.parametrize("tol", [1e-3, 1e-8])
def test_value_iteration_stops_at_the_first_sweep_that_guarantees_tol(tol):
    """It stops when a sweep changes V by at most ``tol (1−γ)/γ`` (so ``‖V − V*‖∞ ≤ tol``),
    and not one sweep earlier."""
    model = GarnetProblem(seed=1).tabular(np.zeros(4), 0)
    lam, gamma = 0.2, model.gamma
    threshold = tol * (1 - gamma) / gamma
    solution = soft_value_iteration(model, lam, tol=tol)
    assert solution.residual <= threshold
    earlier = soft_value_iteration(model, lam, tol=tol, max_iter=solution.iterations - 1)
    assert earlier.residual > threshold
    exact = soft_policy_iteration(model, lam, tol=1e-13)
    assert np.abs(solution.v - exact.v).max() <= tol


def test_value_iteration_starts_from_a_warm_q_and_reports_divergence():
    model = GarnetProblem(seed=0).tabular(np.zeros(4), 0)
    exact = soft_policy_iteration(model, 0.2, tol=1e-13)
    warm = soft_value_iteration(model, 0.2, tol=1e-9, warm_start=exact.q)
    assert warm.iterations == 1
    np.testing.assert_allclose(warm.q, exact.q, atol=1e-9)
    huge = model.with_updates(r=np.full_like(model.r, 1e308))
    with pytest.raises(FloatingPointError, match="^soft value iteration diverged"):
        soft_value_iteration(huge, 0.2)


def test_value_iteration_without_sweeps():
    """``max_iter=0``: no sweep, the soft values of ``Q = r + γ P·0``, not converged (residual
    inf); a non-finite model is still reported."""
    model = GarnetProblem(seed=0).tabular(np.zeros(4), 0)
    solution = soft_value_iteration(model, 0.2, max_iter=0)
    assert solution.iterations == 0 and solution.residual == np.inf
    np.testing.assert_array_equal(solution.q, model.r)
    bad = model.with_updates(r=np.full_like(model.r, np.inf))
    with pytest.raises(FloatingPointError, match="^soft value iteration diverged"):
        soft_value_iteration(bad, 0.2, max_iter=0)


def test_hypergradient_terms_of_stacks_and_of_models_without_moving_p_or_mu():
    """Components of a stack are the components of each model; a model whose P and μ do not
    depend on x (Four-Rooms) has zero score components, the others sum to its dJ/dx."""
    from bilevel_envs.envs.four_rooms.problem import FourRoomsShaping
    from bilevel_envs.hypergradient import HYPERGRADIENT_COMPONENTS, hypergradient_terms

    problem = GarnetProblem(n_contexts=2, seed=4, lam=0.3)
    x = np.random.default_rng(1).uniform(-1, 1, size=problem.n_params)
    models = garnet_models(problem, x)
    stacked = TabularModel.stack(models)
    pi = soft_policy_iteration(stacked, problem.lam, tol=1e-12).pi
    together = hypergradient_terms(stacked, pi, problem.lam)
    for c, model in enumerate(models):
        alone = hypergradient_terms(model, pi[c], problem.lam)
        for component in HYPERGRADIENT_COMPONENTS:
            np.testing.assert_allclose(together[component][c], alone[component], rtol=1e-10,
                                       atol=1e-13)
    rooms = FourRoomsShaping(lam=0.01)
    model = rooms.tabular(np.random.default_rng(2).normal(size=105), 0)
    pi = soft_policy_iteration(model, rooms.lam, tol=1e-12).pi
    terms = hypergradient_terms(model, pi, rooms.lam)
    for component in (("best_response", "log_transition"), ("transition_score", "log_transition"),
                      ("initial_score", "log_initial")):
        np.testing.assert_array_equal(terms[component], np.zeros(105))
    np.testing.assert_allclose(sum(terms.values()), leader_values(model, pi, rooms.lam).gradient,
                               rtol=1e-10, atol=1e-13)
    with pytest.raises(ValueError, match="lam"):
        hypergradient_terms(model, pi, 0.0)
