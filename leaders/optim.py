"""The ascent step of a leader: gradient-norm clipping (paper App. F.2.2) and the optimisers
(SGD, Adam) that move ``x`` along a clipped gradient estimate."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bilevel_envs.validation import check_float, check_int


class Optimizer:
    """Ascent step on ``x`` from a (clipped) gradient estimate. ``state`` is plain arrays."""

    name = "sgd"

    def __init__(self, learning_rate: float):
        self.learning_rate = check_float("learning_rate", learning_rate, 0.0, low_open=True)
        self.state: dict[str, np.ndarray] = {}

    def step(self, x: np.ndarray, grad: np.ndarray) -> np.ndarray:
        return x + self.learning_rate * grad

    #: the arrays of :attr:`state` (name -> shape relative to x: "x" or "scalar")
    state_arrays: dict[str, str] = {}

    def load_state(self, state: dict[str, np.ndarray], x_shape: tuple[int, ...]) -> None:
        """Restore :attr:`state` from a checkpoint after checking every array.

        Raises:
            ValueError: naming the array, for an unknown or missing array, the wrong shape or
                non-finite values.
        """
        if not state:  # never stepped
            self.state = {}
            return
        if set(state) != set(self.state_arrays):
            raise ValueError(f"optimizer {self.name!r} state must hold {sorted(self.state_arrays)};"
                             f" got {sorted(state)}")
        restored = {}
        for name, kind in self.state_arrays.items():
            value = np.asarray(state[name])
            shape = tuple(x_shape) if kind == "x" else ()
            if value.shape != shape or value.dtype.kind not in "iuf" \
                    or not np.all(np.isfinite(value)):
                raise ValueError(f"optimizer state {name!r} must be finite numbers of shape "
                                 f"{shape}; got {value.dtype} {value.shape}")
            restored[name] = np.array(value, dtype=np.float64)
        if "t" in restored and (restored["t"] < 0 or restored["t"] != np.round(restored["t"])):
            raise ValueError(f"optimizer state 't' must be a whole number >= 0; got "
                             f"{restored['t']}")
        self.state = restored


class Adam(Optimizer):
    """Adam (Kingma & Ba) for ascent, with bias correction."""

    name = "adam"
    state_arrays = {"m": "x", "v": "x", "t": "scalar"}

    def __init__(self, learning_rate: float, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8):
        super().__init__(learning_rate)
        self.beta1 = check_float("beta1", beta1, 0.0, 1.0, high_open=True)
        self.beta2 = check_float("beta2", beta2, 0.0, 1.0, high_open=True)
        self.eps = check_float("eps", eps, 0.0, low_open=True)

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
        out = [[check_int("clip_groups entries", i, 0, size - 1) for i in group]
               for group in groups]
    except TypeError as exc:  # not a list of lists
        raise ValueError(f"clip_groups must be lists of integer indices; got {groups!r}") from exc
    flat = sorted(i for group in out for i in group)
    if flat != list(range(size)) or any(not group for group in out):
        raise ValueError(f"clip_groups must split the {size} coordinates of x into non-empty, "
                         f"disjoint groups covering each index once; got {groups!r}")
    return out
