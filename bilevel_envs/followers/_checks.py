"""Argument checks shared by the followers (plain-data kwargs deserve clear errors)."""

from __future__ import annotations

from typing import Any

import numpy as np


def check_int(name: str, value: Any, minimum: int) -> int:
    """``value`` as an ``int``.

    Raises:
        ValueError: naming ``name``, unless ``value`` is an integer ``>= minimum`` (a bool is not).
    """
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)
