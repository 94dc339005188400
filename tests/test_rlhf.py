"""RLHF as bilevel RL: follower solver, score table, exact J and ∇J by enumeration, estimators,
metrics, env vs model, checkers."""

import gymnasium as gym
import numpy as np
import pytest
from scipy import stats

import bilevel_envs  # noqa: F401  (registers the ids)
from bilevel_envs.envs.four_rooms import model as fr
from bilevel_envs.envs.rlhf.envs import PreferenceGridEnv
from bilevel_envs.envs.rlhf.model import (
    INSTANCES,
    Annotator,
    TrajectoryBatch,
    enumerate_trajectories,
    log_sigmoid,
    teacher_label_prob,
)
from bilevel_envs.envs.rlhf.problem import RLHFProblem
from bilevel_envs.exact import ExactSolver, exact_hypergradient, exact_objective
from bilevel_envs.followers import TabularPolicy
from bilevel_envs.oracles import TabularOracle
from bilevel_envs.tabular import expected_next, policy_transitions, soft_policy_iteration
from tests.conftest import check_env_strict, z_score

SMALL = {"n_pairs": 4}


def tiny(**kwargs):
    return RLHFProblem("tiny", **kwargs)


def random_x(problem, seed, scale=1.0):
    return np.random.default_rng(seed).normal(0.0, scale, size=problem.n_params)


def sample_pairs(problem, x, n_pairs, seed, context=0):
    """``n_pairs`` pairs drawn from π*_x with the tabular oracle (one trajectory per chain)."""
    H, S, A = problem.policy(x).shape
    policy = TabularPolicy(problem.policy(x).reshape(H * S, A))
    oracle = TabularOracle(problem, x, context, policy)
    rollouts = oracle.rollout(np.random.default_rng(seed), 2 * n_pairs, H)
    pairs = problem.trajectory_pairs(rollouts)
    return pairs.traj0, pairs.traj1


# ---------------------------------------------------------------------------- the MDPs
@pytest.mark.parametrize("instance, S, A, H", [
    ("grid", 16, 5, 8), ("four_rooms", 104, 4, 10), ("tiny", 3, 3, 3),
])
def test_instances(instance, S, A, H):
    problem = RLHFProblem(instance)
    assert (problem.n_states, problem.n_actions, problem.trajectory_length) == (S, A, H)
    np.testing.assert_allclose(problem.P.sum(-1), 1.0)
    assert problem.mu.sum() == 1 and problem.follower_observation_space.n == H * S


def test_four_rooms_dynamics_are_the_four_rooms_env():
    problem = RLHFProblem("four_rooms")
    reference = fr.transition_tensor(fr.DEFAULT_MOVE_PROB, fr.GOAL_STATES[0])
    keep = np.arange(fr.N_CELLS) != fr.GOAL_STATES[0]  # the shaping env's goal row is terminal
    np.testing.assert_allclose(problem.P[keep], reference[keep], atol=1e-15)
    assert problem.cells == fr.CELLS and problem.mu[fr.START_STATE] == 1


@pytest.mark.parametrize("instance", INSTANCES)
def test_backward_induction_equals_core_soft_policy_iteration_on_the_augmented_model(instance):
    problem = RLHFProblem(instance, lam=0.2)
    x = random_x(problem, 0)
    q, _, pi = problem.solve(x)
    sol = soft_policy_iteration(problem.tabular(x, 0), problem.lam, tol=1e-12)
    np.testing.assert_allclose(sol.q.reshape(q.shape), q, atol=1e-10)
    np.testing.assert_allclose(sol.pi.reshape(pi.shape), pi, atol=1e-10)


def augmented_dq(problem, x):
    """``∂xQ`` at fixed π on the time-augmented model from the tabular layer's linear system
    ``(I − γ P_π) ∂V = Σ_a π ∂r``, ``∂Q = ∂r + γ P ∂V``: shape ``(H·S, A, d)``."""
    model = problem.tabular(x, 0)
    pi = problem.policy(x).reshape(-1, problem.n_actions)
    M = np.eye(model.n_states) - model.gamma * policy_transitions(model.P, pi)
    dv = np.linalg.solve(M, np.einsum("sa,sad->sd", pi, model.dr))
    return model.dr + model.gamma * expected_next(model.P, dv), pi


def test_score_table_equals_linear_system_of_the_tabular_layer():
    problem = RLHFProblem("grid", reward_model="features", lam=0.3)
    x = random_x(problem, 1)
    dq, pi = augmented_dq(problem, x)
    dA = dq - np.einsum("sa,sad->sd", pi, dq)[:, None, :]
    np.testing.assert_allclose(problem.score_table(x).reshape(dA.shape), dA / problem.lam,
                               atol=1e-10)


def test_score_table_is_the_derivative_of_log_pi():
    problem = tiny(lam=0.3, reward_model="state")
    x = random_x(problem, 2)
    h = 1e-6
    fd = np.stack([(np.log(problem.policy(x + h * e)) - np.log(problem.policy(x - h * e)))
                   / (2 * h) for e in np.eye(problem.n_params)], axis=-1)
    table = problem.score_table(x)
    assert np.linalg.norm(table - fd) / np.linalg.norm(fd) < 1e-6


# ---------------------------------------------------------------------------- exact J and ∇J
def test_enumeration_equals_brute_force_over_all_sequences():
    import itertools

    problem = tiny()
    pi = problem.policy(random_x(problem, 0))
    states, actions, p = enumerate_trajectories(problem.P, problem.mu, pi)
    found = {tuple(row): prob for row, prob in zip(np.hstack([states, actions]), p)}
    brute = {}
    s0 = int(np.argmax(problem.mu))
    for rest in itertools.product(range(3), repeat=2):
        for acts in itertools.product(range(3), repeat=3):
            seq = (s0,) + rest
            prob = np.prod([pi[t, seq[t], acts[t]] for t in range(3)]) * np.prod(
                [problem.P[seq[t], acts[t], seq[t + 1]] for t in range(2)])
            if prob > 0:
                brute[seq + acts] = prob
    assert found.keys() == brute.keys() and len(found) == len(p)
    np.testing.assert_allclose([found[k] for k in brute], list(brute.values()), rtol=1e-12)
    assert p.sum() == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="exceeds max_trajectories=20000; use instance='tiny'"):
        RLHFProblem("grid").exact_objective(np.zeros(80))


EXACT_CASES = [
    dict(),
    dict(reward_model="state", annotators="two", beta=2.0, epsilon=0.1),
    dict(reward_model="features", normalise=True, beta=3.0, lam=0.5),
    dict(trajectory_length=4, annotators="two", annotator_probs=(0.3, 0.7), gamma=0.8),
]


@pytest.mark.parametrize("kwargs", EXACT_CASES)
def test_exact_hypergradient_matches_central_finite_differences(kwargs):
    problem = tiny(**kwargs)
    h = 1e-5
    for seed in (0, 1):
        x = random_x(problem, seed, scale=2.0)
        grad = exact_hypergradient(problem, x)  # dispatches to the problem (trajectory-level J)
        fd = np.array([(exact_objective(problem, x + h * e) - exact_objective(problem, x - h * e))
                       / (2 * h) for e in np.eye(problem.n_params)])
        rel = np.linalg.norm(grad - fd) / np.linalg.norm(fd)
        assert rel < 1e-4, f"relative error {rel:.2e} for {kwargs}"


def test_finite_difference_check_detects_a_missing_score_term():
    """Power check: ``E[∂xℓ]`` alone (ignoring that π*_x moves with x) is far from ∇J."""
    problem = tiny(beta=2.0)
    x = random_x(problem, 0, scale=2.0)
    states, actions, p = enumerate_trajectories(problem.P, problem.mu, problem.policy(x))
    traj = TrajectoryBatch(states, actions)
    i, j = np.meshgrid(np.arange(len(p)), np.arange(len(p)), indexing="ij")
    partial = problem.grad_pair_objective(x, 0, traj[i.ravel()], traj[j.ravel()],
                                          weights=(p[:, None] * p[None, :]).ravel())
    grad = problem.exact_hypergradient(x)
    assert np.linalg.norm(partial - grad) / np.linalg.norm(grad) > 0.05


def test_exact_objective_at_zero_is_minus_log_two():
    """``r_x = 0`` makes every pair a coin flip for the model: ``ℓ = −log 2`` whatever the
    labels."""
    problem = tiny(annotators="two", epsilon=0.2)
    assert problem.exact_objective(np.zeros(problem.n_params)) == pytest.approx(-np.log(2))


def test_pair_gradient_matches_finite_differences_at_fixed_trajectories():
    problem = RLHFProblem("grid", reward_model="features", beta=2.0, epsilon=0.1)
    x = random_x(problem, 3)
    traj0, traj1 = sample_pairs(problem, x, 50, seed=0)
    h = 1e-6
    fd = np.stack([(problem.pair_objective(x + h * e, 0, traj0, traj1)
                    - problem.pair_objective(x - h * e, 0, traj0, traj1)) / (2 * h)
                   for e in np.eye(problem.n_params)], axis=-1)
    np.testing.assert_allclose(problem.grad_pair_objective(x, 0, traj0, traj1), fd, atol=1e-7)
    w = np.random.default_rng(0).normal(size=50)
    np.testing.assert_allclose(problem.grad_pair_objective(x, 0, traj0, traj1, weights=w),
                               w @ fd, atol=1e-6)


# ---------------------------------------------------------------------------- estimators
def test_monte_carlo_pairs_estimate_exact_objective_and_hypergradient():
    """Sampled pairs from the oracle: the mean ℓ and the score-function estimator are unbiased
    (each within 4 standard errors; the gradient along a few directions)."""
    problem = tiny(beta=2.0, epsilon=0.05, lam=0.5)
    x = random_x(problem, 4, scale=1.0)
    J, grad = problem.exact_value_and_grad(x)
    traj0, traj1 = sample_pairs(problem, x, 40_000, seed=1)
    ell = problem.pair_objective(x, 0, traj0, traj1)
    assert z_score(ell.mean(), J, ell.std() / np.sqrt(ell.size)) < 4
    samples = problem.hypergradient_samples(x, 0, traj0, traj1, baseline=J)
    directions = np.random.default_rng(0).normal(size=(3, problem.n_params))
    directions = np.vstack([grad, directions]) / np.linalg.norm(
        np.vstack([grad, directions]), axis=1, keepdims=True)
    for u in directions:
        proj = samples @ u
        assert z_score(proj.mean(), grad @ u, proj.std() / np.sqrt(proj.size)) < 4


def test_restarted_rollouts_estimate_dQ_on_the_augmented_model():
    """Paper Alg. 2 style restarts from ``(t·S + s, a)`` on the time-augmented model:
    ``∂xQ_t(s, a) = E[Σ_k γ^k φ(s_k, a_k)]``, episodes ending at the horizon."""
    problem = RLHFProblem("grid", reward_model="features", lam=0.3)
    x = random_x(problem, 5)
    H, S, A = problem.policy(x).shape
    t, s, a, n = 2, 5, 2, 20_000
    oracle = TabularOracle(problem, x, 0, TabularPolicy(problem.policy(x).reshape(H * S, A)))
    r = oracle.rollout(np.random.default_rng(0), n, H, start_states=np.full(n, t * S + s),
                       start_actions=np.full(n, a), auto_reset=False)
    assert r.mask[:, :H - t].all() and not r.mask[:, H - t:].any()
    assert r.terminated[:, H - t - 1].all()
    weights = np.where(r.mask, problem.gamma ** np.arange(H), 0.0)
    phi = problem.grad_follower_reward(x, 0, r.obs.ravel(), r.actions.ravel(), r.obs.ravel())
    samples = np.einsum("nk,nkd->nd", weights, phi.reshape(n, H, -1))
    exact = augmented_dq(problem, x)[0][t * S + s, a]
    se = samples.std(0) / np.sqrt(n)
    assert np.all(np.abs(samples.mean(0) - exact) <= 4 * se + 1e-12), (samples.mean(0), exact)


# ---------------------------------------------------------------------------- teacher and metrics
def test_teacher_label_probability():
    g0, g1 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    q = teacher_label_prob(g0, g1, beta=2.0, epsilon=0.1)
    np.testing.assert_allclose(q, 0.9 / (1 + np.exp(-2 * (g1 - g0)))
                               + 0.1 / (1 + np.exp(2 * (g1 - g0))))
    np.testing.assert_allclose(teacher_label_prob(g1, g0, 2.0, 0.1), 1 - q)
    np.testing.assert_allclose(teacher_label_prob(g0, g1, 2.0, 0.5), 0.5)
    np.testing.assert_allclose(teacher_label_prob(g0, g1, 4.0, 0.0, scale=2.0),
                               teacher_label_prob(g0, g1, 2.0, 0.0))
    assert log_sigmoid(np.array([-800.0]))[0] == pytest.approx(-800.0)


def test_sampled_labels_follow_the_teacher_and_normalisation_scales_returns():
    problem = RLHFProblem("grid", beta=3.0, epsilon=0.1, normalise=True)
    assert problem.return_scales[0] == pytest.approx(2.05 * (1 - 0.95 ** 8) / 0.05)
    x = random_x(problem, 6)
    traj0, traj1 = sample_pairs(problem, x, 20_000, seed=2)
    q = problem.label_probs(0, traj0, traj1)
    labels = problem.sample_labels(0, traj0, traj1, np.random.default_rng(0))
    assert z_score(labels.mean(), q.mean(), np.sqrt((q * (1 - q)).sum()) / q.size) < 4
    # The realised log-likelihood averages to the label-expected one.
    realised = problem.log_likelihood(x, traj0, traj1, labels)
    expected = problem.pair_objective(x, 0, traj0, traj1)
    assert z_score(realised.mean(), expected.mean(), realised.std() / np.sqrt(q.size)) < 4


def test_true_reward_model_is_a_perfect_ranker_with_zero_regret():
    problem = RLHFProblem("grid", lam=0.2)
    truth = problem.annotators[0].reward.ravel()  # state_action model: x = the true reward
    traj0, traj1 = sample_pairs(problem, truth, 2_000, seed=3)
    assert problem.preference_accuracy(truth, 0, traj0, traj1) == 1.0
    assert problem.preference_accuracy(-truth, 0, traj0, traj1) == 0.0
    # Against noisy labels (β = 1) even the truth agrees only partly; identical pairs count ½.
    labels = problem.sample_labels(0, traj0, traj1, np.random.default_rng(0))
    q = problem.label_probs(0, traj0, traj1)
    delta = problem.true_returns(0, traj1) - problem.true_returns(0, traj0)
    expected = np.where(delta == 0, 0.5, np.where(delta > 0, q, 1 - q)).mean()
    accuracy = problem.preference_accuracy(truth, 0, traj0, traj1, labels)
    assert z_score(accuracy, expected, 0.5 / np.sqrt(len(labels))) < 4 and accuracy < 0.95
    assert problem.true_regret(truth, 0) == pytest.approx(0.0, abs=1e-12)
    regrets = [problem.true_regret(random_x(problem, seed), 0) for seed in range(5)]
    assert min(regrets) > 0.1
    assert problem.true_regret(2 * truth, 0) > 1e-3  # π* of a rescaled reward is another policy


# ---------------------------------------------------------------------------- leader env
def test_leader_env_reward_is_an_unbiased_estimate_of_exact_J():
    env = gym.make("bilevel/RLHF-v0", instance="tiny", lam=0.5, beta=2.0, annotators="two",
                   contexts="all", n_pairs=20_000)
    env.reset(seed=0)
    problem = env.unwrapped.problem
    x = random_x(problem, 7)
    _, reward, terminated, truncated, info = env.step(x)
    assert not terminated and not truncated
    traj_sets = [problem.trajectory_pairs({k: v[c * 40_000:(c + 1) * 40_000]
                                           for k, v in info["rollouts"].items()})
                 for c in (0, 1)]
    se = 0.5 * np.sqrt(sum(problem.pair_objective(x, c, p.traj0, p.traj1).var() / 20_000
                           for c, p in enumerate(traj_sets)))
    assert z_score(reward, exact_objective(problem, x), se) < 4
    assert info["labels"].shape == (2, 20_000) and set(np.unique(info["labels"])) <= {0, 1}
    assert 0 <= info["preference_accuracy"] <= 1 and info["true_regret"] > 0
    assert info["log_likelihood"] < 0 and info["objective_estimate"] == reward


def test_leader_env_metrics_against_problem_functions():
    env = gym.make("bilevel/RLHF-v0", instance="grid", n_pairs=64, epsilon=0.1)
    env.reset(seed=1)
    problem = env.unwrapped.problem
    x = random_x(problem, 8)
    _, reward, _, _, info = env.step(x)
    pairs = problem.trajectory_pairs(info["rollouts"])
    traj0, traj1 = pairs.traj0, pairs.traj1
    assert len(traj0) == 64 and pairs is not env.unwrapped.last_step.followers[0].pairs
    assert reward == pytest.approx(problem.pair_objective(x, 0, traj0, traj1).mean())
    assert info["log_likelihood"] == pytest.approx(
        problem.log_likelihood(x, traj0, traj1, info["labels"][0]).mean())
    assert info["preference_accuracy"] == pytest.approx(
        problem.preference_accuracy(x, 0, traj0, traj1, info["labels"][0]))
    assert info["true_regret"] == pytest.approx(problem.true_regret(x, 0), abs=1e-9)
    uniform = np.full((8, 16, 5), 0.2)
    assert problem.true_regret(x, 0, uniform) == pytest.approx(
        problem.true_regret(np.zeros(80), 0), abs=1e-12)


def test_trajectories_from_longer_rollouts_and_wrong_rollouts():
    problem = tiny()
    x = random_x(problem, 0)
    policy = TabularPolicy(problem.policy(x).reshape(9, 3))
    r = TabularOracle(problem, x, 0, policy).rollout(np.random.default_rng(0), 2, 10)
    traj = problem.trajectories_from_rollouts(r)
    assert len(traj) == 6  # three complete episodes per chain, the tenth step is cut off
    np.testing.assert_array_equal(traj.states[:3].ravel(), r.obs[0, :9] % 3)
    from bilevel_envs.envs.garnet import GarnetProblem

    garnet = GarnetProblem(n_states=9, n_actions=3)
    other = TabularOracle(garnet, np.zeros(4), 0, policy).rollout(np.random.default_rng(0), 2, 12,
                                                                  time_limit=False)
    other.episode_step[:] = np.arange(12) % 3
    other.terminated[:] = (np.arange(12) % 3) == 2
    with pytest.raises(ValueError, match="not time-augmented episodes"):
        problem.trajectories_from_rollouts(other)
    with pytest.raises(ValueError, match="a pair needs two"):
        problem.trajectory_pairs(r.to_dict() | {k: v[:1, :3] for k, v in r.to_dict().items()})


# ---------------------------------------------------------------------------- follower env
SAMPLED = {"grid": [(0, 2), (5, 1), (10, 4), (16 + 3, 3), (7 * 16 + 4, 1)],
           "four_rooms": [(31, 0), (104 + 51, 2), (2 * 104 + 62, 3)],
           "tiny": [(1, 0), (3 + 0, 2), (5, 1)]}


@pytest.mark.parametrize("instance", INSTANCES)
def test_env_transitions_match_the_augmented_model(instance):
    problem = RLHFProblem(instance)
    env = PreferenceGridEnv(instance=instance)
    model = problem.tabular(problem.x_init, 0)
    env.reset(seed=0)
    for state, action in SAMPLED[instance]:
        counts = np.zeros(model.n_states, dtype=np.int64)
        terminated = set()
        for _ in range(3000):
            env.reset(options={"state": state})
            obs, _, term, _, _ = env.step(action)
            counts[obs] += 1
            terminated.add(term)
        probs = model.P[state, action]
        if probs.sum() == 0:  # the last step: the model terminates, the env too
            assert terminated == {True} and counts[state] == 3000
            continue
        assert terminated == {False}
        support = probs > 0
        assert counts[~support].sum() == 0
        if support.sum() > 1:
            p = stats.chisquare(counts[support], counts.sum() * probs[support]).pvalue
            assert p > 0.001, (instance, state, action)


def test_env_rewards_match_the_model_and_episodes_last_H_steps():
    problem = RLHFProblem("grid", annotators="two")
    x = random_x(problem, 9)
    env = PreferenceGridEnv(x=x, context=1, annotators="two")
    model = problem.tabular(x, 1)
    obs, info = env.reset(seed=0)
    for t in range(8):
        action = t % 5
        nxt, r, terminated, truncated, info = env.step(action)
        assert r == pytest.approx(model.r[obs, action])
        assert info["leader_reward"] == pytest.approx(model.r_leader[obs, action])
        assert terminated == (t == 7) and not truncated
        assert info["t"] == min(t + 1, 7) and nxt // 16 == info["t"]
        obs = nxt


@pytest.mark.parametrize("instance", INSTANCES)
def test_follower_env_passes_checkers(instance):
    check_env_strict(gym.make("bilevel/PreferenceGrid-v0", instance=instance).unwrapped)
    pytest.importorskip("stable_baselines3")
    from stable_baselines3.common.env_checker import check_env

    check_env(gym.make("bilevel/PreferenceGrid-v0", instance=instance,
                       x=None).unwrapped, warn=True)


@pytest.mark.parametrize("instance", INSTANCES)
def test_leader_env_passes_checker(instance):
    check_env_strict(gym.make("bilevel/RLHF-v0", instance=instance, **SMALL).unwrapped)


def test_render_ansi():
    env = PreferenceGridEnv(render_mode="ansi")
    env.reset(seed=0)
    text = env.render()
    assert text.startswith("A...") and "t = 0" in text


def test_follower_env_seeded_determinism():
    def run(seed):
        env = PreferenceGridEnv(instance="four_rooms")
        env.reset(seed=seed)
        return [env.step(t % 4)[0] for t in range(10)]

    assert run(3) == run(3) and run(3) != run(4)


def test_leader_env_seeded_determinism():
    def run(seed):
        env = gym.make("bilevel/RLHF-v0", instance="grid", annotators="two", n_pairs=8)
        env.reset(seed=seed)
        return [env.step(x) for x in np.random.default_rng(0).normal(size=(2, 80))]

    a, b, c = run(1), run(1), run(2)
    for sa, sb in zip(a, b):
        assert sa[1] == sb[1] and sa[4]["contexts"] == sb[4]["contexts"]
        np.testing.assert_array_equal(sa[4]["labels"], sb[4]["labels"])
        for key, value in sa[4]["rollouts"].items():
            np.testing.assert_array_equal(value, sb[4]["rollouts"][key])
    assert any(not np.array_equal(sa[4]["rollouts"]["obs"], sc[4]["rollouts"]["obs"])
               for sa, sc in zip(a, c))


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("bad, pattern", [
    (np.full(80, 11.0), r"action is outside x_space: action\[0\] = 11 is not in \[-10, 10\]"),
    (np.full(80, np.nan), r"action must be finite"),
    (np.zeros(79), r"action must have shape \(80,\) \(entries in \[-10, 10\]\)"),
])
def test_leader_env_rejects_bad_x(bad, pattern):
    env = gym.make("bilevel/RLHF-v0", **SMALL)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=pattern):
        env.step(bad)


@pytest.mark.parametrize("kwargs, error, pattern", [
    ({"instance": "atari"}, ValueError, r"unknown instance 'atari'; expected one of"),
    ({"trajectory_length": 0}, ValueError, r"trajectory_length must be an integer >= 1"),
    ({"reward_model": "neural"}, ValueError, r"reward_model must be one of"),
    ({"features": np.zeros((16, 2))}, ValueError, r"features are used with reward_model="),
    ({"reward_model": "features", "features": np.zeros((15, 2))}, ValueError,
     r"features must be a finite array of shape \(16, 5, d\) or \(16, d\)"),
    ({"annotators": "three"}, ValueError, r"annotators must be 'one', 'two' or a sequence"),
    ({"annotators": [Annotator(np.zeros(3))]}, ValueError,
     r"annotators\[0\].reward must be finite with shape \(16, 5\) or \(16,\)"),
    ({"annotators": [Annotator(np.zeros(16), name="ann")] * 2}, ValueError,
     r"annotator names must be unique; got \['ann', 'ann'\]"),
    ({"annotators": "two", "annotator_probs": (1.0,)}, ValueError,
     r"annotator_probs must be 2 non-negative numbers summing to 1"),
    ({"epsilon": 0.6}, ValueError, r"epsilon must be in \[0, 0.5\]"),
    ({"beta": -1.0}, ValueError, r"beta must be a non-negative number"),
    ({"gamma": 1.0}, ValueError, r"gamma must be in \(0, 1\)"),
    ({"lam": 0.0}, ValueError, r"lam must be a positive number"),
    ({"x_max": -1.0}, ValueError, r"x_max must be a positive number"),
    ({"move_prob": 1.5}, ValueError, r"move_prob must be in \(0, 1\]"),
])
def test_problem_and_envs_reject_bad_arguments(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        RLHFProblem(**kwargs)
    with pytest.raises(error, match=pattern):
        gym.make("bilevel/RLHF-v0", **kwargs, **SMALL)
    if "lam" not in kwargs:
        with pytest.raises(error, match=pattern):
            gym.make("bilevel/PreferenceGrid-v0", **kwargs)


@pytest.mark.parametrize("kwargs, error, pattern", [
    ({"n_envs": 4}, ValueError, r"n_envs is set by n_pairs"),
    ({"n_pairs": 0}, ValueError, r"n_pairs must be an integer >= 1"),
    ({"objective": "exact"}, ValueError, r"objective='exact' needs a tabular problem with a "
                                         r"decomposable objective"),
    ({"contexts": ["annotator3"]}, KeyError, r"unknown context 'annotator3'"),
])
def test_leader_env_rejects_bad_arguments(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        gym.make("bilevel/RLHF-v0", **{**SMALL, **kwargs})


def test_follower_env_rejects_bad_x_context_and_state():
    with pytest.raises(ValueError, match=r"x must have shape \(80,\)"):
        PreferenceGridEnv(x=np.zeros(3))
    with pytest.raises(KeyError, match=r"unknown context 2; expected an index in 0..1"):
        PreferenceGridEnv(context=2, annotators="two")
    env = PreferenceGridEnv()
    with pytest.raises(ValueError, match=r"options\['state'\] \(an index t·S \+ s\) must be an "
                                         r"integer in 0..127"):
        env.reset(options={"state": 128})


def test_pair_functions_reject_mismatched_trajectories():
    problem = tiny()
    t = TrajectoryBatch(np.zeros((4, 3), np.int64), np.zeros((4, 3), np.int64))
    short = TrajectoryBatch(np.zeros((4, 2), np.int64), np.zeros((4, 2), np.int64))
    with pytest.raises(ValueError, match=r"trajectory pairs need states and actions of one shape "
                                         r"\(N, 3\)"):
        problem.pair_objective(np.zeros(9), 0, t, short)


def test_exact_layer_refuses_or_dispatches_trajectory_level_objectives():
    problem = tiny()
    with pytest.raises(ValueError, match="has a trajectory-level objective; use exact_objective"):
        ExactSolver(problem)
    x = random_x(problem, 0)
    assert exact_objective(problem, x) == problem.exact_objective(x)


@pytest.mark.slow
def test_exact_hypergradient_matches_finite_differences_at_horizon_five():
    problem = tiny(trajectory_length=5, annotators="two", beta=2.0, epsilon=0.1, lam=0.3)
    x = random_x(problem, 11)
    h = 1e-5
    grad = problem.exact_hypergradient(x)
    fd = np.array([(problem.exact_objective(x + h * e) - problem.exact_objective(x - h * e))
                   / (2 * h) for e in np.eye(problem.n_params)])
    assert np.linalg.norm(grad - fd) / np.linalg.norm(fd) < 1e-4
