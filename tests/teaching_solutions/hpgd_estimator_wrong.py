"""A deliberately wrong solution of assignment 2, with four classic mistakes:

* ``leader_q_estimates`` weights the tail by γ̄^k (the random horizon already discounts by √γ̄^k);
* ``grad_q_estimates`` forgets the entropy bonus in the soft tail return;
* ``hypergradient_estimates`` forgets the 1/λ of the best-response term;
* ``expected_sampled_transitions`` forgets the two restarts of Alg. 2.

The grader must fail it with these diagnoses (tests/test_grading.py)."""

from __future__ import annotations

import numpy as np
from hpgd_estimator_solution import geometric_horizon, per_sample_sum


def leader_q_estimates(problem, oracle, rng, states, actions) -> np.ndarray:
    n, lgamma = len(states), problem.leader_gamma
    tail = geometric_horizon(rng, np.sqrt(lgamma), n)
    r = oracle.rollout(rng, n, int(tail.max()) + 1, start_states=states, start_actions=actions,
                       lengths=tail + 1)
    weights = np.where(r.mask, lgamma ** np.arange(r.n_steps), 0.0)  # wrong: gamma_L^k
    return (weights * r.leader_rewards).sum(axis=1)


def grad_q_estimates(problem, x, context, oracle, rng, states, actions) -> np.ndarray:
    gamma, n = problem.gamma, len(states)
    T = geometric_horizon(rng, gamma, n)
    tail = geometric_horizon(rng, np.sqrt(gamma), n)
    lengths = T + tail + 2
    r = oracle.rollout(rng, n, int(lengths.max()), start_states=states, start_actions=actions,
                       lengths=lengths)
    t = np.arange(r.n_steps)[None, :]
    rows = np.broadcast_to(np.arange(n)[:, None], r.mask.shape)
    head = r.mask & (t <= T[:, None])
    estimate = per_sample_sum(problem.grad_follower_reward(
        x, context, r.obs[head], r.actions[head], r.next_obs[head]), rows[head], n)
    rewards = np.where(r.mask, r.rewards, 0.0)  # wrong: no entropy bonus
    after = t > T[:, None]
    tail_return = (after * np.sqrt(gamma) ** np.maximum(t - T[:, None] - 1, 0) * rewards).sum(1)
    at_T = r.mask & (t == T[:, None]) & ~r.terminated
    scores = problem.grad_log_transition(x, context, r.obs[at_T], r.actions[at_T],
                                         r.next_obs[at_T])
    weights = (gamma / (1 - gamma)) * tail_return[rows[at_T]]
    return estimate + per_sample_sum(weights[:, None] * scores, rows[at_T], n)


def grad_advantage_estimates(problem, x, context, oracle, rng, states, actions) -> np.ndarray:
    dq = grad_q_estimates(problem, x, context, oracle, rng, states, actions)
    dv = grad_q_estimates(problem, x, context, oracle, rng, states, np.full(len(states), -1))
    return dq - dv


def hypergradient_estimates(problem, x, context, oracle, rng, n_samples) -> np.ndarray:
    lgamma, n = problem.leader_gamma, n_samples
    T = geometric_horizon(rng, lgamma, n)
    tail = geometric_horizon(rng, np.sqrt(lgamma), n)
    lengths = T + tail + 1
    r = oracle.rollout(rng, n, int(lengths.max()), lengths=lengths)
    t = np.arange(r.n_steps)[None, :]
    rows = np.broadcast_to(np.arange(n)[:, None], r.mask.shape)
    head = r.mask & (t <= T[:, None])
    estimate = per_sample_sum(problem.grad_leader_reward(
        x, context, r.obs[head], r.actions[head], r.next_obs[head]), rows[head], n)
    from_T = r.mask & (t >= T[:, None])
    q_hat = (from_T * np.sqrt(lgamma) ** np.maximum(t - T[:, None], 0) * r.leader_rewards).sum(1)
    reached = r.mask[np.arange(n), np.minimum(T, r.n_steps - 1)]
    weight = np.where(reached, q_hat / (1 - lgamma), 0.0)
    into_T = r.mask & (t == (T - 1)[:, None]) & ~r.terminated
    scores = problem.grad_log_transition(x, context, r.obs[into_T], r.actions[into_T],
                                         r.next_obs[into_T])
    estimate += per_sample_sum(weight[rows[into_T], None] * scores, rows[into_T], n)
    start = reached & (T == 0)
    estimate[start] += weight[start, None] * problem.grad_log_initial(x, context, r.obs[start, 0])
    idx = np.flatnonzero(reached)
    s_T, a_T = r.obs[idx, T[idx]], r.actions[idx, T[idx]]
    da = grad_advantage_estimates(problem, x, context, oracle, rng, s_T, a_T)
    estimate[idx] += weight[idx, None] * da  # wrong: no 1/lambda
    return estimate


def expected_sampled_transitions(gamma: float, leader_gamma: float) -> float:
    root = np.sqrt(leader_gamma)
    return leader_gamma / (1 - leader_gamma) + root / (1 - root) + 1  # wrong: no restarts
