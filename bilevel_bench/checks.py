"""Checks of spec fields and command-line values: the type, the allowed range, a description
for messages and ``--help``, and the parser of a command-line string.

A check is called as ``check(name, value)`` and returns the normalised value (an ``int`` given
for a real becomes a ``float``; a JSON object is copied as plain data) or raises
:class:`SpecError` naming the field and the allowed range. ``check.parse(text)`` turns a
command-line string into a checked value (raising ``ValueError`` with the allowed range).
"""

from __future__ import annotations

import json
import math
import numbers
from abc import ABC, abstractmethod
from typing import Any


class SpecError(ValueError):
    """A spec field (or an argument) with a value outside its allowed range.

    Attributes:
        field: the name of the field.
    """

    def __init__(self, field: str, message: str):
        super().__init__(f"{field} {message}")
        self.field = field
        self.reason = message


class Check(ABC):
    """Base class: subclasses implement :meth:`normalise` (``None`` if the value is not
    allowed) and :meth:`describe`; :meth:`parse` reads the command-line form."""

    metavar = "VALUE"

    def __call__(self, name: str, value: Any) -> Any:
        normalised = self.normalise(value)
        if normalised is None:
            raise SpecError(name, f"must be {self.describe()}; got {value!r}")
        return normalised

    @abstractmethod
    def normalise(self, value: Any) -> Any:
        """The checked (normalised) value, or ``None`` if ``value`` is not allowed."""

    @abstractmethod
    def describe(self) -> str:
        """The allowed values in words, e.g. ``"an integer in [1, 1000000]"``."""

    def parse(self, text: str) -> Any:
        """The value of a command-line string (``ValueError`` naming the allowed range)."""
        try:
            value = self.normalise(self.convert(text))
        except (TypeError, ValueError, OverflowError):
            value = None
        if value is None:
            raise ValueError(f"must be {self.describe()}; got {text!r}")
        return value

    def convert(self, text: str) -> Any:
        """A command-line string as the Python value to check (here: the string itself)."""
        return text


def _interval(low: float | None, high: float | None, low_open: bool = False) -> str:
    def text(bound: float) -> str:
        return str(bound) if isinstance(bound, int) else f"{bound:g}"

    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{text(low)}, {text(high)}]"
    if low is not None:
        return f"{'>' if low_open else '>='} {text(low)}"
    if high is not None:
        return f"<= {text(high)}"
    return ""


class Integer(Check):
    """An integer (not a bool, not a float) in ``[low, high]`` (either bound may be ``None``)."""

    metavar = "N"

    def __init__(self, low: int | None = None, high: int | None = None):
        self.low, self.high = low, high

    def convert(self, text: str) -> int:
        return int(text.strip(), 10)

    def normalise(self, value: Any) -> int | None:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            return None
        value = int(value)
        if (self.low is not None and value < self.low) or \
                (self.high is not None and value > self.high):
            return None
        return value

    def describe(self) -> str:
        return f"an integer {_interval(self.low, self.high)}".rstrip()


class Real(Check):
    """A finite real number in ``[low, high]`` (``(low, high]`` with ``low_open``)."""

    metavar = "X"

    def __init__(self, low: float | None = None, high: float | None = None,
                 low_open: bool = False):
        self.low, self.high, self.low_open = low, high, low_open

    def convert(self, text: str) -> float:
        return float(text.strip())

    def normalise(self, value: Any) -> float | None:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return None
        value = float(value)
        if not math.isfinite(value):
            return None
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return None
        if self.high is not None and value > self.high:
            return None
        return value

    def describe(self) -> str:
        return f"a finite number {_interval(self.low, self.high, self.low_open)}".rstrip()


def Positive(high: float | None = None) -> Real:  # noqa: N802  (reads as a type)
    """A finite real ``> 0`` (and ``<= high``)."""
    return Real(0.0, high, low_open=True)


class Choice(Check):
    """One of a fixed set of strings."""

    metavar = "NAME"

    def __init__(self, *values: str):
        self.values = tuple(values)

    def normalise(self, value: Any) -> str | None:
        return value if isinstance(value, str) and value in self.values else None

    def describe(self) -> str:
        return "one of " + ", ".join(repr(v) for v in self.values)


class Boolean(Check):
    """``True`` or ``False`` (on the command line: true/false, yes/no, 1/0)."""

    metavar = "BOOL"
    WORDS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}

    def convert(self, text: str) -> bool | None:
        return self.WORDS.get(text.strip().lower())

    def normalise(self, value: Any) -> bool | None:
        return value if isinstance(value, bool) else None

    def describe(self) -> str:
        return "true or false"


class Text(Check):
    """A non-empty string of printable characters (e.g. a follower's registered name)."""

    metavar = "TEXT"

    def normalise(self, value: Any) -> str | None:
        return value if isinstance(value, str) and value.strip() and value.isprintable() \
            else None

    def describe(self) -> str:
        return "a non-empty string"


class JSONObject(Check):
    """A JSON object (a dict with string keys and JSON values, no NaN); copied as plain data
    so the spec does not share it with the caller."""

    metavar = "JSON"

    def convert(self, text: str) -> Any:
        return json.loads(text)

    def normalise(self, value: Any) -> dict | None:
        if not isinstance(value, dict):
            return None
        try:
            return json.loads(json.dumps(value, allow_nan=False))
        except (TypeError, ValueError):
            return None

    def describe(self) -> str:
        return "a JSON object"


class Nullable(Check):
    """``None`` or a value of ``check`` (on the command line: ``none``)."""

    def __init__(self, check: Check):
        self.check = check
        self.metavar = check.metavar

    def convert(self, text: str) -> Any:
        return None if text.strip().lower() == "none" else self.check.convert(text)

    def normalise(self, value: Any) -> Any:
        return _NONE if value is None else self.check.normalise(value)

    def __call__(self, name: str, value: Any) -> Any:
        result = super().__call__(name, value)
        return None if result is _NONE else result

    def parse(self, text: str) -> Any:
        result = super().parse(text)
        return None if result is _NONE else result

    def describe(self) -> str:
        return f"None or {self.check.describe()}"


_NONE = object()  # "None" was given (normalise returns None for "not allowed")
