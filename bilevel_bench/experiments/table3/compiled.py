"""A Table 3 run compiled end to end: its iterations inside numba calls (1,000 per call).

The leaders (:mod:`leaders`) run an iteration as Python around compiled kernels: the env's
step, the follower's response, the oracle, the estimator's terms, the records. On Four-Rooms the
kernels are the smaller part of the time (``benchmarks/bench_leaders.py --breakdown``). This
module runs the same iterations with no Python in between, for the set-up of the paper's
Table 3 (:class:`~bilevel_bench.experiments.table3.spec.Table3Spec`): Four-Rooms reward
shaping, soft-VI followers, one sampled context per iteration, HPGD with the every-visit
estimator, AMD with its exact inner solve, zero-order with two exact queries under common
random numbers, clipped SGD, and the exact ``J`` on the evaluation schedule.

It is the same computation, not a re-derivation:

* the same compiled kernels (sampling, every-visit weights, soft policy iteration, banded
  solves) on the same inputs;
* the same random numbers: numba draws from the leader's and the env's ``numpy.random.Generator``
  objects themselves, number for number and in the order the leaders draw them;
* the same warm starts (the follower's per context; under common random numbers both queries
  start from the same one and the follower continues from the first; the evaluation's own).

Only round-off can differ (summation orders, the reward-gradient contractions written as loops
instead of BLAS calls). ``tests/test_table3_compiled.py`` runs both paths on the same specs and
compares the iterates, the sampled contexts and the evaluated ``J``.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import numba as nb
import numpy as np

from bilevel_bench.experiments.table3.spec import Table3Spec
from bilevel_envs._exact_kernels import (
    _leader_value_sparse,
    _policy_leader_value,
    _policy_solve,
    _soft_policy_iteration_sparse,
)
from bilevel_envs._kernels import _every_visit_weights, _sample_tabular_chains
from bilevel_envs.envs.four_rooms.model import (
    GOAL_STATES,
    PENALTY_SCALE,
    TARGET_STATE,
)
from bilevel_envs.envs.four_rooms.problem import FourRoomsShaping
from bilevel_envs.tabular import DEFAULT_TOL, SOFT_PI_MAX_ITER

HPGD, AMD, ZERO_ORDER = 0, 1, 2
#: iterations per compiled call (≤ 1 s of HPGD at Table 3's budget)
CHUNK = 1_000
_CODES = {"hpgd": HPGD, "amd": AMD, "zero_order": ZERO_ORDER}
#: what a run can end with besides success (the leaders raise FloatingPointError for both)
_FAILURES = {1: "the follower's soft policy iteration diverged",
             2: "non-finite gradient estimate"}


# ---------------------------------------------------------------------------- the model
@nb.njit(cache=True, nogil=True)
def _shaping_model(x, goal, beta, sigma, r, r_leader):
    """``σ = softmax(x)`` and the Four-Rooms rewards at ``(x, goal)`` into ``r``, ``r_leader``
    ``(S, A)`` (bilevel_envs.envs.four_rooms.model: the penalty ``−0.2 σ`` off the goal, 1 on
    it; the leader's +1 on the target and the cost ``β 0.2 (1 − σ_last)`` paid from the goal)."""
    m = x[0]
    for j in range(1, x.shape[0]):
        m = max(m, x[j])
    total = 0.0
    for j in range(x.shape[0]):
        sigma[j] = np.exp(x[j] - m)
        total += sigma[j]
    for j in range(x.shape[0]):
        sigma[j] /= total
    cost = beta * PENALTY_SCALE * (1.0 - sigma[x.shape[0] - 1])
    S, A = r.shape
    for s in range(S):
        follower = 1.0 if s == goal else -PENALTY_SCALE * sigma[s]
        leader = 1.0 if s == TARGET_STATE else 0.0
        if s == goal:
            leader -= cost
        for a in range(A):
            r[s, a] = follower
            r_leader[s, a] = leader


@nb.njit(cache=True, nogil=True)
def _add_reward_gradients(cell_weights, goal_weight, sigma, goal, beta, out):
    """``out += Σ_s c(s) ∂r(s)/∂x + w_goal ∂r̄(goal)/∂x`` for the Four-Rooms rewards
    (``∂r̃_s = −0.2 σ_s (e_s − σ)`` off the goal; ``∂r̄(goal) = −β ∂(0.2 (1 − σ_last))``)."""
    d = sigma.shape[0]
    dot = 0.0
    for s in range(cell_weights.shape[0]):
        if s != goal:
            dot += cell_weights[s] * sigma[s]
    for j in range(d):
        out[j] += PENALTY_SCALE * dot * sigma[j]
    for s in range(cell_weights.shape[0]):
        if s != goal:
            out[s] -= PENALTY_SCALE * cell_weights[s] * sigma[s]
    last = PENALTY_SCALE * sigma[d - 1]
    for j in range(d):
        total_grad = last * sigma[j] - (last if j == d - 1 else 0.0)
        out[j] += goal_weight * (-beta * total_grad)


@nb.njit(cache=True, nogil=True)
def _policy_tables(q, lam, pi, pi_cdf, entropy):
    """``π = softmax(q/λ)``, its cumulative rows (ending at exactly 1) and entropy per state.

    The softmax is ``tabular.softmax_policy``'s formula (``exp(q/λ − max q/λ)``), which the
    leaders' follower uses, rather than ``_exact_kernels.softmax_rows``'s ``exp((q − m)/λ)``:
    the policy tables then round as the leaders' do."""
    S, A = q.shape
    for s in range(S):
        m = q[s, 0] / lam
        for a in range(1, A):
            m = max(m, q[s, a] / lam)
        z = 0.0
        for a in range(A):
            pi[s, a] = np.exp(q[s, a] / lam - m)
            z += pi[s, a]
        h = 0.0
        acc = 0.0
        for a in range(A):
            pi[s, a] /= z
            acc += pi[s, a]
            pi_cdf[s, a] = acc
            if pi[s, a] > 0.0:
                h -= pi[s, a] * np.log(pi[s, a])
        for a in range(A):
            pi_cdf[s, a] /= acc
        entropy[s] = h


@nb.njit(cache=True, nogil=True)
def _solve_follower(ns, probs, r, gamma, lam, q, threshold, lo, up, pi, pi_cdf, entropy):
    """Soft policy iteration from ``q`` (in place) and the policy's tables; False if the solve
    diverged."""
    _, residual = _soft_policy_iteration_sparse(ns, probs, r, gamma, lam, q, threshold,
                                                SOFT_PI_MAX_ITER, lo, up)
    if not np.isfinite(residual):
        return False
    for s in range(q.shape[0]):
        for a in range(q.shape[1]):
            if not np.isfinite(q[s, a]):
                return False
    _policy_tables(q, lam, pi, pi_cdf, entropy)
    return True


@nb.njit(cache=True, nogil=True)
def _sample_context(rng, context_cdf):
    """``BilevelProblem.sample_context``: one uniform through the normalised CDF."""
    return np.searchsorted(context_cdf, rng.random(), side="right")


# ---------------------------------------------------------------------------- the estimators
@nb.njit(cache=True, nogil=True)
def _workspace(d, S, A, n_envs, n_steps):
    """The arrays one iteration writes, allocated once per run: ``σ``, ``r``, ``r̄``, ``π``, its
    CDF and entropy; the sampler's start states, first actions and lengths (all "free") and
    its ``(n_envs, n_steps)`` outputs; the rollouts' leader rewards; per-cell weights."""
    shape = (n_envs, n_steps)
    return (np.empty(d), np.empty((S, A)), np.empty((S, A)), np.empty((S, A)), np.empty((S, A)),
            np.empty(S), np.full(n_envs, -1, np.int64), np.full(n_envs, -1, np.int64),
            np.full(n_envs, n_steps, np.int64), np.zeros(shape, np.int64),
            np.zeros(shape, np.int64), np.zeros(shape, np.int64), np.zeros(shape, np.bool_),
            np.zeros(shape, np.bool_), np.zeros(shape, np.int64), np.zeros(shape, np.bool_),
            np.zeros(shape), np.zeros(shape), np.zeros(shape), np.zeros(S))


@nb.njit(cache=True, nogil=True)
def _hpgd_gradient(goal, x, ns, probs, next_cdf, mu_cdf, lo, up, beta, gamma, lgamma, lam,
                   threshold, episode_limit, follower_q, env_rng, work, grad):
    """HPGD (every-visit) at ``x``: the env's step after its context draw (follower seed,
    soft-VI response, rollouts) and the estimate. False if the follower's solve diverged."""
    (sigma, r, r_leader, pi, pi_cdf, entropy, starts, first_actions, lengths, obs, actions,
     next_obs, terminated, truncated, episode_step, mask, action_probs, step_entropy,
     leader_rewards, cells) = work
    env_rng.integers(0, 2**31 - 1)  # the follower's seed (soft VI draws nothing)
    _shaping_model(x, goal, beta, sigma, r, r_leader)
    if not _solve_follower(ns, probs, r, gamma, lam, follower_q, threshold, lo, up, pi, pi_cdf,
                           entropy):
        return False
    n_envs, n_steps = obs.shape
    u_init = env_rng.random(n_envs)
    u = env_rng.random((n_envs, n_steps, 3))
    terminated[:, :] = False
    truncated[:, :] = False
    _sample_tabular_chains(pi_cdf, ns, next_cdf, mu_cdf, starts, first_actions, lengths,
                           episode_limit, True, u_init, u, obs, actions, next_obs, terminated,
                           truncated, episode_step, mask, pi, entropy, action_probs,
                           step_entropy)
    for e in range(n_envs):
        for t in range(n_steps):
            leader_rewards[e, t] = r_leader[obs[e, t], 0]
    ends = terminated | truncated
    S, A = r.shape
    W, U, _, _ = _every_visit_weights(obs, actions, mask, ends, leader_rewards, episode_step,
                                      S, A, gamma, lgamma, lam, False)
    cells[:] = 0.0
    goal_weight = 0.0
    for e in range(n_envs):
        for t in range(n_steps):
            cells[obs[e, t]] += W[e, t]
            if obs[e, t] == goal:
                goal_weight += U[e, t]
    grad[:] = 0.0
    _add_reward_gradients(cells, goal_weight, sigma, goal, beta, grad)
    return True


@nb.njit(cache=True, nogil=True)
def _amd_gradient(goal, x, ns, probs, mu, lo, up, beta, gamma, lgamma, lam, threshold, q,
                  work, grad):
    """AMD (exact inner solve) at ``x``: the follower's exact response, then the exact adjoint
    hypergradient (bilevel_envs.hypergradient.leader_values). False if the solve diverged."""
    sigma, r, r_leader, pi, pi_cdf, entropy = work[:6]
    cells = work[19]
    _shaping_model(x, goal, beta, sigma, r, r_leader)
    if not _solve_follower(ns, probs, r, gamma, lam, q, threshold, lo, up, pi, pi_cdf, entropy):
        return False
    S, A, K = probs.shape
    v_bar = np.empty(S)
    _policy_leader_value(ns, probs, pi, r_leader, mu, lgamma, lo, up, v_bar)
    rhs = np.empty((S, 1))
    for s in range(S):
        rhs[s, 0] = mu[s]
    occupancy = np.empty((S, 1))
    _policy_solve(ns, probs, pi, lgamma, lo, up, rhs, True, occupancy)
    c = np.empty((S, A))  # weight of ∂Q(s, a): d̄(s) π(a|s) Ā(s, a) / λ
    y = np.zeros((S, 1))  # Σ_{s,a} c(s, a) P(·|s, a)
    for s in range(S):
        for a in range(A):
            expected = 0.0
            for k in range(K):
                expected += probs[s, a, k] * v_bar[ns[s, a, k]]
            a_bar = r_leader[s, a] + lgamma * expected - v_bar[s]
            c[s, a] = occupancy[s, 0] * pi[s, a] * a_bar / lam
            for k in range(K):
                y[ns[s, a, k], 0] += c[s, a] * probs[s, a, k]
    z = np.empty((S, 1))
    _policy_solve(ns, probs, pi, gamma, lo, up, y, True, z)
    goal_weight = 0.0
    for s in range(S):
        acc = 0.0
        for a in range(A):
            acc += c[s, a] + gamma * z[s, 0] * pi[s, a]
            if s == goal:
                goal_weight += occupancy[s, 0] * pi[s, a]
        cells[s] = acc
    grad[:] = 0.0
    _add_reward_gradients(cells, goal_weight, sigma, goal, beta, grad)
    return True


@nb.njit(cache=True, nogil=True)
def _exact_query(goal, x, ns, probs, mu, lo, up, beta, gamma, lgamma, lam, threshold, q, work):
    """Zero-order's exact query: the follower's response from ``q`` (in place) and the leader's
    exact value of it (the env's ``objective="exact"`` reward); NaN if the solve diverged."""
    sigma, r, r_leader, pi, pi_cdf, entropy = work[:6]
    _shaping_model(x, goal, beta, sigma, r, r_leader)
    if not _solve_follower(ns, probs, r, gamma, lam, q, threshold, lo, up, pi, pi_cdf, entropy):
        return np.nan
    v_leader = np.empty(r.shape[0])
    return _policy_leader_value(ns, probs, pi, r_leader, mu, lgamma, lo, up, v_leader)


# ---------------------------------------------------------------------------- the loop
@nb.njit(cache=True, nogil=True)
def _learn(algorithm, x, t_start, t_stop, n_iterations, learning_rate, max_grad_norm, low, high,
           perturbation_constant, eval_every, eval_last, leader_rng, env_rng, ns, probs,
           next_cdf, mu, mu_cdf, lo, up, goals, context_probs, beta, gamma, lgamma, lam,
           threshold, episode_limit, n_envs, n_steps, follower_q, eval_q, contexts, values):
    """Iterations ``t_start … t_stop − 1`` of an ``n_iterations`` run from ``x`` (updated in
    place), as ``Leader.learn(n, eval_every=…)``: before each update on the schedule, every
    context's exact value at the current iterate into ``values[t]``; the sampled context into
    ``contexts[t]``. ``follower_q`` ``(C, S, A)``: the env's follower warm starts (AMD: its
    own); ``eval_q``: the exact evaluation's (as ``ExactSolver``); both carried across calls.
    Returns ``(status, iteration)``: 0 on success, else a key of ``_FAILURES`` and the
    iteration it happened in."""
    C, S, A, _ = probs.shape
    d = x.shape[0]
    context_cdf = np.cumsum(context_probs)
    context_cdf /= context_cdf[-1]
    work = _workspace(d, S, A, n_envs, n_steps)
    grad = np.zeros(d)
    trial = np.empty(d)
    query_q = np.empty((S, A))
    for t in range(t_start, t_stop):
        if t % eval_every == 0 or t >= n_iterations - eval_last:
            if not _exact_values(x, ns, probs, mu, lo, up, goals, beta, gamma, lgamma, lam,
                                 threshold, eval_q, values[t]):
                return 1, t
        if algorithm == HPGD:
            ctx = _sample_context(env_rng, context_cdf)
            if not _hpgd_gradient(goals[ctx], x, ns[ctx], probs[ctx], next_cdf[ctx], mu_cdf,
                                  lo[ctx], up[ctx], beta, gamma, lgamma, lam, threshold,
                                  episode_limit, follower_q[ctx], env_rng, work, grad):
                return 1, t
        elif algorithm == AMD:
            ctx = _sample_context(leader_rng, context_cdf)
            if not _amd_gradient(goals[ctx], x, ns[ctx], probs[ctx], mu, lo[ctx], up[ctx], beta,
                                 gamma, lgamma, lam, threshold, follower_q[ctx], work, grad):
                return 1, t
        else:
            u = perturbation_constant / (t + 1)
            z = leader_rng.standard_normal(d)
            for j in range(d):
                trial[j] = min(max(x[j] + u * z[j], low[j]), high[j])
            # Common random numbers: both queries see one context and follower seed, and start
            # from the same warm start; the follower continues from the query at x.
            ctx = _sample_context(env_rng, context_cdf)
            env_rng.integers(0, 2**31 - 1)
            query_q[:, :] = follower_q[ctx]
            f0 = _exact_query(goals[ctx], x, ns[ctx], probs[ctx], mu, lo[ctx], up[ctx], beta,
                              gamma, lgamma, lam, threshold, follower_q[ctx], work)
            f1 = _exact_query(goals[ctx], trial, ns[ctx], probs[ctx], mu, lo[ctx], up[ctx],
                              beta, gamma, lgamma, lam, threshold, query_q, work)
            if not (np.isfinite(f0) and np.isfinite(f1)):
                return 1, t
            for j in range(d):
                grad[j] = (f1 - f0) / u * z[j]
        contexts[t] = ctx
        norm = 0.0
        for j in range(d):
            if not np.isfinite(grad[j]):
                return 2, t
            norm += grad[j] * grad[j]
        norm = np.sqrt(norm)
        scale = max_grad_norm / norm if norm > max_grad_norm else 1.0
        for j in range(d):
            x[j] = min(max(x[j] + learning_rate * (grad[j] * scale), low[j]), high[j])
    return 0, 0


@nb.njit(cache=True, nogil=True)
def _exact_values(x, ns, probs, mu, lo, up, goals, beta, gamma, lgamma, lam, threshold, eval_q,
                  out):
    """Every context's exact leader value at ``x`` into ``out``, warm-started from ``eval_q``;
    False if a solve diverged."""
    C, S, A, _ = probs.shape
    sigma, r, r_leader = np.empty(x.shape[0]), np.empty((S, A)), np.empty((S, A))
    v_leader = np.empty(S)
    for c in range(C):
        _shaping_model(x, goals[c], beta, sigma, r, r_leader)
        value, _, residual = _leader_value_sparse(ns[c], probs[c], r, r_leader, mu, gamma,
                                                  lgamma, lam, eval_q[c], threshold,
                                                  SOFT_PI_MAX_ITER, lo[c], up[c], v_leader)
        if not (np.isfinite(residual) and np.isfinite(value)):
            return False
        out[c] = value
    return True


# ---------------------------------------------------------------------------- the entry
class ModelTables(NamedTuple):
    """The x-independent tables of every context's model, stacked over contexts: successor
    lists ``(C, S, A, K)``, their probabilities and cumulative probabilities, each band's lower
    and upper width ``(C,)``, ``μ`` and its CDF ``(S,)``."""

    next_states: np.ndarray
    probs: np.ndarray
    next_cdf: np.ndarray
    lo: np.ndarray
    up: np.ndarray
    mu: np.ndarray
    mu_cdf: np.ndarray


def model_tables(problem: FourRoomsShaping) -> ModelTables:
    """The tables the leaders' solvers and sampler use (``banded_transitions``,
    ``sampling_tables``), from the problem's models."""
    from bilevel_envs.oracles import sampling_tables
    from bilevel_envs.tabular import banded_transitions

    models = [problem.tabular(problem.x_init, c) for c in range(problem.n_contexts)]
    banded = [banded_transitions(m) for m in models]
    if any(b is None for b in banded):
        raise ValueError("the compiled run needs banded models (Four-Rooms' are)")
    # The compiled loop calls the kernels unchecked; their inputs are these tables, which
    # sampling_tables validated and banded_transitions measured (lo, up) from the data itself.
    sampling = [sampling_tables(m) for m in models]
    next_states = np.ascontiguousarray(np.stack([b[0] for b in banded]), dtype=np.int64)
    if not all(np.array_equal(s[0], next_states[c]) for c, s in enumerate(sampling)):
        raise ValueError("the sampler's and the solver's successor lists differ")
    return ModelTables(
        next_states=next_states,
        probs=np.ascontiguousarray(np.stack([b[1] for b in banded]), dtype=np.float64),
        next_cdf=np.ascontiguousarray(np.stack([s[1] for s in sampling]), dtype=np.float64),
        lo=np.array([b[2] for b in banded], dtype=np.int64),
        up=np.array([b[3] for b in banded], dtype=np.int64),
        mu=np.ascontiguousarray(models[0].mu, dtype=np.float64), mu_cdf=sampling[0][2])


def run_compiled(spec: Table3Spec) -> dict[str, Any]:
    """Run ``spec`` compiled; the same result as
    :func:`~bilevel_bench.experiments.table3.run.run_spec` on the leaders (to round-off).

    ``spec.engine`` is not read: the spec's own check admits ``engine="compiled"`` only for
    what this module implements (HPGD's every-visit estimator, AMD's exact inner solve,
    zero-order).

    Raises:
        FloatingPointError: when the follower's solve or the gradient estimate is not finite,
            as the leaders raise it.
    """
    from bilevel_bench.experiments.table3.run import make_leader

    # The leader as the leaders' path builds it: its x_0, its generators, the env's seed.
    leader = make_leader(spec)
    problem = leader.problem
    env = leader.env
    env.reset(seed=leader.env_seed)  # as Leader.learn's first iteration
    tables = model_tables(problem)
    n = spec.iterations
    x = leader.x.copy()
    shape = (problem.n_contexts, problem.follower_observation_space.n,
             problem.follower_action_space.n)
    follower_q, eval_q = np.zeros(shape), np.zeros(shape)
    contexts = np.full(n, -1, dtype=np.int64)
    values = np.full((n, problem.n_contexts), np.nan)
    final_values = np.full(problem.n_contexts, np.nan)
    goals = np.array(GOAL_STATES, dtype=np.int64)
    threshold = DEFAULT_TOL * (1 - problem.gamma)  # the solvers' stopping rule (tabular.py)
    low, high = problem.x_space.low.astype(np.float64), problem.x_space.high.astype(np.float64)
    start, cpu = time.perf_counter(), time.process_time()
    # In chunks, so that Ctrl-C (handled between compiled calls) stops a long run promptly.
    for t_start in range(0, n, CHUNK):
        status, iteration = _learn(
            _CODES[spec.algorithm], x, t_start, min(t_start + CHUNK, n), n, spec.learning_rate,
            spec.max_grad_norm, low, high, float(spec.perturbation_constant or 0.0),
            spec.eval_every, spec.eval_last, leader.rng, env.unwrapped.np_random,
            tables.next_states, tables.probs, tables.next_cdf, tables.mu, tables.mu_cdf,
            tables.lo, tables.up, goals, np.asarray(problem.context_probs, dtype=np.float64),
            problem.beta, problem.gamma, problem.leader_gamma, problem.lam, threshold,
            int(problem.max_episode_steps), spec.n_envs,
            spec.n_rollout_steps, follower_q, eval_q, contexts, values)
        if status:
            raise FloatingPointError(f"{spec.algorithm}: {_FAILURES[status]} at iteration "
                                     f"{iteration}")
    if not _exact_values(x, tables.next_states, tables.probs, tables.mu, tables.lo, tables.up,
                         goals, problem.beta, problem.gamma, problem.leader_gamma, problem.lam,
                         threshold, eval_q, final_values):
        raise FloatingPointError(f"{spec.algorithm}: {_FAILURES[1]} at the final iterate")
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    evaluated = np.isfinite(values[:, 0])
    iterations = np.flatnonzero(evaluated)
    per_context = values[evaluated]
    objective = per_context @ problem.context_probs
    tail = iterations >= n - spec.eval_last
    sampled = contexts[evaluated][tail]
    return {
        "seconds": seconds, "cpu_seconds": cpu_seconds,
        "hyperparameters": leader.hyperparameters(),
        "metrics": {
            "score": float(objective[tail].mean()),
            "score_sampled_context": float(per_context[tail][np.arange(tail.sum()),
                                                             sampled].mean()),
            "final_objective": float(final_values @ problem.context_probs),
        },
        "curve": {"iteration": iterations.tolist(), "objective": objective.tolist()},
        "x_final": x.tolist(),
    }
