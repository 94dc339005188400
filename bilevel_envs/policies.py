"""Follower policies as probability tables: the :class:`Policy` protocol, :class:`TabularPolicy`
and inverse-CDF sampling of one action per row."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Policy(Protocol):
    """A stochastic policy over ``n_actions`` discrete actions."""

    n_actions: int

    def action_probs(self, obs: Any) -> np.ndarray:
        """``π(·|s)`` for a batch of observations: shape ``(batch, n_actions)``."""

    def sample(self, obs: Any, rng: np.random.Generator) -> np.ndarray:
        """One action per observation, drawn with ``rng``."""


class TabularPolicy:
    """A policy given by a probability table ``(n_states, n_actions)`` over integer observations.

    Args:
        table: row-stochastic array; row ``s`` is ``π(·|s)``.
    """

    def __init__(self, table: np.ndarray):
        table = np.asarray(table, dtype=np.float64)
        if table.ndim != 2:
            raise ValueError(f"table must have shape (n_states, n_actions); got {table.shape}")
        if not np.all(np.isfinite(table)):
            raise FloatingPointError("policy table contains NaN or inf")
        self.table = table
        self.n_actions = table.shape[1]

    def action_probs(self, obs: Any) -> np.ndarray:
        return self.table[np.asarray(obs, dtype=np.int64)]

    def sample(self, obs: Any, rng: np.random.Generator) -> np.ndarray:
        probs = np.atleast_2d(self.action_probs(obs))
        return sample_rows(probs, rng.random(probs.shape[0])).reshape(np.shape(obs))


def normalised_cdf(p: np.ndarray) -> np.ndarray:
    """Cumulative sums over the last axis, normalised to end at exactly 1 (contiguous)."""
    cdf = np.cumsum(p, axis=-1)
    return np.ascontiguousarray(cdf / cdf[..., -1:])


def sample_rows(probs: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF draw of one index per row of ``probs`` ``(n, A)`` from uniforms ``u``
    ``(n,)``."""
    cdf = normalised_cdf(probs)
    return np.minimum((u[:, None] >= cdf).sum(-1), probs.shape[-1] - 1)
