"""Plug-in leaders: find a leader by name, by ``"package.module:Class"`` or as a Python object.

Installed packages register leaders in the entry-point group :data:`ENTRY_POINT_GROUP`, in their
``pyproject.toml``::

    [project.entry-points."bilevel_envs.leaders"]
    my_leader = "my_package.my_module:MyLeader"

The built-in leaders register the same way (this project's ``pyproject.toml``) and are also
known without an installed entry point (:data:`BUILTIN_LEADERS`), so a source checkout works.

    from leaders.registry import make_leader
    leader = make_leader("random_search", env, learning_rate=0.1, seed=0)
    leader = make_leader("my_package.my_module:MyLeader", env)
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from leaders.amd import AMD
from leaders.base import Leader
from leaders.hpgd import HPGD
from leaders.hpgd_rtq import HPGDRTQ
from leaders.random_search import RandomSearch
from leaders.zero_order import ZeroOrder

#: the entry-point group of leader classes
ENTRY_POINT_GROUP = "bilevel_envs.leaders"

#: the leaders of this package (name -> class); pyproject.toml registers the same names
BUILTIN_LEADERS: dict[str, type[Leader]] = {
    "hpgd": HPGD, "hpgd_rtq": HPGDRTQ, "amd": AMD, "zero_order": ZeroOrder,
    "random_search": RandomSearch,
}

#: arguments a factory is given positionally (``factory(env, **kwargs)``)
_POSITIONAL = ("self", "env")


def available_leaders() -> dict[str, type[Leader]]:
    """Every known leader, name -> class: the built-ins, then the installed entry points of
    :data:`ENTRY_POINT_GROUP`.

    An entry point that fails to load or is not a :class:`~leaders.base.Leader` subclass, or that
    claims a built-in name for another class, is skipped with a warning (one broken package
    does not take the others down).
    """
    leaders = dict(BUILTIN_LEADERS)
    for entry in _entry_points():
        builtin = BUILTIN_LEADERS.get(entry.name)
        if builtin is not None and entry.value == f"{builtin.__module__}:{builtin.__name__}":
            continue
        try:
            obj = entry.load()
        except Exception as exc:  # any error of a third-party import: skip that package only
            warnings.warn(f"leader entry point {entry.name!r} = {entry.value!r} (group "
                          f"{ENTRY_POINT_GROUP!r}) failed to load: {type(exc).__name__}: {exc}",
                          stacklevel=2)
            continue
        if not (isinstance(obj, type) and issubclass(obj, Leader)):
            warnings.warn(f"leader entry point {entry.name!r} = {entry.value!r} is not a Leader "
                          f"subclass; skipped", stacklevel=2)
        elif builtin is not None and obj is not builtin:
            warnings.warn(f"leader entry point {entry.name!r} = {entry.value!r} claims the name "
                          f"of the built-in {builtin.__name__}; skipped", stacklevel=2)
        else:
            leaders[entry.name] = obj
    return leaders


def resolve_leader(spec: Any) -> Callable[..., Leader]:
    """What builds a leader from ``spec``: a registered name (:func:`available_leaders`),
    ``"package.module:Class"``, ``"path/to/file.py:Class"``, a :class:`~leaders.base.Leader`
    subclass or a callable ``(env, **kwargs) -> Leader``.

    Raises:
        ValueError: in one line, for an unknown name (listing the known ones), a module that
            cannot be imported, a missing attribute, or a class that is not a ``Leader``.
        TypeError: for a spec of another type.
    """
    if isinstance(spec, str):
        if ":" not in spec:
            leaders = available_leaders()
            if spec not in leaders:
                raise ValueError(f"unknown leader {spec!r}; registered: {sorted(leaders)}, or "
                                 "give 'package.module:Class' or 'path/to/file.py:Class'")
            return leaders[spec]
        return _check_factory(_load_attribute(spec), spec)
    if isinstance(spec, type) or callable(spec):
        return _check_factory(spec, repr(spec))
    raise TypeError(f"a leader spec must be a name, 'package.module:Class', a Leader subclass "
                    f"or a callable (env, **kwargs) -> Leader; got {type(spec).__name__}")


def make_leader(spec: Any, env: Any, /, **kwargs: Any) -> Leader:
    """Build the leader of ``spec`` (see :func:`resolve_leader`) on ``env`` with ``kwargs``.

    The keyword arguments are checked against the constructor (along the class hierarchy for a
    ``Leader`` subclass) before anything is built.

    Raises:
        ValueError: for a bad ``spec`` or keyword arguments the constructor does not accept
            (naming them and the accepted ones); ``TypeError`` if the factory does not return a
            ``Leader``.
    """
    factory = resolve_leader(spec)
    accepted = accepted_kwargs(factory)
    name = getattr(factory, "__name__", repr(factory))
    if "env" in kwargs:
        raise ValueError(f"pass the env as make_leader's second argument, not as a keyword of "
                         f"{name}")
    if accepted is not None:
        unknown = sorted(set(kwargs) - accepted)
        if unknown:
            raise ValueError(f"{name} does not accept {unknown}; it accepts {sorted(accepted)}")
    leader = factory(env, **kwargs)
    if not isinstance(leader, Leader):
        raise TypeError(f"{name}(env, ...) returned a {type(leader).__name__}, not a Leader")
    return leader


def accepted_kwargs(factory: Callable[..., Any]) -> frozenset[str] | None:
    """The keyword arguments ``factory(env, **kwargs)`` accepts; ``None`` when it takes any
    (a ``**kwargs`` that is not forwarded to a base class's constructor).

    For a class, the constructors along the MRO are read while each forwards ``**kwargs``
    (as every built-in leader does to :class:`~leaders.base.Leader`).
    """
    if isinstance(factory, type):
        names: set[str] = set()
        for klass in factory.__mro__:
            init = klass.__dict__.get("__init__")
            if init is None or klass is object:
                continue
            params = inspect.signature(init).parameters.values()
            names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD,
                                                             p.KEYWORD_ONLY)}
            if not any(p.kind is p.VAR_KEYWORD for p in params):
                return frozenset(names - set(_POSITIONAL))
        return None
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: cannot check
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return frozenset(names[1:] if names and names[0] not in _POSITIONAL else
                     set(names) - set(_POSITIONAL))


# ---------------------------------------------------------------------------- helpers
def _entry_points() -> list[importlib.metadata.EntryPoint]:
    return list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


def _load_attribute(spec: str) -> Any:
    """The object at ``"module:attr"`` or ``"path/to/file.py:attr"``."""
    module_name, _, attribute = spec.rpartition(":")
    if not module_name or not attribute:
        raise ValueError(f"leader spec {spec!r} must read 'package.module:Class' or "
                         "'path/to/file.py:Class'")
    if module_name.endswith(".py"):
        module = _import_file(Path(module_name), spec)
    else:
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # ImportError, or any error raised while importing it
            raise ValueError(f"cannot import module {module_name!r} of leader spec {spec!r}: "
                             f"{type(exc).__name__}: {exc}") from exc
    obj = module
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"module {module_name!r} has no attribute {attribute!r} (leader "
                             f"spec {spec!r})")
        obj = getattr(obj, part)
    return obj


def _import_file(path: Path, spec: str) -> Any:
    """Import a Python file as a module (named after its resolved path, imported once)."""
    if not path.is_file():
        raise ValueError(f"leader spec {spec!r}: no file {str(path)!r}")
    name = "_bilevel_leader_" + "".join(c if c.isalnum() else "_" for c in str(path.resolve()))
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise ValueError(f"cannot import {str(path)!r} of leader spec {spec!r}: "
                         f"{type(exc).__name__}: {exc}") from exc
    return module


def _check_factory(obj: Any, spec: str) -> Callable[..., Leader]:
    if isinstance(obj, type):
        if not issubclass(obj, Leader):
            raise ValueError(f"leader spec {spec!r} names the class {obj.__name__}, which is not "
                             "a subclass of leaders.base.Leader")
        if inspect.isabstract(obj):
            raise ValueError(f"leader spec {spec!r} names the abstract class {obj.__name__} "
                             "(it must implement estimate_gradient)")
        return obj
    if callable(obj):
        return obj
    raise ValueError(f"leader spec {spec!r} names a {type(obj).__name__}, not a Leader class "
                     "or a callable (env, **kwargs) -> Leader")
