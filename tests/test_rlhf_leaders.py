"""Leaders on RLHF (a trajectory-level objective): HPGD's score-function estimator against the
exact enumerated hypergradient, the exact evaluation hook, refusals, improvement."""

import json

import gymnasium as gym
import numpy as np
import pytest

import bilevel_envs  # noqa: F401  (registers the ids)
from bilevel_envs.envs.contract_design.problem import ContractDesign
from bilevel_envs.envs.rlhf import problem as rlhf
from bilevel_envs.followers import TabularPolicy
from bilevel_envs.leader_env import LeaderEnv
from bilevel_envs.oracles import TabularOracle
from leaders import AMD, HPGD, ZeroOrder
from leaders.estimators import WeightedTerms, trajectory_estimate


def oracle_and_rollouts(problem, x, n_pairs, seed, context=0):
    """The exact follower's oracle at ``x`` and ``n_pairs`` pairs of its trajectories."""
    H, S, A = problem.policy(x).shape
    oracle = TabularOracle(problem, x, context, TabularPolicy(problem.policy(x).reshape(H * S, A)))
    return oracle, oracle.rollout(np.random.default_rng(seed), 2 * n_pairs, H)


def estimates(problem, x, n_pairs, seed, **kwargs):
    """``(n_pairs, d)`` per-pair trajectory estimates (context-weighted) and the exact ∇J."""
    samples = 0.0
    for c, weight in enumerate(problem.context_probs):
        oracle, rollouts = oracle_and_rollouts(problem, x, n_pairs, seed + c, context=c)
        terms = trajectory_estimate(problem, x, c, rollouts, oracle,
                                    np.random.default_rng(seed + 100 + c), **kwargs)
        samples = samples + weight * terms.per_segment()
    return samples, problem.exact_hypergradient(x)


def max_z(samples, exact, n_directions=4, seed=0):
    """Largest |z| over every coordinate and a few random unit directions."""
    u = np.random.default_rng(seed).normal(size=(samples.shape[1], n_directions))
    u /= np.linalg.norm(u, axis=0)
    proj = np.hstack([samples, samples @ u])
    target = np.concatenate([exact, exact @ u])
    se = proj.std(axis=0, ddof=1) / np.sqrt(len(proj))
    return float(np.max(np.abs(proj.mean(axis=0) - target) / se))


TINY_CASES = [
    dict(beta=2.0, epsilon=0.05, lam=0.5),
    dict(reward_model="features", annotators="two", beta=3.0, lam=0.3),
]


# ---------------------------------------------------------------------------- the estimator
@pytest.mark.parametrize("kwargs", TINY_CASES)
@pytest.mark.parametrize("coupled", [False, True])
def test_trajectory_estimator_is_unbiased_on_tiny(kwargs, coupled):
    """20,000 pairs per annotator, ∂Â from Alg. 2 restarts (never the score table): every
    coordinate and 4 random directions within 4 measured standard errors of the enumerated ∇J."""
    problem = rlhf.RLHFProblem("tiny", **kwargs)
    x = np.random.default_rng(4).normal(0.0, 1.0, size=problem.n_params)
    samples, exact = estimates(problem, x, 20_000, seed=1, coupled=coupled)
    assert max_z(samples, exact) < 4


def test_trajectory_estimator_without_baseline_is_unbiased_too():
    problem = rlhf.RLHFProblem("tiny", **TINY_CASES[0])
    x = np.random.default_rng(4).normal(0.0, 1.0, size=problem.n_params)
    samples, exact = estimates(problem, x, 20_000, seed=2, baseline=False, coupled=True)
    assert max_z(samples, exact) < 4


@pytest.mark.parametrize("mutilate", ["no score term", "dQ instead of dA"])
def test_unbiasedness_check_detects_a_wrong_estimator(mutilate):
    """Power: the pair derivative ∂xℓ alone (ignoring that π*_x moves with x; ~100 SE off), or
    ∂Q̂ restarts without the ∂V̂ ones (~13 SE off), must fail the check the estimator passes."""
    problem = rlhf.RLHFProblem("tiny", **TINY_CASES[0])
    x = np.random.default_rng(4).normal(0.0, 1.0, size=problem.n_params)
    oracle, rollouts = oracle_and_rollouts(problem, x, 20_000, seed=1)
    terms = trajectory_estimate(problem, x, 0, rollouts, oracle, np.random.default_rng(0))
    exact = problem.exact_hypergradient(x)
    assert max_z(terms.per_segment(), exact) < 4  # complete: passes
    # With one restart pair and x only in the reward, the parts are [∂Q̂ rollouts, ∂V̂ rollouts].
    kept = [] if mutilate == "no score term" else terms.scores.parts[:1]
    terms.scores = WeightedTerms(problem, x, 0, kept)
    assert max_z(terms.per_segment(), exact) > 4  # mutilated: fails


def test_exact_layer_delegates_to_the_enumeration_and_checks_tol():
    """``exact_objective``/``exact_hypergradient`` of a trajectory-level problem are its own
    enumeration; ``tol`` has no use there but must still be a positive number."""
    from bilevel_envs.exact import exact_hypergradient, exact_objective

    problem = rlhf.RLHFProblem("tiny", **TINY_CASES[0])
    x = np.random.default_rng(4).normal(0.0, 1.0, size=problem.n_params)
    assert exact_objective(problem, x) == problem.exact_objective(x)
    np.testing.assert_array_equal(exact_hypergradient(problem, x), problem.exact_hypergradient(x))
    for call in (exact_objective, exact_hypergradient):
        for tol in (0.0, -1e-9):
            with pytest.raises(ValueError, match=r"tol must be a finite number in \(0, inf\)"):
                call(problem, x, tol=tol)


def test_total_is_the_sum_of_the_per_pair_estimates():
    problem = rlhf.RLHFProblem("grid", reward_model="features", beta=2.0)
    x = np.random.default_rng(0).normal(0.0, 0.5, size=problem.n_params)
    oracle, rollouts = oracle_and_rollouts(problem, x, 300, seed=0)
    terms = trajectory_estimate(problem, x, 0, rollouts, oracle, np.random.default_rng(1))
    assert terms.n_samples == 300
    np.testing.assert_allclose(terms.total(), terms.per_segment().sum(axis=0), atol=1e-9)


def test_pair_index_labels_the_transitions_of_each_pair():
    problem = rlhf.RLHFProblem("grid")
    x = np.random.default_rng(0).normal(0.0, 0.5, size=problem.n_params)
    oracle, _ = oracle_and_rollouts(problem, x, 1, seed=0)
    # Longer chains: several episodes per chain, the last one cut by the batch end.
    rollouts = oracle.rollout(np.random.default_rng(0), 3, 3 * problem.trajectory_length + 5)
    pairs = problem.trajectory_pairs(rollouts)
    traj0, traj1, index = pairs.traj0, pairs.traj1, pairs.index
    assert index.max() == len(traj0) - 1 == 3  # 9 complete episodes: 4 pairs, one left over
    S = problem.n_states
    for k in range(len(traj0)):
        obs, actions = rollouts.obs[index == k], rollouts.actions[index == k]
        np.testing.assert_array_equal(obs % S, np.concatenate([traj0.states[k], traj1.states[k]]))
        np.testing.assert_array_equal(actions, np.concatenate([traj0.actions[k],
                                                               traj1.actions[k]]))
    assert (index == -1).sum() == rollouts.mask.size - 8 * problem.trajectory_length


def test_trajectory_estimator_refuses_other_problems():
    contract = ContractDesign("project")
    with pytest.raises(ValueError, match="needs a non-decomposable problem with a pairwise"):
        trajectory_estimate(contract, contract.x_init, 0, None, None, np.random.default_rng(0))

    class MovingP(rlhf.RLHFProblem):
        transitions_depend_on_x = True

    problem = MovingP("tiny")
    with pytest.raises(ValueError, match="x enters the follower's reward only"):
        trajectory_estimate(problem, problem.x_init, 0, None, None, np.random.default_rng(0))


# ---------------------------------------------------------------------------- leaders
def tiny_env(**kwargs):
    return gym.make("bilevel/RLHF-v0", instance="tiny", **kwargs)


def test_hpgd_picks_the_trajectory_estimator_and_ascends_the_exact_objective():
    """Tiny instance, 300 iterations: exact J from −log 2 to within 0.02 of the best known value
    (−0.5933, the best of 16 L-BFGS-B starts on the enumerated J), recorded via eval_every."""
    leader = HPGD(tiny_env(), learning_rate=0.2, coupled_restarts=True, seed=0)
    assert leader.estimator == "trajectory"
    leader.learn(300, eval_every=50)
    exact = leader.history["exact_objective"]
    assert np.isfinite(exact[::50]).all() and np.isnan(exact[1::50]).all()
    assert exact[0] == pytest.approx(-np.log(2))
    assert leader.exact_objective() > -0.5933 - 0.02


def test_hpgd_gradient_through_the_env_is_unbiased_with_two_annotators():
    """HPGD's estimate_gradient end to end (env step, one follower per annotator, rollouts split
    per follower, context weights): 200 estimates of 128 pairs each at a fixed x, every coordinate
    and 4 directions within 4 standard errors of the enumerated ∇J."""
    env = tiny_env(annotators="two", contexts="all", lam=0.3, beta=2.0)
    x = np.random.default_rng(5).normal(0.0, 1.0, size=env.unwrapped.problem.n_params)
    leader = HPGD(env, x0=x, coupled_restarts=True, seed=0)
    env.reset(seed=0)
    samples = np.array([leader.estimate_gradient()[0] for _ in range(200)])
    assert max_z(samples, env.unwrapped.problem.exact_hypergradient(x)) < 4


def test_hpgd_improves_likelihood_and_accuracy_on_the_default_grid():
    """The default RLHF grid (state-action reward model, β = 1), 200 iterations: the expected
    log-likelihood and the preference accuracy on 4,000 fresh pairs from π*_x both improve by
    more than 10 standard errors."""
    from bilevel_bench.experiments.rlhf.run import evaluate

    env = gym.make("bilevel/RLHF-v0")
    leader = HPGD(env, learning_rate=0.03, coupled_restarts=True, seed=0)
    before = evaluate(leader.problem, leader.x, n_pairs=4000, seed=7)
    leader.learn(200)
    after = evaluate(leader.problem, leader.x, n_pairs=4000, seed=7)
    assert after["log_likelihood"] - before["log_likelihood"] > 10 * after["log_likelihood_se"]
    assert after["preference_accuracy"] - before["preference_accuracy"] > \
        10 * after["preference_accuracy_se"]


def test_zero_order_runs_on_env_rewards():
    leader = ZeroOrder(tiny_env(), learning_rate=0.1, perturbation_constant=0.5, seed=0)
    leader.learn(20, eval_every=10)
    assert np.isfinite(leader.history["exact_objective"][[0, 10]]).all()


def test_eval_every_without_an_exact_objective_is_a_clear_error():
    leader = HPGD(gym.make("bilevel/RLHF-v0", n_pairs=4), seed=0)
    with pytest.raises(ValueError, match="eval_every needs the exact J.*exceeds max_trajectories"):
        leader.learn(1, eval_every=1)
    with pytest.raises(ValueError, match="no per-context leader values"):
        leader.exact_context_values()


def test_estimators_and_leaders_that_do_not_fit_are_refused():
    with pytest.raises(ValueError, match=r"AMD \(Alg. 9\) differentiates a decomposable J"):
        AMD(tiny_env())
    for estimator in ("every_visit", "paper"):
        with pytest.raises(ValueError, match="has a trajectory-level objective: use "
                                             "estimator='trajectory'"):
            HPGD(tiny_env(), estimator=estimator)
    contract = LeaderEnv(ContractDesign("project"), n_envs=1, n_rollout_steps=10)
    with pytest.raises(ValueError, match="estimator='trajectory' is for trajectory-level"):
        HPGD(contract, estimator="trajectory")
    assert HPGD(contract).estimator == "every_visit"


def test_hpgd_checkpoint_resume_on_rlhf(tmp_path):
    make = lambda: HPGD(tiny_env(n_pairs=16), learning_rate=0.2, seed=3)  # noqa: E731
    straight = make().learn(6)
    first = make().learn(2)
    resumed = HPGD.load(first.save(tmp_path / "run"), tiny_env(n_pairs=16)).learn(4)
    np.testing.assert_array_equal(resumed.x, straight.x)


# ---------------------------------------------------------------------------- the command
def test_bench_rlhf_smoke(tmp_path):
    """`bilevel-bench rlhf` end to end with a tiny budget: runs, table, figure."""
    from bilevel_bench.cli import main as bench

    args = ["rlhf", "--instances", "tiny", "grid_features", "--iterations", "4",
            "--eval-every", "2", "--eval-pairs", "100", "--seeds", "1", "--workers", "1",
            "--out", str(tmp_path)]
    assert bench(args) == 0
    runs = sorted((tmp_path / "runs").glob("*.json"))
    assert len(runs) == 4
    result = json.loads(runs[0].read_text())
    assert result["curve"]["iteration"] == [0, 2, 4]
    assert set(result["curve"]) >= {"log_likelihood", "preference_accuracy", "true_regret"}
    table = (tmp_path / "rlhf.md").read_text()
    for name in ("tiny", "grid_features", "HPGD", "Zero-Order", "true reward as model",
                 "best known"):
        assert name in table
    assert (tmp_path / "metrics.png").stat().st_size > 10_000


def test_evaluate_is_seeded_and_scores_the_true_reward_model_perfectly_on_regret():
    from bilevel_bench.experiments.rlhf.run import evaluate, make_problem, true_reward_model

    problem = make_problem("grid_features")
    x_true = true_reward_model(problem)
    assert x_true is not None
    first, again = (evaluate(problem, x_true, 500, seed=3) for _ in range(2))
    assert first == again
    assert first["true_regret"] == pytest.approx(0.0, abs=1e-12)
    zero = evaluate(problem, problem.x_init, 500, seed=3)
    assert zero["preference_accuracy"] == 0.5 and zero["log_likelihood"] == pytest.approx(
        -np.log(2))
    with pytest.raises(ValueError, match="n_pairs must be an integer >= 2"):
        evaluate(problem, x_true, 1)
