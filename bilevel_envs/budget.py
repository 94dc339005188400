"""Budget accounting: what a leader consumed, in follower samples, follower training and exact
model queries.

Benchmarks compare leaders at a fixed budget, so every unit is counted where it is spent:

* ``transitions`` — follower-environment transitions sampled: the leader env's rollouts
  (``n_followers × n_envs × n_rollout_steps`` per step), the transitions a follower samples while
  it learns (soft Q-learning, SB3 agents), and any further sampling through a step's oracle
  (HPGD's Alg. 2 restarts).
* ``follower_updates`` — follower training steps, in the unit of each follower kind: one per
  exact best-response solve (soft value iteration), one per Q-table update (soft Q-learning:
  ``steps × n_chains``), one per gradient step (SB3 agents, soft DQN).
* ``model_queries`` — exact models ``M_{x,ξ}`` handed to the *leader* (AMD, HPGD-RT-Q). The
  followers' own access to the model is part of the task's configuration, not the leader's.

:attr:`Budget.sample_cost` (``transitions + follower_updates``) is the budget of the
sample-based track; ``model_queries`` is reported apart (the model-based track).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from bilevel_envs.validation import check_int


@dataclass(frozen=True)
class Budget:
    """Counts of consumed resources (all integers ``>= 0``; see the module docstring).

    Attributes:
        transitions: follower-environment transitions sampled.
        follower_updates: follower training steps (unit per follower kind).
        model_queries: exact models ``M_{x,ξ}`` given to the leader.
    """

    transitions: int = 0
    follower_updates: int = 0
    model_queries: int = 0

    def __post_init__(self) -> None:
        for name in _FIELDS:
            value = getattr(self, name)
            if type(value) is not int or value < 0:  # the fast path of plain counts
                object.__setattr__(self, name, check_int(f"Budget.{name}", value, 0))

    def __add__(self, other: Budget) -> Budget:
        if not isinstance(other, Budget):
            return NotImplemented
        # Sums of valid counts are valid: skip the checks (this runs several times per step).
        total = object.__new__(Budget)
        object.__setattr__(total, "transitions", self.transitions + other.transitions)
        object.__setattr__(total, "follower_updates",
                           self.follower_updates + other.follower_updates)
        object.__setattr__(total, "model_queries", self.model_queries + other.model_queries)
        return total

    @property
    def sample_cost(self) -> int:
        """``transitions + follower_updates``: the sample-based track's budget unit."""
        return self.transitions + self.follower_updates

    def as_dict(self) -> dict[str, int]:
        """The counts as a plain dict (``transitions``, ``follower_updates``,
        ``model_queries``)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Budget:
        """The inverse of :meth:`as_dict`.

        Raises:
            ValueError: for unknown keys or counts that are not integers ``>= 0``.
        """
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown budget fields {unknown}; expected "
                             f"{[f.name for f in fields(cls)]}")
        return cls(**data)


_FIELDS = tuple(f.name for f in fields(Budget))


class CountedSampler:
    """A trajectory sampler that charges every transition it samples.

    Wraps any :class:`~bilevel_envs.rollouts.TrajectorySampler`: :meth:`rollout` delegates and
    passes ``Budget(transitions=rollouts.n_transitions)`` (the real, unpadded transitions) to
    ``charge``; every other attribute is the wrapped sampler's.
    """

    def __init__(self, sampler: Any, charge: Callable[[Budget], None]):
        self.sampler = sampler
        self._charge = charge

    def rollout(self, rng, n_envs, n_steps, **kwargs):
        rollouts = self.sampler.rollout(rng, n_envs, n_steps, **kwargs)
        self._charge(Budget(transitions=int(rollouts.n_transitions)))
        return rollouts

    def __getattr__(self, name: str) -> Any:
        # Only called for attributes not found on the wrapper (e.g. a tabular oracle's tables).
        if name in ("sampler", "_charge"):  # not set yet (e.g. while unpickling)
            raise AttributeError(name)
        return getattr(self.sampler, name)

    def __repr__(self) -> str:
        return f"CountedSampler({self.sampler!r})"
