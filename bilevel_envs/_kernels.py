"""Numba kernels for the loops NumPy cannot vectorise (sequential in time, independent per chain):
sampling chains of a tabular model, discounted returns, and the every-visit estimator's weights;
and the shape and index checks that every kernel module's validated entries share. The exact
solves on banded models are in :mod:`bilevel_envs._exact_kernels`.

They are deterministic: all randomness arrives as arrays of uniforms drawn by the caller's
``numpy.random.Generator``, so the same seed gives the same trajectories bit for bit.

Compiled code does not check array bounds, so every public entry point here is a Python wrapper
that validates shapes, dtypes and index ranges (raising ``ValueError``) before it calls the
compiled ``_…`` implementation: no input can reach an out-of-bounds access.
"""

from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True, nogil=True)
def first_above(cdf, u):
    """Index of the first entry of ``cdf`` strictly above ``u`` (``len(cdf)`` if none)."""
    k = 0
    while k < cdf.shape[0] and u >= cdf[k]:
        k += 1
    return k


@nb.njit(cache=True, nogil=True)
def _sample_tabular_chains(pi_cdf, next_states, next_cdf, mu_cdf, start_states, start_actions,
                          lengths, max_episode_steps, auto_reset, u_init, u,
                          obs, actions, next_obs, terminated, truncated, episode_step, mask,
                          pi, entropy_table, action_probs, entropy):
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
        pi, entropy_table: ``(S, A)`` the policy, ``(S,)`` its entropy per state; their values
            at the visited ``(s, a)`` go to ``action_probs``, ``entropy`` (outputs, zeros).
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
                a = first_above(pi_cdf[s], u[e, t, 0])
            mask[e, t] = True
            obs[e, t] = s
            actions[e, t] = a
            action_probs[e, t] = pi[s, a]
            entropy[e, t] = entropy_table[s]
            episode_step[e, t] = tau
            k = first_above(next_cdf[s, a], u[e, t, 1])
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
def _discounted_returns(values, ends, gamma):
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
def _discounted_accumulation(weights, ends, gamma):
    """``W_t = w_t + γ (1 − end_{t−1}) W_{t−1}`` per chain: the adjoint of
    :func:`discounted_returns`.

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


@nb.njit(cache=True, nogil=True)
def _every_visit_weights(obs, actions, mask, ends, leader_rewards, episode_step, n_states,
                        n_actions, gamma, leader_gamma, lam, leave_one_out=False):
    """The authors' batch HPGD estimator as per-step weights (see ``leaders.estimators``).

    Returns ``(W, U, v_bar, n_starts)``: ``Σ_i W_i ∂r_i`` is the best-response term and
    ``Σ_i U_i ∂r̄_i`` the direct term; ``v_bar`` is the every-visit leader value table.
    ``leave_one_out``: each visit's leader advantage ``Ā(s, a)`` averages the *other* visits of
    ``(s, a)`` (0 for a single visit), so it is independent of the visit's own future.
    """
    n, T = obs.shape
    n_sa = np.zeros(n_states * n_actions)
    n_s = np.zeros(n_states)
    q_sum = np.zeros(n_states * n_actions)
    v_sum = np.zeros(n_states)
    start_counts = np.zeros(n_states)
    n_episodes = 0.0
    n_starts = 0.0
    returns = np.zeros((n if leave_one_out else 0, T))  # the visits' own returns (LOO only)
    max_tau = 0
    for e in range(n):  # leader returns (reverse), visit counts
        acc = 0.0
        for t in range(T - 1, -1, -1):
            if not mask[e, t]:
                acc = 0.0
                continue
            if ends[e, t]:
                acc = 0.0
                n_episodes += 1.0
            acc = leader_rewards[e, t] + leader_gamma * acc
            if leave_one_out:
                returns[e, t] = acc
            s = obs[e, t]
            sa = s * n_actions + actions[e, t]
            n_sa[sa] += 1.0
            n_s[s] += 1.0
            q_sum[sa] += acc
            v_sum[s] += acc
            if episode_step[e, t] == 0:
                start_counts[s] += 1.0
                n_starts += 1.0
            max_tau = max(max_tau, episode_step[e, t])
    n_episodes = max(n_episodes, 1.0)
    n_starts = max(n_starts, 1.0)
    v_bar = v_sum / np.maximum(n_s, 1.0)
    discounts = np.empty(max_tau + 1)  # γ̄^τ, one power per episode step rather than per visit
    for tau in range(max_tau + 1):
        discounts[tau] = leader_gamma ** tau
    d_sa = np.zeros(n_states * n_actions)
    for e in range(n):  # discounted visit counts D(s, a) = Σ_k γ̄^τ_k
        for t in range(T):
            if mask[e, t]:
                d_sa[obs[e, t] * n_actions + actions[e, t]] += discounts[episode_step[e, t]]
    # Per visit k of (s, a): c_k = D(s, a) Ā_k / (λ N n(s, a)), its share of Σ_k γ̄^τ_k Ā / (λ N);
    # c_s sums them per state (the ∂V̂ baseline). Recomputed where needed, not stored.
    def coef(e, t, s, sa):
        if not leave_one_out:
            a_bar = q_sum[sa] / n_sa[sa] - v_bar[s]
        elif n_sa[sa] > 1.0:
            a_bar = (q_sum[sa] - returns[e, t]) / (n_sa[sa] - 1.0) - v_bar[s]
        else:
            a_bar = 0.0  # no other visit of (s, a) in the batch
        return d_sa[sa] * a_bar / (lam * n_episodes * n_sa[sa])

    c_s = np.zeros(n_states)
    for e in range(n):
        for t in range(T):
            if mask[e, t]:
                s = obs[e, t]
                c_s[s] += coef(e, t, s, s * n_actions + actions[e, t])
    W = np.zeros((n, T))
    U = np.zeros((n, T))
    for e in range(n):  # forward discounted accumulation of the table-averaged weights
        acc_w = 0.0
        acc_u = 0.0
        for t in range(T):
            if t > 0 and ends[e, t - 1]:
                acc_w = 0.0
                acc_u = 0.0
            if mask[e, t]:
                s = obs[e, t]
                sa = s * n_actions + actions[e, t]
                acc_w = coef(e, t, s, sa) - c_s[s] / n_s[s] + gamma * acc_w
                acc_u = start_counts[s] / (n_starts * n_s[s]) + leader_gamma * acc_u
                W[e, t] = acc_w
                U[e, t] = acc_u
    return W, U, v_bar, n_starts


# ---------------------------------------------------------------------------- validated entries
def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _shape(name: str, array: np.ndarray, shape: tuple, kind: str) -> None:
    """``array`` has ``shape`` (``None`` entries free) and dtype kind ``kind`` (e.g. ``"f"``)."""
    # The message is built only on failure: these checks run on every sampler call.
    if array.ndim == len(shape) and array.dtype.kind in kind and all(
            n is None or n == m for n, m in zip(shape, array.shape)):
        return
    raise ValueError(f"{name} must be a {'float' if kind == 'f' else 'integer'} array of shape "
                     f"{tuple('·' if n is None else n for n in shape)}; got {array.dtype} "
                     f"{array.shape}")


@nb.njit(cache=True, nogil=True)
def _min_max(array):
    """``(min, max)`` of a non-empty array in one pass (the checks below run on every call)."""
    low = high = array.flat[0]
    for value in array.flat:
        if value < low:
            low = value
        elif value > high:
            high = value
    return low, high


@nb.njit(cache=True, nogil=True)
def _offset_range(next_states, probs):
    """``(min, max)`` of ``s' − s`` over the successors with nonzero probability (0 if none)."""
    low = high = 0
    S, A, K = probs.shape
    for s in range(S):
        for a in range(A):
            for k in range(K):
                if probs[s, a, k] != 0.0:
                    low = min(low, next_states[s, a, k] - s)
                    high = max(high, next_states[s, a, k] - s)
    return low, high


def _indices(name: str, array: np.ndarray, low: int, high: int) -> None:
    """Every entry of the integer ``array`` lies in ``low..high``."""
    if array.size:
        found = _min_max(array)
        if int(found[0]) < low or int(found[1]) > high:
            raise ValueError(f"{name} must hold indices in {low}..{high}; got range "
                             f"[{int(found[0])}, {int(found[1])}]")


def check_sampling_tables(next_states, next_cdf, mu_cdf) -> None:
    """Validate a model's sampling tables for :func:`_sample_tabular_chains`: shapes, dtypes,
    successor indices, ``mu_cdf`` ending at 1. Checked once per model
    (:func:`bilevel_envs.oracles.sampling_tables` caches them); :func:`sample_tabular_chains`
    checks everything on every call."""
    _shape("next_states", next_states, (None, None, None), "iu")
    S, A, K = next_states.shape
    _require(S > 0 and A > 0 and K > 0, "the model needs at least one state, action, successor")
    _shape("next_cdf", next_cdf, (S, A, K), "f")
    _shape("mu_cdf", mu_cdf, (S,), "f")
    _indices("next_states", next_states, 0, S - 1)
    # Draws land inside [0, S) only if the CDF ends at 1 (u < 1).
    _require(bool(np.all(mu_cdf[-1:] >= 1.0)), "mu_cdf must be a cumulative distribution "
                                               "ending at 1")


def check_policy_tables(pi_cdf, pi, entropy_table, n_states: int, n_actions: int) -> None:
    """Validate a policy's sampling tables for a model of ``n_states`` × ``n_actions``: shapes,
    dtypes, ``pi_cdf`` rows ending at 1 (checked once per oracle)."""
    _shape("pi_cdf", pi_cdf, (n_states, n_actions), "f")
    _shape("pi", pi, (n_states, n_actions), "f")
    _shape("entropy_table", entropy_table, (n_states,), "f")
    # Draws land inside [0, A) only if the CDFs end at 1 (u < 1).
    _require(bool(np.all(pi_cdf[:, -1] >= 1.0)),
             "pi_cdf must be cumulative distributions ending at 1")


def sample_tabular_chains(pi_cdf, next_states, next_cdf, mu_cdf, start_states, start_actions,
                          lengths, max_episode_steps, auto_reset, u_init, u,
                          obs, actions, next_obs, terminated, truncated, episode_step, mask,
                          pi, entropy_table, action_probs, entropy):
    """Step ``n_envs`` chains of a finite MDP under a tabular policy (validated; see
    :func:`_sample_tabular_chains` for the arguments)."""
    check_sampling_tables(next_states, next_cdf, mu_cdf)
    S, A, _ = next_states.shape
    check_policy_tables(pi_cdf, pi, entropy_table, S, A)
    n_envs, T = obs.shape
    for name, array, shape in (("u_init", u_init, (n_envs,)), ("u", u, (n_envs, T, 3))):
        _shape(name, array, shape, "f")
    for name, array, low, high in (("start_states", start_states, -1, S - 1),
                                   ("start_actions", start_actions, -1, A - 1),
                                   ("lengths", lengths, 0, T)):
        _shape(name, array, (n_envs,), "iu")
        _indices(name, array, low, high)
    for name, array, kind in (("obs", obs, "iu"), ("actions", actions, "iu"),
                              ("next_obs", next_obs, "iu"), ("terminated", terminated, "b"),
                              ("truncated", truncated, "b"), ("episode_step", episode_step, "iu"),
                              ("mask", mask, "b"), ("action_probs", action_probs, "f"),
                              ("entropy", entropy, "f")):
        _shape(name, array, (n_envs, T), kind)
    _sample_tabular_chains(pi_cdf, next_states, next_cdf, mu_cdf, start_states, start_actions,
                           lengths, max_episode_steps, auto_reset, u_init, u, obs, actions,
                           next_obs, terminated, truncated, episode_step, mask, pi,
                           entropy_table, action_probs, entropy)


def discounted_returns(values, ends, gamma):
    """``G_t = v_t + γ (1 − end_t) G_{t+1}`` per chain (no bootstrap after the last step)."""
    _shape("values", values, (None, None), "f")
    _shape("ends", ends, values.shape, "b")
    return _discounted_returns(values, ends, gamma)


def discounted_accumulation(weights, ends, gamma):
    """``W_t = w_t + γ (1 − end_{t−1}) W_{t−1}`` per chain: the adjoint of
    :func:`discounted_returns` (``Σ_t W_t g_t = Σ_t w_t G_t``)."""
    _shape("weights", weights, (None, None), "f")
    _shape("ends", ends, weights.shape, "b")
    return _discounted_accumulation(weights, ends, gamma)


def every_visit_weights(obs, actions, mask, ends, leader_rewards, episode_step, n_states,
                        n_actions, gamma, leader_gamma, lam, leave_one_out=False):
    """The authors' batch HPGD estimator as per-step weights (validated; see
    :func:`_every_visit_weights`)."""
    _shape("obs (observation cells)", obs, (None, None), "iu")
    shape = obs.shape
    for name, array, kind in (("actions", actions, "iu"), ("mask", mask, "b"),
                              ("ends", ends, "b"), ("leader_rewards", leader_rewards, "f"),
                              ("episode_step", episode_step, "iu")):
        _shape(name, array, shape, kind)
    _indices("obs (observation cells)", obs, 0, n_states - 1)
    _indices("actions", actions, 0, n_actions - 1)
    _indices("episode_step", episode_step, 0, np.iinfo(np.int64).max)
    return _every_visit_weights(obs, actions, mask, ends, leader_rewards, episode_step,
                                n_states, n_actions, gamma, leader_gamma, lam, leave_one_out)
