"""The experiments behind ``bilevel-bench``, one module each.

Every module defines ``NAME``, ``validate_spec(spec)`` (raises ``ValueError`` for a malformed
spec), ``run_spec(spec) -> result`` (a module-level function, so local processes and Ray workers
can import it) and ``register(subparsers)`` for its subcommand. Specs carry
``"experiment": NAME`` so the sweep runner finds the right module.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

#: experiment name -> module
EXPERIMENTS: dict[str, str] = {
    "table3": "bilevel_bench.experiments.table3",
    "contract": "bilevel_bench.experiments.contract",
    "rlhf": "bilevel_bench.experiments.rlhf",
    "tax": "bilevel_bench.experiments.tax",
}


def experiment_module(name: str) -> ModuleType:
    """The module of a registered experiment."""
    try:
        return importlib.import_module(EXPERIMENTS[name])
    except KeyError:
        raise KeyError(f"unknown experiment {name!r}; expected one of {sorted(EXPERIMENTS)}"
                       ) from None


def runner_for(specs: Sequence[dict[str, Any]]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The ``run_spec`` of the experiment all ``specs`` name, after validating every spec.

    Raises:
        ValueError: if the specs name no or several experiments, or one spec is malformed.
        KeyError: for an unknown experiment name.
    """
    names = {spec.get("experiment") if isinstance(spec, dict) else None for spec in specs}
    if len(names) != 1 or None in names:
        raise ValueError(f"every spec must be a dict naming one experiment (spec['experiment']);"
                         f" got {sorted(map(str, names))}")
    module = experiment_module(names.pop())
    for spec in specs:
        module.validate_spec(spec)
    return module.run_spec
