"""Which modules a submission may import, and the guard that enforces it in the grading child.

Each assignment declares an :class:`ImportPolicy`: the modules (and single objects) its
submissions may use, and the library modules they may not (the solvers the assignment asks the
student to write, the grader, the reference solutions). The standard library is allowed, except
the modules that start processes or call C directly.

:func:`install` sets the guard up in the child before the submission is imported:

* an ``__import__`` hook and a meta-path finder refuse, with a message naming the assignment's
  allowed modules, imports that the submission's own code asks for (``import``, ``from ...
  import``, ``importlib.import_module``);
* every module of the library (``bilevel_envs``, ``leaders``, ...) is replaced in
  ``sys.modules`` by a facade: the submission sees only what the policy allows, even through
  re-exports (``bilevel_envs.soft_value_iteration``) or ``sys.modules``; the library's own code
  sees everything, as before;
* methods listed in the policy (e.g. ``Leader.exact_objective``) refuse to be called directly by
  the submission.

This is a guard against delegation, not a sandbox: code that sets out to get around it (through
function ``__globals__``, the library's source files, ...) is out of its reach. The threat model
in ``examples/teaching/README.md`` says what needs an instructor-side sandbox.
"""

from __future__ import annotations

import builtins
import functools
import importlib
import importlib.abc
import importlib.util
import sys
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bilevel_teaching.sandbox import SubmissionFrames

#: top-level packages of this project: their modules are served to submissions through facades
LIBRARY_ROOTS = ("bilevel_envs", "leaders", "bilevel_bench", "bilevel_teaching")
_PROCESSES = "it starts processes, which grading does not allow"
#: modules no assignment allows, and why
ALWAYS_DENIED: Mapping[str, str] = {
    "bilevel_teaching": "it is the grader",
    "bilevel_bench": "it is the library's experiment code",
    "tests": "it holds the project's tests and the reference solutions",
    "teaching_solutions": "it holds the reference solutions",
    "ctypes": "it calls C code directly", "_ctypes": "it calls C code directly",
    "cffi": "it calls C code directly",
    "subprocess": _PROCESSES, "_posixsubprocess": _PROCESSES, "multiprocessing": _PROCESSES,
    "pty": _PROCESSES,
}


class RefusedImport(ImportError):
    """An import (or a library object) the assignment does not allow."""


@dataclass(frozen=True)
class ImportPolicy:
    """What a submission may import.

    Attributes:
        allow: module names (the module and its submodules: ``"numpy"``) and single objects
            (``"bilevel_envs.tabular:TabularModel"``: from that module only these names).
        deny: module names or ``"module:name"`` objects the submission may not use -> why (shown
            to the student). The longest matching name wins; at equal length, ``deny``.
        deny_methods: ``"module:Class.method"`` -> why: methods of allowed classes the
            submission may not call itself (the library may).
    """

    allow: tuple[str, ...]
    deny: Mapping[str, str] = field(default_factory=dict)
    deny_methods: Mapping[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        """The allowed modules in words, for messages and the assignment sheets."""
        names = [entry.replace(":", ".") for entry in self.allow]
        return ", ".join(names) + " and the Python standard library"

    def to_plain(self) -> dict[str, Any]:
        return {"allow": list(self.allow), "deny": dict(self.deny),
                "deny_methods": dict(self.deny_methods)}

    @classmethod
    def from_plain(cls, data: Mapping[str, Any]) -> ImportPolicy:
        return cls(tuple(data["allow"]), dict(data["deny"]), dict(data["deny_methods"]))


# ---------------------------------------------------------------------------- the rules
FULL, PATH, RESTRICTED, DENIED = "full", "path", "restricted", "denied"


class Rules:
    """The policy resolved for module names and the objects found in them."""

    def __init__(self, policy: ImportPolicy, assignment: str, own_modules: frozenset[str]):
        self.policy = policy
        self.assignment = assignment
        self.own_modules = own_modules
        self.allowed_modules = {e for e in policy.allow if ":" not in e}
        self.restricted: dict[str, set[str]] = {}
        for entry in policy.allow:
            if ":" in entry:
                module, name = entry.split(":", 1)
                self.restricted.setdefault(module, set()).add(name)
        self.denied = {**ALWAYS_DENIED, **{k: v for k, v in policy.deny.items() if ":" not in k}}
        self.denied_objects = {k: v for k, v in policy.deny.items() if ":" in k}
        self._cache: dict[str, tuple[str, str]] = {}

    def module(self, name: str) -> tuple[str, str]:
        """``(status, detail)`` of module ``name``: ``FULL``, ``PATH`` (only its submodules
        on the way to allowed ones), ``RESTRICTED`` or ``DENIED`` (``detail``: why)."""
        if name not in self._cache:
            self._cache[name] = self._module(name)
        return self._cache[name]

    def _module(self, name: str) -> tuple[str, str]:
        parts = name.split(".")
        if parts[0] in self.own_modules:
            return FULL, ""
        if name in self.restricted:
            return RESTRICTED, self.denied.get(name, "")
        for n in range(len(parts), 0, -1):
            prefix = ".".join(parts[:n])
            if prefix in self.denied:
                return DENIED, self.denied[prefix]
            if prefix in self.allowed_modules:
                return FULL, ""
        if any(entry.startswith(name + ".") for entry in (*self.allowed_modules,
                                                           *self.restricted)):
            return PATH, ""
        if parts[0] in sys.stdlib_module_names:
            return FULL, ""
        return DENIED, "this assignment does not use it"

    def refusal(self, what: str, why: str) -> RefusedImport:
        return RefusedImport(f"{what} is not allowed in the {self.assignment} assignment ({why})."
                             f" Allowed: {self.policy.describe()}.")

    def check_module(self, name: str) -> None:
        status, why = self.module(name)
        if status == DENIED:
            raise self.refusal(name, why)

    def check_object(self, module: str, name: str, value: Any) -> None:
        """Raise :class:`RefusedImport` if ``module.name`` (= ``value``) is off limits."""
        if isinstance(value, types.ModuleType):
            self.check_module(value.__name__)
            return
        if name.startswith("__") and name.endswith("__"):
            return
        owner = getattr(value, "__module__", None) if callable(value) else None
        if isinstance(owner, str) and owner != module:  # a re-export: judged where defined
            module, name = owner, getattr(value, "__name__", name)
        key = f"{module}:{name}"
        if key in self.denied_objects:
            raise self.refusal(f"{module}.{name}", self.denied_objects[key])
        status, why = self.module(module)
        if status == FULL:
            return
        if status == RESTRICTED and name in self.restricted[module]:
            return
        allowed = sorted(self.restricted.get(module, ()))
        raise self.refusal(f"{module}.{name}", why or (
            f"from {module} only {', '.join(allowed)} may be used" if allowed else
            "it is one of the library functions this assignment does not let you use"))


# ---------------------------------------------------------------------------- the guard
class Guard:
    """The installed guard: facades, the import hook, the finder and the method guards."""

    def __init__(self, rules: Rules, submission: SubmissionFrames):
        self.rules = rules
        self.submission = submission
        self._facades: dict[str, types.ModuleType] = {}
        self._real: dict[int, types.ModuleType] = {}

    def asked_by_submission(self, depth: int = 2) -> bool:
        return self.submission.nearest_is_submission(sys._getframe(depth))

    # -- facades
    def facade(self, module: types.ModuleType) -> types.ModuleType:
        """The facade of library ``module`` (made once)."""
        name = module.__name__
        facade = self._facades.get(name)
        if facade is None or self._real[id(facade)] is not module:
            facade = _Facade(module, self)
            self._facades[name] = facade
            self._real[id(facade)] = module
        return facade

    def real(self, facade: types.ModuleType) -> types.ModuleType:
        return self._real[id(facade)]

    def wrap_loaded(self) -> None:
        """Put every loaded library module behind its facade in ``sys.modules``."""
        for name, module in list(sys.modules.items()):
            if isinstance(module, types.ModuleType) and not isinstance(module, _Facade) and \
                    name.split(".")[0] in LIBRARY_ROOTS and not _initializing(module):
                sys.modules[name] = self.facade(module)

    # -- imports
    def guarded_import(self, real_import: Any) -> Any:
        def __import__(name, globals=None, locals=None, fromlist=(), level=0):
            module = real_import(name, globals, locals, fromlist, level)
            if not (isinstance(globals, dict)
                    and self.submission.owns(str(globals.get("__file__") or "<none>"))):
                return module
            absolute = importlib.util.resolve_name("." * level + name,
                                                   globals.get("__package__")) if level else name
            parts = absolute.split(".")
            for n in range(1, len(parts) + 1):
                self.rules.check_module(".".join(parts[:n]))
            for item in fromlist or ():
                if item != "*" and isinstance(sys.modules.get(f"{absolute}.{item}"),
                                              types.ModuleType):
                    self.rules.check_module(f"{absolute}.{item}")
            return module

        return __import__


def _initializing(module: types.ModuleType) -> bool:
    spec = module.__dict__.get("__spec__")
    return bool(getattr(spec, "_initializing", False))


class _Facade(types.ModuleType):
    """A library module as the submission sees it (attribute access checked by the rules)."""

    def __init__(self, real: types.ModuleType, guard: Guard):
        super().__init__(real.__name__, real.__doc__)
        for key in ("__file__", "__path__", "__package__", "__spec__", "__loader__"):
            if key in real.__dict__:
                object.__setattr__(self, key, real.__dict__[key])
        object.__setattr__(self, "_Facade__guard", guard)

    def __getattr__(self, name: str) -> Any:
        guard: Guard = object.__getattribute__(self, "_Facade__guard")
        real = guard.real(self)
        value = getattr(real, name)
        if guard.asked_by_submission():
            guard.rules.check_object(real.__name__, name, value)
        if isinstance(value, types.ModuleType) and \
                value.__name__.split(".")[0] in LIBRARY_ROOTS and not isinstance(value, _Facade):
            return guard.facade(value)
        return value

    def _real_for_change(self, name: str) -> types.ModuleType:
        """The real module, unless the submission itself (the caller's caller) asks."""
        guard: Guard = object.__getattribute__(self, "_Facade__guard")
        if guard.submission.owns(sys._getframe(2).f_code.co_filename):
            raise PermissionError(f"changing the library ({self.__name__}.{name}) is not "
                                  "allowed while grading")
        return guard.real(self)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._real_for_change(name), name, value)

    def __delattr__(self, name: str) -> None:
        delattr(self._real_for_change(name), name)

    def __dir__(self) -> list[str]:
        guard: Guard = object.__getattribute__(self, "_Facade__guard")
        return dir(guard.real(self))


class _Finder(importlib.abc.MetaPathFinder):
    """First on ``sys.meta_path``: refuses fresh imports the rules forbid when the submission
    asks for them, and serves library modules through their facades."""

    def __init__(self, guard: Guard):
        self.guard = guard

    def find_spec(self, name, path, target=None):
        if self.guard.asked_by_submission():
            self.guard.rules.check_module(name)
        if name.split(".")[0] not in LIBRARY_ROOTS:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _FacadeLoader(spec.loader, self.guard)
                return spec
        return None


class _FacadeLoader(importlib.abc.Loader):
    """Runs the real loader, then leaves the facade in ``sys.modules`` (which the import
    system returns)."""

    def __init__(self, loader: Any, guard: Guard):
        self._loader = loader
        self._guard = guard

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        sys.modules[module.__name__] = self._guard.facade(module)

    def __getattr__(self, name: str) -> Any:  # get_source, get_resource_reader, ...
        return getattr(self._loader, name)


def _guard_method(guard: Guard, spec: str, why: str) -> None:
    module_name, path = spec.split(":", 1)
    class_name, method_name = path.rsplit(".", 1)
    owner = getattr(importlib.import_module(module_name), class_name)
    original = getattr(owner, method_name)

    @functools.wraps(original)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if guard.submission.nearest_is_submission(sys._getframe(1)):
            raise guard.rules.refusal(f"{class_name}.{method_name}", why)
        return original(*args, **kwargs)

    setattr(owner, method_name, guarded)


def install(policy: ImportPolicy, assignment: str, submission: SubmissionFrames,
            own_modules: frozenset[str]) -> Guard:
    """Install the guard for ``policy`` (see the module docstring).

    Args:
        policy: the assignment's policy.
        assignment: its name (for messages).
        submission: which frames are the submission's.
        own_modules: top-level names of the modules next to the submission (its own helpers).
    """
    guard = Guard(Rules(policy, assignment, own_modules), submission)
    for spec, why in policy.deny_methods.items():
        _guard_method(guard, spec, why)
    guard.wrap_loaded()
    sys.meta_path.insert(0, _Finder(guard))
    builtins.__import__ = guard.guarded_import(builtins.__import__)
    return guard
