"""``bilevel-bench suite``: score any leader on the versioned suite ``cbrl-suite``.

    bilevel-bench suite --leader hpgd amd --quick
    bilevel-bench suite --leader mypkg.leaders:MyLeader --leader-kwargs '{"learning_rate": 0.1}'
    bilevel-bench suite --leader hpgd --tune grid.json --tasks contract/tree
    bilevel-bench suite --compute-references

Every argument is checked before anything runs (unknown leader, a class that is not a Leader,
kwargs it does not accept, unknown task, a budget scale ≤ 0: one line, exit status 2). One
record per run in ``<out>/runs/`` (:mod:`bilevel_bench.suite.evaluate`); runs already there are
not rerun. The summary: ``suite.md``/``suite.json`` per leader and task, and the aggregate
leaderboard with its figures (:mod:`bilevel_bench.suite.leaderboard`,
:mod:`bilevel_bench.suite.plots`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bilevel_bench.arguments import add_list_argument, argument_type
from bilevel_bench.checks import Integer, JSONObject, Text
from bilevel_bench.experiment import Experiment, Quick, Request, Sweep, Timing, UsageError
from bilevel_bench.experiments.suite import tune
from bilevel_bench.experiments.suite.report import summary_markdown, summary_rows, write_aggregate
from bilevel_bench.storage import write_json_atomic, write_summary
from bilevel_bench.suite.evaluate import (
    SuiteRunSpec,
    check_leader_kwargs,
    hyperparameters_for,
    is_per_task,
    leader_track,
    make_specs,
    run_spec,
)
from bilevel_bench.suite.tasks import QUICK_TASK_IDS, SUITE_NAME, SUITE_VERSION, TASK_IDS
from leaders.registry import BUILTIN_LEADERS

QUICK_NOTE = ("--quick: a quarter of each budget on one task per application and 2 seeds checks "
              "that the pipeline works; such small budgets do not reproduce the shipped "
              "leaderboard (docs/leaderboard/) nor the paper's numbers.")


# ---------------------------------------------------------------------------- arguments
def options(parser: argparse.ArgumentParser) -> None:
    """The command's own flags (beyond those of its spec fields and the runner)."""
    parser.add_argument("--leader", nargs="+", action="extend", default=None,
                        metavar="NAME|module:Class",
                        help="leaders to score: registered names (see leaders.registry) or "
                             "importable 'package.module:Class'; space-separated or repeated "
                             "(default: the built-in leaders)")
    parser.add_argument("--leader-kwargs", type=argument_type(JSONObject()), default=None,
                        metavar="JSON", help="keyword arguments of every leader (win over "
                                             "--hyperparameters), e.g. '{\"learning_rate\": 0.1}'")
    parser.add_argument("--hyperparameters", type=argument_type(Text()), default=None,
                        metavar="FILE.json",
                        help="leader kwargs from a JSON file: flat, per task ({task id or '*': "
                             "kwargs}) or per leader ({leader: flat or per task})")
    add_list_argument(parser, "--tasks", TASK_IDS, f"tasks of {SUITE_NAME} v{SUITE_VERSION}",
                      default="all; one per application with --quick")
    parser.add_argument("--tune", type=argument_type(Text()), default=None, metavar="GRID.json",
                        help="first search this grid ({param: [values]} or per leader) on "
                             f"held-out seeds {tune.TUNE_SEED_OFFSET}, ..., each run at the "
                             "task's budget; the best mean score per leader and task is used")
    parser.add_argument("--tune-seeds", type=argument_type(Integer(1, 100)), default=None,
                        metavar="N", help="held-out seeds per grid point (default 3)")
    parser.add_argument("--rescore", action="store_true",
                        help="first renormalise the records already in --out with the shipped "
                             "references (after J* improved); nothing is rerun")
    parser.add_argument("--compute-references", action="store_true",
                        help="recompute J* of the chosen tasks (multi-start exact ascent) into "
                             "<out>/references.json instead of scoring leaders")


def _read_json(flag: str, path: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except OSError as exc:
        raise UsageError(flag, f"cannot read {path!r}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise UsageError(flag, f"{path!r} is not JSON: {exc}") from None


def leader_configs(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Leader -> its hyperparameter config (flat or per task), ``--leader-kwargs`` merged in.

    Raises:
        UsageError: for a hyperparameter file that is not an object or names unknown tasks.
    """
    leaders = list(dict.fromkeys(args.leader or []))
    data: Any = {}
    if args.hyperparameters is not None:
        data = _read_json("--hyperparameters", args.hyperparameters)
        if not isinstance(data, dict):
            raise UsageError("--hyperparameters", f"{args.hyperparameters!r} must hold a JSON "
                                                  f"object")
    per_leader = any(k in leaders for k in data)  # else: one config for every leader
    configs = {}
    for name in leaders:
        config = data.get(name, {}) if per_leader else data
        if not isinstance(config, dict):
            raise UsageError("--hyperparameters", f"the entry of {name} must be an object")
        if args.leader_kwargs:
            config = {**config, "*": {**config.get("*", {}), **args.leader_kwargs}} \
                if is_per_task(config) else {**config, **args.leader_kwargs}
        try:
            for task_id in TASK_IDS:
                hyperparameters_for(config, task_id)
        except ValueError as exc:
            raise UsageError("--hyperparameters", str(exc)) from None
        configs[name] = config
    return configs


def checks(args: argparse.Namespace) -> None:
    """Every leader, kwargs and file checked before anything runs."""
    if args.compute_references:
        if args.leader or args.tune:
            raise UsageError("--compute-references", "scores no leader; drop --leader/--tune")
        return
    if not args.leader:  # the reference leaderboard's leaders
        args.leader = list(BUILTIN_LEADERS)
    if args.tune_seeds is not None and args.tune is None:
        raise UsageError("--tune-seeds", "applies to --tune only")
    configs = leader_configs(args)
    for name, config in configs.items():
        try:
            leader_track(name)
            for task_id in TASK_IDS:
                check_leader_kwargs(name, hyperparameters_for(config, task_id))
        except (ValueError, TypeError, ImportError) as exc:
            raise UsageError("--leader", f"{name}: {exc}") from None
    if args.tune is not None:
        try:
            grid = tune.load_grid(args.tune, list(configs))
        except OSError as exc:
            raise UsageError("--tune", f"cannot read {args.tune!r}: {exc.strerror or exc}"
                             ) from None
        except ValueError as exc:
            raise UsageError("--tune", f"{args.tune!r}: {exc}") from None
        for name, points in grid.items():
            for point in points:
                try:
                    check_leader_kwargs(name, {**hyperparameters_for(configs[name], TASK_IDS[0]),
                                               **point})
                except (ValueError, TypeError) as exc:
                    raise UsageError("--tune", f"{name}: {exc}") from None


# ---------------------------------------------------------------------------- planning
def chosen_tasks(request: Request) -> list[str]:
    """The task ids chosen by ``--tasks`` (default: the suite, or its quick subset)."""
    return request.option("tasks", list(QUICK_TASK_IDS) if request.quick else list(TASK_IDS))


def _specs(request: Request, configs: dict[str, Any], seeds) -> list[SuiteRunSpec]:
    scale = request.overrides.get("budget_scale", 1.0)
    try:
        return [s for name, config in configs.items()
                for s in make_specs(name, chosen_tasks(request), seeds, scale, config)]
    except (ValueError, TypeError) as exc:
        raise UsageError("--leader", str(exc)) from None


def plan(request: Request, sweep: Sweep) -> list[SuiteRunSpec]:
    """The specs of one invocation; with ``--tune`` the grid runs first."""
    args = request.args
    if args.compute_references:
        if not args.dry_run:
            from bilevel_bench.suite.references import compute_references

            path = request.out / "references.json"
            compute_references(chosen_tasks(request), out=path)
            print(f"references written to {path}; copy it to bilevel_bench/data/ to ship it")
        return []
    configs = leader_configs(args)
    if args.rescore and not args.dry_run:
        _rescore_folder(request.out)
    if args.tune is None:
        return _specs(request, configs, request.seeds)
    grid = tune.load_grid(args.tune, list(configs))
    seeds = range(tune.TUNE_SEED_OFFSET, tune.TUNE_SEED_OFFSET + (args.tune_seeds or 3))
    grid_specs = []
    for name, points in grid.items():
        for point in points:
            per_task = {t: {**hyperparameters_for(configs[name], t), **point}
                        for t in chosen_tasks(request)}
            grid_specs += _specs(request, {name: per_task}, seeds)
    for name in configs:  # leaders without a grid keep their configuration
        if name not in grid:
            grid_specs += _specs(request, {name: configs[name]}, seeds)
    from bilevel_bench.suite.tasks import get_task

    cost = sum(get_task(s.task).budget * s.budget_scale for s in grid_specs)
    print(f"tuning: {len(grid_specs)} runs (grid points × {len(chosen_tasks(request))} tasks × "
          f"seeds {list(seeds)}), each at its task's budget: {cost:,.0f} sample-cost units "
          f"(model-track leaders: their model budget per run)")
    results = sweep(grid_specs, "tuning")
    if results is None:  # dry run
        return _specs(request, configs, request.seeds)
    selection = tune.select(results)
    write_json_atomic(request.out / tune.SELECTION_FILE,
                      {"selection": selection, "grid": args.tune, "seeds": list(seeds),
                       "runs": len(grid_specs)})
    print(f"tuned hyperparameters written to {request.out / tune.SELECTION_FILE}")
    tuned = {name: {**selection.get(name, {})} for name in configs}
    missing = [(n, t) for n in configs for t in chosen_tasks(request) if t not in tuned[n]]
    if missing:
        raise UsageError("--tune", f"every grid point failed for {missing[:3]}: nothing to "
                                   f"select")
    return _specs(request, tuned, request.seeds)


def _rescore_folder(out: Path) -> None:
    """Renormalise every run record in ``out/runs`` with the shipped references."""
    from bilevel_bench.storage import load_result
    from bilevel_bench.suite.evaluate import RECORD_FORMAT, rescore
    from bilevel_bench.suite.references import load_references

    references = load_references()
    paths = sorted((out / "runs").glob("*.json"))
    for path in paths:
        record = load_result(path)
        if record is not None and record.get("format") == RECORD_FORMAT:
            write_json_atomic(path, rescore(record, references))
    print(f"rescored {len(paths)} records in {out / 'runs'} with the shipped references")


def headline(request: Request, specs: list[SuiteRunSpec]) -> str:
    """The first line printed: how many runs of what, and where the results go."""
    if request.args.compute_references:
        return f"{SUITE_NAME} v{SUITE_VERSION}: references of {len(chosen_tasks(request))} tasks"
    leaders = list(dict.fromkeys(s.leader for s in specs))
    text = (f"{SUITE_NAME} v{SUITE_VERSION}: {len(specs)} runs ({len(leaders)} leaders × "
            f"{len(chosen_tasks(request))} tasks × {len(request.seeds)} seeds, budget × "
            f"{specs[0].budget_scale if specs else 1:g}) in {request.out}")
    skipped = len(leaders) * len(chosen_tasks(request)) * len(request.seeds) - len(specs)
    if skipped > 0:  # AMD/RT-Q on trajectory-level tasks (see Task.decomposable)
        text += (f"\n{skipped} runs not planned: leaders that need a decomposable J do not apply "
                 "to the trajectory-level (RLHF) tasks")
    return text + ("\n" + QUICK_NOTE if request.quick else "")


def summarise(request: Request, results: list[dict], timing: Timing) -> None:
    """``suite.md``/``suite.json`` (per leader and task) and the aggregate leaderboard."""
    if not results:
        return
    rows = summary_rows(results)
    markdown = summary_markdown(rows)
    if request.quick:
        markdown += "\n\n" + QUICK_NOTE
    write_summary(request.out, "suite", markdown,
                  f"Wall time of this invocation: {timing.wall_seconds:.0f} s (runs already on "
                  f"disk are not rerun).", rows=rows, wall_seconds=timing.wall_seconds)
    write_aggregate(request, results)


EXPERIMENT = Experiment(
    name="suite", spec_class=SuiteRunSpec, run=run_spec, plan=plan, summarise=summarise,
    headline=headline,
    help=f"score any leader on the versioned benchmark {SUITE_NAME} v{SUITE_VERSION}",
    description="Runs leaders (registered names or package.module:Class) on the suite's tasks "
                "at fixed budgets, scores each run against the reference optimum J*, and "
                "writes one record per run, suite.md/json and the aggregate leaderboard.",
    algorithms=(), seeds=10,
    quick=Quick(seeds=2, fields={"budget_scale": 0.25},
                help="one task per application, 2 seeds, a quarter of each budget"),
    options=options, checks=checks)
