"""The paper's tax-design experiment (§5.2, Fig. 3a/3b): HPGD and zero-order set an income tax
and three VATs for households of two preference groups.

Two follower set-ups (``SETUPS``, chosen by name; each names its follower, so any registered
follower can be swapped in):

* ``"neural"`` — continuous assets, the paper's soft-DQN households (``"soft_dqn"``),
  warm-started across leader steps with a reduced budget, ``n_envs`` vectorised copies of the
  household env; HPGD uses the leave-one-out every-visit batch estimator (``every_visit_loo``)
  on asset cells (:meth:`~bilevel_envs.envs.tax_design.TaxDesign.observation_index`).
* ``"tabular"`` — the asset-gridded variant with exact soft-optimal households (``"soft_vi"``):
  the same algorithms, in minutes, with the exact welfare ``J(x)`` at every evaluated iterate.
* ``"grid"`` — continuous assets with the exact policy of the gridded economy
  (``"grid_soft_vi"``): a cheap continuous-asset check of the estimator.

Per run we record the leader's Monte-Carlo welfare estimate ``J(x_t)`` (the authors' ``V_UL``,
sampled context), the taxes ``x_t``, and the exact welfare of ``x_t`` for soft-optimal
households on the 41-cell asset grid (``J_grid``, follower-independent: it scores the taxes,
not the follower's training). The summary reports the welfare gain over the initial taxes
(``J_grid(x_T)/J_grid(x_0) − 1`` and the authors' ratio mean(last 10)/mean(first 10) of the MC
estimates), the final tax rates, wall and CPU time. ``PAPER_BUDGET`` is the authors' full
budget (3 M follower transitions per leader step, 1,000 iterations) as a configuration.

Deviations from the authors' code (docs/reference.md §5 and §7.15–21) and why:
``docs/tax_design.md``.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from bilevel_bench.runner import (
    ALGORITHM_COLOURS,
    ALGORITHM_LABELS,
    FieldCheck,
    add_runner_arguments,
    check_fields,
    pyplot,
    save_figure,
    spec_key,
    trailing_mean,
)
from bilevel_envs.plain_data import to_plain_data

NAME = "tax"
ENV_ID = "bilevel/TaxDesign-v0"
ALGORITHMS = ("hpgd", "zero_order")
LABELS, COLOURS = ALGORITHM_LABELS, ALGORITHM_COLOURS
TAX_NAMES = ("income tax", "VAT good 1", "VAT good 2", "VAT good 3")  # goods indexed from 1

#: The soft-DQN households of the default neural set-up: warm-started, 16 vectorised envs.
#: Chosen on this machine (docs/tax_design.md): 50,000 cold transitions per preference group,
#: then 3,000 per leader step; batch 512 every 16 transitions, Adam 5e-4, MSE loss as the authors.
NEURAL_FOLLOWER: dict[str, Any] = {
    "warmup_timesteps": 50_000, "total_timesteps": 3_000, "n_envs": 16,
    "algo_kwargs": {"learning_rate": 5e-4, "buffer_size": 20_000, "batch_size": 512,
                    "learning_starts": 1_000, "train_freq": 1, "gradient_steps": 1,
                    "target_update_interval": 500, "exploration_initial_eps": 0.1,
                    "exploration_final_eps": 0.0, "exploration_fraction": 0.05, "loss": "mse"},
}
#: The authors' follower budget (docs/reference.md §5.2): 3 M transitions per solve (10 envs),
#: replay 10,000, batch 1,000 every 10 transitions, target copy every 5,000, Adam 5e-5 clipped
#: at 1.0, ε 1 → 0.1 over the first third. (Warm-started here; they restarted from scratch.)
PAPER_FOLLOWER: dict[str, Any] = {
    "warmup_timesteps": 3_000_000, "total_timesteps": 3_000_000, "n_envs": 10,
    "algo_kwargs": {"learning_rate": 5e-5, "buffer_size": 10_000, "batch_size": 1_000,
                    "learning_starts": 10_000, "train_freq": 1, "gradient_steps": 1,
                    "target_update_interval": 5_000, "max_grad_norm": 1.0,
                    "exploration_initial_eps": 1.0, "exploration_final_eps": 0.1,
                    "exploration_fraction": 1 / 3, "loss": "mse"},
}

#: Follower set-ups: the env arguments that differ between them, and the iterations per
#: algorithm (zero-order asks the followers twice per iteration: with the neural followers it
#: gets half the iterations, the same follower budget).
SETUPS: dict[str, dict[str, Any]] = {
    "neural": {"tabular": False, "follower": "soft_dqn", "follower_kwargs": NEURAL_FOLLOWER,
               "n_envs": 100, "iterations": {"hpgd": 40, "zero_order": 20}},
    "tabular": {"tabular": True, "follower": "soft_vi", "follower_kwargs": {},
                "n_envs": 300, "iterations": {"hpgd": 100, "zero_order": 100}},
    "grid": {"tabular": False, "follower": "grid_soft_vi", "follower_kwargs": {},
             "n_envs": 300, "iterations": {"hpgd": 100, "zero_order": 100}},
}
#: ``--quick``: fewer iterations, and a small soft-DQN budget (a plumbing check for that set-up).
QUICK: dict[str, dict[str, Any]] = {
    "neural": {"iterations": {"hpgd": 8, "zero_order": 4},
               "follower_kwargs": {**NEURAL_FOLLOWER, "warmup_timesteps": 10_000,
                                   "total_timesteps": 1_000}},
    "tabular": {"iterations": {"hpgd": 40, "zero_order": 40}},
    "grid": {"iterations": {"hpgd": 40, "zero_order": 40}},
}
#: Everything else of a run. Learning rates and C are in natural units (tax rates), see
#: docs/tax_design.md for how they relate to the authors' logit parametrisation.
TAX_DEFAULTS: dict[str, Any] = {
    "experiment": NAME, "variant": "code", "lam": None, "n_rollout_steps": 200,
    "learning_rate": 0.02, "perturbation_constant": 0.5, "max_grad_norm": 1.0,
    "clip": "per_group", "estimator": "every_visit_loo", "observation_cells": 41,
    "contexts": "sample", "eval_every": 5, "grid_cells": 41, "spec_version": 1,
}
#: The authors' scale: 1,000 leader iterations, 300 × 200 transitions per estimate and (for the
#: soft-DQN set-up) their follower budget — weeks per seed on this machine. The learning rate
#: 0.0025 is their first step (SGD 0.01 on the logit w, rate 2·sigmoid(w) at 0.3) in rates.
PAPER_BUDGET: dict[str, Any] = {"iterations": 1_000, "n_envs": 300, "learning_rate": 0.0025}


# ---------------------------------------------------------------------------- specs
def tax_spec(setup: str, algorithm: str, seed: int, **overrides: Any) -> dict[str, Any]:
    """The plain-data spec of one run: the set-up's defaults, then ``overrides``
    (``iterations`` may be a number or a dict per algorithm)."""
    if setup not in SETUPS:
        raise ValueError(f"setup must be one of {sorted(SETUPS)}; got {setup!r}")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}; got {algorithm!r}")
    spec = {**TAX_DEFAULTS, **SETUPS[setup], "setup": setup, "algorithm": algorithm,
            "seed": int(seed)}
    unknown = set(overrides) - set(spec)
    if unknown:
        raise ValueError(f"unknown spec fields {sorted(unknown)}; allowed: {sorted(spec)}")
    spec.update(overrides)
    if isinstance(spec["iterations"], dict):
        spec["iterations"] = spec["iterations"][algorithm]
    if algorithm == "zero_order":
        del spec["estimator"], spec["observation_cells"]
    else:
        del spec["perturbation_constant"]
    if spec["tabular"]:
        spec.pop("observation_cells", None)
    validate_spec(spec)
    return spec


#: type and range of the spec fields every run has (checked by :func:`validate_spec`)
_FIELDS: dict[str, FieldCheck] = {
    "experiment": (str, lambda v: v == NAME), "setup": (str, lambda v: v in SETUPS),
    "algorithm": (str, lambda v: v in ALGORITHMS), "seed": (int, lambda v: v >= 0),
    "variant": (str, lambda v: v in ("code", "paper")),
    "lam": ((int, float, type(None)), lambda v: v is None or v > 0),
    "tabular": (bool, lambda v: True), "follower": (str, lambda v: bool(v)),
    "follower_kwargs": (dict, lambda v: True), "n_envs": (int, lambda v: v >= 1),
    "n_rollout_steps": (int, lambda v: v >= 1), "iterations": (int, lambda v: v >= 1),
    "learning_rate": ((int, float), lambda v: v > 0),
    "max_grad_norm": ((int, float), lambda v: v > 0),
    "clip": (str, lambda v: v in ("per_group", "global")),
    "contexts": (str, lambda v: v in ("sample", "all")), "eval_every": (int, lambda v: v >= 1),
    "grid_cells": (int, lambda v: v >= 2), "spec_version": (int, lambda v: v == 1),
}
_ALGORITHM_FIELDS: dict[str, dict[str, FieldCheck]] = {
    "hpgd": {"estimator": (str, lambda v: v in ("paper", "every_visit", "every_visit_loo"))},
    "zero_order": {"perturbation_constant": ((int, float), lambda v: v > 0)},
}


def validate_spec(spec: Any) -> None:
    """Raise ``ValueError`` naming the field if ``spec`` is not a well-formed tax spec."""
    checks = dict(_FIELDS)
    if isinstance(spec, dict):
        checks.update(_ALGORITHM_FIELDS.get(spec.get("algorithm"), {}))
        if spec.get("algorithm") == "hpgd" and not spec.get("tabular"):
            checks["observation_cells"] = (int, lambda v: v >= 2)
    check_fields(spec, checks, NAME)


def make_leader(spec: dict[str, Any]):
    """Build the env and the leader a spec describes."""
    import gymnasium as gym

    import bilevel_envs  # noqa: F401  (registers the ids and the tax followers)
    from bilevel_envs.followers import FOLLOWERS
    from leaders import HPGD, ZeroOrder

    if spec["follower"] not in FOLLOWERS:
        raise KeyError(f"follower {spec['follower']!r} is not installed (known: "
                       f"{sorted(FOLLOWERS)}); soft_dqn needs the followers package and the sb3 "
                       f"extra")
    env_kwargs: dict[str, Any] = {
        "variant": spec["variant"], "lam": spec["lam"], "tabular": spec["tabular"],
        "follower": spec["follower"], "follower_kwargs": spec["follower_kwargs"],
        "contexts": spec["contexts"], "n_envs": spec["n_envs"],
        "n_rollout_steps": spec["n_rollout_steps"], "horizon": 10**9}
    if "observation_cells" in spec:
        env_kwargs["observation_cells"] = spec["observation_cells"]
    env = gym.make(ENV_ID, **env_kwargs)
    problem = env.unwrapped.problem
    common = {"learning_rate": spec["learning_rate"], "max_grad_norm": spec["max_grad_norm"],
              "clip_groups": problem.tax_groups if spec["clip"] == "per_group" else None,
              "seed": spec["seed"]}
    if spec["algorithm"] == "hpgd":
        return HPGD(env, estimator=spec["estimator"], **common)
    return ZeroOrder(env, perturbation_constant=spec["perturbation_constant"], **common)


# ---------------------------------------------------------------------------- one run
def run_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one spec; return the curves (MC welfare, taxes, exact grid welfare) and metrics."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    _one_torch_thread()
    leader = make_leader(spec)
    taxes = [leader.x.copy()]
    start, cpu = time.perf_counter(), time.process_time()
    leader.learn(spec["iterations"], callback=lambda lead, record: taxes.append(lead.x.copy()))
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    history = leader.history
    taxes_arr = np.array(taxes)  # x_0 .. x_T (x_t is the iterate of iteration t)

    eval_start, eval_cpu = time.perf_counter(), time.process_time()
    evaluated = sorted(set(range(0, len(taxes_arr), spec["eval_every"])) | {len(taxes_arr) - 1})
    grid_welfare = exact_grid_welfare(leader.problem, taxes_arr[evaluated], spec["grid_cells"])
    eval_seconds = time.perf_counter() - eval_start
    eval_cpu_seconds = time.process_time() - eval_cpu

    mc = history["objective_estimate"]
    return {
        "key": spec_key(spec), "spec": spec, "seconds": seconds, "cpu_seconds": cpu_seconds,
        "eval_seconds": eval_seconds, "eval_cpu_seconds": eval_cpu_seconds,
        "hyperparameters": to_plain_data(leader.hyperparameters()),
        "metrics": {
            "welfare_gain_exact": float(grid_welfare[-1] / grid_welfare[0] - 1),
            "welfare_gain_mc": mc_welfare_gain(mc),
            "welfare_initial_exact": float(grid_welfare[0]),
            "welfare_final_exact": float(grid_welfare[-1]),
        },
        "curve": {"iteration": history["iteration"].tolist(), "welfare_mc": mc.tolist(),
                  "taxes": taxes_arr.tolist(), "exact_iteration": evaluated,
                  "welfare_exact": grid_welfare.tolist()},
        "x_final": leader.x.tolist(),
    }


def mc_welfare_gain(welfare_mc: Any) -> float | None:
    """The authors' ratio of Monte-Carlo welfare estimates, mean of the last ``k`` over the first
    ``k`` iterations, minus 1; ``k`` = 10 (of their 1,000 iterations), or 10 % of a shorter run.
    ``None`` when the first estimates are not positive (untrained followers deep in debt)."""
    mc = np.asarray(welfare_mc, dtype=np.float64)
    k = max(1, min(10, len(mc) // 10))
    first = mc[:k].mean()
    return float(mc[-k:].mean() / first - 1) if first > 0 else None


def exact_grid_welfare(problem, xs: np.ndarray, grid_cells: int) -> np.ndarray:
    """Exact context-averaged welfare ``J(x)`` of soft-optimal households on the asset grid
    (the tabular variant with the same household parameters) for each row of ``xs``."""
    from bilevel_envs.exact import ExactSolver

    solver = ExactSolver(problem.discretised(grid_cells))
    return np.array([solver.objective(x) for x in xs])


def _one_torch_thread() -> None:
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)


# ---------------------------------------------------------------------------- aggregation
def _groups(results: list[dict]) -> dict[tuple[str, str], list[dict]]:
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in results:
        groups[(r["spec"]["setup"], r["spec"]["algorithm"])].append(r)
    return dict(groups)


def _mean_se(values: Any) -> tuple[float, float]:
    """Mean and standard error over seeds (``ddof=0``, as the Table 3 reproduction)."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std() / np.sqrt(len(v)))


def summary_rows(results: list[dict]) -> list[dict[str, Any]]:
    """One row per (set-up, algorithm): welfare gains and final taxes (mean ± s.e. over seeds),
    mean wall and CPU seconds per run."""
    rows = []
    for (setup, algorithm), runs in sorted(_groups(results).items()):
        final = np.array([r["x_final"] for r in runs])
        spec = runs[0]["spec"]
        rows.append({
            "setup": setup, "algorithm": algorithm, "follower": spec["follower"],
            "n_seeds": len(runs), "iterations": spec["iterations"],
            "welfare_gain_exact": _mean_se([r["metrics"]["welfare_gain_exact"] for r in runs]),
            "welfare_gain_mc": _mean_se([np.nan if g is None else g for g in (
                mc_welfare_gain(r["curve"]["welfare_mc"]) for r in runs)]),
            "welfare_initial_exact": runs[0]["metrics"]["welfare_initial_exact"],
            "welfare_final_exact": _mean_se([r["metrics"]["welfare_final_exact"]
                                             for r in runs]),
            "final_taxes": [_mean_se(final[:, i]) for i in range(final.shape[1])],
            "seconds": float(np.mean([r["seconds"] for r in runs])),
            "cpu_seconds": float(np.mean([r["cpu_seconds"] for r in runs])),
            "total_seconds": float(sum(r["seconds"] + r["eval_seconds"] for r in runs)),
            "total_cpu_seconds": float(sum(r["cpu_seconds"] + r["eval_cpu_seconds"]
                                           for r in runs)),
        })
    return rows


def summary_markdown(rows: list[dict[str, Any]]) -> str:
    """The Markdown summary: welfare gain of each algorithm over the initial taxes (0.3 each),
    final tax rates, time."""
    def pm(pair, scale=1.0, digits=2, unit=""):
        if not np.isfinite(pair[0]):
            return "n/a"
        return f"{scale * pair[0]:.{digits}f} ± {scale * pair[1]:.{digits}f}{unit}"

    lines = ["| set-up (follower) | algorithm | seeds × iterations | welfare gain, exact¹ | "
             "welfare gain, MC² | income tax | VAT 1 | VAT 2 | VAT 3 | wall / CPU per run |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        taxes = " | ".join(pm(t) for t in r["final_taxes"])
        lines.append(
            f"| {r['setup']} ({r['follower']}) | {LABELS[r['algorithm']]} | {r['n_seeds']} × "
            f"{r['iterations']} | {pm(r['welfare_gain_exact'], 100, 1, ' %')} | "
            f"{pm(r['welfare_gain_mc'], 100, 1, ' %')} | {taxes} | {_duration(r['seconds'])} / "
            f"{_duration(r['cpu_seconds'])} |")
    lines += [
        "| paper (Fig. 3, soft DQN) | HPGD | 10 × 1,000 | ≈ +25 % | | up | | low | high "
        "(1.9) | ≈ 170 h³ |",
        "",
        "Initial taxes 0.3 each; ± is the standard error over seeds (ddof = 0). "
        "¹ `J(x_T)/J(x_0) − 1` with `J` the exact welfare of soft-optimal households on the "
        "41-cell asset grid (scores the taxes, independent of the follower's training). "
        "² the authors' ratio: mean of the last 10 over the first 10 Monte-Carlo welfare "
        "estimates of the run (10 % of the iterations for runs shorter than 100; sampled "
        "preference group, the follower's own policy). "
        "³ docs/reference.md §6: ≈600 s per leader iteration with their follower budget.",
    ]
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


# ---------------------------------------------------------------------------- figures
def _curves(runs: list[dict], key: str, index_key: str) -> tuple[np.ndarray, np.ndarray]:
    it = np.asarray(runs[0]["curve"][index_key])
    values = np.stack([np.asarray(r["curve"][key], dtype=np.float64) for r in runs])
    return it, values


def plot_welfare(results: list[dict], path: str | os.PathLike, window: int = 10) -> Path:
    """Paper Fig. 3a: social welfare over leader iterations, one panel per set-up; solid: exact
    grid welfare of ``x_t``, thin: the runs' MC estimates (trailing mean over ``window``);
    mean over seeds ± s.e."""
    plt = pyplot()
    groups = _groups(results)
    setups = sorted({s for s, _ in groups})
    fig, axes = plt.subplots(1, len(setups), figsize=(5 * len(setups), 3.6), squeeze=False)
    for ax, setup in zip(axes[0], setups):
        for algorithm in ALGORITHMS:
            runs = groups.get((setup, algorithm))
            if not runs:
                continue
            colour = COLOURS[algorithm]
            it, exact = _curves(runs, "welfare_exact", "exact_iteration")
            mean, se = exact.mean(0), exact.std(0) / np.sqrt(len(runs))
            ax.plot(it, mean, color=colour, label=f"{LABELS[algorithm]}, exact J(x_t)")
            ax.fill_between(it, mean - se, mean + se, color=colour, alpha=0.25)
            it_mc, mc = _curves(runs, "welfare_mc", "iteration")
            ax.plot(it_mc, trailing_mean(mc.mean(0), window), color=colour, lw=0.8, ls="--",
                    alpha=0.8, label=f"{LABELS[algorithm]}, MC estimate")
        follower = next(runs[0]["spec"]["follower"] for (s, _), runs in groups.items()
                        if s == setup)
        ax.set_title(f"{setup} set-up ({follower} households)")
        ax.set_xlabel("leader iteration")
        ax.set_ylabel("discounted social welfare")
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_taxes(results: list[dict], path: str | os.PathLike) -> Path:
    """Paper Fig. 3b: each tax rate over leader iterations (goods indexed from 1), one row per
    set-up; mean over seeds ± s.e."""
    plt = pyplot()
    groups = _groups(results)
    setups = sorted({s for s, _ in groups})
    fig, axes = plt.subplots(len(setups), 4, figsize=(14, 3.0 * len(setups)), squeeze=False,
                             sharey=True)
    for row, setup in zip(axes, setups):
        for algorithm in ALGORITHMS:
            runs = groups.get((setup, algorithm))
            if not runs:
                continue
            taxes = np.stack([np.asarray(r["curve"]["taxes"]) for r in runs])  # (seeds, T+1, 4)
            it = np.arange(taxes.shape[1])
            for i, ax in enumerate(row):
                mean = taxes[:, :, i].mean(0)
                se = taxes[:, :, i].std(0) / np.sqrt(len(runs))
                ax.plot(it, mean, color=COLOURS[algorithm], label=LABELS[algorithm])
                ax.fill_between(it, mean - se, mean + se, color=COLOURS[algorithm], alpha=0.25)
        for i, ax in enumerate(row):
            ax.set_title(f"{TAX_NAMES[i]} ({setup})", fontsize=9)
            ax.set_xlabel("leader iteration")
        row[0].set_ylabel("tax rate")
        row[0].legend(fontsize=7)
    return save_figure(fig, path)


# ---------------------------------------------------------------------------- command line
def register(subparsers) -> None:
    """Add ``bilevel-bench tax``."""
    p = subparsers.add_parser(
        NAME, help="the paper's tax-design results (Fig. 3a/3b): HPGD and zero-order with "
                   "soft-DQN and tabular households",
        description="Runs HPGD and zero-order on tax design for each follower set-up and seed, "
                    "then writes tax.md/json, the welfare curves (Fig. 3a) and the tax rates "
                    "(Fig. 3b) as PNG.")
    p.add_argument("--setups", default="tabular,neural",
                   help=f"comma-separated follower set-ups from {sorted(SETUPS)} "
                        "(default tabular,neural)")
    p.add_argument("--algorithms", default="hpgd,zero_order",
                   help="comma-separated algorithms (default hpgd,zero_order)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per set-up and algorithm "
                                                         "(default 3)")
    p.add_argument("--iterations", type=int, default=None,
                   help="leader iterations per run (default: the set-up's)")
    p.add_argument("--quick", action="store_true",
                   help="a few-minute version: 2 seeds, 40 tabular iterations, a small soft-DQN "
                        "budget (results in results/tax-quick)")
    p.add_argument("--paper-budget", action="store_true",
                   help="the authors' scale: 1,000 iterations, 3 M soft-DQN transitions per "
                        "leader step (days per run on a CPU)")
    add_runner_arguments(p, None)  # default: results/tax (or results/tax-quick)
    p.set_defaults(func=main)


def build_specs(setups: list[str], algorithms: list[str], seeds: range,
                iterations: int | None = None, quick: bool = False,
                paper_budget: bool = False) -> list[dict[str, Any]]:
    """The specs of one ``bilevel-bench tax`` invocation."""
    specs = []
    for setup in setups:
        overrides: dict[str, Any] = dict(QUICK[setup]) if quick else {}
        if paper_budget:
            overrides.update(PAPER_BUDGET)
            if SETUPS[setup]["follower"] == "soft_dqn":
                overrides["follower_kwargs"] = PAPER_FOLLOWER
        if iterations is not None:
            overrides["iterations"] = iterations
        for algorithm in algorithms:
            for seed in seeds:
                specs.append(tax_spec(setup, algorithm, seed, **overrides))
    return specs


def main(args) -> int:
    import bilevel_envs  # noqa: F401  (registers grid_soft_vi)
    from bilevel_bench.runner import run_specs, write_summary
    from bilevel_envs.followers import FOLLOWERS

    setups = [s.strip() for s in args.setups.split(",") if s.strip()]
    algorithms = [a.strip() for a in args.algorithms.split(",") if a.strip()]
    for name, values, known in (("setup", setups, SETUPS), ("algorithm", algorithms,
                                                            ALGORITHMS)):
        unknown = [v for v in values if v not in known]
        if unknown or not values:
            raise SystemExit(f"unknown {name}(s) {unknown}; choose from {sorted(known)}")
    missing = [s for s in setups if SETUPS[s]["follower"] not in FOLLOWERS]
    for setup in missing:
        print(f"skipping set-up {setup!r}: follower {SETUPS[setup]['follower']!r} is not "
              f"installed (known: {sorted(FOLLOWERS)})")
    setups = [s for s in setups if s not in missing]
    if not setups:
        raise SystemExit("no set-up left to run")
    seeds = range(2 if args.quick else args.seeds)
    specs = build_specs(setups, algorithms, seeds, args.iterations, args.quick,
                        args.paper_budget)
    out = Path(args.out or ("results/tax-quick" if args.quick else "results/tax"))
    print(f"tax design: {len(specs)} runs ({', '.join(setups)} × {', '.join(algorithms)} × "
          f"{len(seeds)} seeds) in {out}")
    start, cpu = time.perf_counter(), time.process_time()
    results = run_specs(specs, out, backend=args.backend, workers=args.workers,
                        address=args.address)
    wall, cpu_used = time.perf_counter() - start, time.process_time() - cpu
    rows = summary_rows(results)
    markdown = summary_markdown(rows)
    if args.quick and "neural" in setups:
        markdown += ("\n\n--quick gives the soft-DQN households 10,000 transitions, then 1,000 per "
                     "leader step: a plumbing check of that set-up, not a result (the full "
                     "command's budget: docs/tax_design.md).")
    timing = (f"This invocation: {wall / 60:.1f} min wall, {cpu_used / 60:.1f} min CPU in this "
              f"process (runs already on disk are not rerun; with --workers > 1 the runs' CPU "
              f"is in the workers). Sum over runs (training + exact evaluation): "
              f"{sum(r['total_seconds'] for r in rows) / 60:.1f} min wall, "
              f"{sum(r['total_cpu_seconds'] for r in rows) / 60:.1f} min CPU.")
    write_summary(out, NAME, markdown, timing, rows=rows, wall_seconds=wall,
                  cpu_seconds=cpu_used)
    if not args.no_plots:
        figures = [plot_welfare(results, out / "tax_welfare.png"),
                   plot_taxes(results, out / "tax_rates.png")]
        print("figures: " + ", ".join(str(f) for f in figures))
    return 0
