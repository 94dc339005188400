"""The leaders' update rule: the optimisers, gradient clipping, the loop's projected step."""

import numpy as np
import pytest

from bilevel_envs.envs.garnet import GarnetProblem
from bilevel_envs.leader_env import LeaderEnv
from leaders.base import Leader
from leaders.optim import Adam, Optimizer, check_clip_groups, clip_by_norm


def test_sgd_step_is_ascent_along_the_gradient():
    x, g = np.array([0.5, -1.0]), np.array([2.0, 3.0])
    np.testing.assert_array_equal(Optimizer(0.25).step(x, g), [1.0, -0.25])
    with pytest.raises(ValueError, match=r"learning_rate must be a finite number in \(0, inf\)"):
        Optimizer(0.0)


@pytest.mark.parametrize("kwargs", [{}, {"beta1": 0.5, "beta2": 0.9, "eps": 1e-3}])
def test_adam_matches_torch_adam_for_ascent(kwargs):
    """20 steps on random gradients: the iterates and moment estimates of ``torch.optim.Adam``
    (``maximize=True``) in float64, to 1e-12."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.normal(size=5)
    grads = rng.normal(size=(20, 5)) * np.logspace(-3, 1, 5)
    ours = Adam(0.01, **kwargs)
    param = torch.tensor(x.copy(), requires_grad=True)
    theirs = torch.optim.Adam([param], lr=0.01, maximize=True,
                              betas=(kwargs.get("beta1", 0.9), kwargs.get("beta2", 0.999)),
                              eps=kwargs.get("eps", 1e-8))
    for g in grads:
        x = ours.step(x, g)
        param.grad = torch.tensor(g)
        theirs.step()
        np.testing.assert_allclose(x, param.detach().numpy(), rtol=1e-12, atol=1e-14)
    state = theirs.state[param]
    # torch negates the gradient to maximise: its first moment is −m
    np.testing.assert_allclose(ours.state["m"], -state["exp_avg"].numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours.state["v"], state["exp_avg_sq"].numpy(), rtol=1e-12)
    assert float(ours.state["t"]) == 20


def test_adam_hyperparameters_are_checked():
    """``beta = 1`` freezes a moment and divides by ``1 − beta^t = 0`` in the bias correction."""
    assert Adam(0.1, beta1=0.0, beta2=0.0).beta2 == 0.0
    for name in ("beta1", "beta2"):
        for bad in (1.0, 1.5, -0.1):
            with pytest.raises(ValueError, match=rf"{name} must be a finite number in \[0, 1\)"):
                Adam(0.1, **{name: bad})
    for bad in (0.0, -1e-8):  # eps keeps the step finite where the second moment is 0
        with pytest.raises(ValueError, match=r"eps must be a finite number in \(0, inf\)"):
            Adam(0.1, eps=bad)


def test_adam_state_round_trips_through_load_state():
    """A restored state continues exactly where the original optimiser was; ``t = 0`` (arrays
    present, no step taken yet) is a valid state and continues like a fresh optimiser."""
    rng = np.random.default_rng(1)
    x, grads = rng.normal(size=3), rng.normal(size=(4, 3))
    original = Adam(0.05)
    for g in grads[:2]:
        x = original.step(x, g)
    resumed = Adam(0.05)
    resumed.load_state({k: np.array(v) for k, v in original.state.items()}, x.shape)
    np.testing.assert_array_equal(resumed.step(x, grads[2]), original.step(x, grads[2]))
    assert float(resumed.state["t"]) == 3
    fresh, restarted = Adam(0.05), Adam(0.05)
    restarted.load_state({"m": np.zeros(3), "v": np.zeros(3), "t": np.zeros(())}, (3,))
    np.testing.assert_array_equal(restarted.step(x, grads[3]), fresh.step(x, grads[3]))


@pytest.mark.parametrize("state, message", [
    ({"m": np.zeros(3), "t": np.ones(())},
     r"optimizer 'adam' state must hold \['m', 't', 'v'\]; got \['m', 't'\]"),
    ({"m": np.zeros(3), "v": np.zeros(2), "t": np.ones(())},
     r"optimizer state 'v' must be finite numbers of shape \(3,\)"),
    ({"m": np.zeros(3), "v": np.zeros(3), "t": np.array(2.5)},
     r"optimizer state 't' must be a whole number >= 0; got 2.5"),
    ({"m": np.zeros(3), "v": np.zeros(3), "t": np.array(-1.0)},
     r"optimizer state 't' must be a whole number >= 0; got -1.0"),
])
def test_load_state_refuses_a_bad_checkpoint(state, message):
    adam = Adam(0.05)
    with pytest.raises(ValueError, match=message):
        adam.load_state(state, (3,))
    assert adam.state == {}


def test_clip_by_norm_scales_long_gradients_only():
    g = np.array([3.0, 4.0])
    np.testing.assert_allclose(clip_by_norm(g, 1.0), [0.6, 0.8], rtol=1e-15)
    assert clip_by_norm(g, 5.0) is g and clip_by_norm(g, 10.0) is g
    assert clip_by_norm(g, None) is g


def test_clip_by_norm_clips_each_group_separately():
    g = np.array([3.0, 0.1, 4.0, 0.2])
    out = clip_by_norm(g, 1.0, groups=[[0, 2], [1, 3]])
    np.testing.assert_allclose(out, [0.6, 0.1, 0.8, 0.2], rtol=1e-15)
    np.testing.assert_array_equal(g, [3.0, 0.1, 4.0, 0.2])  # the input is left alone
    # an integer gradient is clipped in floating point, not truncated to integers
    np.testing.assert_allclose(clip_by_norm(np.array([3, 1, 4, 0]), 1.0, groups=[[0, 2], [1, 3]]),
                               [0.6, 1.0, 0.8, 0.0], rtol=1e-15)
    matrix = np.arange(1.0, 5.0).reshape(2, 2)
    clipped = clip_by_norm(matrix, 1.0, groups=[[0, 1], [2, 3]])
    assert clipped.shape == (2, 2)
    np.testing.assert_allclose(np.linalg.norm(clipped, axis=1), [1.0, 1.0], rtol=1e-15)


def test_clip_groups_must_partition_the_coordinates():
    assert check_clip_groups(None, 3) is None
    assert check_clip_groups([(0, 2), [1]], 3) == [[0, 2], [1]]
    for bad in ([[0, 1]], [[0, 1], [1, 2]], [[0, 1, 2], []], [["a"], [1, 2]], 5):
        with pytest.raises(ValueError, match="clip_groups (must|entries must)"):
            check_clip_groups(bad, 3)
    # an index outside 0..size−1 is named with the allowed range, not as a bad partition
    with pytest.raises(ValueError,
                       match=r"clip_groups entries must be an integer in 0\.\.2; got 3"):
        check_clip_groups([[0, 1], [2, 3]], 3)


class FixedGradient(Leader):
    """A leader whose estimate is a fixed vector (the loop's step is all that is tested)."""

    algorithm = "fixed"

    def __init__(self, env, gradient, **kwargs):
        super().__init__(env, **kwargs)
        self.gradient = np.asarray(gradient, dtype=np.float64)

    def estimate_gradient(self):
        return self.gradient, {"objective_estimate": 1.5, "contexts": [0], "level": 3,
                               "table": np.zeros(2)}


def fixed_leader(gradient, **kwargs):
    problem = GarnetProblem(n_params=3)
    env = LeaderEnv(problem, n_envs=1, n_rollout_steps=1)
    return FixedGradient(env, gradient, x0=np.array([1.9, 0.0, -1.0]), **kwargs)


def test_loop_step_is_the_projected_clipped_ascent_step():
    """``x ← Π_X(x + α clip(g))``: clipped to norm 1, the first coordinate projected on 2.0."""
    leader = fixed_leader([3.0, 0.0, 4.0], learning_rate=0.5, max_grad_norm=1.0)
    leader.learn(1)
    np.testing.assert_allclose(leader.x, [2.0, 0.0, -0.6], rtol=1e-15)
    leader.learn(1)
    np.testing.assert_allclose(leader.x, [2.0, 0.0, -0.2], rtol=1e-15, atol=1e-15)
    history = leader.history
    np.testing.assert_array_equal(history["iteration"], [0, 1])
    np.testing.assert_array_equal(history["grad_norm"], [5.0, 5.0])  # before clipping
    np.testing.assert_array_equal(history["objective_estimate"], [1.5, 1.5])
    np.testing.assert_array_equal(history["level"], [3, 3])
    assert "table" not in history and leader.records[0]["contexts"] == [0]
    assert leader.num_iterations == 2


def test_loop_step_without_clipping_and_with_adam():
    leader = fixed_leader([3.0, 0.0, 4.0], learning_rate=0.1, max_grad_norm=None)
    leader.learn(1)
    np.testing.assert_allclose(leader.x, [2.0, 0.0, -0.6], rtol=1e-15)
    adam = fixed_leader([-3.0, 0.0, 4.0], learning_rate=0.1, optimizer="adam")
    adam.learn(1)  # the first Adam step moves every non-zero coordinate by α (up to eps)
    np.testing.assert_allclose(adam.x, [1.8, 0.0, -0.9], rtol=1e-7)


def test_loop_records_a_missing_objective_estimate_as_nan():
    """Every record has the ``objective_estimate`` column (NaN when the estimator gives none),
    so the history's columns do not depend on the estimator."""

    class NoEstimate(FixedGradient):
        def estimate_gradient(self):
            return self.gradient, {}

    problem = GarnetProblem(n_params=3)
    leader = NoEstimate(LeaderEnv(problem, n_envs=1, n_rollout_steps=1), [1.0, 0.0, 0.0],
                        x0=np.zeros(3))
    leader.learn(2)
    assert np.isnan(leader.history["objective_estimate"]).all()
    assert len(leader.history["objective_estimate"]) == 2


def test_loop_refuses_a_non_finite_gradient():
    leader = fixed_leader([np.nan, 0.0, 0.0])
    with pytest.raises(FloatingPointError, match="non-finite gradient estimate at iteration 0"):
        leader.learn(1)
    assert leader.num_iterations == 0


def test_loop_reshapes_the_estimate_to_x():
    leader = fixed_leader([[3.0, 0.0, 4.0]], learning_rate=0.1, max_grad_norm=None)
    leader.learn(1)
    assert leader.x.shape == (3,)
    np.testing.assert_allclose(leader.x, [2.0, 0.0, -0.6], rtol=1e-15)
