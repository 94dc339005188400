"""Argument checks shared across the library: a bad value gets an error naming the argument and
the allowed range."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

#: The largest integer :func:`check_int` accepts: counts, lengths and seeds reach compiled
#: kernels and NumPy as int64.
MAX_COUNT = 2**62


def check_int(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    """``value`` as an ``int``.

    Raises:
        ValueError: naming ``name`` and the range, unless ``value`` is an integer (a bool is not)
            in ``minimum..maximum`` (``minimum..MAX_COUNT`` if ``maximum`` is None).
    """
    valid = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not valid or value < minimum or value > (MAX_COUNT if maximum is None else maximum):
        if maximum is None and valid and value > MAX_COUNT:
            allowed = f"in {minimum}..2**62 (int64 in the compiled kernels)"
        else:
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


def check_float(name: str, value: Any, low: float | None = None, high: float | None = None, *,
                low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a finite ``float`` in the given range.

    Args:
        name: the argument's name, for the message.
        value: a real number (a bool, a string, None or a sequence is not).
        low, high: bounds (``None``: unbounded); ``low_open``/``high_open`` exclude them.

    Raises:
        ValueError: naming ``name`` and the allowed range.
    """
    real = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_))
    # float() of a Python int beyond the float range overflows: such an int is not finite here.
    number = _as_float(value) if real else math.nan
    if math.isfinite(number):
        if (low is None or number > low or (number == low and not low_open)) and (
                high is None or number < high or (number == high and not high_open)):
            return number
    # The message is built only on failure: solvers check their arguments on every call.
    lo = "(-inf" if low is None else ("(" if low_open else "[") + f"{low:g}"
    hi = "inf)" if high is None else f"{high:g}" + (")" if high_open else "]")
    raise ValueError(f"{name} must be a finite number in {lo}, {hi}; got {value!r}")


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except OverflowError:
        return math.inf


def check_options(options: Any, allowed: Sequence[str] | None) -> dict:
    """A ``reset`` call's ``options`` as a dict (``{}`` for None). Keys outside ``allowed`` get a
    warning, not an error: Gymnasium leaves the meaning of options to each env, but a misspelt
    option should not be ignored without a word. ``allowed=None`` accepts any key (PettingZoo's
    API test passes arbitrary options and treats a warning as a failure).

    Raises:
        ValueError: naming ``options`` if it is neither a dict nor None.
    """
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ValueError(f"options must be a dict or None; got {type(options).__name__}")
    unknown = [] if allowed is None else [key for key in options if key not in allowed]
    if unknown:
        reads = f"reads only {list(allowed)}" if allowed else "takes no options"
        warnings.warn(f"reset ignores the options {unknown}: this env {reads}", stacklevel=3)
    return options


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """``value`` if it is one of ``choices``.

    Raises:
        ValueError: naming ``name`` and listing the choices.
    """
    try:
        ok = value in tuple(choices)
    except TypeError:  # unhashable or incomparable values
        ok = False
    if not ok or isinstance(value, bool) != any(isinstance(c, bool) for c in choices):
        raise ValueError(f"{name} must be one of {list(choices)}; got {value!r}")
    return value


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is a bool.

    Raises:
        ValueError: naming ``name``.
    """
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False; got {value!r}")
    return bool(value)


#: Largest number of follower transitions one leader step may allocate (about 10⁸ transitions
#: take roughly 10 GB across the rollout arrays): beyond it a typo, not an experiment.
MAX_TRANSITIONS_PER_STEP = 10**8


def check_allocation(name: str, n_items: int, limit: int = MAX_TRANSITIONS_PER_STEP) -> None:
    """Refuse a size that would allocate beyond what this library ever needs.

    Raises:
        ValueError: naming ``name``, the requested size and the limit.
    """
    if n_items > limit:
        raise ValueError(f"{name} asks for {n_items:,} items per step, above the limit of "
                         f"{limit:,}; reduce it (or raise the limit explicitly)")


def check_array(name: str, value: Any, shape: tuple[int | None, ...] | None = None,
                low: float | None = None, *, low_open: bool = False) -> np.ndarray:
    """``value`` as a finite float64 array (a fresh copy), optionally of ``shape`` (``None``
    entries free) and with every entry ``>= low`` (``> low`` with ``low_open``).

    Raises:
        ValueError: naming ``name``, the expected shape and the range.
    """
    expected = "" if shape is None else " of shape (" + ", ".join(
        "·" if n is None else str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"
    bound = "" if low is None else f" with entries {'>' if low_open else '>='} {low:g}"

    def message() -> str:  # built on failure only: the repr of a large array is slow
        return f"{name} must be a finite array{expected}{bound}; got {value!r}"

    if isinstance(value, (str, bytes, dict)):
        raise ValueError(message())
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as exc:  # Overflow: an int beyond float64
        raise ValueError(message()) from exc
    if shape is not None and (arr.ndim != len(shape) or any(
            n is not None and n != m for n, m in zip(shape, arr.shape))):
        raise ValueError(message())
    if not np.all(np.isfinite(arr)):
        raise ValueError(message())
    if low is not None and ((arr < low).any() or (low_open and (arr == low).any())):
        raise ValueError(message())
    return arr


def check_probabilities(name: str, value: Any, n: int) -> np.ndarray:
    """``value`` as ``n`` non-negative probabilities summing to 1 (float64).

    Raises:
        ValueError: naming ``name``.
    """
    probs = check_array(name, value, (n,), 0.0)
    if not np.isclose(probs.sum(), 1.0):
        raise ValueError(f"{name} must be {n} non-negative probabilities summing to 1; got "
                         f"{value!r}")
    return probs
