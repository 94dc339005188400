"""``bilevel-bench table3``: the 9 (λ, β) cells × HPGD, AMD, zero-order × seeds at the selected
learning rates (shipped, from a file, or found with ``--grid``), then the table and figures."""

from __future__ import annotations

import argparse
import json
import time

from bilevel_bench.arguments import argument_type
from bilevel_bench.checks import Integer
from bilevel_bench.experiment import Experiment, Quick, Request, Sweep, Timing, UsageError
from bilevel_bench.experiments.table3.figures import plot_learning_curves, plot_penalty_maps
from bilevel_bench.experiments.table3.report import (
    SELECTION_FILE,
    Selection,
    load_selection,
    select_hyperparameters,
    table3_markdown,
    table3_rows,
    timing_summary,
)
from bilevel_bench.experiments.table3.run import run_spec
from bilevel_bench.experiments.table3.spec import (
    ALGORITHMS,
    LEARNING_RATES,
    PERTURBATION_CONSTANTS,
    TABLE3_CELLS,
    Table3Spec,
    cell_name,
)
from bilevel_bench.storage import write_json_atomic, write_summary

GRID_SEED_OFFSET = 100  # held-out seeds of the grid search: 100, 101, ...
QUICK_NOTE = ("--quick: 3 seeds instead of the paper's 10 (10,000 iterations each, as the "
              "paper): the standard errors are wider than the full table's "
              "(bilevel-bench table3 --seeds 10); cells marked 'no' differ from the paper in "
              "the full table too, for the reasons docs/table3.md gives.")


# ---------------------------------------------------------------------------- specs
def grid_specs(seeds, cells=TABLE3_CELLS, algorithms=ALGORITHMS, **fields) -> list[Table3Spec]:
    """The paper's hyperparameter grid: every learning rate (and C) × cell × algorithm × seed."""
    return [Table3Spec(algorithm=algorithm, lam=lam, beta=beta, seed=seed, learning_rate=lr,
                       perturbation_constant=c, **fields)
            for lam, beta in cells for algorithm in algorithms for lr in LEARNING_RATES
            for c in (PERTURBATION_CONSTANTS if algorithm == "zero_order" else (None,))
            for seed in seeds]


def selected_specs(selection: Selection, seeds, cells=TABLE3_CELLS, algorithms=ALGORITHMS,
                   **fields) -> list[Table3Spec]:
    """One spec per cell × algorithm × seed at the selected hyperparameters.

    Raises:
        UsageError: naming ``--selection``, if the selection lacks a cell or algorithm.
    """
    specs = []
    for lam, beta in cells:
        for algorithm in algorithms:
            chosen = selection.get(cell_name(lam, beta), {}).get(algorithm)
            if chosen is None:
                raise UsageError("--selection", f"has no hyperparameters for {algorithm} at "
                                                f"lambda={lam:g}, beta={beta:g}")
            specs += [Table3Spec(algorithm=algorithm, lam=lam, beta=beta, seed=seed, **chosen,
                                 **fields) for seed in seeds]
    return specs


def plan(request: Request, sweep: Sweep) -> list[Table3Spec]:
    """The specs of one invocation; with ``--grid`` the grid search runs first."""
    fields = dict(request.overrides)
    iterations = fields.get("iterations", Table3Spec.field_default("iterations"))
    fields["eval_last"] = min(Table3Spec.field_default("eval_last"), iterations)
    if not request.option("grid", False):
        selection = request.option("selection") or load_selection()
        return selected_specs(selection, request.seeds, algorithms=request.algorithms,
                              **fields)
    grid_seeds = range(GRID_SEED_OFFSET, GRID_SEED_OFFSET + request.option("grid_seeds", 3))
    specs = grid_specs(grid_seeds, algorithms=request.algorithms, **fields)
    print(f"grid search: {len(specs)} runs ({len(LEARNING_RATES)} learning rates, "
          f"{len(PERTURBATION_CONSTANTS)} zero-order constants, seeds {list(grid_seeds)}, "
          f"{iterations} iterations)")
    start = time.time()
    results = sweep(specs, "grid search")
    if results is None:  # dry run: the shipped selection stands in for the grid's
        return selected_specs(load_selection(), request.seeds, algorithms=request.algorithms,
                              **fields)
    wall = time.time() - start
    selection = select_hyperparameters(results)
    meta = {"seeds": list(grid_seeds), "iterations": iterations, "runs": len(specs),
            "wall_seconds": wall, "run_seconds": float(sum(r["seconds"] for r in results)),
            "run_cpu_seconds": float(sum(r["cpu_seconds"] for r in results)),
            "command": "bilevel-bench table3 --grid"}
    write_json_atomic(request.out / SELECTION_FILE, {"selection": selection, "grid": meta})
    print(f"grid search done in {wall / 60:.1f} min wall; selection written to "
          f"{request.out / SELECTION_FILE}")
    return selected_specs(selection, request.seeds, algorithms=request.algorithms, **fields)


def headline(request: Request, specs: list[Table3Spec]) -> str:
    """The first line printed: how many runs of what, and where the results go."""
    iterations = specs[0].iterations if specs else 0
    return (f"Table 3: {len(specs)} runs ({len(TABLE3_CELLS)} cells × "
            f"{len(request.algorithms)} algorithms × {len(request.seeds)} seeds, {iterations} "
            f"iterations each) in {request.out}")


def summarise(request: Request, results: list[dict], timing: Timing) -> None:
    """``table3.md``/``table3.json``; ``learning_curves.png`` and one penalty map per cell."""
    rows = table3_rows(results)
    markdown = table3_markdown(rows)
    if request.quick:
        markdown += "\n\n" + QUICK_NOTE
    write_summary(request.out, "table3", markdown,
                  timing_summary(results, timing.wall_seconds), rows=rows)
    if request.plots:
        figures = [plot_learning_curves(results, request.out / "learning_curves.png")]
        for lam, beta in TABLE3_CELLS:
            figures.append(plot_penalty_maps(
                results, request.out / f"penalties_lambda{lam:g}_beta{beta:g}.png", lam, beta))
        print("figures: " + ", ".join(str(f) for f in figures))


# ---------------------------------------------------------------------------- options
def selection_argument(text: str) -> Selection:
    """argparse type of ``--selection``: a readable selection file (see
    :func:`~bilevel_bench.experiments.table3.report.check_selection`)."""
    try:
        return load_selection(text)
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {text!r}: {exc.strerror or exc}"
                                         ) from None
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not JSON: {exc}") from None
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a Table 3 selection: {exc}"
                                         ) from None


def options(parser: argparse.ArgumentParser) -> None:
    """The command's own flags (beyond those of its spec fields and the runner)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--grid", action="store_true",
                       help="first search the paper's grid (lr × C) on held-out seeds 100, "
                            "101, ..., select the best per cell and algorithm, save the "
                            f"selection to <out>/{SELECTION_FILE}, then run the table")
    group.add_argument("--selection", type=selection_argument, default=None, metavar="FILE",
                       help="a selection JSON written by --grid (default: the shipped "
                            "bilevel_bench/data/table3_selected.json)")
    parser.add_argument("--grid-seeds", type=argument_type(Integer(1, 100)), default=None,
                        metavar="N", help="held-out seeds per grid point for --grid (default "
                                          "3); an integer in [1, 100]")


def checks(args: argparse.Namespace) -> None:
    """Checks across flags, before anything runs (raises ``UsageError`` naming the flag)."""
    if args.grid_seeds is not None and not args.grid:
        raise UsageError("--grid-seeds", "applies to --grid only")


EXPERIMENT = Experiment(
    name="table3", spec_class=Table3Spec, run=run_spec, plan=plan, summarise=summarise,
    headline=headline,
    help="reproduce the paper's Four-Rooms Table 3 (with Fig. 1b and Fig. 2)",
    description="Runs the 9 (λ, β) cells × HPGD, AMD, zero-order × seeds at the selected "
                "learning rates (shipped in bilevel_bench/data/table3_selected.json, from "
                "--selection, or found with --grid), then writes table3.md/json, learning "
                "curves and penalty maps.",
    algorithms=ALGORITHMS, seeds=10,
    quick=Quick(seeds=3, fields={},
                help="a three-minute version: 3 seeds × the paper's 10,000 iterations"),
    options=options, checks=checks)

