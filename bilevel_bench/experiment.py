"""What an experiment declares, and how one ``bilevel-bench`` invocation of it runs.

An :class:`Experiment` says what it is: its name and help, its spec class (whose flagged
fields become command-line flags), its algorithms and default seeds, what ``--quick`` means,
how a :class:`Request` (the invocation's validated arguments) becomes specs (``plan``), how one
spec runs (``run``, a module-level function) and how the results are summarised
(``summarise``). :func:`execute` does the rest, the same for every experiment: everything is
validated before anything runs (a bad value is a :class:`UsageError` naming the flag), the
specs run through :func:`bilevel_bench.runner.run_specs`, and the summary is written.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bilevel_bench.checks import SpecError
from bilevel_bench.runner import run_specs
from bilevel_bench.specs import Spec
from bilevel_bench.storage import load_result, output_problem, result_path


class UsageError(ValueError):
    """A command-line value that is not allowed; ``flag`` names the argument."""

    def __init__(self, flag: str, message: str):
        super().__init__(f"argument {flag}: {message}")
        self.flag = flag


@dataclass(frozen=True)
class Quick:
    """What ``--quick`` changes: the seed count and spec-field presets (flags given
    explicitly win); results go to ``results/<name>-quick``."""

    seeds: int
    fields: Mapping[str, Any] = field(default_factory=dict)
    help: str = ""


@dataclass(frozen=True)
class Request:
    """One invocation's arguments, resolved and validated.

    Attributes:
        args: the parsed arguments (the experiment's own options are read from here).
        seeds: the seeds to run (``range(--seeds)``).
        algorithms: the algorithms asked for (``--algorithms``), in the experiment's order.
        overrides: spec fields set by flags, then by the ``--quick`` presets.
        quick: ``--quick`` was given.
        out: the results folder.
        plots: write the figures (no ``--no-plots``).
    """

    args: argparse.Namespace
    seeds: range
    algorithms: tuple[str, ...]
    overrides: dict[str, Any]
    quick: bool
    out: Path
    plots: bool

    def option(self, name: str, default: Any = None) -> Any:
        """The experiment-specific option ``name`` (``default`` if unset)."""
        value = getattr(self.args, name, None)
        return default if value is None else value


@dataclass(frozen=True)
class Timing:
    """Wall and CPU seconds (this process) of an invocation's sweep."""

    wall_seconds: float
    cpu_seconds: float


class Sweep:
    """Runs specs into the invocation's folder; in a dry run it only reports what would run."""

    def __init__(self, out: Path, run: Callable[[Any], dict], args: argparse.Namespace):
        self.out, self.run, self.args = out, run, args

    def __call__(self, specs: Sequence[Spec], stage: str = "runs") -> list[dict] | None:
        """The results of ``specs`` (``None`` in a dry run, after printing the count)."""
        if self.args.dry_run:
            on_disk = sum(load_result(result_path(self.out, s.key)) is not None for s in specs)
            print(f"dry run, {stage}: {len(specs)} runs, {on_disk} of them already in "
                  f"{self.out / 'runs'}")
            return None
        return run_specs(specs, self.out, self.run, backend=self.args.backend,
                         workers=self.args.workers, address=self.args.address)


@dataclass(frozen=True)
class Experiment:
    """The declaration of one ``bilevel-bench`` subcommand (see the module docstring).

    Attributes:
        name: the subcommand; specs carry it as ``"experiment"``.
        spec_class: the experiment's :class:`~bilevel_bench.specs.Spec`; its fields with
            ``flag=True`` become flags.
        run: ``run(spec) -> dict``, a module-level function (workers import it).
        plan: ``plan(request, sweep) -> specs``; may run preliminary sweeps (a grid search).
        summarise: ``summarise(request, results, timing)`` writes tables and figures.
        headline: ``headline(request, specs) -> str``, printed before the runs start.
        help, description: the subcommand's one-line help and its ``--help`` text.
        algorithms: the algorithms ``--algorithms`` chooses from (all by default); empty: no
            ``--algorithms`` flag (the experiment's options choose its leaders).
        seeds: default seed count.
        quick: what ``--quick`` means.
        options: adds the experiment's own arguments to its parser.
        checks: validates those options (raises :class:`UsageError`) before anything runs.
    """

    name: str
    spec_class: type[Spec]
    run: Callable[[Any], dict]
    plan: Callable[[Request, Sweep], list[Spec]]
    summarise: Callable[[Request, list[dict], Timing], None]
    headline: Callable[[Request, list[Spec]], str]
    help: str
    description: str
    algorithms: tuple[str, ...]
    seeds: int
    quick: Quick
    options: Callable[[argparse.ArgumentParser], None] | None = None
    checks: Callable[[argparse.Namespace], None] | None = None

    def default_out(self, quick: bool) -> Path:
        """``results/<name>`` (``results/<name>-quick`` with ``--quick``)."""
        return Path("results") / (f"{self.name}-quick" if quick else self.name)

    def flag_of(self, field_name: str) -> str:
        """The command-line flag that sets a spec field (``--field-name``)."""
        return "--algorithms" if field_name == "algorithm" else \
            "--" + field_name.replace("_", "-")


def resolve(experiment: Experiment, args: argparse.Namespace) -> Request:
    """The :class:`Request` of parsed ``args``.

    Raises:
        UsageError: for a combination of arguments that is not allowed, or an unusable
            ``--out``.
    """
    if args.address is not None and args.backend != "ray":
        raise UsageError("--address", "needs --backend ray")
    if args.workers is not None and args.backend == "ray":
        raise UsageError("--workers", "sets local processes; with --backend ray the cluster's "
                                      "CPUs decide")
    if args.backend == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise UsageError("--backend", "ray needs Ray: pip install 'bilevel-envs[ray]'")
    out = Path(args.out) if args.out is not None else experiment.default_out(args.quick)
    problem = output_problem(out)
    if problem is not None:
        raise UsageError("--out", problem)
    if experiment.checks is not None:
        experiment.checks(args)
    overrides = {f.name: getattr(args, f.name) for f in experiment.spec_class.flag_fields()
                 if getattr(args, f.name) is not None}
    if args.quick:
        overrides = {**experiment.quick.fields, **overrides}
    seeds = args.seeds if args.seeds is not None else \
        experiment.quick.seeds if args.quick else experiment.seeds
    chosen = getattr(args, "algorithms", None) or experiment.algorithms
    algorithms = tuple(a for a in experiment.algorithms if a in chosen)
    return Request(args=args, seeds=range(seeds), algorithms=algorithms, overrides=overrides,
                   quick=args.quick, out=out, plots=not args.no_plots)


def execute(experiment: Experiment, args: argparse.Namespace) -> int:
    """Run one invocation: validate, plan, run the specs, summarise. Returns the exit code.

    Raises:
        UsageError: for any argument that is not allowed, before anything runs.
    """
    request = resolve(experiment, args)
    sweep = Sweep(request.out, experiment.run, args)
    try:
        specs = experiment.plan(request, sweep)
    except SpecError as exc:
        names = {f.name for f in experiment.spec_class.flag_fields()} | {"algorithm"}
        if exc.field in names:
            raise UsageError(experiment.flag_of(exc.field), exc.reason) from None
        raise UsageError(f"(spec field {exc.field})", exc.reason) from None
    print(experiment.headline(request, specs))
    if args.dry_run:
        sweep(specs, "to run")
        print("dry run: nothing was run or written")
        return 0
    start, cpu = time.perf_counter(), time.process_time()
    results = sweep(specs)
    timing = Timing(time.perf_counter() - start, time.process_time() - cpu)
    experiment.summarise(request, results, timing)
    return 0
