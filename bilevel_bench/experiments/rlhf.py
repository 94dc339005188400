"""``bilevel-bench rlhf``: HPGD (trajectory-level estimator) and zero-order on RLHF as bilevel RL.

Instances (:data:`INSTANCES`): the default 4×4 preference grid with a state-action reward model
(``grid``, ``d = 80``) and with the 3-feature model (``grid_features``), and the 3-cell ``tiny``
chain whose exact ``J`` is computed by enumerating trajectory pairs. AMD does not apply (the
objective is not a discounted sum of leader rewards).

Every ``eval_every`` iterations the iterate is scored independently of the leader
(:func:`evaluate`): the expected Bradley–Terry log-likelihood (labels averaged with the
teacher's probability: a Monte-Carlo estimate of ``J``) and the preference accuracy against
sampled teacher labels on fresh pairs from ``π*_x``, the exact true-reward regret of ``π*_x``,
and on ``tiny`` the exact ``J``. References: ``x = 0`` (the start), the annotator's true reward
as the reward model, and on ``tiny`` the best of 16 L-BFGS-B starts on the exact ``J``.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
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
from bilevel_envs.validation import check_int

NAME = "rlhf"
ENV_ID = "bilevel/RLHF-v0"
ALGORITHMS = ("hpgd", "zero_order")
#: instance name -> RLHFProblem arguments (everything else at the env defaults: λ = 0.1, β = 1)
INSTANCES: dict[str, dict[str, Any]] = {
    "grid": {"instance": "grid"},
    "grid_features": {"instance": "grid", "reward_model": "features"},
    "tiny": {"instance": "tiny"},
}
EXACT_INSTANCES = ("tiny",)
#: Leader settings (chosen on short runs, see docs/rlhf.md). With λ = 0.1 the follower turns
#: deterministic once |r_x| differences reach ~1, every pair then ties and J sits on the plateau
#: −log 2 with zero gradient: steps must stay small.
HYPERPARAMETERS: dict[str, dict[str, Any]] = {
    "hpgd": {"learning_rate": 0.03, "max_grad_norm": 1.0, "coupled_restarts": True},
    "zero_order": {"learning_rate": 0.03, "max_grad_norm": 1.0, "perturbation_constant": 0.5},
}
DEFAULTS: dict[str, Any] = {"experiment": NAME, "iterations": 1000, "eval_every": 50,
                            "n_pairs": 128, "eval_pairs": 2000, "spec_version": 1}
BEST_KNOWN_STARTS = 16  # L-BFGS-B starts for the best known exact J (tiny)
METRICS = ("log_likelihood", "preference_accuracy", "true_regret")
METRIC_LABELS = {"log_likelihood": "expected BT log-likelihood",
                 "preference_accuracy": "preference accuracy (fresh pairs)",
                 "true_regret": "true-reward regret of π*_x", "exact_objective": "exact J"}


# ---------------------------------------------------------------------------- evaluation
def make_problem(instance: str):
    """The :class:`~bilevel_envs.envs.rlhf.RLHFProblem` of an instance name."""
    from bilevel_envs.envs.rlhf.problem import RLHFProblem

    if instance not in INSTANCES:
        raise ValueError(f"unknown instance {instance!r}; expected one of {sorted(INSTANCES)}")
    return RLHFProblem(**INSTANCES[instance])


def evaluate(problem, x: np.ndarray, n_pairs: int = 2000, seed: int = 0,
             exact: bool = False) -> dict[str, float]:
    """Score a reward model ``x`` on ``n_pairs`` fresh pairs per annotator from ``π*_x``.

    Returns the context-weighted ``log_likelihood`` (mean ``ℓ``, labels averaged with the
    teacher's probability) and ``preference_accuracy`` (against sampled teacher labels; ties of
    ``r_x`` count ½), each with its standard error (``*_se``; for the accuracy the binomial
    bound), the exact ``true_regret`` of ``π*_x`` and, with ``exact=True``, the enumerated
    ``exact_objective``. Same ``seed`` → same pairs and labels for the same ``x``.
    """
    from bilevel_envs.exact import exact_objective
    from bilevel_envs.followers import TabularPolicy
    from bilevel_envs.oracles import TabularOracle

    check_int("n_pairs", n_pairs, 2)
    rng = np.random.default_rng(seed)
    pi = problem.policy(x)
    H, S, A = pi.shape
    policy = TabularPolicy(pi.reshape(H * S, A))
    ell, accuracy, regret = [], [], []
    for context in range(problem.n_contexts):
        oracle = TabularOracle(problem, x, context, policy)
        pairs = problem.trajectory_pairs(oracle.rollout(rng, 2 * n_pairs, H))
        traj0, traj1 = pairs.traj0, pairs.traj1
        labels = problem.sample_labels(context, traj0, traj1, rng)
        ell.append(problem.pair_objective(x, context, traj0, traj1))
        accuracy.append(problem.preference_accuracy(x, context, traj0, traj1, labels))
        regret.append(problem.true_regret(x, context))
    w = problem.context_probs
    ell, accuracy = np.stack(ell), np.array(accuracy)  # (contexts, n_pairs), (contexts,)
    out = {"log_likelihood": float(w @ ell.mean(1)),
           "log_likelihood_se": float(np.sqrt(w**2 @ ell.var(1, ddof=1)) / np.sqrt(n_pairs)),
           "preference_accuracy": float(w @ accuracy),
           # binomial bound: ties (scored ½) only lower the variance
           "preference_accuracy_se": float(np.sqrt(w**2 @ (accuracy * (1 - accuracy)))
                                           / np.sqrt(n_pairs)),
           "true_regret": float(w @ np.array(regret))}
    if exact:
        out["exact_objective"] = float(exact_objective(problem, x))
    return out


def true_reward_model(problem) -> np.ndarray | None:
    """``x`` whose reward model equals the first annotator's true reward (least squares on the
    features, clipped to ``x_space``), or ``None`` if the features cannot represent it."""
    S, A, d = problem.features.shape
    phi = problem.features.reshape(S * A, d)
    target = problem.annotators[0].reward.ravel()
    x, *_ = np.linalg.lstsq(phi, target, rcond=None)
    if np.abs(phi @ x - target).max() > 1e-9:
        return None
    return np.clip(x, problem.x_space.low, problem.x_space.high)


def references(instance: str, n_pairs: int = 2000, seed: int = 0) -> dict[str, Any]:
    """The metrics of ``x = 0`` and of the true reward model, and on exact instances the best
    of 16 L-BFGS-B starts on the enumerated ``J``."""
    problem = make_problem(instance)
    exact = instance in EXACT_INSTANCES
    out: dict[str, Any] = {"start": evaluate(problem, problem.x_init, n_pairs, seed, exact)}
    x_true = true_reward_model(problem)
    if x_true is not None:
        out["true_reward"] = evaluate(problem, x_true, n_pairs, seed, exact)
    if exact:
        rng = np.random.default_rng(0)
        starts = [problem.x_init] + [rng.normal(0.0, 0.3, problem.n_params)
                                     for _ in range(BEST_KNOWN_STARTS - 1)]
        value, x = multistart_maximum(problem.exact_value_and_grad, problem.x_space.low,
                                      problem.x_space.high, starts)
        out["best_known"] = {**evaluate(problem, x, n_pairs, seed, exact=True),
                             "exact_objective": value}
    return out


# ---------------------------------------------------------------------------- one run
def rlhf_spec(instance: str, algorithm: str, seed: int, **overrides: Any) -> dict[str, Any]:
    """The plain-data spec of one run (defaults: :data:`DEFAULTS`, :data:`HYPERPARAMETERS`)."""
    return instance_spec(DEFAULTS, HYPERPARAMETERS, INSTANCES, instance, algorithm, seed,
                         overrides)


def validate_spec(spec: Any) -> None:
    """Raise ``ValueError`` naming the field if ``spec`` is not a well-formed rlhf spec."""
    validate_instance_spec(spec, DEFAULTS, HYPERPARAMETERS, INSTANCES)


def make_leader(spec: dict[str, Any]):
    """The env and leader a spec describes (both start at the zero reward model)."""
    import gymnasium as gym

    import bilevel_envs  # noqa: F401  (registers the ids)
    from leaders import HPGD, ZeroOrder

    env = gym.make(ENV_ID, n_pairs=spec["n_pairs"], horizon=10**9, **INSTANCES[spec["instance"]])
    common = {"learning_rate": spec["learning_rate"], "max_grad_norm": spec["max_grad_norm"],
              "seed": spec["seed"]}
    if spec["algorithm"] == "hpgd":
        return HPGD(env, coupled_restarts=spec["coupled_restarts"], **common)
    return ZeroOrder(env, perturbation_constant=spec["perturbation_constant"], **common)


def run_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one spec, scoring the iterates every ``eval_every`` iterations with :func:`evaluate`
    (its own generator: the same evaluation pairs' randomness at every point of the curve)."""
    from leaders.callbacks import Callback

    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    spec = {**DEFAULTS, **HYPERPARAMETERS[spec["algorithm"]], **spec}
    leader = make_leader(spec)
    exact = spec["instance"] in EXACT_INSTANCES
    eval_seed = 10_000 + spec["seed"]
    curve: dict[str, list] = defaultdict(list)
    evaluation_seconds = [0.0]

    def record(x: np.ndarray, iteration: int) -> None:
        start = time.perf_counter()
        metrics = evaluate(leader.problem, x, spec["eval_pairs"], eval_seed, exact)
        curve["iteration"].append(iteration)
        for key, value in metrics.items():
            curve[key].append(value)
        evaluation_seconds[0] += time.perf_counter() - start

    class Evaluate(Callback):
        def on_step(self, leader, record_):
            if leader.num_iterations % spec["eval_every"] == 0:
                record(leader.x, leader.num_iterations)
            return True

    n = spec["iterations"]
    record(leader.x, 0)
    start, cpu = time.perf_counter(), time.process_time()
    leader.learn(n, callback=Evaluate())
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    if curve["iteration"][-1] != n:
        record(leader.x, n)
    return {
        "key": spec_key(spec), "spec": spec, "seconds": seconds - evaluation_seconds[0],
        "cpu_seconds": cpu_seconds, "hyperparameters": leader.hyperparameters(),
        "metrics": {"initial": {k: v[0] for k, v in curve.items() if k != "iteration"},
                    "final": {k: v[-1] for k, v in curve.items() if k != "iteration"}},
        "curve": dict(curve), "x_final": leader.x.tolist(),
    }


# ---------------------------------------------------------------------------- table
def specs_for(instances, algorithms, seeds, **overrides: Any) -> list[dict[str, Any]]:
    """One spec per instance × algorithm × seed."""
    return [rlhf_spec(i, a, s, **overrides) for i in instances for a in algorithms for s in seeds]


def table_rows(results: list[dict], refs: dict[str, dict]) -> list[dict[str, Any]]:
    """Per instance: the reference rows, then per algorithm the final metrics mean ± s.e."""
    rows = []
    groups = group_runs(results)
    for instance in dict.fromkeys(r["spec"]["instance"] for r in results):
        for name, metrics in refs[instance].items():
            rows.append({"instance": instance, "row": name, "n_seeds": None,
                         **{k: (metrics[k], None) for k in (*METRICS, "exact_objective")
                            if k in metrics}})
        for algorithm in ALGORITHMS:
            runs = groups.get((instance, algorithm))
            if not runs:
                continue
            keys = [k for k in (*METRICS, "exact_objective") if k in runs[0]["metrics"]["final"]]
            rows.append({"instance": instance, "row": algorithm, "n_seeds": len(runs),
                         "iterations": runs[0]["spec"]["iterations"],
                         "seconds": float(np.mean([r["seconds"] for r in runs])),
                         **{k: mean_se([r["metrics"]["final"][k] for r in runs]) for k in keys}})
    return rows


def table_markdown(rows: list[dict[str, Any]]) -> str:
    """The comparison as a Markdown table."""
    names = {"start": "x = 0 (start)", "true_reward": "true reward as model",
             "best_known": "best known (16 L-BFGS-B starts, exact J)", **ALGORITHM_LABELS}

    def cell(value):
        if value is None:
            return "–"
        mean, se = value
        return f"{mean:.3f}" if se is None else f"{mean:.3f} ± {se:.3f}"

    lines = ["| instance | model | log-likelihood | accuracy | regret | exact J | seeds |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['instance']} | {names[r['row']]} | {cell(r.get('log_likelihood'))} "
                     f"| {cell(r.get('preference_accuracy'))} | {cell(r.get('true_regret'))} "
                     f"| {cell(r.get('exact_objective'))} | {r['n_seeds'] or '–'} |")
    runs = [r for r in rows if r["n_seeds"]]
    lines.append("")
    lines.append("Final iterates, scored on fresh pairs from π*_x (log-likelihood: labels "
                 "averaged with the teacher's probability; accuracy: against sampled labels); "
                 "regret and exact J are exact. "
                 + (f"{runs[0]['iterations']} iterations; " if runs else "")
                 + "± is the standard error over seeds (ddof = 0).")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- figures
def plot_metrics(results: list[dict], refs: dict[str, dict], path: str | os.PathLike) -> Path:
    """The metrics over iterations (mean ± s.e. over seeds): one row per instance, one column
    per metric; the true-reward model (dotted) and best known J (dashed) as references."""
    plt = pyplot()
    groups = group_runs(results)
    instances = list(dict.fromkeys(r["spec"]["instance"] for r in results))
    keys = list(METRICS) + (["exact_objective"] if any(i in EXACT_INSTANCES
                                                       for i in instances) else [])
    fig, axes = plt.subplots(len(instances), len(keys), figsize=(3.8 * len(keys),
                                                                 3.0 * len(instances)),
                             squeeze=False)
    for row, instance in zip(axes, instances):
        for ax, key in zip(row, keys):
            if key == "exact_objective" and instance not in EXACT_INSTANCES:
                ax.axis("off")
                continue
            plot_mean_curves(ax, {a: groups.get((instance, a), []) for a in ALGORITHMS}, key)
            for name, style in (("true_reward", ":"), ("best_known", "--")):
                if key in refs[instance].get(name, {}):
                    ax.axhline(refs[instance][name][key], color="black", ls=style, lw=1,
                               label=name.replace("_", " "))
            ax.set_title(f"{instance}: {METRIC_LABELS[key]}", fontsize=9)
            ax.set_xlabel("iteration")
        row[0].legend(fontsize=7)
    return save_figure(fig, path)


# ---------------------------------------------------------------------------- command line
def register(subparsers) -> None:
    """Add ``bilevel-bench rlhf``."""
    p = subparsers.add_parser(
        NAME, help="leaders on RLHF as bilevel RL (preference grid, tiny exact instance)",
        description="Runs HPGD (trajectory-level estimator) and zero-order on the RLHF "
                    "instances; writes rlhf.md/json and the metrics over iterations as PNG.")
    p.add_argument("--seeds", type=int, default=5, help="seeds per instance (default 5)")
    p.add_argument("--iterations", type=int, default=None,
                   help="iterations per run (default 1,000; 500 with --quick)")
    p.add_argument("--eval-every", type=int, default=None,
                   help="evaluate every this many iterations (default 50; 25 with --quick)")
    p.add_argument("--eval-pairs", type=int, default=None,
                   help="fresh pairs per evaluation (default 2,000)")
    p.add_argument("--quick", action="store_true", help="3 seeds × 500 iterations")
    p.add_argument("--instances", nargs="+", choices=sorted(INSTANCES), default=list(INSTANCES))
    p.add_argument("--algorithms", nargs="+", choices=ALGORITHMS, default=list(ALGORITHMS))
    add_runner_arguments(p, "results/rlhf")
    p.set_defaults(func=main)


def main(args) -> int:
    """Run ``bilevel-bench rlhf`` (arguments from :func:`register`); returns the exit code."""
    from bilevel_bench.runner import run_specs

    out = Path(args.out)
    iterations = args.iterations or (500 if args.quick else DEFAULTS["iterations"])
    every = args.eval_every or (25 if args.quick else DEFAULTS["eval_every"])
    pairs = args.eval_pairs or DEFAULTS["eval_pairs"]
    overrides = {"iterations": iterations, "eval_every": min(every, iterations),
                 "eval_pairs": pairs}
    seeds = range(3 if args.quick else args.seeds)
    specs = specs_for(args.instances, args.algorithms, seeds, **overrides)
    print(f"RLHF: {len(specs)} runs ({len(args.instances)} instances × {len(args.algorithms)} "
          f"algorithms × {len(seeds)} seeds, {iterations} iterations) in {out}")
    start = time.time()
    results = run_specs(specs, out, backend=args.backend, workers=args.workers,
                        address=args.address)
    refs = {i: references(i, pairs) for i in args.instances}
    wall = time.time() - start
    rows = table_rows(results, refs)
    markdown = table_markdown(rows)
    timing = f"Wall time of this invocation: {wall:.0f} s (runs already on disk are not rerun)."
    write_summary(out, NAME, markdown, timing, rows=rows, references=refs, wall_seconds=wall)
    if not args.no_plots:
        print(f"figures: {plot_metrics(results, refs, out / 'metrics.png')}")
    return 0
