"""The follower protocol: how a follower responds to the leader's ``x`` in context ``ξ``."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from bilevel_envs.problem import BilevelProblem


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
        cdf = np.cumsum(probs, axis=-1)
        u = rng.random(probs.shape[0])[:, None] * cdf[:, -1:]
        actions = np.minimum((u >= cdf).sum(-1), self.n_actions - 1)
        return actions.reshape(np.shape(obs))


@dataclass
class FollowerResponse:
    """What a follower returns for one ``(x, ξ)``.

    Attributes:
        policy: the follower's (approximately optimal) policy ``π^o_{x,ξ}``.
        warm_start: whatever lets the next :meth:`Follower.respond` start from here (a Q-table,
            network weights, ...); pass it back unchanged.
        stats: plain-data diagnostics (iterations, residuals, wall time, ...).
    """

    policy: Policy
    warm_start: Any = None
    stats: dict[str, Any] = field(default_factory=dict)


class Follower(abc.ABC):
    """A learner that solves the follower MDP ``M_{x,ξ}`` of a problem (paper Assumption 3.2).

    Subclasses are constructed from plain-data keyword arguments (so env specs stay
    JSON-serialisable) and implement :meth:`respond`.
    """

    #: registry name (``follower="..."`` in a LeaderEnv)
    name: str = "follower"

    @abc.abstractmethod
    def respond(self, problem: BilevelProblem, x: np.ndarray, context: Any,
                seed: int | None = None, warm_start: Any = None) -> FollowerResponse:
        """Solve ``M_{x,ξ}`` and return the follower's policy.

        Args:
            problem: the bilevel problem.
            x: the leader's (validated) parameter.
            context: the context index.
            seed: seed for any randomness of the learner.
            warm_start: the ``warm_start`` of a previous response in the same context, or None.
        """

    def supports(self, problem: BilevelProblem) -> bool:
        """Whether this follower can solve ``problem`` (e.g. tabular solvers need a model)."""
        return True

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
