"""The experiments behind ``bilevel-bench``, one subpackage each.

Each subpackage has a ``spec`` module (the experiment's :class:`~bilevel_bench.specs.Spec`), a
``run`` module (``run_spec(spec) -> dict``), a ``report`` module (tables and figures) and a
``command`` module defining ``EXPERIMENT``, an :class:`bilevel_bench.experiment.Experiment`;
:mod:`bilevel_bench.cli` builds one subcommand per entry of :data:`EXPERIMENTS`. A new
experiment is such a subpackage and one line here (or, from another package,
``EXPERIMENTS["name"] = "package.module"`` before :func:`bilevel_bench.cli.main`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bilevel_bench.experiment import Experiment

#: experiment name -> module defining ``EXPERIMENT``
EXPERIMENTS: dict[str, str] = {
    "table3": "bilevel_bench.experiments.table3.command",
    "contract": "bilevel_bench.experiments.contract.command",
    "rlhf": "bilevel_bench.experiments.rlhf.command",
    "tax": "bilevel_bench.experiments.tax.command",
    "suite": "bilevel_bench.experiments.suite.command",
}


def get_experiment(name: str) -> Experiment:
    """The declaration of a registered experiment.

    Raises:
        KeyError: naming the registered experiments, for an unknown name.
    """
    if name not in EXPERIMENTS:
        raise KeyError(f"unknown experiment {name!r}; expected one of {sorted(EXPERIMENTS)}")
    experiment = importlib.import_module(EXPERIMENTS[name]).EXPERIMENT
    if experiment.name != name:
        raise KeyError(f"module {EXPERIMENTS[name]} declares experiment {experiment.name!r}, "
                       f"registered as {name!r}")
    return experiment
