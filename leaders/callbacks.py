"""SB3-style callbacks of :meth:`leaders.base.Leader.learn`: hooks at the start, after every
iteration and at the end of training."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from bilevel_envs.validation import check_int


class Leader(Protocol):
    """What a callback may use of the :class:`leaders.base.Leader` it is attached to (a protocol,
    so this module does not import the loop that imports it)."""

    num_iterations: int

    def save(self, path: str | os.PathLike) -> Path:
        """Write a checkpoint."""
        ...


class Callback:
    """SB3-style hook into :meth:`Leader.learn`. Return ``False`` from :meth:`on_step` to stop."""

    def on_training_start(self, leader: Leader) -> None:
        """Called once at the start of ``learn``."""

    def on_step(self, leader: Leader, record: dict[str, Any]) -> bool:
        """Called after every iteration with that iteration's history record."""
        return True

    def on_training_end(self, leader: Leader) -> None:
        """Called once when ``learn`` ends (also after an early stop)."""


class FunctionCallback(Callback):
    """Wraps ``fn(leader, record) -> bool | None``."""

    def __init__(self, fn: Callable[[Leader, dict[str, Any]], bool | None]):
        self.fn = fn

    def on_step(self, leader, record):
        return self.fn(leader, record) is not False


class CheckpointCallback(Callback):
    """Save the leader every ``save_every`` iterations to ``path`` (atomically), and at the end."""

    def __init__(self, path: str | os.PathLike, save_every: int):
        self.path, self.save_every = Path(path), check_int("save_every", save_every, 1)

    def on_step(self, leader, record):
        if leader.num_iterations % self.save_every == 0:
            leader.save(self.path)
        return True

    def on_training_end(self, leader):
        leader.save(self.path)


def as_callbacks(callback: Any) -> list[Callback]:
    """``callback`` (a :class:`Callback`, a function ``(leader, record) -> bool | None``, a list of
    them or None) as a flat list of callbacks.

    Raises:
        TypeError: for anything else.
    """
    if callback is None:
        return []
    if isinstance(callback, Callback):
        return [callback]
    if callable(callback):
        return [FunctionCallback(callback)]
    if isinstance(callback, Iterable):
        return [c for cb in callback for c in as_callbacks(cb)]
    raise TypeError(f"callback must be a Callback, a function or a list of them; got {callback!r}")
