"""``bilevel-bench rlhf``: HPGD (trajectory-level estimator) and zero-order on the RLHF
instances, scored independently of the leader."""

from __future__ import annotations

import argparse

from bilevel_bench.arguments import add_list_argument
from bilevel_bench.experiment import Experiment, Quick, Request, Sweep, Timing
from bilevel_bench.experiments.rlhf.report import plot_metrics, table_markdown, table_rows
from bilevel_bench.experiments.rlhf.run import references, run_spec
from bilevel_bench.experiments.rlhf.spec import ALGORITHMS, INSTANCES, RLHFSpec, rlhf_spec
from bilevel_bench.storage import write_summary


def plan(request: Request, sweep: Sweep) -> list[RLHFSpec]:
    """One spec per instance × algorithm × seed (evaluations at most every ``iterations``)."""
    fields = dict(request.overrides)
    iterations = fields.setdefault("iterations", RLHFSpec.field_default("iterations"))
    fields["eval_every"] = min(fields.get("eval_every", RLHFSpec.field_default("eval_every")),
                               iterations)
    return [rlhf_spec(instance, algorithm, seed, **fields)
            for instance in instances(request) for algorithm in request.algorithms
            for seed in request.seeds]


def instances(request: Request) -> list[str]:
    """The instances chosen by ``--instances`` (default: all of them)."""
    return request.option("instances", list(INSTANCES))


def headline(request: Request, specs: list[RLHFSpec]) -> str:
    """The first line printed: how many runs of what, and where the results go."""
    return (f"RLHF: {len(specs)} runs ({len(instances(request))} instances × "
            f"{len(request.algorithms)} algorithms × {len(request.seeds)} seeds, "
            f"{specs[0].iterations if specs else 0} iterations) in {request.out}")


def summarise(request: Request, results: list[dict], timing: Timing) -> None:
    """``rlhf.md``/``rlhf.json`` and ``metrics.png``."""
    pairs = results[0]["spec"]["eval_pairs"] if results else RLHFSpec.field_default(
        "eval_pairs")
    refs = {i: references(i, pairs) for i in instances(request)}
    rows = table_rows(results, refs)
    wall = timing.wall_seconds
    write_summary(request.out, "rlhf", table_markdown(rows),
                  f"Wall time of this invocation: {wall:.0f} s (runs already on disk are not "
                  f"rerun).", rows=rows, references=refs, wall_seconds=wall)
    if request.plots:
        print(f"figures: {plot_metrics(results, refs, request.out / 'metrics.png')}")


def options(parser: argparse.ArgumentParser) -> None:
    """The command's own flags (beyond those of its spec fields and the runner)."""
    add_list_argument(parser, "--instances", list(INSTANCES), "RLHF instances")


EXPERIMENT = Experiment(
    name="rlhf", spec_class=RLHFSpec, run=run_spec, plan=plan, summarise=summarise,
    headline=headline,
    help="leaders on RLHF as bilevel RL (preference grid, tiny exact instance)",
    description="Runs HPGD (trajectory-level estimator) and zero-order on the RLHF instances; "
                "writes rlhf.md/json and the metrics over iterations as PNG.",
    algorithms=ALGORITHMS, seeds=5,
    quick=Quick(seeds=3, fields={"iterations": 500, "eval_every": 25},
                help="3 seeds × 500 iterations, evaluated every 25"),
    options=options)
