"""What the parent asks the child to run (:class:`Call`), and what comes back (:class:`Results`).

A call names a function of the submission and its arguments as plain data: numbers, strings,
lists and arrays, plus three kinds of placeholders the child resolves before the call:

* :class:`Build` — a library object built in the child from plain data (a ``TabularModel``,
  the assignment's problem, an oracle that samples the follower's trajectories);
* :class:`Rng` — ``numpy.random.default_rng(seed)``;
* :class:`Ref` — what an earlier call of the same check returned (to probe a function at the
  submission's own answer).

The child sends back, for each call, ``{"ok": value}`` (converted to plain data as the call's
``returns`` says), ``{"raised": {...}}``, ``{"missing": true}`` (no such function),
``{"unconvertible": reason}`` or ``{"skipped": true}`` (an earlier call raised). The parent
never trusts these: :class:`Results` checks every value's type, shape and finiteness before a
judge sees it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bilevel_teaching.core import CheckFailed, SubmissionError
from bilevel_teaching.protocol import ProtocolError

#: how the child converts a return value to plain data
RETURN_KINDS = ("array", "number", "pair", "leader")
_TEXT_LIMIT = 2_000


@dataclass(frozen=True)
class Build:
    """A library object the child builds from plain data (see
    :data:`bilevel_teaching.student_objects.BUILDERS`); calls of one check with the same
    ``share`` key get the same object."""

    kind: str
    params: Mapping[str, Any]
    share: str | None = None


@dataclass(frozen=True)
class Rng:
    """``numpy.random.default_rng(seed)``, shared by the calls of one check with the same key."""

    seed: int
    share: str | None = None


@dataclass(frozen=True)
class Ref:
    """The value returned by call ``call`` of the same check (element ``item`` of a tuple)."""

    call: int
    item: int | None = None


@dataclass(frozen=True)
class Call:
    """One call of a submission's function.

    Attributes:
        function: its name.
        args: positional arguments (plain data, :class:`Build`, :class:`Rng`, :class:`Ref`).
        returns: how the child converts the result: ``"array"`` (float array), ``"number"``,
            ``"pair"`` (two float arrays) or ``"leader"`` (a summary of a trained leader).
        numpy_seed: if set, the child seeds NumPy's global generator with it before the call.
        probe: a probe may fail without ending the check's calls (the judge uses its result
            only to explain a failure).
    """

    function: str
    args: tuple[Any, ...] = ()
    returns: str = "array"
    numpy_seed: int | None = None
    probe: bool = False

    def __post_init__(self) -> None:
        if self.returns not in RETURN_KINDS:
            raise ValueError(f"returns must be one of {RETURN_KINDS}; got {self.returns!r}")

    def to_wire(self) -> dict[str, Any]:
        return {"function": self.function, "args": [_wire(a) for a in self.args],
                "returns": self.returns, "numpy_seed": self.numpy_seed, "probe": self.probe}


def _wire(value: Any) -> Any:
    if isinstance(value, Build):
        return {"$build": value.kind, "params": _wire(dict(value.params)), "share": value.share}
    if isinstance(value, Rng):
        return {"$rng": int(value.seed), "share": value.share}
    if isinstance(value, Ref):
        return {"$ref": value.call, "item": value.item}
    if isinstance(value, dict):
        return {key: _wire(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_wire(item) for item in value]
    return value


# ---------------------------------------------------------------------------- what came back
@dataclass(frozen=True)
class Raised:
    """The submission raised ``type`` (``where``: the line of the submission, if known)."""

    type: str
    message: str
    where: str = ""

    def describe(self) -> str:
        return f"{self.type}: {self.message}{self.where}"


@dataclass(frozen=True)
class Missing:
    """The submission does not define the function."""


@dataclass(frozen=True)
class Unconvertible:
    """The return value could not be converted as the call asked (``reason`` says why)."""

    reason: str


@dataclass(frozen=True)
class Skipped:
    """The call was not made because an earlier call of the check raised."""


def parse_result(entry: Any) -> Any:
    """One entry of the child's results, validated: the value, or a :class:`Raised`,
    :class:`Missing`, :class:`Unconvertible` or :class:`Skipped`."""
    if not (isinstance(entry, dict) and len(entry) == 1):
        raise ProtocolError("a result that is not a one-key object")
    (kind, value), = entry.items()
    if kind == "ok":
        return value
    if kind == "raised":
        if not (isinstance(value, dict) and set(value) == {"type", "message", "where"}
                and all(isinstance(v, str) for v in value.values())):
            raise ProtocolError("a malformed exception report")
        return Raised(_text(value["type"], 100), _text(value["message"]),
                      _text(value["where"]))
    if kind == "missing" and value is True:
        return Missing()
    if kind == "unconvertible" and isinstance(value, str):
        return Unconvertible(_text(value))
    if kind == "skipped" and value is True:
        return Skipped()
    raise ProtocolError(f"a result of unknown kind {kind!r}")


def _text(text: str, limit: int = _TEXT_LIMIT) -> str:
    """``text`` cut to ``limit`` characters, without control characters except newlines."""
    cleaned = "".join(c if c.isprintable() or c == "\n" else "?" for c in text[:limit])
    return cleaned + (" [...]" if len(text) > limit else "")


@dataclass
class Results:
    """The validated raw outputs of one check's calls, as a judge reads them (in call order).

    Every accessor raises :class:`~bilevel_teaching.core.SubmissionError` if the call raised
    and :class:`~bilevel_teaching.core.CheckFailed` if its value is missing, of the wrong type
    or shape, or not finite, with a message for the student.
    """

    calls: Sequence[Call]
    values: Sequence[Any]
    signatures: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.values) != len(self.calls):
            raise ProtocolError(f"{len(self.values)} results for {len(self.calls)} calls")

    def signature(self, i: int) -> str:
        name = self.calls[i].function
        return self.signatures.get(name, f"{name}(...)")

    def value(self, i: int) -> Any:
        """The plain-data value call ``i`` returned."""
        value = self.values[i]
        if isinstance(value, Raised):
            if value.type == "SystemExit":
                raise SubmissionError("your code called sys.exit() (or exit()) during this check")
            if value.type == "NotImplementedError":
                raise SubmissionError(f"not implemented yet ({value.describe()})")
            raise SubmissionError(f"your code raised {value.describe()}")
        if isinstance(value, Missing):
            raise CheckFailed(f"your file does not define the function {self.signature(i)} (or "
                              "it is not callable); keep the names of the starter file")
        if isinstance(value, Unconvertible):
            raise CheckFailed(f"{self.calls[i].function} returned {value.reason}")
        if isinstance(value, Skipped):
            raise CheckFailed(f"{self.calls[i].function} was not called: an earlier call of "
                              "this check raised")
        return value

    def array(self, i: int, shape: tuple[int, ...], what: str) -> np.ndarray:
        """Call ``i``'s result as a finite float array of ``shape``."""
        value = self.values[i]
        if isinstance(value, Unconvertible):
            raise CheckFailed(f"{what} must be an array of shape {shape}; got {value.reason}")
        return as_array(self.value(i), shape, what)

    def number(self, i: int, what: str) -> float:
        """Call ``i``'s result as a finite float."""
        value = self.values[i]
        if isinstance(value, Unconvertible):
            raise CheckFailed(f"{what} must return a number; got {value.reason}")
        value = self.value(i)
        if isinstance(value, np.ndarray) and value.shape == ():
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CheckFailed(f"{what} must return a number; got {type(value).__name__}")
        try:
            number = float(value)
        except OverflowError:
            number = float("inf")
        if not np.isfinite(number):
            raise CheckFailed(f"{what} returned {number}, not a finite number")
        return number

    def pair(self, i: int, shapes: tuple[tuple[int, ...], tuple[int, ...]], names: tuple[str, str],
             what: str) -> tuple[np.ndarray, np.ndarray]:
        """Call ``i``'s result as two finite float arrays of ``shapes``."""
        value = self.values[i]
        if isinstance(value, Unconvertible):
            raise CheckFailed(f"{self.calls[i].function} must return a pair "
                              f"({names[0]}, {names[1]}); got {value.reason}")
        value = self.value(i)
        if not (isinstance(value, list) and len(value) == 2):
            raise CheckFailed(f"{self.calls[i].function} must return a pair ({names[0]}, "
                              f"{names[1]})")
        return (as_array(value[0], shapes[0], f"{names[0]} returned by {what}"),
                as_array(value[1], shapes[1], f"{names[1]} returned by {what}"))

    def probe(self, i: int, shape: tuple[int, ...]) -> np.ndarray | None:
        """Call ``i``'s result as in :meth:`array`, or ``None`` if it is not a valid array."""
        try:
            return self.array(i, shape, "probe")
        except (CheckFailed, SubmissionError):
            return None


def as_array(value: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
    """``value`` as a finite float array of ``shape``; :class:`CheckFailed` says why not."""
    if isinstance(value, bool) or not isinstance(value, (np.ndarray, int, float)):
        raise CheckFailed(f"{what} must be an array of shape {shape}; got "
                          f"{type(value).__name__}")
    array = np.asarray(value, dtype=np.float64)
    if array.shape != shape:
        raise CheckFailed(f"{what} must have shape {shape}; got shape {array.shape}")
    bad = ~np.isfinite(array)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise CheckFailed(f"{what} contains NaN or inf (first at index {index}); a numerically "
                          "stable implementation never overflows")
    return array
