"""The ascent step of a leader: gradient-norm clipping (paper App. F.2.2) and the optimisers
(SGD, Adam) that move ``x`` along a clipped gradient estimate."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class Optimizer:
    """Ascent step on ``x`` from a (clipped) gradient estimate. ``state`` is plain arrays."""

    name = "sgd"

    def __init__(self, learning_rate: float):
        if not (np.isfinite(learning_rate) and learning_rate > 0):
            raise ValueError(f"learning_rate must be a positive number; got {learning_rate}")
        self.learning_rate = float(learning_rate)
        self.state: dict[str, np.ndarray] = {}

    def step(self, x: np.ndarray, grad: np.ndarray) -> np.ndarray:
        return x + self.learning_rate * grad


class Adam(Optimizer):
    """Adam (Kingma & Ba) for ascent, with bias correction."""

    name = "adam"

    def __init__(self, learning_rate: float, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8):
        super().__init__(learning_rate)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps

    def step(self, x: np.ndarray, grad: np.ndarray) -> np.ndarray:
        if not self.state:
            self.state = {"m": np.zeros_like(x), "v": np.zeros_like(x), "t": np.zeros(())}
        s = self.state
        s["t"] = s["t"] + 1
        s["m"] = self.beta1 * s["m"] + (1 - self.beta1) * grad
        s["v"] = self.beta2 * s["v"] + (1 - self.beta2) * grad**2
        m_hat = s["m"] / (1 - self.beta1 ** s["t"])
        v_hat = s["v"] / (1 - self.beta2 ** s["t"])
        return x + self.learning_rate * m_hat / (np.sqrt(v_hat) + self.eps)


OPTIMIZERS = {"sgd": Optimizer, "adam": Adam}


def clip_by_norm(grad: np.ndarray, max_norm: float | None,
                 groups: Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """Scale ``grad`` down to Euclidean norm ``max_norm`` if it is longer (``None``: no clip);
    with ``groups`` (lists of flat indices), each group of coordinates separately."""
    if max_norm is None:
        return grad
    if groups is not None:
        out = np.array(grad, dtype=np.float64)
        flat = out.reshape(-1)
        for group in groups:
            flat[list(group)] = clip_by_norm(flat[list(group)], max_norm)
        return out
    norm = float(np.linalg.norm(grad))
    return grad * (max_norm / norm) if norm > max_norm else grad


def check_clip_groups(groups: Any, size: int) -> list[list[int]] | None:
    """Validate ``clip_groups``: disjoint lists of flat indices covering ``0..size−1``."""
    if groups is None:
        return None
    try:
        out = [[int(i) for i in group] for group in groups]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"clip_groups must be lists of integer indices; got {groups!r}") from exc
    flat = sorted(i for group in out for i in group)
    if flat != list(range(size)) or any(not group for group in out):
        raise ValueError(f"clip_groups must split the {size} coordinates of x into non-empty, "
                         f"disjoint groups covering each index once; got {groups!r}")
    return out
