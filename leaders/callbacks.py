"""SB3-style callbacks of :meth:`leaders.base.Leader.learn`: hooks at the start, after every
iteration and at the end of training."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from leaders.base import Leader


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
        if save_every < 1:
            raise ValueError(f"save_every must be >= 1; got {save_every}")
        self.path, self.save_every = Path(path), int(save_every)

    def on_step(self, leader, record):
        if leader.num_iterations % self.save_every == 0:
            leader.save(self.path)
        return True

    def on_training_end(self, leader):
        leader.save(self.path)


def as_callbacks(callback) -> list[Callback]:
    if callback is None:
        return []
    if isinstance(callback, Callback):
        return [callback]
    if callable(callback):
        return [FunctionCallback(callback)]
    if isinstance(callback, Iterable):
        return [c for cb in callback for c in as_callbacks(cb)]
    raise TypeError(f"callback must be a Callback, a function or a list of them; got {callback!r}")
