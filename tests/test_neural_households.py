"""Neural households: the joint-action Q head, soft double targets, and soft-DQN households
measured exactly against the soft-optimal households of the grid economy."""

import numpy as np
import pytest

pytest.importorskip("stable_baselines3")
import torch as th  # noqa: E402

from bilevel_envs.envs.tax_design.problem import TaxDesign, TaxDesignTabular  # noqa: E402
from bilevel_envs.follower_quality import soft_optimality_gap  # noqa: E402
from bilevel_envs.followers.joint_q import JointActionDQNPolicy, JointActionHead  # noqa: E402
from bilevel_envs.followers.soft_dqn import (  # noqa: E402
    SoftDQN,
    SoftDQNFollower,
    joint_action_features,
    lr_decay_factor,
    soft_bellman_target,
    soft_double_target,
)
from bilevel_envs.tabular import (  # noqa: E402
    evaluate_policy,
    policy_transitions,
    solve_bellman,
    solve_follower,
)

#: a reduced economy: 2 goods, 3 hours and 3 consumption levels (27 joint actions), 5 cells
SMALL = dict(asset_cells=5, asset_bound=10.0, prices=(1.0, 1.0),
             preferences=((0.6, 0.4), (0.2, 0.8)), hours_levels=(0.0, 2.0, 4.0),
             consumption_levels=(0.0, 1.0, 2.0), noise_std=2.0)


def test_joint_head_represents_cobb_douglas_complementarity():
    """Q(a) = c_1^0.6 c_2^0.4 on a 5 × 5 grid: the best additive fit (row + column means) misses
    by 1.9 (38 % of the range); the joint head fits it to within 5 % of the range."""
    th.manual_seed(0)
    levels = np.linspace(0.0, 5.0, 5)
    c1, c2 = np.meshgrid(levels, levels, indexing="ij")
    target = c1 ** 0.6 * c2 ** 0.4
    additive = target.mean(1, keepdims=True) + target.mean(0, keepdims=True) - target.mean()
    assert np.abs(additive - target).max() > 0.35 * np.ptp(target)  # negative control
    features = np.column_stack([c1.ravel(), c2.ravel()]) / 5.0
    head = JointActionHead(1, features, [16], [32, 32], 8, th.nn.ReLU)
    optimiser = th.optim.Adam(head.parameters(), lr=1e-2)
    state, y = th.ones(1, 1), th.as_tensor(target.ravel(), dtype=th.float32)[None]
    for _ in range(500):
        loss = ((head(state) - y) ** 2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert (head(state) - y).abs().max().item() < 0.05 * np.ptp(target)


def test_joint_head_shapes_and_scales():
    features = np.random.default_rng(0).random((7, 3))
    head = JointActionHead(2, features, [8], [8], 4, th.nn.ReLU, obs_scale=0.5, q_scale=3.0)
    obs = th.ones(5, 2)
    q = head(obs)
    assert q.shape == (5, 7)
    head.q_scale = 1.0
    assert th.allclose(q, 3.0 * head(obs))  # q_scale multiplies the output


def test_joint_head_scores_given_actions_as_the_full_forward_does():
    """forward_at (the training loss's Q(s, a), ψ of the batch's distinct actions only) equals
    the full forward gathered at the actions, values and parameter gradients alike."""
    th.manual_seed(0)
    features = np.random.default_rng(0).random((50, 3))
    head = JointActionHead(4, features, [8], [16], 5, th.nn.ReLU, obs_scale=0.5, q_scale=3.0,
                           state_value=True)
    obs = th.randn(64, 4)
    actions = th.as_tensor(np.random.default_rng(1).integers(0, 50, 64))  # repeats included
    at = head.forward_at(obs, actions)
    full = head(obs)[th.arange(64), actions]
    assert th.allclose(at, full, atol=1e-5)
    grads = []
    for q in (at, full):
        head.zero_grad()
        (q ** 2).mean().backward(retain_graph=True)
        grads.append([p.grad.clone() for p in head.parameters()])
    for a, b in zip(*grads):
        assert th.allclose(a, b, atol=1e-5)


def test_joint_policy_rejects_bad_arguments():
    problem = TaxDesign(**{k: v for k, v in SMALL.items() if k != "asset_cells"})
    env = problem.follower_env(problem.x_init, 0)
    with pytest.raises(ValueError, match="action_features"):
        SoftDQN(JointActionDQNPolicy, env, lam=0.2)
    with pytest.raises(ValueError, match="rank"):
        SoftDQN("JointMlpPolicy", env, policy_kwargs={"action_features": np.ones((27, 3)),
                                                      "rank": 0})
    with pytest.raises(ValueError, match="obs_scale"):
        SoftDQN("JointMlpPolicy", env, policy_kwargs={"action_features": np.ones((27, 3)),
                                                      "obs_scale": -1.0})
    with pytest.raises(ValueError, match="one row per action"):
        SoftDQN("JointMlpPolicy", env, policy_kwargs={"action_features": np.ones((5, 3))})
    with pytest.raises(TypeError, match="double_q"):
        SoftDQN("MlpPolicy", env, double_q="yes")


@pytest.mark.parametrize("lr_decay, pattern", [
    ({"kind": "cosine", "timescale": 1.0}, "'kind' one of"),
    ({"kind": "inverse"}, "takes the keys"),
    ({"kind": "inverse", "timescale": 1.0, "final": 0.1}, "takes the keys"),
    ({"kind": "inverse", "timescale": 0}, r"finite number in \(0, inf\)"),
    ({"kind": "inverse", "timescale": True}, r"finite number in \(0, inf\)"),
    ({"kind": "inverse", "timescale": 10**400}, r"finite number in \(0, inf\)"),
    ({"kind": "linear", "timesteps": 100, "final": 1.5}, r"in \[0, 1\]"),
    ({"kind": "linear", "timesteps": float("inf"), "final": 0.1}, r"finite number in \(0, inf\)"),
    ("inverse", "lr_decay must be"),
])
def test_lr_decay_is_validated(lr_decay, pattern):
    problem = TaxDesignTabular(**SMALL)
    env = problem.follower_env(problem.x_init, 0)
    with pytest.raises(ValueError, match=pattern):
        SoftDQN("MlpPolicy", env, lr_decay=lr_decay)


def test_lr_decay_scales_the_step_size_by_transitions_across_warm_starts():
    assert lr_decay_factor(None, 500) == 1.0
    inverse = {"kind": "inverse", "timescale": 100.0}
    assert lr_decay_factor(inverse, 0) == 1.0 and lr_decay_factor(inverse, 300) == 0.25
    linear = {"kind": "linear", "timesteps": 200.0, "final": 0.1}
    assert [lr_decay_factor(linear, t) for t in (0, 100, 200, 400)] == pytest.approx(
        [1.0, 0.55, 0.1, 0.1])
    problem = TaxDesignTabular(**SMALL)
    follower = SoftDQNFollower(total_timesteps=64, n_envs=2, algo_kwargs={
        "learning_rate": 1e-3, "learning_starts": 16, "batch_size": 8, "buffer_size": 500,
        "lr_decay": {"kind": "inverse", "timescale": 64}})
    cold = follower.respond(problem, problem.x_init, 0, seed=0)
    model = cold.warm_start
    assert model.num_timesteps == 64
    assert model.policy.optimizer.param_groups[0]["lr"] == pytest.approx(5e-4)  # t = 64
    follower.respond(problem, problem.x_init, 0, seed=0, warm_start=model)
    assert model.current_learning_rate() == pytest.approx(1e-3 / 3)  # t = 128: not restarted


def test_tax_action_features_are_the_action_values():
    problem = TaxDesign(**{k: v for k, v in SMALL.items() if k != "asset_cells"})
    features = joint_action_features(problem)
    assert features.shape == (27, 3)
    a = problem.flatten_action(2, np.array([1, 2]))
    np.testing.assert_allclose(features[a], [1.0, 0.5, 1.0])  # hours 4/4, c = 1/2, 2/2


def test_soft_double_target_equals_soft_target_when_networks_agree():
    rng = th.Generator().manual_seed(0)
    q = th.randn(6, 4, generator=rng, dtype=th.float64)
    rewards, dones = th.randn(6, 1, dtype=th.float64), th.zeros(6, 1, dtype=th.float64)
    dones[2] = 1.0
    a = soft_double_target(rewards, dones, 0.9, q, q, 0.3)
    b = soft_bellman_target(rewards, dones, 0.9, q, 0.3)
    th.testing.assert_close(a, b)
    # With different networks: the target network's values under the online softmax policy.
    q_online = th.randn(6, 4, generator=rng, dtype=th.float64)
    pi = th.softmax(q_online / 0.3, dim=1)
    expected = rewards + 0.9 * (1 - dones) * (pi * (q - 0.3 * th.log(pi))).sum(1, keepdim=True)
    th.testing.assert_close(soft_double_target(rewards, dones, 0.9, q, q_online, 0.3), expected)


def test_neural_household_on_a_reduced_economy_is_measured_exactly():
    """A joint-head soft-DQN household (soft double targets, Q scaled by 10) on the 27-action,
    5-cell economy after 3,000 transitions: its exact soft-optimality gap is positive and below
    the uniform policy's (measured, seeds 0, 1, 2: 2.8, 11.5, 1.3; uniform 15.7 — ``V*`` is
    1.8, so the relative gap is large). The 5 % target is far: docs/tax_design.md, "The soft-DQN
    households"."""
    problem = TaxDesignTabular(**SMALL)
    model = problem.tabular(problem.x_init, 0)
    uniform = np.full((problem.n_cells, 27), 1 / 27)
    follower = SoftDQNFollower(
        total_timesteps=3_000, n_envs=4, policy="JointMlpPolicy",
        algo_kwargs={"learning_rate": 1e-3, "batch_size": 64, "learning_starts": 200,
                     "target_update_interval": 100, "exploration_initial_eps": 0.1,
                     "exploration_fraction": 0.05, "loss": "huber", "double_q": True,
                     "buffer_size": 20_000,
                     "policy_kwargs": {"rank": 16, "net_arch": [32, 32], "action_arch": [32],
                                       "q_scale": 10.0}})
    response = follower.respond(problem, problem.x_init, 0, seed=0)
    gap = soft_optimality_gap(model, problem.lam, response.policy)
    v_star = model.mu @ solve_follower(model, problem.lam).v
    gap_uniform = (v_star - model.mu @ evaluate_policy(model, uniform, lam=problem.lam)) \
        / abs(v_star)
    assert gap_uniform == pytest.approx(15.65, abs=0.01)
    assert 0 < gap < gap_uniform


@pytest.mark.slow
def test_benchmark_households_at_the_initial_taxes():
    """The ``neural_joint`` households of the tax benchmark after their 20,000-transition
    warm-up (50,000 transitions) at ``x_0``, group 1, measured on the 41-cell grid economy.
    Measured gaps 0.86 (seed 0, in 10,000-transition chunks) and 1.17 (the benchmark run's first
    step): the 5 % target is missed (docs/tax_design.md); the bound 2 guards against losing the
    joint head's gain (the uniform policy: 113; the flat head after 20,000 transitions: 9.4)."""
    from bilevel_bench.experiments.tax.spec import NEURAL_JOINT_FOLLOWER

    problem = TaxDesign()
    kwargs = {k: v for k, v in NEURAL_JOINT_FOLLOWER.items() if k != "total_timesteps"}
    response = SoftDQNFollower(**kwargs).respond(problem, problem.x_init, 0, seed=0)
    grid = problem.discretised(41)
    gap = soft_optimality_gap(grid.tabular(problem.x_init, 0), problem.lam, response.policy,
                              observations=problem.obs_of(grid.points))
    assert 0 < gap < 2.0


def _fit_to_q_star(problem, states, state_arch, seed, steps=1500):
    """The joint head (per-state value, actions by values and one-hot levels, Q × 10) fitted by
    full-batch Adam to the exact ``Q*`` of group 1 at ``x_0``, weighted by ``π*``'s occupancy ×
    (``π*`` + the head's own Boltzmann policy): the errors a Boltzmann policy pays for are on the
    actions either policy takes. Returns the exact gap of ``softmax(Q/λ)``."""
    th.manual_seed(seed)
    model = problem.tabular(problem.x_init, 0)
    solution = solve_follower(model, problem.lam)
    q_star = th.as_tensor(solution.q, dtype=th.float32)
    S, A = q_star.shape
    head = JointActionHead(states.shape[1], problem.follower_action_features("values+onehot"),
                           state_arch, [32, 32], 8, th.nn.ReLU, q_scale=10.0, state_value=True)
    optimiser = th.optim.Adam(head.parameters(), lr=3e-3)
    occupancy = solve_bellman(policy_transitions(model.P, solution.pi), model.gamma, model.mu,
                              transpose=True)
    d = th.as_tensor(occupancy / occupancy.sum(), dtype=th.float32)[:, None]
    pi_star = th.as_tensor(solution.pi, dtype=th.float32)
    obs = th.as_tensor(states, dtype=th.float32)
    for _ in range(steps):
        q = head(obs)
        with th.no_grad():
            weights = (d + 1e-3 / S) * (pi_star + th.softmax(q / problem.lam, -1) + 1e-3 / A)
        loss = (weights * (q - q_star) ** 2).sum() / weights.sum()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with th.no_grad():
        policy = th.softmax(head(obs).double() / problem.lam, -1).numpy()
    return soft_optimality_gap(model, problem.lam, policy)


def test_one_hot_cells_let_the_joint_head_represent_the_soft_optimum():
    """Representation, without RL: on the reduced economy the joint head with one free
    embedding per asset cell (one-hot cells, ``net_arch=[]``, as the ``neural_grid`` set-up)
    fitted to ``Q*`` is within the 5 % target (measured 0.0009–0.0021 over seeds 0–2; a head
    that ignores the state cannot be: the negative control). On the 41-cell economy the same
    fit gives 0.0099, against 0.49 for the scaled asset through an MLP: the RL households'
    gaps are learning errors, not representation errors (docs/tax_design.md)."""
    problem = TaxDesignTabular(**SMALL)
    one_hot = _fit_to_q_star(problem, np.eye(problem.n_cells), [], seed=0)
    blind = _fit_to_q_star(problem, np.ones((problem.n_cells, 1)), [], seed=0)
    assert 0 <= one_hot < 0.05 < blind


def test_action_encodings_and_the_state_value_term():
    problem = TaxDesign(**{k: v for k, v in SMALL.items() if k != "asset_cells"})
    values = problem.follower_action_features()
    both = problem.follower_action_features("values+onehot")
    assert both.shape == (27, 3 + 3 + 2 * 3)
    np.testing.assert_array_equal(both[:, :3], values)
    a = problem.flatten_action(2, np.array([1, 0]))
    np.testing.assert_array_equal(both[a, 3:], [0, 0, 1, 0, 1, 0, 1, 0, 0])
    np.testing.assert_allclose(joint_action_features(problem, "values+onehot"), both)
    with pytest.raises(ValueError, match="encoding must be one of"):
        problem.follower_action_features("onehot")
    with pytest.raises(ValueError, match="names an encoding"):
        joint_action_features(object(), "values")  # a problem without action features
    head = JointActionHead(3, values, [], [8], 4, th.nn.ReLU, q_scale=2.0, state_value=True)
    obs = th.eye(3)
    with th.no_grad():
        base = head(obs)
        head.value_net.bias += 1.5  # v(s) moves every action's Q of the state alike
        np.testing.assert_allclose((head(obs) - base).numpy(), 3.0, rtol=1e-5)
    env = problem.follower_env(problem.x_init, 0)
    with pytest.raises(ValueError, match="state_value must be True or False"):
        SoftDQN("JointMlpPolicy", env, policy_kwargs={"action_features": values,
                                                      "state_value": 1})
    grid = TaxDesignTabular(**SMALL)
    follower = SoftDQNFollower(total_timesteps=64, n_envs=2, policy="JointMlpPolicy",
                               algo_kwargs={"learning_starts": 16, "policy_kwargs": {
                                   "net_arch": [], "state_value": True,
                                   "action_features": "values+onehot"}})
    policy = follower.respond(grid, grid.x_init, 0, seed=0).policy
    assert policy.action_probs(np.arange(5)).shape == (5, 27)


@pytest.mark.slow
def test_grid_benchmark_households_at_the_initial_taxes():
    """The ``neural_grid`` households of the tax benchmark after their 150,000-transition
    warm-up at ``x_0``, group 0, on the grid economy they are trained in. Measured gaps at the
    benchmark runs' first steps 0.74, 1.49 and 0.41 (three seeds, the sampled group's; without
    exploring starts 0.62, 0.62, 0.34): **the 5 % target is missed**
    (docs/tax_design.md, "Households on the grid economy itself"); the bound 1 guards the
    measured level (uniform households: 113)."""
    from bilevel_bench.experiments.tax.spec import NEURAL_GRID_FOLLOWER

    problem = TaxDesignTabular()
    kwargs = {k: v for k, v in NEURAL_GRID_FOLLOWER.items() if k != "total_timesteps"}
    response = SoftDQNFollower(**kwargs).respond(problem, problem.x_init, 0, seed=0)
    gap = soft_optimality_gap(problem.tabular(problem.x_init, 0), problem.lam, response.policy)
    assert 0 < gap < 1.0
