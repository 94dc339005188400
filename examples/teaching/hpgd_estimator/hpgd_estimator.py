"""Assignment 2 - The HPGD hypergradient estimator.   (starter file, version 1.0)

Fill in every part marked ``# TODO``. Keep the names and signatures: the grader calls them. Until
you fill them in, the functions return zeros, so the grader still runs and tells you what is
missing:

    python -m bilevel_teaching hpgd_estimator \
        examples/teaching/hpgd_estimator/hpgd_estimator.py

What you are given (see the sheet for the details):

* ``problem`` — the leader's view of the problem: ``problem.lam`` (λ), ``problem.gamma`` (γ),
  ``problem.leader_gamma`` (γ̄), ``problem.n_params`` (d) and the per-transition derivatives
  ``problem.grad_follower_reward(x, context, obs, actions, next_obs)`` (∂x r),
  ``problem.grad_leader_reward(...)`` (∂x r̄), ``problem.grad_log_transition(...)``
  (∂x log P(s'|s, a)) and ``problem.grad_log_initial(x, context, obs)`` (∂x log μ(s_0)); each
  takes arrays of N transitions and returns an ``(N, d)`` array.
* ``oracle.rollout(rng, n_envs, n_steps, start_states=..., start_actions=..., lengths=...)`` —
  ``n_envs`` trajectories of the follower's policy π, as arrays of shape ``(n_envs, n_steps)``:
  ``obs``, ``actions``, ``next_obs``, ``rewards`` (follower), ``leader_rewards``, ``entropy``
  (H(π(·|s_t))), ``terminated``, ``mask`` (False after a chain has ended). A start state or
  action of ``-1`` means "draw it" (from μ, from π); chain ``i`` has ``lengths[i]`` transitions
  unless its episode terminates earlier.

Every function returns one independent estimate per sample, as rows of an array. Work on all
samples at once with arrays (the grader asks for up to 250 000 estimates per check, in batches
of 10 000; a Python loop over samples is far too slow). Draw every random number from ``rng``.
"""

from __future__ import annotations

import numpy as np


# ---------------------------------------------------------------------------- helpers (given)
def geometric_horizon(rng: np.random.Generator, discount: float, size: int) -> np.ndarray:
    """``size`` draws of ``T ~ Geo(1 − discount)`` on {0, 1, ...}: ``P(T ≥ t) = discount^t``."""
    return rng.geometric(1.0 - discount, size=size) - 1


def per_sample_sum(values: np.ndarray, rows: np.ndarray, n: int) -> np.ndarray:
    """Add the rows of ``values`` ``(N, d)`` into ``n`` samples: row ``k`` goes to sample
    ``rows[k]``. Returns ``(n, d)``."""
    out = np.zeros((n, values.shape[1]))
    np.add.at(out, rows, values)
    return out


# ---------------------------------------------------------------------------- 2.1
def leader_q_estimates(problem, oracle, rng, states, actions) -> np.ndarray:
    """Unbiased estimates of the leader's ``Q̄(s_i, a_i)``: ``Σ_{k=0}^{T'} γ̄^{k/2} r̄_k`` along a
    trajectory that starts with ``(s_i, a_i)``, ``T' ~ Geo(1 − √γ̄)``.

    Returns:
        ``(n,)`` array, ``n = len(states)``.
    """
    n = len(states)
    root = np.sqrt(problem.leader_gamma)
    tail = geometric_horizon(rng, root, n)
    r = oracle.rollout(rng, n, int(tail.max()) + 1, start_states=states,  # noqa: F841 (yours)
                       start_actions=actions, lengths=tail + 1)
    # TODO (2.1): weight r.leader_rewards by root**k on the valid steps (r.mask) and sum.
    return np.zeros(n)


# ---------------------------------------------------------------------------- 2.2
def grad_q_estimates(problem, x, context, oracle, rng, states, actions) -> np.ndarray:
    """Unbiased estimates of the follower's ``∂x Q(s_i, a_i)`` with its policy held fixed
    (paper Thm 2, the first half of Alg. 2). ``actions[i] = -1`` draws the first action from π,
    which makes it an estimate of ``∂x V(s_i)``.

    With ``T ~ Geo(1 − γ)`` and ``T' ~ Geo(1 − √γ)``, along a trajectory of ``T + T' + 2``
    transitions from ``(s_i, a_i)``:

        Σ_{t=0}^{T} ∂r(s_t, a_t)  +  γ/(1 − γ) ∂log P(s_{T+1}|s_T, a_T) Σ_{t=T+1}^{T+T'+1}
        γ^{(t−T−1)/2} (r_t + λ H(π(·|s_t)))

    (the second term is 0 when the episode terminates at or before ``T``).

    Returns:
        ``(n, d)`` array.
    """
    n, d = len(states), problem.n_params
    # TODO (2.2): draw T and T', roll out T + T' + 2 transitions from (states, actions), then
    # add the two terms up per sample (per_sample_sum helps with the first).
    return np.zeros((n, d))


# ---------------------------------------------------------------------------- 2.3
def grad_advantage_estimates(problem, x, context, oracle, rng, states, actions) -> np.ndarray:
    """Unbiased estimates of ``∂x A(s_i, a_i) = ∂x Q(s_i, a_i) − ∂x V(s_i)`` (paper Alg. 2).

    Returns:
        ``(n, d)`` array.
    """
    n, d = len(states), problem.n_params
    # TODO (2.3)
    return np.zeros((n, d))


# ---------------------------------------------------------------------------- 2.4
def hypergradient_estimates(problem, x, context, oracle, rng, n_samples) -> np.ndarray:
    """``n_samples`` unbiased estimates of ``dJ_ξ/dx`` (paper Alg. 5 with Alg. 2; Prop. 1).

    With ``T ~ Geo(1 − γ̄)``, ``T' ~ Geo(1 − √γ̄)`` and a trajectory ``s_0 ~ μ`` of
    ``T + T' + 1`` transitions, ``Q̄̂ = Σ_{t=T}^{T+T'} γ̄^{(t−T)/2} r̄_t`` and

        Σ_{t=0}^{T} ∂r̄(s_t, a_t)
        + Q̄̂ / (1 − γ̄) · [ ∂Â(s_T, a_T) / λ  +  ∂log P(s_T|s_{T−1}, a_{T−1}) ]

    where ``∂log μ(s_0)`` replaces the transition score when ``T = 0``, and everything after the
    first sum is 0 if the episode terminates before step ``T``.

    Returns:
        ``(n_samples, d)`` array.
    """
    d = problem.n_params
    # TODO (2.4)
    return np.zeros((n_samples, d))


# ---------------------------------------------------------------------------- 2.6
def expected_sampled_transitions(gamma: float, leader_gamma: float) -> float:
    """The expected number of transitions one call of Alg. 5 samples (main trajectory and both
    Alg. 2 restarts), ignoring termination."""
    # TODO (2.6)
    return 0.0


if __name__ == "__main__":
    # Try your estimator against the exact answer (not graded): the grader's setup gives you the
    # same problem, oracle and exact values it uses.
    from bilevel_teaching.assignments.hpgd_estimator import setup

    su = setup(context=0)
    estimates = hypergradient_estimates(su.problem, su.x, su.context, su.oracle,
                                        np.random.default_rng(0), 20_000)
    mean = estimates.mean(axis=0)
    se = estimates.std(axis=0, ddof=1) / np.sqrt(len(estimates))
    print("estimate:", np.round(mean, 4), "+-", np.round(se, 4))
    print("exact:   ", np.round(su.exact.gradient, 4))
