"""Argument checks shared across the library: a bad value gets an error naming the argument and
the allowed range."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def check_int(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    """``value`` as an ``int``.

    Raises:
        ValueError: naming ``name`` and the range, unless ``value`` is an integer (a bool is not)
            in ``minimum..maximum`` (no upper bound if ``maximum`` is None).
    """
    valid = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not valid or value < minimum or (maximum is not None and value > maximum):
        allowed = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"
        raise ValueError(f"{name} must be an integer {allowed}; got {value!r}")
    return int(value)


def check_indices(values: Sequence[int] | np.ndarray, n: int, name: str) -> np.ndarray:
    """Validate an array of integer indices in ``0..n-1`` (e.g. start states) as ``int64``.

    Raises:
        ValueError: naming ``name`` and the range, for a non-integer dtype or an index outside it.
    """
    arr = np.asarray(values)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must be integer indices in 0..{n - 1}; got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() >= n):
        raise ValueError(f"{name} must be integer indices in 0..{n - 1}; got range "
                         f"[{arr.min()}, {arr.max()}]")
    return arr.astype(np.int64)
