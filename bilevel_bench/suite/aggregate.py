"""Aggregate statistics of suite runs: IQM, mean, median and optimality gap of the normalised
score, the area under the learning curve, performance profiles and sample-efficiency curves, each
with a stratified-bootstrap confidence interval over tasks × seeds (Agarwal et al., 2021, "Deep
RL at the edge of the statistical precipice"; the `rliable` package).

Input: the suite's run records (format ``bilevel-suite-run/1``, one JSON object per run, checked
by :func:`check_records`). Output: a :class:`SuiteAggregate` with one :class:`LeaderAggregate`
per track (``sample`` and ``model``, never pooled) and leader.

Conventions:
    * **A failed run is a run.** It scores 0 (the value of the start point ``x_init``), its AUC
      is 0 and its learning curve is 0, whatever the record holds. Dropping it would reward a
      leader that crashes where it does badly; the count of failed runs is reported beside.
    * **Stratified bootstrap:** each resample draws, for every task separately, as many runs as
      that task has, with replacement (the tasks are fixed, the seeds random). Every task of a
      leader must therefore hold the same number of runs. Intervals are percentile intervals.
    * **Backends:** ``rliable`` (``library.get_interval_estimates``) when it imports, else
      ``scipy.stats.bootstrap`` with one sample per task (independent resampling of each sample
      is exactly the stratified bootstrap). Both compute the point estimates with the same
      functions below, which equal ``rliable.metrics``' (tested). ``rliable`` draws its indices
      from NumPy's global generator; it is seeded here and restored afterwards.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as sps

from bilevel_bench.stats import mean_se
from bilevel_envs.validation import check_choice, check_float, check_int

FORMAT = "bilevel-suite-run/1"
TRACKS = ("sample", "model")
APPLICATIONS = ("four_rooms", "contract", "rlhf", "tax")
BACKENDS = ("auto", "rliable", "scipy")
BUDGET_COUNTERS = ("transitions", "follower_updates", "model_queries")
#: default thresholds of the performance profiles and budget fractions of the efficiency curves
DEFAULT_TAUS = np.linspace(0.0, 1.0, 41)
DEFAULT_FRACTIONS = np.linspace(0.0, 1.0, 21)
_SCORE_RTOL = 1e-6  # a record's score must match (J_final − J_init)/(J* − J_init) this closely


# ------------------------------------------------------------------------------ records
def _real(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_))


def _finite_list(where: str, name: str, value: Any) -> np.ndarray:
    arr = np.asarray(value, dtype=object)
    if arr.ndim != 1 or arr.size == 0 or not all(_real(v) and math.isfinite(v) for v in arr):
        raise ValueError(f"{where}: field '{name}' must be a non-empty list of finite numbers; "
                         f"got {value!r}"[:300])
    return arr.astype(np.float64)


def check_record(record: Any, where: str = "run record") -> dict[str, Any]:
    """``record`` if it is a valid run record of format ``bilevel-suite-run/1``.

    A run with ``status == "ok"`` needs finite ``J_final``, ``score``, ``auc`` and a learning
    curve (``cost`` non-decreasing, ≥ 0, as long as ``score``); a failed run needs an ``error``
    text and may leave those fields null. ``score`` must equal
    ``(J_final − J_init)/(J_star − J_init)`` (relative tolerance 1e-6), with ``J_star > J_init``.

    Raises:
        ValueError: naming the record (``where``, task, leader, seed) and the field at fault.
    """
    if not isinstance(record, Mapping):
        raise ValueError(f"{where} must be a JSON object (dict); got {type(record).__name__}")
    fmt = record.get("format")
    if fmt != FORMAT:
        raise ValueError(f"{where}: field 'format' must be {FORMAT!r}; got {fmt!r}")
    where = (f"{where} (task {record.get('task')!r}, leader {record.get('leader')!r}, "
             f"seed {record.get('seed')!r})")

    def get(name: str) -> Any:
        if name not in record:
            raise ValueError(f"{where}: field '{name}' is missing")
        return record[name]

    def check(name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(f"field '{name}'", get(name), *args, **kwargs)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None

    for name in ("suite", "task", "leader"):
        if not isinstance(get(name), str) or not get(name):
            raise ValueError(f"{where}: field '{name}' must be a non-empty string; "
                             f"got {get(name)!r}")
    check("suite_version", check_int, 1)
    check("seed", check_int, 0)
    check("application", check_choice, APPLICATIONS)
    check("track", check_choice, TRACKS)
    status = check("status", check_choice, ("ok", "failed"))
    if not isinstance(get("hyperparameters"), Mapping):
        raise ValueError(f"{where}: field 'hyperparameters' must be an object (dict)")
    error = get("error")
    if not (error is None or isinstance(error, str)) or (status == "failed" and not error):
        raise ValueError(f"{where}: field 'error' must be null or a string, and a failed run's "
                         f"error text; got {error!r}")
    budget = get("budget")
    if not isinstance(budget, Mapping) or not isinstance(budget.get("used"), Mapping):
        raise ValueError(f"{where}: field 'budget' must be {{'limit': int, 'used': {{...}}}}; "
                         f"got {budget!r}")
    try:
        check_int("field 'budget.limit'", budget.get("limit"), 1)
        for counter in BUDGET_COUNTERS:
            check_int(f"field 'budget.used.{counter}'", budget["used"].get(counter), 0)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    j_init = check("J_init", check_float)
    j_star = check("J_star", check_float)
    if not j_star > j_init:
        raise ValueError(f"{where}: field 'J_star' must exceed 'J_init' (the score divides by "
                         f"J_star − J_init); got J_star={j_star!r}, J_init={j_init!r}")
    check("wall_seconds", check_float, 0.0)
    if status == "failed":
        return dict(record)
    j_final = check("J_final", check_float)
    score = check("score", check_float)
    check("auc", check_float)
    if get("J_final_se") is not None:
        check("J_final_se", check_float, 0.0)
    if not isinstance(get("x_final"), list):
        raise ValueError(f"{where}: field 'x_final' must be a list; got {get('x_final')!r}")
    expected = (j_final - j_init) / (j_star - j_init)
    if abs(score - expected) > _SCORE_RTOL * max(1.0, abs(expected)):
        raise ValueError(f"{where}: field 'score' must be (J_final − J_init)/(J_star − J_init) "
                         f"= {expected!r}; got {score!r}")
    curve = get("curve")
    if not isinstance(curve, Mapping):
        raise ValueError(f"{where}: field 'curve' must be {{'cost': [...], 'score': [...]}}")
    cost = _finite_list(where, "curve.cost", curve.get("cost"))
    _finite_list(where, "curve.score", curve.get("score"))
    if len(curve["score"]) != cost.size or cost[0] < 0 or np.any(np.diff(cost) < 0):
        raise ValueError(f"{where}: field 'curve' must have as many scores as costs and costs "
                         "that are ≥ 0 and non-decreasing")
    return dict(record)


def check_records(records: Iterable[Any]) -> list[dict[str, Any]]:
    """Every record checked (:func:`check_record`), of one suite and version, no run twice.

    Raises:
        ValueError: for an empty list, an invalid record, mixed suites or versions (their scores
            are not comparable), or two records of one (track, leader, task, seed).
    """
    if isinstance(records, (str, bytes, Mapping)):
        raise ValueError("records must be a list of run records (dicts); got a single "
                         f"{type(records).__name__}")
    checked = [check_record(r, f"run record {i}") for i, r in enumerate(records)]
    if not checked:
        raise ValueError("records must hold at least one run record; got none")
    suites = sorted({(r["suite"], r["suite_version"]) for r in checked})
    if len(suites) > 1:
        raise ValueError(f"records mix suites or suite versions {suites}; aggregate one at a time")
    seen: dict[tuple, int] = {}
    apps: dict[str, str] = {}
    for i, r in enumerate(checked):
        key = (r["track"], r["leader"], r["task"], r["seed"])
        if key in seen:
            raise ValueError(f"run records {seen[key]} and {i} are the same run "
                             f"(track, leader, task, seed) = {key}")
        seen[key] = i
        if apps.setdefault(r["task"], r["application"]) != r["application"]:
            raise ValueError(f"run record {i}: task {r['task']!r} has application "
                             f"{r['application']!r}, earlier records {apps[r['task']]!r}")
    return checked


def load_records(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """The run records of the JSON files under ``folder`` (recursively, sorted by path) whose
    ``format`` is a suite-run format; other JSON files there are skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"folder must be an existing directory; got {str(folder)!r}")
    records = []
    for path in sorted(folder.rglob("*.json")):
        data = json.loads(path.read_text())
        if isinstance(data, dict) and str(data.get("format", "")).startswith("bilevel-suite-run/"):
            records.append(data)
    return records


# ------------------------------------------------------------------------------ metrics
# Each metric maps a batch of score arrays, shape (B, runs, tasks, *rest), to shape (B, K).
def iqm(batch: np.ndarray) -> np.ndarray:
    """Interquartile mean of all runs of all tasks pooled (``rliable.metrics.aggregate_iqm``:
    ``scipy.stats.trim_mean`` cutting ``⌊n/4⌋`` values at each end)."""
    pooled = batch.reshape(batch.shape[0], -1, *batch.shape[3:])
    n = pooled.shape[1]
    cut = n // 4
    if cut == 0:
        return pooled.mean(axis=1).reshape(batch.shape[0], -1)
    # trim_mean's own partition, without its argument handling (a bootstrap calls this often)
    middle = np.partition(pooled, (cut, n - cut - 1), axis=1)[:, cut:n - cut]
    return middle.mean(axis=1).reshape(batch.shape[0], -1)


def mean(batch: np.ndarray) -> np.ndarray:
    """Mean over tasks of the per-task mean scores."""
    return batch.mean(axis=(1, 2)).reshape(batch.shape[0], -1)


def median(batch: np.ndarray) -> np.ndarray:
    """Median over tasks of the per-task mean scores (``rliable.metrics.aggregate_median``)."""
    return np.median(batch.mean(axis=1), axis=1).reshape(batch.shape[0], -1)


def optimality_gap(batch: np.ndarray) -> np.ndarray:
    """``1 − mean(min(score, 1))``: how far the runs fall short of the reference optimum."""
    return (1.0 - np.minimum(batch, 1.0).mean(axis=(1, 2))).reshape(batch.shape[0], -1)


def profile(taus: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """The performance profile (score distribution): fraction of runs with score > τ, per τ."""
    taus = np.asarray(taus, dtype=np.float64)

    def fraction_above(batch: np.ndarray) -> np.ndarray:
        return (batch[..., None] > taus).mean(axis=(1, 2)).reshape(batch.shape[0], -1)

    return fraction_above


METRICS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "iqm": iqm, "mean": mean, "median": median, "optimality_gap": optimality_gap}


# ------------------------------------------------------------------------------ bootstrap
def rliable_status() -> tuple[bool, str]:
    """Whether ``rliable`` imports here, and why not. A broken install (e.g. its dependency
    ``arch`` on a pandas it does not support raises ``TypeError`` on import) counts as absent."""
    try:
        from rliable import library  # noqa: F401
    except Exception as exc:  # any import-time failure means: use the scipy path
        return False, f"{type(exc).__name__}: {exc}"
    return True, ""


def resolve_backend(backend: str) -> str:
    """``"rliable"`` or ``"scipy"``: ``"auto"`` is rliable when it imports."""
    backend = check_choice("backend", backend, BACKENDS)
    if backend == "scipy":
        return backend
    ok, reason = rliable_status()
    if backend == "rliable" and not ok:
        raise ImportError("backend='rliable' needs rliable: pip install 'bilevel-envs[rliable]' "
                          f"({reason})")
    return "rliable" if ok else "scipy"


@contextlib.contextmanager
def _numpy_global_seed(seed: int):
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def bootstrap_interval(data: np.ndarray, statistic: Callable[[np.ndarray], np.ndarray], *,
                       reps: int = 2000, seed: int = 0, confidence: float = 0.95,
                       backend: str = "auto") -> np.ndarray:
    """Point estimate and stratified-bootstrap percentile interval of ``statistic``.

    Args:
        data: scores, shape ``(runs, tasks, *rest)``; column ``m`` holds the runs of task ``m``.
        statistic: maps shape ``(B, runs, tasks, *rest)`` to ``(B, K)``.
        reps: bootstrap resamples; seed: their seed (same seed, same interval).
        confidence: the interval's level; backend: ``"auto"``, ``"rliable"`` or ``"scipy"``.

    Returns:
        Array ``(3, K)``: point estimate, lower and upper bound. With one run per task every
        resample is the data itself and the interval is the point.
    """
    data = np.asarray(data, dtype=np.float64)
    reps = check_int("reps", reps, 1)
    seed = check_int("seed", seed, 0)
    confidence = check_float("confidence", confidence, 0.0, 1.0, low_open=True, high_open=True)
    point = statistic(data[None])[0]
    n_runs, n_tasks = data.shape[:2]
    if n_runs == 1:
        return np.stack([point, point, point])
    if resolve_backend(backend) == "rliable":
        from rliable import library as rly

        with _numpy_global_seed(seed):
            _, ci = rly.get_interval_estimates(
                {"runs": data}, lambda s: statistic(s[None])[0], reps=reps,
                confidence_interval_size=confidence)
        return np.stack([point, ci["runs"][0], ci["runs"][1]])

    def resampled(*indices: np.ndarray, axis: int = -1) -> np.ndarray:
        cols = [data[np.atleast_2d(i).astype(np.intp), m] for m, i in enumerate(indices)]
        return statistic(np.stack(cols, axis=2)).T  # scipy wants the resamples last

    rng = np.random.default_rng(seed)
    seeding = ({"rng": rng} if "rng" in inspect.signature(sps.bootstrap).parameters
               else {"random_state": rng})
    res = sps.bootstrap([np.arange(n_runs)] * n_tasks, resampled, n_resamples=reps,
                        vectorized=True, paired=False, confidence_level=confidence,
                        method="percentile", batch=max(1, 2_000_000 // data.size), **seeding)
    low, high = res.confidence_interval
    return np.stack([point, np.reshape(low, -1), np.reshape(high, -1)])


# ------------------------------------------------------------------------------ aggregates
@dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval ``[low, high]``."""

    point: float
    low: float
    high: float


@dataclass(frozen=True)
class TaskSummary:
    """Mean normalised score ± s.e. (``ddof = 0``, as the project's tables) over one task's runs;
    failed runs count as 0."""

    application: str
    mean: float
    se: float
    runs: int
    failed: int


@dataclass(frozen=True)
class LeaderAggregate:
    """The aggregates of one leader on one track.

    ``iqm``, ``mean``, ``median``, ``optimality_gap`` are of the normalised final score,
    ``auc_iqm`` the IQM of the runs' area under the learning curve; ``profile`` is
    ``(3, len(taus))`` (fraction of runs with score > τ: point, low, high) and ``efficiency``
    ``(3, len(fractions))`` (IQM of the score at each fraction of the budget). ``budget_used``
    holds the median of each counter of ``budget.used`` over the runs.
    """

    track: str
    leader: str
    tasks: tuple[str, ...]
    seeds: tuple[int, ...]
    runs: int
    failed: int
    iqm: Interval
    mean: Interval
    median: Interval
    optimality_gap: Interval
    auc_iqm: Interval
    taus: np.ndarray
    profile: np.ndarray
    fractions: np.ndarray
    efficiency: np.ndarray
    budget_used: dict[str, float]
    per_task: dict[str, TaskSummary]


@dataclass(frozen=True)
class SuiteAggregate:
    """All aggregates of one suite's records: ``tracks[track][leader]`` (tracks in the order
    sample, model; leaders by decreasing IQM, then name), with how they were computed."""

    suite: str
    suite_version: int
    seeds: tuple[int, ...]
    backend: str
    reps: int
    seed: int
    confidence: float
    tracks: dict[str, dict[str, LeaderAggregate]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, floats) for JSON."""
        def plain(value: Any) -> Any:
            if isinstance(value, np.ndarray):
                return value.tolist()
            if isinstance(value, (Interval, TaskSummary, LeaderAggregate)):
                return {k: plain(v) for k, v in vars(value).items()}
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            if isinstance(value, tuple):
                return [plain(v) for v in value]
            return value

        return {k: plain(v) for k, v in vars(self).items()}


def _interval(estimate: np.ndarray) -> Interval:
    return Interval(*(float(v) for v in estimate[:, 0]))


def task_order(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The tasks of ``records`` by application (as :data:`APPLICATIONS`), then name."""
    apps = {r["task"]: r["application"] for r in records}
    return sorted(apps, key=lambda t: (APPLICATIONS.index(apps[t]), t))


def curve_on_fractions(record: Mapping[str, Any], fractions: np.ndarray) -> np.ndarray:
    """The run's normalised score at each budget fraction: linear between the curve's points,
    0 at no cost (the start point), the last value after the last point; 0 for a failed run."""
    if record["status"] == "failed":
        return np.zeros(len(fractions))
    frac = np.asarray(record["curve"]["cost"], dtype=np.float64) / record["budget"]["limit"]
    score = np.asarray(record["curve"]["score"], dtype=np.float64)
    if frac[0] > 0:
        frac, score = np.insert(frac, 0, 0.0), np.insert(score, 0, 0.0)
    return np.interp(fractions, frac, score)


def _run_matrix(where: str, runs: Sequence[Mapping[str, Any]], tasks: Sequence[str],
                value: Callable[[Mapping[str, Any]], Any]) -> np.ndarray:
    """``value(run)`` arranged ``(runs, tasks, ...)``, runs of each task sorted by seed."""
    by_task = {t: sorted((r for r in runs if r["task"] == t), key=lambda r: r["seed"])
               for t in tasks}
    counts = {t: len(v) for t, v in by_task.items()}
    if len(set(counts.values())) > 1:
        raise ValueError(f"{where}: every task needs the same number of runs for the stratified "
                         f"bootstrap; got {counts}")
    return np.stack([np.stack([np.asarray(value(r), dtype=np.float64) for r in by_task[t]])
                     for t in tasks], axis=1)


def final_score(record: Mapping[str, Any]) -> float:
    """The run's normalised score; 0 for a failed run (a failed run is a run)."""
    return 0.0 if record["status"] == "failed" else float(record["score"])


def aggregate(records: Iterable[Mapping[str, Any]], *, reps: int = 2000, seed: int = 0,
              confidence: float = 0.95, taus: Sequence[float] | np.ndarray | None = None,
              fractions: Sequence[float] | np.ndarray | None = None,
              backend: str = "auto") -> SuiteAggregate:
    """Aggregate suite run records per track and leader (see the module's conventions).

    Args:
        records: run records (:func:`check_records` validates them first).
        reps: bootstrap resamples per interval; seed: the bootstrap's seed.
        confidence: level of the intervals (default 95 %).
        taus: thresholds of the performance profile (default 41 points in [0, 1]).
        fractions: budget fractions of the efficiency curves (default 21 points in [0, 1]).
        backend: ``"auto"`` (rliable if it imports, else scipy), ``"rliable"`` or ``"scipy"``.

    Raises:
        ValueError: for invalid records or arguments, naming them.
    """
    records = check_records(records)
    taus = np.sort(_finite_list("aggregate", "taus", DEFAULT_TAUS if taus is None else taus))
    fractions = np.sort(_finite_list("aggregate", "fractions",
                                     DEFAULT_FRACTIONS if fractions is None else fractions))
    used_backend = resolve_backend(backend)
    interval = dict(reps=reps, seed=seed, confidence=confidence, backend=used_backend)
    tracks: dict[str, dict[str, LeaderAggregate]] = {}
    for track in TRACKS:
        leaders: dict[str, LeaderAggregate] = {}
        for leader in sorted({r["leader"] for r in records if r["track"] == track}):
            runs = [r for r in records if r["track"] == track and r["leader"] == leader]
            tasks = task_order(runs)
            where = f"track {track!r}, leader {leader!r}"
            scores = _run_matrix(where, runs, tasks, final_score)
            auc = _run_matrix(where, runs, tasks,
                              lambda r: 0.0 if r["status"] == "failed" else r["auc"])
            curves = _run_matrix(where, runs, tasks, lambda r: curve_on_fractions(r, fractions))
            est = {name: _interval(bootstrap_interval(scores, fn, **interval))
                   for name, fn in METRICS.items()}
            per_task = {}
            for m, task in enumerate(tasks):
                failed = sum(r["status"] == "failed" for r in runs if r["task"] == task)
                app = next(r["application"] for r in runs if r["task"] == task)
                per_task[task] = TaskSummary(app, *mean_se(scores[:, m]), scores.shape[0], failed)
            leaders[leader] = LeaderAggregate(
                track=track, leader=leader, tasks=tuple(tasks),
                seeds=tuple(sorted({r["seed"] for r in runs})), runs=len(runs),
                failed=sum(r["status"] == "failed" for r in runs), **est,
                auc_iqm=_interval(bootstrap_interval(auc, iqm, **interval)),
                taus=taus, profile=bootstrap_interval(scores, profile(taus), **interval),
                fractions=fractions, efficiency=bootstrap_interval(curves, iqm, **interval),
                budget_used={c: float(np.median([r["budget"]["used"][c] for r in runs]))
                             for c in BUDGET_COUNTERS},
                per_task=per_task)
        if leaders:
            ranked = sorted(leaders.values(), key=lambda a: (-a.iqm.point, a.leader))
            tracks[track] = {a.leader: a for a in ranked}
    return SuiteAggregate(suite=records[0]["suite"], suite_version=records[0]["suite_version"],
                          seeds=tuple(sorted({r["seed"] for r in records})),
                          backend=used_backend, reps=reps, seed=seed, confidence=confidence,
                          tracks=tracks)
