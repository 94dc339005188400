"""Every estimator, term by term, against the exact terms of ``dJ/dx``, with ±5 % controls.

The terms (``leaders.estimators.TERMS``) are the direct ``∂r̄``, the best response ``∂A·Q̄/λ``,
the leader's ``∂log P`` score and the ``∂log μ`` score; each has an exact value from the tabular
model (:func:`bilevel_envs.hypergradient.hypergradient_terms`). A check passes when the mean of a
term's estimates is within ``Z_MAX`` measured standard errors of its exact value along every
coordinate and along the exact term's direction; the same samples with the term scaled by 0.95
and by 1.05 must fail it (``tests/term_checks.py``). The docstrings give the |z| the controls
reach with the seeds below (−5 % and +5 % differ: the estimator's own error, a fraction of a
standard error, adds to one and subtracts from the other).

The problems are chosen for power: tiny Garnet instances (2 states, 2 actions, 2 parameters),
short horizons, rewards centred so that the values the score terms multiply have mean 0.
"""

import numpy as np
import pytest

from bilevel_envs.exact import ExactSolver
from bilevel_envs.followers import TabularPolicy
from bilevel_envs.oracles import TabularOracle
from leaders.estimators import COMPONENTS, TERMS, every_visit_estimate, paper_estimate
from tests.term_checks import centred_garnet, check_terms, exact_terms

#: Garnet instance of the per-term checks (one context)
GARNET = dict(n_states=2, n_actions=2, n_params=2, n_contexts=1, lam=2.0, gamma=0.3,
              leader_gamma=0.3, p_end=0.1, transition_scale=0.5, initial_scale=0.5, seed=51)
X_SEED = 54


def garnet_setup():
    """The centred Garnet problem, ``x``, the follower's exact policy and the exact terms."""
    x = np.random.default_rng(X_SEED).uniform(-1, 1, size=GARNET["n_params"])
    problem = centred_garnet(x, **GARNET)
    _, solution, _ = ExactSolver(problem, tol=1e-13).solve(x)
    pi = solution.pi[0]
    return problem, x, pi, exact_terms(problem.tabular(x, 0), pi, problem.lam)


# ---------------------------------------------------------------------------- Alg. 5 + Alg. 2
@pytest.mark.parametrize("coupled", [False, True])
def test_paper_estimator_term_by_term(coupled):
    """Alg. 5 with Alg. 2 restarts (and their coupled form), 600,000 samples: each term's mean
    within 4 SE of its exact value. The ±5 % controls reach |z| (−5 %/+5 %), uncoupled; coupled:
    direct 42.0/38.6; 43.3/37.4 — best response 12.8/10.4; 16.4/15.9 — ∂log P 8.7/9.0;
    7.2/10.3 — ∂log μ 21.8/21.2; 23.6/19.4."""
    problem, x, pi, exact = garnet_setup()
    oracle = TabularOracle(problem, x, 0, TabularPolicy(pi))
    n = 600_000
    terms = paper_estimate(problem, x, 0, oracle, np.random.default_rng(1 + coupled), n,
                           coupled=coupled)
    samples = {term: terms.per_segment(n, term=term) for term in TERMS}
    check_terms(samples, exact)


# ---------------------------------------------------------------------------- every-visit batch
def first_steps(rollouts, n_steps):
    """The first ``n_steps`` steps of every chain (a batch of the same chains, shorter)."""
    return type(rollouts).from_dict({k: v[:, :n_steps]
                                     for k, v in rollouts.to_dict(copy=False).items()})


@pytest.mark.parametrize("leave_one_out", [False, True])
def test_every_visit_estimator_term_by_term(leave_one_out):
    """The batch estimator (plain and leave-one-out) is consistent, not unbiased: its tables and
    weights share the batch and returns stop at the batch end, a bias of order 1/T for chains of
    T steps. The check is on the Richardson extrapolation ``2 ĝ(T) − ĝ(T/2)`` of each batch
    (the whole batch and its first half), which cancels the 1/T bias and leaves O(1/T²): 80
    batches of 4 chains × 2,000 steps, each term within 4 SE of its exact value (the plain
    ĝ(T) is 2.4 SE off in the best-response term here: its bias). The ±5 % controls reach |z|
    (−5 %/+5 %; the leave-one-out form agrees to 0.1 at these visit counts): direct 22.0/20.4,
    best response 24.0/22.1, ∂log P 15.5/13.2, ∂log μ 11.0/11.4."""
    problem, x, pi, exact = garnet_setup()
    oracle = TabularOracle(problem, x, 0, TabularPolicy(pi))
    rng = np.random.default_rng(3)
    n_batches, n_envs, n_steps = 80, 4, 2000
    samples = {term: np.zeros((n_batches, problem.n_params)) for term in TERMS}
    for i in range(n_batches):
        rollouts = oracle.rollout(rng, n_envs, n_steps, time_limit=False)
        whole = every_visit_estimate(problem, x, 0, rollouts, leave_one_out)
        half = every_visit_estimate(problem, x, 0, first_steps(rollouts, n_steps // 2),
                                    leave_one_out)
        for term in TERMS:
            samples[term][i] = 2 * whole.total(term=term) - half.total(term=term)
    check_terms(samples, exact)


def test_estimators_term_by_term_with_rewards_of_the_next_state():
    """Contract design (tree instance): rewards are payments on the outcome ``s'``, so every
    ``∂r`` and ``∂r̄`` is read at the next state; x moves neither ``P`` nor ``μ``. The every-visit
    extrapolation (200 batches of 4 × 2,000 steps) per term, ±5 % controls at |z| = 72.9/66.4
    (direct) and 8.9/8.7 (best response); Alg. 5 (coupled, 20,000 samples): the direct term with
    controls at |z| = 20.8/21.5, the best response within 4 SE (without power at this size: the
    Garnet checks above have it)."""
    from bilevel_envs.envs.contract_design.problem import ContractDesign
    from bilevel_envs.testing import z_scores

    problem = ContractDesign("tree")
    x = problem.x_init + 0.1
    _, solution, _ = ExactSolver(problem, tol=1e-13).solve(x)
    exact = exact_terms(problem.tabular(x, 0), solution.pi[0], problem.lam)
    assert not exact["transition_score"].any() and not exact["initial_score"].any()
    oracle = TabularOracle(problem, x, 0, TabularPolicy(solution.pi[0]))
    terms = ("direct", "best_response")
    samples = {term: [] for term in terms}
    for i in range(200):
        rollouts = oracle.rollout(np.random.default_rng(i), 4, 2000, time_limit=False)
        whole = every_visit_estimate(problem, x, 0, rollouts)
        half = every_visit_estimate(problem, x, 0, first_steps(rollouts, 1000))
        for term in terms:
            samples[term].append(2 * whole.total(term=term) - half.total(term=term))
    check_terms({term: np.array(v) for term, v in samples.items()}, exact)
    n = 20_000
    alg5 = paper_estimate(problem, x, 0, oracle, np.random.default_rng(0), n, coupled=True)
    check_terms({"direct": alg5.per_segment(n, term="direct")}, exact)
    assert np.abs(z_scores(alg5.per_segment(n, term="best_response"),
                           exact["best_response"])).max() < 4


# ---------------------------------------------------------------------------- trajectory level
def rlhf_exact_terms(problem, x, context):
    """The two terms of a pairwise objective's ``∇J_ξ`` by enumerating every pair of
    trajectories: ``E ∂xℓ`` and ``E ℓ (∇log p(τ0) + ∇log p(τ1))`` with the exact score."""
    from bilevel_envs.envs.rlhf.model import TrajectoryBatch, enumerate_trajectories

    states, actions, p = enumerate_trajectories(problem.P, problem.mu, problem.policy(x))
    i, j = (a.ravel() for a in np.meshgrid(np.arange(len(p)), np.arange(len(p)), indexing="ij"))
    traj0, traj1 = TrajectoryBatch(states[i], actions[i]), TrajectoryBatch(states[j], actions[j])
    weights = p[i] * p[j]
    ell = problem.pair_objective(x, context, traj0, traj1)
    score = problem.trajectory_score(x, traj0) + problem.trajectory_score(x, traj1)
    return {"direct": problem.grad_pair_objective(x, context, traj0, traj1, weights=weights),
            "best_response": (weights * ell) @ score}


def test_trajectory_estimator_term_by_term():
    """RLHF (tiny instance, one annotator), 350,000 pairs with Alg. 2 restarts: ``∂xℓ`` and the
    score part each within 4 SE of their enumerated values (which sum to the exact ``∇J``). The
    ±5 % controls reach |z| (−5 %/+5 %): direct 21.9/19.2, best response 10.3/9.7."""
    from bilevel_envs.envs.rlhf.problem import RLHFProblem
    from leaders.estimators import trajectory_estimate

    problem = RLHFProblem("tiny", beta=2.0, lam=1.0, reward_model="state")
    x = np.random.default_rng(23).normal(0.0, 1.0, size=problem.n_params)
    exact = rlhf_exact_terms(problem, x, 0)
    np.testing.assert_allclose(exact["direct"] + exact["best_response"],
                               problem.exact_hypergradient(x), atol=1e-12)
    H, S, A = problem.policy(x).shape
    oracle = TabularOracle(problem, x, 0, TabularPolicy(problem.policy(x).reshape(H * S, A)))
    n = 350_000
    rollouts = oracle.rollout(np.random.default_rng(5), 2 * n, H)
    terms = trajectory_estimate(problem, x, 0, rollouts, oracle, np.random.default_rng(6))
    check_terms({term: terms.per_segment(term=term) for term in exact}, exact)


# ---------------------------------------------------------------------------- RT-Q
def test_rtq_estimator_term_by_term():
    """RT-Q (paper Alg. 8) telescopes soft Q-learning's iterates, ``E ĝ = E ĝ_{t_K}``, term by
    term. With Alg. 5 replaced by its exact per-term mean given the follower's policy (its own
    terms are checked above: RT-Q calls the coupled form) only RT-Q's randomness remains: N
    RT-Q estimates against 100 vanilla estimates at ``t_K`` (K = 3 levels, 32 soft Q-learning
    chains), each term within 4 SE of the difference. The ±5 % controls on RT-Q's term reach
    |z| (−5 %/+5 %): direct 132/119, best response 136/124, ∂log P 58/57, ∂log μ 58/56."""
    from bilevel_envs.hypergradient import hypergradient_terms
    from bilevel_envs.leader_env import LeaderEnv
    from leaders.hpgd_rtq import HPGDRTQ

    x0 = np.random.default_rng(X_SEED).uniform(-1, 1, size=GARNET["n_params"])
    problem = centred_garnet(x0, **GARNET)
    leader = HPGDRTQ(LeaderEnv(problem, n_envs=1, n_rollout_steps=10), levels=3, steps_scale=2,
                     soft_q_kwargs={"n_chains": 32}, seed=0, x0=x0)

    def exact_mean(context, policy, n, by_term=False):
        terms = hypergradient_terms(problem.tabular(leader.x, context), policy.table, problem.lam)
        return np.stack([terms[c] for c in COMPONENTS])

    leader._alg5_mean = exact_mean
    n = 100
    rtq = np.array([np.stack(list(leader.estimate_gradient_by_term()[0].values()))
                    for _ in range(n)])
    vanilla = np.array([leader.vanilla_estimate(by_term=True)[0] for _ in range(n)])
    samples, exact = {}, {}
    for term in TERMS:
        rows = [i for i, (t, _) in enumerate(COMPONENTS) if t == term]
        # Two samples: the target is vanilla's mean, the standard error both samples'.
        samples[term], exact[term] = rtq[:, rows].sum(1), vanilla[:, rows].sum(1)
    check_terms(samples, exact)


# ---------------------------------------------------------------------------- the split itself
def _assert_split(terms, n_params, per_segment_args=()):
    """Every block is labelled, the components sum to the total, per sample too."""
    assert all(part.terms for part in terms.parts)
    for part in terms.parts:
        np.testing.assert_allclose(sum(part.terms.values()), part.weights, atol=1e-15)
    total = terms.total()
    by_component = [terms.total(term, kind) for term, kind in terms.components]
    np.testing.assert_allclose(sum(by_component), total, rtol=1e-12, atol=1e-12)
    by_term = [terms.total(term=term) for term in TERMS]
    np.testing.assert_allclose(sum(by_term), total, rtol=1e-12, atol=1e-12)
    per = terms.per_segment(*per_segment_args)
    per_term = sum(terms.per_segment(*per_segment_args, term=term) for term in TERMS)
    np.testing.assert_allclose(per_term, per, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(per.sum(0), total, rtol=1e-10, atol=1e-12)
    assert total.shape == (n_params,)


def test_every_estimate_splits_into_its_terms_exactly():
    """``total(term=, kind=)`` and ``per_segment(term=, kind=)`` partition every estimator's
    estimate; the components present are those of the estimator."""
    problem, x, pi, _ = garnet_setup()
    oracle = TabularOracle(problem, x, 0, TabularPolicy(pi))
    for coupled in (False, True):
        terms = paper_estimate(problem, x, 0, oracle, np.random.default_rng(0), 200, n_inner=2,
                               coupled=coupled)
        assert terms.components == list(COMPONENTS)
        _assert_split(terms, problem.n_params, (200,))
    rollouts = oracle.rollout(np.random.default_rng(0), 3, 300, time_limit=False)
    for loo in (False, True):
        terms = every_visit_estimate(problem, x, 0, rollouts, leave_one_out=loo)
        assert terms.components == list(COMPONENTS)
        _assert_split(terms, problem.n_params, (1,))
        # the log-transition block holds both terms: each is its own part of the weights
        (block,) = [p for p in terms.parts if p.kind == "log_transition"]
        assert set(block.terms) == {"best_response", "transition_score"}
    assert terms.total(term="best_response", kind="leader_reward").tolist() == [0.0, 0.0]


def test_trajectory_estimate_splits_into_direct_and_best_response():
    from bilevel_envs.envs.rlhf.problem import RLHFProblem
    from leaders.estimators import trajectory_estimate

    problem = RLHFProblem("tiny", beta=2.0, lam=1.0, reward_model="state")
    x = np.random.default_rng(23).normal(0.0, 1.0, size=problem.n_params)
    H, S, A = problem.policy(x).shape
    oracle = TabularOracle(problem, x, 0, TabularPolicy(problem.policy(x).reshape(H * S, A)))
    rollouts = oracle.rollout(np.random.default_rng(0), 400, H)
    terms = trajectory_estimate(problem, x, 0, rollouts, oracle, np.random.default_rng(1))
    assert terms.scores.components == [("best_response", "follower_reward")]
    for select in ({"term": "direct"}, {"kind": "pair_objective"},
                   {"term": "direct", "kind": "pair_objective"}):
        np.testing.assert_array_equal(terms.total(**select), terms.total(term="direct"))
    np.testing.assert_allclose(terms.total(term="direct") + terms.total(term="best_response"),
                               terms.total(), rtol=1e-12)
    np.testing.assert_allclose(terms.per_segment(term="direct")
                               + terms.per_segment(term="best_response"), terms.per_segment(),
                               rtol=1e-12, atol=1e-14)
    assert terms.per_segment(term="direct").shape == (200, problem.n_params)
    # pair 0 has its restarts too (∂Â of other pairs may vanish: ∂r depends on s only here)
    assert np.abs(terms.per_segment(term="best_response")[0]).sum() > 0
    np.testing.assert_array_equal(terms.total(term="transition_score"), 0.0)
    with pytest.raises(ValueError, match="direct term of a trajectory estimate is kind"):
        terms.total(term="direct", kind="follower_reward")


def test_rtq_estimate_by_term_is_the_estimate_split():
    """Same seed, same random numbers: the components sum to ``estimate_gradient``."""
    from bilevel_envs.leader_env import LeaderEnv
    from leaders.hpgd_rtq import HPGDRTQ

    def leader():
        problem, x, _, _ = garnet_setup()
        return HPGDRTQ(LeaderEnv(problem, n_envs=1, n_rollout_steps=10), levels=3,
                       steps_scale=2, n_samples=50, seed=3, x0=x)

    a, b = leader(), leader()
    for _ in range(3):
        grad, info = a.estimate_gradient()
        parts, info_b = b.estimate_gradient_by_term()
        assert list(parts) == list(COMPONENTS)
        np.testing.assert_allclose(sum(parts.values()), grad, rtol=1e-10, atol=1e-12)
        assert info["truncation_level"] == info_b["truncation_level"]
    vanilla, steps = a.vanilla_estimate(by_term=True)
    assert vanilla.shape == (len(COMPONENTS), a.problem.n_params) and steps == a.schedule[-1]
