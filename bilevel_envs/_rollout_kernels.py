"""Numba kernel for the rollouts' episode returns (the leader env's Monte-Carlo estimate of
``J_ξ(x)`` on every step). Validated entry as in :mod:`bilevel_envs._kernels`."""

from __future__ import annotations

import numba as nb
import numpy as np

from bilevel_envs._kernels import _shape


@nb.njit(cache=True, nogil=True)
def _episode_returns(values, mask, ends, episode_step, gamma):
    """Discounted returns ``G_t = v_t + γ (1 − end_t) G_{t+1}`` (``v = 0`` on padding) at the
    starts of the episodes that end inside their chain, in row-major order; a chain without an
    episode end contributes its first step's return."""
    n, T = values.shape
    out = np.empty(n * T)
    returns = np.empty(T)
    k = 0
    for e in range(n):
        last_end = -1
        acc = 0.0
        for t in range(T - 1, -1, -1):
            if ends[e, t]:
                acc = 0.0
                if last_end < 0:
                    last_end = t
            acc = (values[e, t] if mask[e, t] else 0.0) + gamma * acc
            returns[t] = acc
        for t in range(T):
            if mask[e, t] and episode_step[e, t] == 0 and (t <= last_end
                                                           or (t == 0 and last_end < 0)):
                out[k] = returns[t]
                k += 1
    return out[:k]


def episode_returns(values, mask, ends, episode_step, gamma):
    """Validated :func:`_episode_returns`."""
    _shape("values", values, (None, None), "f")
    for name, array, kind in (("mask", mask, "b"), ("ends", ends, "b"),
                              ("episode_step", episode_step, "iu")):
        _shape(name, array, values.shape, kind)
    return _episode_returns(values, mask, ends, episode_step, float(gamma))
