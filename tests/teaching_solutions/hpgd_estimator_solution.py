"""Reference solution of assignment 2 (the HPGD estimator), vectorised over samples.
Full marks in the grader."""

from __future__ import annotations

import numpy as np


def geometric_horizon(rng: np.random.Generator, discount: float, size: int) -> np.ndarray:
    """``T ~ Geo(1 − discount)`` on {0, 1, ...}: ``P(T ≥ t) = discount^t``."""
    return rng.geometric(1.0 - discount, size=size) - 1


def per_sample_sum(values: np.ndarray, rows: np.ndarray, n: int) -> np.ndarray:
    """Sum the rows of ``values`` ``(N, d)`` into ``n`` samples by their index ``rows``."""
    out = np.zeros((n, values.shape[1]))
    np.add.at(out, rows, values)
    return out


def leader_q_estimates(problem, oracle, rng, states, actions) -> np.ndarray:
    """``Σ_{k ≤ T'} γ̄^{k/2} r̄_k`` from ``(s, a)`` with ``T' ~ Geo(1 − √γ̄)``: unbiased for
    ``Q̄(s, a)``."""
    n = len(states)
    root = np.sqrt(problem.leader_gamma)
    tail = geometric_horizon(rng, root, n)
    r = oracle.rollout(rng, n, int(tail.max()) + 1, start_states=states, start_actions=actions,
                       lengths=tail + 1)
    weights = np.where(r.mask, root ** np.arange(r.n_steps), 0.0)
    return (weights * r.leader_rewards).sum(axis=1)


def grad_q_estimates(problem, x, context, oracle, rng, states, actions) -> np.ndarray:
    """Alg. 2, first half: ``Σ_{t ≤ T} ∂r_t + γ/(1−γ) ∂log P(s_{T+1}|s_T, a_T) ·
    Σ_{t=T+1}^{T+T'+1} γ^{(t−T−1)/2} (r_t + λ H_t)``."""
    gamma, lam, n = problem.gamma, problem.lam, len(states)
    T = geometric_horizon(rng, gamma, n)
    tail = geometric_horizon(rng, np.sqrt(gamma), n)
    lengths = T + tail + 2
    r = oracle.rollout(rng, n, int(lengths.max()), start_states=states, start_actions=actions,
                       lengths=lengths)
    t = np.arange(r.n_steps)[None, :]
    rows = np.broadcast_to(np.arange(n)[:, None], r.mask.shape)
    # Σ_{t ≤ T} ∂r(s_t, a_t)
    head = r.mask & (t <= T[:, None])
    estimate = per_sample_sum(problem.grad_follower_reward(
        x, context, r.obs[head], r.actions[head], r.next_obs[head]), rows[head], n)
    # the score of the transition out of (s_T, a_T), times the soft tail return
    soft = np.where(r.mask, r.rewards + lam * r.entropy, 0.0)
    after = t > T[:, None]
    tail_return = (after * np.sqrt(gamma) ** np.maximum(t - T[:, None] - 1, 0) * soft).sum(1)
    at_T = r.mask & (t == T[:, None]) & ~r.terminated
    scores = problem.grad_log_transition(x, context, r.obs[at_T], r.actions[at_T],
                                         r.next_obs[at_T])
    weights = (gamma / (1 - gamma)) * tail_return[rows[at_T]]
    return estimate + per_sample_sum(weights[:, None] * scores, rows[at_T], n)


def grad_advantage_estimates(problem, x, context, oracle, rng, states, actions) -> np.ndarray:
    """Alg. 2: ``∂Q̂(s, a) − ∂V̂(s)`` from two independent trajectories."""
    dq = grad_q_estimates(problem, x, context, oracle, rng, states, actions)
    dv = grad_q_estimates(problem, x, context, oracle, rng, states, np.full(len(states), -1))
    return dq - dv


def hypergradient_estimates(problem, x, context, oracle, rng, n_samples) -> np.ndarray:
    """Alg. 5: ``Σ_{t ≤ T} ∂r̄_t + [∂Â(s_T, a_T)/λ + ∂log P(s_T|s_{T−1}, a_{T−1})] Q̄̂/(1−γ̄)``
    with ``∂log μ(s_0)`` for the score when ``T = 0``."""
    lgamma, lam, n = problem.leader_gamma, problem.lam, n_samples
    T = geometric_horizon(rng, lgamma, n)
    tail = geometric_horizon(rng, np.sqrt(lgamma), n)
    lengths = T + tail + 1
    r = oracle.rollout(rng, n, int(lengths.max()), lengths=lengths)
    t = np.arange(r.n_steps)[None, :]
    rows = np.broadcast_to(np.arange(n)[:, None], r.mask.shape)
    head = r.mask & (t <= T[:, None])
    estimate = per_sample_sum(problem.grad_leader_reward(
        x, context, r.obs[head], r.actions[head], r.next_obs[head]), rows[head], n)
    # Q̄̂(s_T, a_T): the √γ̄-discounted tail from T (zero if the episode ended before T)
    from_T = r.mask & (t >= T[:, None])
    q_hat = (from_T * np.sqrt(lgamma) ** np.maximum(t - T[:, None], 0) * r.leader_rewards).sum(1)
    reached = r.mask[np.arange(n), np.minimum(T, r.n_steps - 1)]
    weight = np.where(reached, q_hat / (1 - lgamma), 0.0)
    # score of the transition into s_T (of μ when T = 0)
    into_T = r.mask & (t == (T - 1)[:, None]) & ~r.terminated
    scores = problem.grad_log_transition(x, context, r.obs[into_T], r.actions[into_T],
                                         r.next_obs[into_T])
    estimate += per_sample_sum(weight[rows[into_T], None] * scores, rows[into_T], n)
    start = reached & (T == 0)
    estimate[start] += weight[start, None] * problem.grad_log_initial(x, context, r.obs[start, 0])
    # best response: ∂Â(s_T, a_T) Q̄̂ / (λ (1 − γ̄))
    idx = np.flatnonzero(reached)
    s_T, a_T = r.obs[idx, T[idx]], r.actions[idx, T[idx]]
    da = grad_advantage_estimates(problem, x, context, oracle, rng, s_T, a_T)
    estimate[idx] += (weight[idx] / lam)[:, None] * da
    return estimate


def expected_sampled_transitions(gamma: float, leader_gamma: float) -> float:
    """``E[T + T' + 1] + 2 E[T_Q + T'_Q + 2]`` with ``E[Geo(1 − g)] = g/(1 − g)``."""
    def mean(g: float) -> float:
        return g / (1 - g)

    return (mean(leader_gamma) + mean(np.sqrt(leader_gamma)) + 1
            + 2 * (mean(gamma) + mean(np.sqrt(gamma)) + 2))
