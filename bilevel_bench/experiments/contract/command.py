"""``bilevel-bench contract``: HPGD, AMD and zero-order on the contract-design instances
against the exact optimum (project) or a multi-start reference (tree, grid)."""

from __future__ import annotations

import argparse

from bilevel_bench.arguments import add_list_argument
from bilevel_bench.experiment import Experiment, Quick, Request, Sweep, Timing
from bilevel_bench.experiments.contract.report import (
    plot_learning_curves,
    plot_payments,
    table_markdown,
    table_rows,
)
from bilevel_bench.experiments.contract.run import reference_optimum, run_spec
from bilevel_bench.experiments.contract.spec import (
    ALGORITHMS,
    INSTANCES,
    ContractSpec,
    contract_spec,
)
from bilevel_bench.storage import write_summary


def plan(request: Request, sweep: Sweep) -> list[ContractSpec]:
    """One spec per instance × algorithm × seed."""
    fields = dict(request.overrides)
    iterations = fields.setdefault("iterations", ContractSpec.field_default("iterations"))
    fields.setdefault("eval_every", min(ContractSpec.field_default("eval_every"), iterations))
    return [contract_spec(instance, algorithm, seed, **fields)
            for instance in instances(request) for algorithm in request.algorithms
            for seed in request.seeds]


def instances(request: Request) -> list[str]:
    """The instances chosen by ``--instances`` (default: all of them)."""
    return request.option("instances", list(INSTANCES))


def headline(request: Request, specs: list[ContractSpec]) -> str:
    """The first line printed: how many runs of what, and where the results go."""
    return (f"contract design: {len(specs)} runs ({len(instances(request))} instances × "
            f"{len(request.algorithms)} algorithms × {len(request.seeds)} seeds, "
            f"{specs[0].iterations if specs else 0} iterations) in {request.out}")


def summarise(request: Request, results: list[dict], timing: Timing) -> None:
    """``contract.md``/``contract.json``; ``learning_curves.png`` and ``payments.png``."""
    references = {i: reference_optimum(i) for i in instances(request)}
    rows = table_rows(results, references)
    wall = timing.wall_seconds
    write_summary(request.out, "contract", table_markdown(rows),
                  f"Wall time of this invocation: {wall:.0f} s (runs already on disk are not "
                  f"rerun).", rows=rows, references=references, wall_seconds=wall)
    if request.plots:
        figures = [plot_learning_curves(results, references,
                                        request.out / "learning_curves.png"),
                   plot_payments(results, references, request.out / "payments.png")]
        print("figures: " + ", ".join(str(f) for f in figures))


def options(parser: argparse.ArgumentParser) -> None:
    """The command's own flags (beyond those of its spec fields and the runner)."""
    add_list_argument(parser, "--instances", list(INSTANCES), "contract-design instances")


EXPERIMENT = Experiment(
    name="contract", spec_class=ContractSpec, run=run_spec, plan=plan, summarise=summarise,
    headline=headline, help="leaders on dynamic contract design (project, tree, grid)",
    description="Runs HPGD, AMD and zero-order on the contract-design instances against the "
                "exact optimum (project) or a multi-start reference (tree, grid); writes "
                "contract.md/json, learning curves and the final payments as PNG.",
    algorithms=ALGORITHMS, seeds=5,
    quick=Quick(seeds=3, fields={"iterations": 1000}, help="3 seeds × 1,000 iterations"),
    options=options)
