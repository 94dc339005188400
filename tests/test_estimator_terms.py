"""Every estimator, term by term, against the exact terms of ``dJ/dx``, with ±5 % controls.

The terms (``leaders.estimators.TERMS``) are the direct ``∂r̄``, the best response ``∂A·Q̄/λ``,
the leader's ``∂log P`` score and the ``∂log μ`` score; each has an exact value from the tabular
model (:func:`bilevel_envs.tabular.hypergradient_terms`). A check passes when the mean of a
term's estimates is within ``Z_MAX`` measured standard errors of its exact value along every
coordinate and along the exact term's direction; the same samples with the term scaled by 0.95
and by 1.05 must fail it (``tests/term_checks.py``). The docstrings give the |z| the controls
reach, as measured with the seeds below.

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
    """Alg. 5 with Alg. 2 restarts (and their coupled form), N samples: each term's mean within
    4 SE of its exact value; ±5 % controls reach |z| = (uncoupled; coupled)
    ZTABLE"""
    problem, x, pi, exact = garnet_setup()
    oracle = TabularOracle(problem, x, 0, TabularPolicy(pi))
    n = 600_000
    terms = paper_estimate(problem, x, 0, oracle, np.random.default_rng(1 + coupled), n,
                           coupled=coupled)
    samples = {term: terms.per_segment(n, term=term) for term in TERMS}
    table = check_terms(samples, exact)
    print(coupled, {t: {s: round(z, 1) for s, z in v.items()} for t, v in table.items()})


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
    (the whole batch and its first half), which cancels the 1/T bias and leaves O(1/T²):
    K batches of n chains × T steps, each term within 4 SE of its exact value; ±5 % controls
    reach |z| = (plain; leave-one-out)
    ZTABLE"""
    problem, x, pi, exact = garnet_setup()
    oracle = TabularOracle(problem, x, 0, TabularPolicy(pi))
    rng = np.random.default_rng(3)
    n_batches, n_envs, n_steps = 80, 4, 2000
    samples = {term: np.zeros((n_batches, problem.n_params)) for term in TERMS}
    plain = {term: np.zeros((n_batches, problem.n_params)) for term in TERMS}
    for i in range(n_batches):
        rollouts = oracle.rollout(rng, n_envs, n_steps, time_limit=False)
        whole = every_visit_estimate(problem, x, 0, rollouts, leave_one_out)
        half = every_visit_estimate(problem, x, 0, first_steps(rollouts, n_steps // 2),
                                    leave_one_out)
        for term in TERMS:
            samples[term][i] = 2 * whole.total(term=term) - half.total(term=term)
            plain[term][i] = whole.total(term=term)
    table = check_terms(samples, exact)
    from tests.term_checks import z_scores
    print(leave_one_out, {t: {s: round(z, 1) for s, z in v.items()} for t, v in table.items()})
    print('plain z', {t: np.round(z_scores(plain[t], exact[t]), 2) for t in TERMS})


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
    """RLHF (tiny instance, one annotator), N pairs with Alg. 2 restarts: ``∂xℓ`` and the score
    part each within 4 SE of their enumerated values (which sum to the exact ``∇J``); ±5 %
    controls reach |z| = ZTABLE"""
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
    samples = {term: terms.per_segment(term=term) for term in exact}
    table = check_terms(samples, exact)
    print({t: {s: round(z, 1) for s, z in v.items()} for t, v in table.items()})


# ---------------------------------------------------------------------------- RT-Q
def test_rtq_estimator_term_by_term():
    """RT-Q (paper Alg. 8) telescopes soft Q-learning's iterates, ``E ĝ = E ĝ_{t_K}``, term by
    term. With Alg. 5 replaced by its exact per-term mean given the follower's policy (its own
    terms are checked above: RT-Q calls the coupled form) only RT-Q's randomness remains: N
    RT-Q estimates against N vanilla estimates at ``t_K``, each term within 4 SE of the
    difference; ±5 % controls on RT-Q's term reach |z| = ZTABLE"""
    from bilevel_envs.leader_env import LeaderEnv
    from bilevel_envs.tabular import hypergradient_terms
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
    table = check_terms(samples, exact)
    print({t: {s: round(z, 1) for s, z in v.items()} for t, v in table.items()})
