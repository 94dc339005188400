"""Experiment specs: one frozen dataclass per experiment, plain JSON on disk, keyed by a hash.

A spec fully determines one run. Each field declares its check (type and allowed range), its
help text and whether ``bilevel-bench`` offers it as a flag, in the field's metadata
(:func:`spec_field`); :class:`Spec` validates every field at construction, normalises numbers
(an ``int`` given for a real becomes a ``float``, so equal specs have equal keys), runs the
experiment's cross-field checks (:meth:`Spec.check`) and gives the plain-data form
(:meth:`Spec.to_dict`, :meth:`Spec.from_dict`) and the key (:attr:`Spec.key`: the first 16 hex
digits of the SHA-256 of the canonical JSON of ``to_dict()``).

    @dataclass(frozen=True, kw_only=True)
    class MySpec(Spec):
        EXPERIMENT: ClassVar[str] = "mine"
        VERSION: ClassVar[int] = 1
        seed: int = spec_field(check=Integer(0), help="random seed")
        iterations: int = spec_field(1000, check=Integer(1, 10**6), help="leader iterations",
                                     flag=True)

Bump ``VERSION`` whenever a field's meaning changes: the version is part of the key, so results
of the old meaning are never mistaken for new ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from bilevel_bench.checks import Check, SpecError

__all__ = ["Spec", "SpecError", "algorithm_spec", "canonical_json", "spec_field", "spec_key"]


def canonical_json(data: Any) -> str:
    """``data`` as canonical JSON: sorted keys, no spaces, no NaN or infinity."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)


def spec_key(data: Mapping[str, Any]) -> str:
    """The first 16 hex digits of the SHA-256 of the canonical JSON of ``data``."""
    return hashlib.sha256(canonical_json(dict(data)).encode()).hexdigest()[:16]


def spec_field(default: Any = dataclasses.MISSING, *, check: Check, help: str,
               flag: bool = False, algorithms: tuple[str, ...] | None = None) -> Any:
    """A spec field.

    Args:
        default: the default value (no default: the field is required).
        check: the field's type and range (see :mod:`bilevel_bench.checks`).
        help: what the field is, with its unit; used in messages and ``--help``.
        flag: offer the field as a ``bilevel-bench`` flag (``--field-name``).
        algorithms: the field applies to these algorithms only (the spec's ``algorithm``
            field): it must be set for them and ``None`` for the others.
    """
    metadata = {"check": check, "help": help, "flag": flag, "algorithms": algorithms}
    if isinstance(default, (dict, list)):
        frozen = canonical_json(default)
        return dataclasses.field(default_factory=lambda: json.loads(frozen), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True, kw_only=True)
class Spec:
    """Base class of the experiment specs (frozen, keyword-only dataclasses).

    Subclasses set ``EXPERIMENT`` (the experiment's name) and ``VERSION`` (the spec format) and
    declare their fields with :func:`spec_field`; they may override :meth:`check` for rules
    that involve several fields.

    Raises:
        SpecError: (a ``ValueError``) at construction, naming the field and the allowed range.
    """

    EXPERIMENT: ClassVar[str] = ""
    VERSION: ClassVar[int] = 0

    def __post_init__(self) -> None:
        algorithm = getattr(self, "algorithm", None)
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            applies = field.metadata.get("algorithms")
            if applies is not None and algorithm not in applies:
                if value is not None:
                    raise SpecError(field.name, f"applies to {', '.join(applies)} only; "
                                                f"must be None for {algorithm}; got {value!r}")
                continue
            if applies is not None and value is None:
                raise SpecError(field.name, f"is required for {algorithm} "
                                            f"({field.metadata['help']}); got None")
            object.__setattr__(self, field.name, field.metadata["check"](field.name, value))
        self.check()

    def check(self) -> None:
        """Cross-field rules of the experiment; raise :class:`SpecError` naming a field."""

    # ------------------------------------------------------------------------ plain data
    def to_dict(self) -> dict[str, Any]:
        """The spec as plain JSON-serialisable data: ``experiment``, ``spec_version`` and every
        field (``None`` for fields that do not apply)."""
        return {"experiment": self.EXPERIMENT, "spec_version": self.VERSION,
                **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: Any) -> Spec:
        """The spec of ``data`` (as written by :meth:`to_dict`).

        Raises:
            SpecError: if ``data`` is not a dict of this experiment and version with exactly
                the spec's fields, or a field is out of range.
        """
        if not isinstance(data, Mapping):
            raise SpecError("spec", f"must be a dict; got {type(data).__name__}")
        data = dict(data)
        for name, expected in (("experiment", cls.EXPERIMENT), ("spec_version", cls.VERSION)):
            if data.get(name) != expected:
                raise SpecError(name, f"must be {expected!r} for {cls.__name__}; got "
                                      f"{data.get(name)!r}")
        del data["experiment"], data["spec_version"]
        names = {f.name for f in dataclasses.fields(cls)}
        missing, unknown = names - set(data), set(data) - names
        if missing or unknown:
            raise SpecError("spec", f"malformed {cls.EXPERIMENT} spec: missing {sorted(missing)}"
                                    f", unknown {sorted(unknown)}")
        return cls(**data)

    @property
    def key(self) -> str:
        """The spec's key: :func:`spec_key` of :meth:`to_dict` (the name of its result file)."""
        return spec_key(self.to_dict())

    def replace(self, **changes: Any) -> Spec:
        """A copy with ``changes`` (validated like a new spec)."""
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------------ the CLI's view
    @classmethod
    def flag_fields(cls) -> Iterator[dataclasses.Field]:
        """The fields offered as ``bilevel-bench`` flags, in declaration order."""
        return (f for f in dataclasses.fields(cls) if f.metadata.get("flag"))

    @classmethod
    def field_default(cls, name: str) -> Any:
        """The default of field ``name`` (``dataclasses.MISSING`` if it has none)."""
        field = next(f for f in dataclasses.fields(cls) if f.name == name)
        if field.default_factory is not dataclasses.MISSING:
            return field.default_factory()
        return field.default


def algorithm_spec(spec_class: type[Spec], settings: Mapping[str, Mapping[str, Any]],
                   algorithm: str, **fields: Any) -> Spec:
    """A ``spec_class`` spec of ``algorithm``: its ``settings[algorithm]`` (the experiment's
    per-algorithm hyperparameters), then ``fields``.

    Raises:
        SpecError: for an algorithm without settings, an unknown field or a value out of range.
    """
    if algorithm not in settings:
        raise SpecError("algorithm", f"must be one of {', '.join(map(repr, settings))}; got "
                                     f"{algorithm!r}")
    names = {f.name for f in dataclasses.fields(spec_class)}
    unknown = sorted(set(fields) - names)
    if unknown:
        raise SpecError("spec", f"has no field(s) {unknown}; fields: {sorted(names)}")
    return spec_class(algorithm=algorithm, **{**settings[algorithm], **fields})
