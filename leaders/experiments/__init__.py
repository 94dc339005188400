"""The experiments behind ``bilevel-bench``, one module each.

Every module defines ``NAME``, ``run_spec(spec) -> result`` (a module-level function, so local
processes and Ray workers can import it) and ``register(subparsers)`` for its subcommand.
Specs carry ``"experiment": NAME`` so the sweep runner finds the right ``run_spec``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

#: experiment name -> module
EXPERIMENTS: dict[str, str] = {
    "table3": "leaders.experiments.table3",
    "tax": "leaders.experiments.tax",
}


def experiment_module(name: str) -> ModuleType:
    """The module of a registered experiment."""
    try:
        return importlib.import_module(EXPERIMENTS[name])
    except KeyError:
        raise KeyError(f"unknown experiment {name!r}; expected one of {sorted(EXPERIMENTS)}"
                       ) from None


def runner_for(specs: Sequence[dict[str, Any]]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The ``run_spec`` function shared by ``specs`` (all must name the same experiment)."""
    names = {spec.get("experiment") for spec in specs}
    if len(names) != 1 or None in names:
        raise ValueError(f"specs must all name one experiment (spec['experiment']); got {names}")
    return experiment_module(names.pop()).run_spec
