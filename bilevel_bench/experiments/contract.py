"""``bilevel-bench contract``: HPGD, AMD and zero-order on dynamic contract design (paper App. B).

Instances (:data:`INSTANCES`): the one-state ``project`` at two λ with one agent type and at one
λ with two types (exact optimum by 1-d search, :func:`~bilevel_envs.envs.contract_design.
project_optimum`), the effort ``tree`` and the delivery ``grid`` (reference: the best of a few
L-BFGS-B starts on the exact ``J``). Per run: the exact ``J`` of the iterates every
``eval_every`` iterations and of the final contract. Table: final ``J`` mean ± s.e. over seeds
and its gap to the reference. Figures: learning curves and the final payments.

Every leader starts from the same contract, half the principal's revenue on each transition
(:func:`revenue_share`): from ``x = 0`` (no payments) the project's ``J`` has a spurious local
maximum for λ ≲ 0.07 — a small bonus does not move a soft agent, so paying less is locally
better — and any gradient method stays there.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from bilevel_bench.runner import (
    ALGORITHM_LABELS,
    add_runner_arguments,
    group_runs,
    instance_spec,
    mean_se,
    multistart_maximum,
    plot_mean_curves,
    pyplot,
    save_figure,
    spec_key,
    validate_instance_spec,
    write_summary,
)

NAME = "contract"
ENV_ID = "bilevel/ContractDesign-v0"
ALGORITHMS = ("hpgd", "amd", "zero_order")
#: instance name -> ContractDesign arguments
INSTANCES: dict[str, dict[str, Any]] = {
    "project_lam0.1": {"instance": "project", "lam": 0.1, "cost_scales": [1.0]},
    "project_lam0.02": {"instance": "project", "lam": 0.02, "cost_scales": [1.0]},
    "project_2types": {"instance": "project", "lam": 0.05, "cost_scales": [1.0, 1.5]},
    "tree": {"instance": "tree", "lam": 0.05, "cost_scales": [1.0], "depth": 3, "seed": 0},
    "grid": {"instance": "grid", "lam": 0.05, "cost_scales": [1.0]},
}
#: Leader settings, shared by every instance (chosen on the project instances, see
#: docs/contract_design.md): HPGD averages the types before clipping (contexts="all"); AMD
#: samples one type per step (Alg. 9), so its per-type gradients are not clipped — clipping
#: them moves its fixed point (two types: u ≈ 0.74 instead of 0.86); zero-order queries the
#: exact value of the agents' responses (as in Table 3).
HYPERPARAMETERS: dict[str, dict[str, Any]] = {
    "hpgd": {"learning_rate": 0.01, "max_grad_norm": 1.0, "estimator": "every_visit",
             "n_envs": 5, "n_rollout_steps": 1000},
    "amd": {"learning_rate": 0.002, "max_grad_norm": None, "inner": "exact"},
    "zero_order": {"learning_rate": 0.003, "max_grad_norm": 1.0, "perturbation_constant": 1.0},
}
DEFAULTS: dict[str, Any] = {"experiment": NAME, "iterations": 3000, "eval_every": 50,
                            "x0_share": 0.5, "spec_version": 1}
REFERENCE_STARTS = 4  # L-BFGS-B starts for instances without a closed form


# ---------------------------------------------------------------------------- problems
def make_problem(instance: str):
    """The :class:`~bilevel_envs.envs.contract_design.ContractDesign` of an instance name."""
    from bilevel_envs.envs.contract_design.problem import ContractDesign

    if instance not in INSTANCES:
        raise ValueError(f"unknown instance {instance!r}; expected one of {sorted(INSTANCES)}")
    return ContractDesign(**INSTANCES[instance])


def revenue_share(problem, share: float) -> np.ndarray:
    """The contract paying ``share`` of the principal's revenue ``r(s, s')`` on each payable
    transition (clipped to ``x_max``): a leader's starting point."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be in [0, 1]; got {share!r}")
    spec = problem.spec
    return np.minimum(share * spec.revenue[spec.payments[:, 0], spec.payments[:, 1]],
                      problem.x_max)


def reference_optimum(instance: str, starts: int = REFERENCE_STARTS) -> dict[str, Any]:
    """The exact optimum of a project instance, or the best of ``starts`` L-BFGS-B runs (from
    the revenue share and seeded uniform contracts on ``[0, 2]``) on the exact ``J`` otherwise.
    Returns ``{"objective", "x", "kind"}``."""
    from bilevel_envs.envs.contract_design.closed_forms import project_optimum
    from bilevel_envs.exact import ExactSolver

    problem = make_problem(instance)
    if problem.instance == "project":
        opt = project_optimum(problem)
        return {"objective": opt.objective, "x": opt.x.tolist(), "u": opt.success_pay,
                "kind": "exact optimum (1-d search)"}
    solver = ExactSolver(problem)
    rng = np.random.default_rng(0)
    points = [revenue_share(problem, DEFAULTS["x0_share"])]
    points += [rng.uniform(0.0, 2.0, problem.n_params) for _ in range(starts - 1)]
    value, x = multistart_maximum(solver.value_and_grad, problem.x_space.low,
                                  problem.x_space.high, points)
    return {"objective": value, "x": x.tolist(),
            "kind": f"best of {starts} L-BFGS-B starts (exact J)"}


# ---------------------------------------------------------------------------- one run
def contract_spec(instance: str, algorithm: str, seed: int, **overrides: Any) -> dict[str, Any]:
    """The plain-data spec of one run (defaults: :data:`DEFAULTS`, :data:`HYPERPARAMETERS`)."""
    return instance_spec(DEFAULTS, HYPERPARAMETERS, INSTANCES, instance, algorithm, seed,
                         overrides)


def validate_spec(spec: Any) -> None:
    """Raise ``ValueError`` naming the field if ``spec`` is not a well-formed contract spec."""
    validate_instance_spec(spec, DEFAULTS, HYPERPARAMETERS, INSTANCES)


def make_leader(spec: dict[str, Any]):
    """The env and leader a spec describes (every leader starts at :func:`revenue_share`)."""
    import gymnasium as gym

    import bilevel_envs  # noqa: F401  (registers the ids)
    from leaders import AMD, HPGD, ZeroOrder

    problem_kwargs = INSTANCES[spec["instance"]]
    x0 = revenue_share(make_problem(spec["instance"]), spec["x0_share"])
    common = {"learning_rate": spec["learning_rate"], "max_grad_norm": spec["max_grad_norm"],
              "seed": spec["seed"], "x0": x0}
    algorithm = spec["algorithm"]
    if algorithm == "hpgd":
        env = gym.make(ENV_ID, contexts="all", n_envs=spec["n_envs"],
                       n_rollout_steps=spec["n_rollout_steps"], horizon=10**9, **problem_kwargs)
        return HPGD(env, estimator=spec["estimator"], **common)
    if algorithm == "amd":
        return AMD(gym.make(ENV_ID, horizon=10**9, **problem_kwargs), inner=spec["inner"],
                   **common)
    env = gym.make(ENV_ID, contexts="all", objective="exact", n_rollout_steps=0, horizon=10**9,
                   **problem_kwargs)
    return ZeroOrder(env, perturbation_constant=spec["perturbation_constant"], **common)


def run_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one spec; the exact ``J`` every ``eval_every`` iterations and at the end."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    spec = {**DEFAULTS, **HYPERPARAMETERS[spec["algorithm"]], **spec}
    leader = make_leader(spec)
    n, every = spec["iterations"], spec["eval_every"]
    start, cpu = time.perf_counter(), time.process_time()
    leader.learn(n, eval_every=every)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    history = leader.history
    evaluated = np.isfinite(history.get("exact_objective", np.zeros(0)))
    final = leader.exact_objective()
    return {
        "key": spec_key(spec), "spec": spec, "seconds": seconds, "cpu_seconds": cpu_seconds,
        "hyperparameters": leader.hyperparameters(),
        "metrics": {"final_objective": final},
        "curve": {"iteration": history["iteration"][evaluated].tolist() + [n],
                  "objective": history["exact_objective"][evaluated].tolist() + [final]},
        "x_final": leader.x.tolist(),
    }


# ---------------------------------------------------------------------------- table
def specs_for(instances, algorithms, seeds, **overrides: Any) -> list[dict[str, Any]]:
    """One spec per instance × algorithm × seed."""
    return [contract_spec(i, a, s, **overrides)
            for i in instances for a in algorithms for s in seeds]


def table_rows(results: list[dict], references: dict[str, dict]) -> list[dict[str, Any]]:
    """Per instance and algorithm: final ``J`` mean ± s.e., gap to the reference in % (mean,
    worst seed), seconds per run."""
    rows = []
    for (instance, algorithm), runs in group_runs(results).items():
        finals = np.array([r["metrics"]["final_objective"] for r in runs])
        ref = references[instance]["objective"]
        gaps = 100.0 * (1.0 - finals / ref)
        mean, se = mean_se(finals)
        rows.append({"instance": instance, "algorithm": algorithm, "n_seeds": len(runs),
                     "iterations": runs[0]["spec"]["iterations"], "mean": mean, "se": se,
                     "reference": ref, "reference_kind": references[instance]["kind"],
                     "gap_percent": float(gaps.mean()), "worst_gap_percent": float(gaps.max()),
                     "seconds": float(np.mean([r["seconds"] for r in runs]))})
    return rows


def table_markdown(rows: list[dict[str, Any]]) -> str:
    """The comparison as a Markdown table."""
    lines = ["| instance | λ | types | algorithm | final J (mean ± s.e.) | reference J | gap % "
             "(mean / worst seed) | s per run |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        kwargs = INSTANCES[r["instance"]]
        lines.append(
            f"| {r['instance']} | {kwargs['lam']:g} | {len(kwargs['cost_scales'])} | "
            f"{ALGORITHM_LABELS[r['algorithm']]} | {r['mean']:.4f} ± {r['se']:.4f} | "
            f"{r['reference']:.4f} | {r['gap_percent']:.2f} / {r['worst_gap_percent']:.2f} | "
            f"{r['seconds']:.1f} |")
    kinds = dict.fromkeys((r["instance"], r["reference_kind"]) for r in rows)
    n_seeds, iterations = (rows[0]["n_seeds"], rows[0]["iterations"]) if rows else (0, 0)
    lines.append("")
    lines.append("Reference J: " + "; ".join(f"{i}: {k}" for i, k in kinds) + f". {n_seeds} "
                 f"seeds, {iterations} iterations; every leader starts at half the revenue on "
                 "each transition; ± is the standard error over seeds (ddof = 0).")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- figures
def plot_learning_curves(results: list[dict], references: dict[str, dict],
                         path: str | os.PathLike) -> Path:
    """Exact ``J`` over iterations (mean ± s.e. over seeds), one panel per instance, the
    reference dashed."""
    plt = pyplot()
    groups = group_runs(results)
    instances = list(dict.fromkeys(r["spec"]["instance"] for r in results))
    cols = min(3, len(instances))
    rows = -(-len(instances) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.ravel()[len(instances):]:
        ax.axis("off")
    for ax, instance in zip(axes.ravel(), instances):
        plot_mean_curves(ax, {a: groups.get((instance, a), []) for a in ALGORITHMS}, "objective")
        ax.axhline(references[instance]["objective"], color="black", ls="--", lw=1,
                   label="reference")
        ref = references[instance]["objective"]
        ax.set_ylim(max(ax.get_ylim()[0], 0.8 * ref), ref + 0.03 * abs(ref))
        ax.set_title(instance)
        ax.set_xlabel("iteration")
        ax.set_ylabel("exact J")
    axes[0, 0].legend(fontsize=8)
    return save_figure(fig, path)


def plot_payments(results: list[dict], references: dict[str, dict],
                  path: str | os.PathLike) -> Path:
    """The final payments of each algorithm (mean over seeds) beside the reference contract,
    one panel per instance; payable transitions on the x axis."""
    plt = pyplot()
    groups = group_runs(results)
    instances = list(dict.fromkeys(r["spec"]["instance"] for r in results))
    fig, axes = plt.subplots(len(instances), 1, figsize=(10, 2.6 * len(instances)),
                             squeeze=False)
    for ax, instance in zip(axes[:, 0], instances):
        names = make_problem(instance).spec.payment_names()
        series = {a: np.mean([r["x_final"] for r in groups[(instance, a)]], axis=0)
                  for a in ALGORITHMS if groups.get((instance, a))}
        series["reference"] = np.asarray(references[instance]["x"])
        width = 0.8 / len(series)
        positions = np.arange(len(names))
        for k, (label, x) in enumerate(series.items()):
            ax.bar(positions + (k - (len(series) - 1) / 2) * width, x, width,
                   label=ALGORITHM_LABELS.get(label, label),
                   color=None if label != "reference" else "grey")
        ax.set_xticks(positions)
        ax.set_xticklabels(names, rotation=90 if len(names) > 8 else 0, fontsize=6)
        ax.set_ylabel("payment x(s, s')")
        ax.set_title(instance + (" (J depends on x(work→success) + γ x(success→work) only)"
                                 if instance.startswith("project") else ""))
    axes[0, 0].legend(fontsize=8, ncol=4)
    return save_figure(fig, path)


# ---------------------------------------------------------------------------- command line
def register(subparsers) -> None:
    """Add ``bilevel-bench contract``."""
    p = subparsers.add_parser(
        NAME, help="leaders on dynamic contract design (project, tree, grid)",
        description="Runs HPGD, AMD and zero-order on the contract-design instances against the "
                    "exact optimum (project) or a multi-start reference (tree, grid); writes "
                    "contract.md/json, learning curves and the final payments as PNG.")
    p.add_argument("--seeds", type=int, default=5, help="seeds per instance (default 5)")
    p.add_argument("--iterations", type=int, default=None,
                   help="iterations per run (default 3,000; 1,000 with --quick)")
    p.add_argument("--eval-every", type=int, default=None,
                   help="exact evaluations every this many iterations (default 50)")
    p.add_argument("--quick", action="store_true", help="3 seeds × 1,000 iterations")
    p.add_argument("--instances", nargs="+", choices=sorted(INSTANCES), default=list(INSTANCES))
    p.add_argument("--algorithms", nargs="+", choices=ALGORITHMS, default=list(ALGORITHMS))
    add_runner_arguments(p, "results/contract")
    p.set_defaults(func=main)


def main(args) -> int:
    """Run ``bilevel-bench contract`` (arguments from :func:`register`); returns the exit code."""
    from bilevel_bench.runner import run_specs

    out = Path(args.out)
    iterations = args.iterations or (1000 if args.quick else DEFAULTS["iterations"])
    overrides = {"iterations": iterations,
                 "eval_every": args.eval_every or min(DEFAULTS["eval_every"], iterations)}
    seeds = range(3 if args.quick else args.seeds)
    specs = specs_for(args.instances, args.algorithms, seeds, **overrides)
    print(f"contract design: {len(specs)} runs ({len(args.instances)} instances × "
          f"{len(args.algorithms)} algorithms × {len(seeds)} seeds, {iterations} iterations) "
          f"in {out}")
    start = time.time()
    results = run_specs(specs, out, backend=args.backend, workers=args.workers,
                        address=args.address)
    references = {i: reference_optimum(i) for i in args.instances}
    wall = time.time() - start
    rows = table_rows(results, references)
    markdown = table_markdown(rows)
    timing = f"Wall time of this invocation: {wall:.0f} s (runs already on disk are not rerun)."
    write_summary(out, NAME, markdown, timing, rows=rows, references=references,
                  wall_seconds=wall)
    if not args.no_plots:
        figures = [plot_learning_curves(results, references, out / "learning_curves.png"),
                   plot_payments(results, references, out / "payments.png")]
        print("figures: " + ", ".join(str(f) for f in figures))
    return 0
