"""Numba kernels for the loops NumPy cannot vectorise (sequential in time, independent per chain).

They are deterministic: all randomness arrives as arrays of uniforms drawn by the caller's
``numpy.random.Generator``, so the same seed gives the same trajectories bit for bit.
"""

from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True, nogil=True)
def _first_above(cdf, u):
    """Index of the first entry of ``cdf`` strictly above ``u`` (``len(cdf)`` if none)."""
    k = 0
    while k < cdf.shape[0] and u >= cdf[k]:
        k += 1
    return k


@nb.njit(cache=True, nogil=True)
def sample_tabular_chains(pi_cdf, next_states, next_cdf, mu_cdf, start_states, start_actions,
                          lengths, max_episode_steps, auto_reset, u_init, u,
                          obs, actions, next_obs, terminated, truncated, episode_step, mask):
    """Step ``n_envs`` chains of a finite MDP under a tabular policy.

    Args:
        pi_cdf: ``(S, A)`` cumulative policy (last entry of each row exactly 1).
        next_states, next_cdf: ``(S, A, K)`` sparse successor lists and their cumulative
            probabilities; a draw above the row total ends the episode (termination).
        mu_cdf: ``(S,)`` cumulative initial distribution.
        start_states, start_actions: ``(n_envs,)``; ``-1`` means "draw from μ" / "draw from π".
        lengths: ``(n_envs,)`` number of steps of each chain (``≤ T``).
        max_episode_steps: truncate episodes after this many steps (``0``: never).
        auto_reset: restart from μ after an episode ends (else the chain stops).
        u_init: ``(n_envs,)`` uniforms for the first state; ``u``: ``(n_envs, T, 3)`` uniforms for
            the action, the successor and the reset state of each step.
        obs ... mask: ``(n_envs, T)`` outputs, pre-filled with zeros / False.
    """
    n_envs, T = obs.shape
    for e in range(n_envs):
        s = start_states[e]
        if s < 0:
            s = np.searchsorted(mu_cdf, u_init[e], side="right")
        tau = 0
        for t in range(min(lengths[e], T)):
            if t == 0 and start_actions[e] >= 0:
                a = start_actions[e]
            else:
                a = _first_above(pi_cdf[s], u[e, t, 0])
            mask[e, t] = True
            obs[e, t] = s
            actions[e, t] = a
            episode_step[e, t] = tau
            k = _first_above(next_cdf[s, a], u[e, t, 1])
            ended = False
            if k == next_cdf.shape[2]:
                terminated[e, t] = True
                next_obs[e, t] = s
                ended = True
            else:
                next_obs[e, t] = next_states[s, a, k]
                tau += 1
                if max_episode_steps > 0 and tau >= max_episode_steps:
                    truncated[e, t] = True
                    ended = True
            if ended:
                if not auto_reset:
                    break
                s = np.searchsorted(mu_cdf, u[e, t, 2], side="right")
                tau = 0
            else:
                s = next_obs[e, t]


@nb.njit(cache=True, nogil=True)
def discounted_returns(values, ends, gamma):
    """``G_t = v_t + γ (1 − end_t) G_{t+1}`` per chain (no bootstrap after the last step)."""
    n, T = values.shape
    out = np.zeros_like(values)
    for e in range(n):
        acc = 0.0
        for t in range(T - 1, -1, -1):
            if ends[e, t]:
                acc = 0.0
            acc = values[e, t] + gamma * acc
            out[e, t] = acc
    return out


@nb.njit(cache=True, nogil=True)
def discounted_accumulation(weights, ends, gamma):
    """``W_t = w_t + γ (1 − end_{t−1}) W_{t−1}`` per chain: the adjoint of :func:`discounted_returns`.

    ``Σ_t W_t g_t = Σ_t w_t G_t`` for the returns ``G`` of any per-step quantity ``g``.
    """
    n, T = weights.shape
    out = np.zeros_like(weights)
    for e in range(n):
        acc = 0.0
        for t in range(T):
            if t > 0 and ends[e, t - 1]:
                acc = 0.0
            acc = weights[e, t] + gamma * acc
            out[e, t] = acc
    return out
