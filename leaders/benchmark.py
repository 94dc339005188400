"""The sweep runner shared by every experiment: plain-data specs, results keyed by a hash of the
spec and written atomically, local processes by default or a Ray cluster.

A *spec* is a JSON-serialisable dict that fully determines one run. Results are written by the
driver as runs finish (one JSON file per spec under ``<out>/runs/``), so a sweep that is killed
at any point and restarted with the same specs runs each unfinished spec exactly once and loses
nothing. Experiments (``leaders.experiments``) supply the per-spec ``runner`` function.
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


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON via a temporary file and ``os.replace``: readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


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
            default: the runner of the spec's ``"experiment"`` (see :mod:`leaders.experiments`).
    """
    from leaders.experiments import runner_for

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


