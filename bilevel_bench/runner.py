"""The sweep runner shared by every experiment: plain-data specs, results keyed by a hash of the
spec and written atomically, local processes by default or a Ray cluster.

A *spec* is a JSON-serialisable dict that fully determines one run. Results are written by the
driver as runs finish (one JSON file per spec under ``<out>/runs/``), so a sweep that is killed
at any point and restarted with the same specs runs each unfinished spec exactly once and loses
nothing. Experiments (``bilevel_bench.experiments``) supply the per-spec ``runner`` function.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import multiprocessing
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def spec_key(spec: dict[str, Any]) -> str:
    """A stable key of a spec: the first 16 hex digits of the SHA-256 of its canonical JSON."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------- many runs
def result_path(out_dir: str | os.PathLike, spec: dict[str, Any]) -> Path:
    """Where the result of ``spec`` lives: ``<out_dir>/runs/<spec_key>.json``."""
    return Path(out_dir) / "runs" / f"{spec_key(spec)}.json"


def _write_atomic(path: Path, write: Callable[[Any], None]) -> None:
    """Write a file via a temporary file and ``os.replace``: readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "w") as f:
            write(f)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON atomically (see :func:`_write_atomic`)."""
    _write_atomic(path, lambda f: json.dump(data, f))


def write_summary(out: Path, name: str, markdown: str, timing: str, **data: Any) -> None:
    """An experiment's summary: ``out/<name>.md`` (``markdown`` then ``timing``) and
    ``out/<name>.json`` (``data`` and ``timing``), both written atomically, and printed."""
    text = markdown + "\n\n" + timing + "\n"
    _write_atomic(out / f"{name}.md", lambda f: f.write(text))
    write_json_atomic(out / f"{name}.json", {**data, "timing": timing})
    print(text, end="")


def load_result(path: Path) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def run_specs(specs: Sequence[dict[str, Any]], out_dir: str | os.PathLike,
              backend: str = "local", workers: int | None = None, address: str | None = None,
              progress: bool = True,
              runner: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> list[dict]:
    """Run every spec whose result file is missing; return all results in spec order.

    Args:
        specs: plain-data specs.
        out_dir: results directory (``runs/<key>.json`` per spec).
        backend: ``"local"`` (processes on this machine) or ``"ray"`` (``ray.init(address)``).
        workers: local processes (default: all cores).
        address: Ray cluster address (``None``: start a local Ray instance).
        progress: show a progress bar (tqdm) if available.
        runner: the module-level function executed per spec (importable by the workers);
            default: the runner of the spec's ``"experiment"`` (see
            :mod:`bilevel_bench.experiments`).
    """
    from bilevel_bench.experiments import runner_for

    default_runner = runner_for(specs)  # validates every spec before anything runs
    runner = default_runner if runner is None else runner
    out_dir = Path(out_dir)
    specs = [dict(s) for s in specs]
    todo = [s for s in specs if load_result(result_path(out_dir, s)) is None]
    bar = _bar(len(todo), progress)

    def finished(spec, result):
        write_json_atomic(result_path(out_dir, spec), result)
        if bar is not None:
            bar.update(1)

    if todo:
        if backend == "local":
            _run_local(todo, runner, workers, finished)
        elif backend == "ray":
            _run_ray(todo, runner, address, finished)
        else:
            raise ValueError(f"backend must be 'local' or 'ray'; got {backend!r}")
    if bar is not None:
        bar.close()
    return [load_result(result_path(out_dir, s)) for s in specs]


def _run_local(todo, runner, workers, finished) -> None:
    workers = workers or os.cpu_count() or 1
    if workers == 1:
        for spec in todo:
            finished(spec, runner(spec))
        return
    # One BLAS thread per worker: the parallelism is across runs. Fork where available (cheap,
    # and works from any __main__); spawn elsewhere.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {pool.submit(runner, spec): spec for spec in todo}
        for future in cf.as_completed(futures):
            finished(futures[future], future.result())


def _run_ray(todo, runner, address, finished) -> None:
    try:
        import ray
    except ImportError as exc:
        raise ImportError("backend='ray' needs Ray: pip install 'bilevel-envs[ray]'") from exc
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"OPENBLAS_NUM_THREADS": "1"}})
    try:
        remote = ray.remote(num_cpus=1)(runner)
        pending = {remote.remote(spec): spec for spec in todo}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                finished(pending.pop(ref), ray.get(ref))
    finally:
        if started:
            ray.shutdown()


def _bar(total: int, enabled: bool):
    if not enabled or total == 0:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="run")


# ---------------------------------------------------------------------------- figure helpers
def pyplot():
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError("plots need matplotlib: pip install 'bilevel-envs[plot]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike, tight: bool = True) -> Path:
    """Write ``fig`` to ``path`` (PNG, 120 dpi, parent folders created; ``tight``: lay it out
    with ``tight_layout`` first) and close it."""
    plt = pyplot()
    if tight:
        fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def trailing_mean(values: np.ndarray, k: int) -> np.ndarray:
    """Trailing moving average (expanding window for the first ``k − 1`` points)."""
    c = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(idx - k, 0)
    return (c[idx] - c[lo]) / (idx - lo)


#: plot colour and display name of each leader algorithm (shared by every experiment)
ALGORITHM_COLOURS = {"hpgd": "tab:blue", "amd": "tab:orange", "zero_order": "tab:green"}
ALGORITHM_LABELS = {"hpgd": "HPGD", "amd": "AMD", "zero_order": "Zero-Order"}


def mean_se(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and standard error (``ddof = 0``, as the paper's Table 3) of per-seed values."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std() / np.sqrt(v.size))


def plot_mean_curves(ax, runs_by_algorithm: dict[str, list[dict]], key: str) -> None:
    """Mean ± s.e. over seeds of ``run["curve"][key]`` against ``run["curve"]["iteration"]``,
    one line per algorithm (runs of one algorithm share their evaluation iterations)."""
    for algorithm, runs in runs_by_algorithm.items():
        if not runs:
            continue
        iterations = np.asarray(runs[0]["curve"]["iteration"])
        values = np.array([r["curve"][key] for r in runs], dtype=np.float64)
        mean = values.mean(0)
        se = values.std(0) / np.sqrt(len(runs))
        colour = ALGORITHM_COLOURS.get(algorithm)
        ax.plot(iterations, mean, color=colour, label=ALGORITHM_LABELS.get(algorithm, algorithm))
        ax.fill_between(iterations, mean - se, mean + se, color=colour, alpha=0.25)


def multistart_maximum(value_and_grad: Callable[[np.ndarray], tuple[float, np.ndarray]],
                       low: np.ndarray, high: np.ndarray, starts: Sequence[np.ndarray]
                       ) -> tuple[float, np.ndarray]:
    """The best local maximum of a smooth objective on the box ``[low, high]`` found by
    L-BFGS-B (exact gradients) from each of ``starts``: ``(value, x)``. A reference for
    instances without a closed form (a lower bound on the true maximum)."""
    from scipy.optimize import minimize

    def negative(x):
        value, grad = value_and_grad(x)
        return -value, -np.asarray(grad, dtype=np.float64)

    best_value, best_x = -np.inf, None
    for start in starts:
        result = minimize(negative, np.clip(start, low, high), jac=True, method="L-BFGS-B",
                          bounds=list(zip(low, high)))
        if -result.fun > best_value:
            best_value, best_x = float(-result.fun), np.asarray(result.x)
    return best_value, best_x


# ---------------------------------------------------------------------------- experiment helpers
def add_runner_arguments(parser, out_default: str | None) -> None:
    """The options every ``bilevel-bench`` subcommand shares: ``--out``, ``--backend``,
    ``--address``, ``--workers``, ``--no-plots`` (``out_default=None``: the command picks)."""
    parser.add_argument("--out", default=out_default,
                        help="results directory" + (f" (default {out_default})"
                                                    if out_default else ""))
    parser.add_argument("--backend", choices=("local", "ray"), default="local")
    parser.add_argument("--address", default=None, help="Ray cluster address (--backend ray)")
    parser.add_argument("--workers", type=int, default=None,
                        help="local processes (default: cores)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG figures")


def instance_spec(defaults: dict[str, Any], hyperparameters: dict[str, dict[str, Any]],
                  instances: Sequence[str], instance: str, algorithm: str, seed: int,
                  overrides: dict[str, Any]) -> dict[str, Any]:
    """The spec of one run of an instance × algorithm experiment: ``defaults``, then the
    algorithm's ``hyperparameters``, then ``overrides`` (only of fields that exist).

    Raises:
        ValueError: naming the allowed values, for an unknown instance, algorithm or field.
    """
    if instance not in instances:
        raise ValueError(f"unknown instance {instance!r}; expected one of {sorted(instances)}")
    if algorithm not in hyperparameters:
        raise ValueError(f"algorithm must be one of {tuple(hyperparameters)}; got {algorithm!r}")
    spec = {**defaults, **hyperparameters[algorithm], "instance": instance,
            "algorithm": algorithm, "seed": int(seed)}
    unknown = set(overrides) - set(spec)
    if unknown:
        raise ValueError(f"unknown spec fields {sorted(unknown)}; allowed: {sorted(spec)}")
    spec.update(overrides)
    validate_instance_spec(spec, defaults, hyperparameters, instances)
    return spec


#: a spec field's allowed types and its range check
FieldCheck = tuple[type | tuple[type, ...], Callable[[Any], bool]]


def check_fields(spec: Any, checks: dict[str, FieldCheck], name: str) -> None:
    """Raise ``ValueError`` naming the field unless ``spec`` is a dict with exactly the fields
    of ``checks``, each of its types (a bool only where ``bool`` is asked for) and in range.
    ``name`` is the experiment, for the message."""
    if not isinstance(spec, dict):
        raise ValueError(f"a spec must be a dict; got {type(spec).__name__}")
    missing, unknown = set(checks) - set(spec), set(spec) - set(checks)
    if missing or unknown:
        raise ValueError(f"malformed {name} spec: missing {sorted(missing)}, unknown "
                         f"{sorted(unknown)}")
    for field, (types, ok) in checks.items():
        value = spec[field]
        if (isinstance(value, bool) and types is not bool) or not isinstance(value, types) \
                or not ok(value):
            raise ValueError(f"malformed {name} spec: {field}={value!r} is out of range")


def validate_instance_spec(spec: Any, defaults: dict[str, Any],
                           hyperparameters: dict[str, dict[str, Any]],
                           instances: Sequence[str]) -> None:
    """Raise ``ValueError`` naming the field if ``spec`` is not what :func:`instance_spec` makes:
    the same fields, a known instance and algorithm, a seed ``>= 0``, and every other value of
    the same kind as its default (finite numbers for numbers, strings for strings, ...)."""
    if not isinstance(spec, dict):
        raise ValueError(f"a spec must be a dict; got {type(spec).__name__}")
    name = defaults.get("experiment", "experiment")
    if spec.get("instance") not in instances:
        raise ValueError(f"malformed {name} spec: instance={spec.get('instance')!r}; expected "
                         f"one of {sorted(instances)}")
    if spec.get("algorithm") not in hyperparameters:
        raise ValueError(f"malformed {name} spec: algorithm={spec.get('algorithm')!r}; expected "
                         f"one of {sorted(hyperparameters)}")
    template = {**defaults, **hyperparameters[spec["algorithm"]], "instance": "", "algorithm": "",
                "seed": 0}
    missing, unknown = set(template) - set(spec), set(spec) - set(template)
    if missing or unknown:
        raise ValueError(f"malformed {name} spec: missing {sorted(missing)}, unknown "
                         f"{sorted(unknown)}")
    for field, default in template.items():
        value = spec[field]
        if not _same_kind(value, default) or (field == "seed" and value < 0):
            raise ValueError(f"malformed {name} spec: {field}={value!r} is out of range")


def _same_kind(value: Any, default: Any) -> bool:
    if default is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, (int, float)):
        return isinstance(value, (int, float)) and bool(np.isfinite(value))
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    return isinstance(value, type(default))


def group_runs(results: Sequence[dict[str, Any]]) -> dict[tuple[str, str], list[dict]]:
    """Results grouped by ``(spec["instance"], spec["algorithm"])``, in spec order."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in results:
        groups.setdefault((r["spec"]["instance"], r["spec"]["algorithm"]), []).append(r)
    return groups
