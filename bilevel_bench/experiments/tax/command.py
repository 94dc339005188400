"""``bilevel-bench tax``: HPGD and zero-order on tax design for each follower set-up and seed;
the summary (welfare gains, final taxes), Fig. 3a and Fig. 3b."""

from __future__ import annotations

import argparse

from bilevel_bench.arguments import add_list_argument
from bilevel_bench.experiment import Experiment, Quick, Request, Sweep, Timing, UsageError
from bilevel_bench.experiments.tax.report import (
    plot_taxes,
    plot_welfare,
    summary_markdown,
    summary_rows,
)
from bilevel_bench.experiments.tax.run import run_spec
from bilevel_bench.experiments.tax.spec import (
    ALGORITHMS,
    PAPER_BUDGET,
    PAPER_FOLLOWER,
    QUICK,
    SETUPS,
    TaxSpec,
    tax_spec,
)
from bilevel_bench.storage import write_summary

DEFAULT_SETUPS = ("tabular", "neural_grid")
QUICK_NOTE = ("--quick gives the soft-DQN households 10,000 transitions, then 1,000 per leader "
              "step: a plumbing check of that set-up, not a result (the full command's budget: "
              "docs/tax_design.md).")


def follower_installed(name: str) -> bool:
    """Whether follower ``name`` is registered and the packages of its extra are importable."""
    import bilevel_envs  # noqa: F401  (registers grid_soft_vi)
    from bilevel_envs.followers import follower_available

    return follower_available(name)


def build_specs(setups: list[str], algorithms: list[str], seeds: range,
                iterations: int | None = None, quick: bool = False,
                paper_budget: bool = False) -> list[TaxSpec]:
    """The specs of one ``bilevel-bench tax`` invocation: per set-up its settings, the
    ``--quick`` or ``--paper-budget`` changes, then ``iterations`` if given."""
    specs = []
    for setup in setups:
        fields = dict(QUICK[setup]) if quick else {}
        if paper_budget:
            fields.update(PAPER_BUDGET)
            if SETUPS[setup]["follower"] == "soft_dqn":
                fields["follower_kwargs"] = paper_follower(SETUPS[setup]["follower_kwargs"])
        if iterations is not None:
            fields["iterations"] = iterations
        specs += [tax_spec(setup, algorithm, seed, **fields)
                  for algorithm in algorithms for seed in seeds]
    return specs


def paper_follower(follower_kwargs: dict) -> dict:
    """The authors' soft-DQN budget (:data:`PAPER_FOLLOWER`) with the set-up's Q-network (its
    ``policy`` and ``policy_kwargs``)."""
    kwargs = {**PAPER_FOLLOWER, "algo_kwargs": dict(PAPER_FOLLOWER["algo_kwargs"])}
    if "policy" in follower_kwargs:
        kwargs["policy"] = follower_kwargs["policy"]
    policy_kwargs = follower_kwargs.get("algo_kwargs", {}).get("policy_kwargs")
    if policy_kwargs is not None:
        kwargs["algo_kwargs"]["policy_kwargs"] = policy_kwargs
    return kwargs


def setups_to_run(request: Request) -> list[str]:
    """The set-ups asked for; the default ones whose follower is missing are skipped (with a
    note), an explicitly asked one is a usage error."""
    asked = request.args.setups
    setups = list(asked or DEFAULT_SETUPS)
    missing = [s for s in setups if not follower_installed(SETUPS[s]["follower"])]
    if asked and missing:
        raise UsageError("--setups", f"set-up(s) {missing} need a follower that is not "
                                     f"installed ({[SETUPS[s]['follower'] for s in missing]}); "
                                     f"soft_dqn needs the sb3 extra")
    for setup in missing:
        print(f"skipping set-up {setup!r}: follower {SETUPS[setup]['follower']!r} is not "
              f"installed (the sb3 extra)")
    return [s for s in setups if s not in missing]


def plan(request: Request, sweep: Sweep) -> list[TaxSpec]:
    """The specs of one invocation: the chosen set-ups × algorithms × seeds."""
    return build_specs(setups_to_run(request), list(request.algorithms), request.seeds,
                       request.overrides.get("iterations"), request.quick,
                       request.option("paper_budget", False))


def headline(request: Request, specs: list[TaxSpec]) -> str:
    """The first line printed: how many runs of what, and where the results go."""
    setups = dict.fromkeys(spec.setup for spec in specs)
    return (f"tax design: {len(specs)} runs ({', '.join(setups)} × "
            f"{', '.join(request.algorithms)} × {len(request.seeds)} seeds) in {request.out}")


def summarise(request: Request, results: list[dict], timing: Timing) -> None:
    """``tax.md``/``tax.json``, ``tax_welfare.png`` (Fig. 3a) and ``tax_rates.png`` (Fig. 3b)."""
    rows = summary_rows(results)
    markdown = summary_markdown(rows)
    if request.quick and any(SETUPS[r["spec"]["setup"]]["follower"] == "soft_dqn"
                             for r in results):
        markdown += "\n\n" + QUICK_NOTE
    wall, cpu = timing.wall_seconds, timing.cpu_seconds
    text = (f"This invocation: {wall / 60:.1f} min wall, {cpu / 60:.1f} min CPU in this "
            f"process (runs already on disk are not rerun; with --workers > 1 the runs' CPU "
            f"is in the workers). Sum over runs (training + exact evaluation): "
            f"{sum(r['total_seconds'] for r in rows) / 60:.1f} min wall, "
            f"{sum(r['total_cpu_seconds'] for r in rows) / 60:.1f} min CPU.")
    write_summary(request.out, "tax", markdown, text, rows=rows, wall_seconds=wall,
                  cpu_seconds=cpu)
    if request.plots:
        figures = [plot_welfare(results, request.out / "tax_welfare.png"),
                   plot_taxes(results, request.out / "tax_rates.png")]
        print("figures: " + ", ".join(str(f) for f in figures))


def options(parser: argparse.ArgumentParser) -> None:
    """The command's own flags (beyond those of its spec fields and the runner)."""
    add_list_argument(parser, "--setups", list(SETUPS), "follower set-ups",
                      default=f"{' '.join(DEFAULT_SETUPS)}; one whose follower is not "
                              f"installed is skipped")
    parser.add_argument("--paper-budget", action="store_true",
                        help="the authors' scale: 1,000 iterations, 3 M soft-DQN transitions "
                             "per leader step (days per run on a CPU); not with --quick")


def checks(args: argparse.Namespace) -> None:
    """Checks across flags, before anything runs (raises ``UsageError`` naming the flag)."""
    if args.paper_budget and args.quick:
        raise UsageError("--paper-budget", "cannot be combined with --quick")


EXPERIMENT = Experiment(
    name="tax", spec_class=TaxSpec, run=run_spec, plan=plan, summarise=summarise,
    headline=headline,
    help="the paper's tax-design results (Fig. 3a/3b): HPGD and zero-order with soft-DQN and "
         "tabular households",
    description="Runs HPGD and zero-order on tax design for each follower set-up and seed, "
                "then writes tax.md/json, the welfare curves (Fig. 3a) and the tax rates "
                "(Fig. 3b) as PNG.",
    algorithms=ALGORITHMS, seeds=3,
    quick=Quick(seeds=2, help="a few-minute version: 2 seeds, 40 tabular iterations, a small "
                              "soft-DQN budget"),
    options=options, checks=checks)
