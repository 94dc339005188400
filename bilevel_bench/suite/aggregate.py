"""Aggregate statistics of suite runs: IQM, mean, median and optimality gap of the normalised
score, the area under the learning curve, performance profiles and sample-efficiency curves, each
with a stratified-bootstrap confidence interval over tasks × seeds (Agarwal et al., 2021, "Deep
RL at the edge of the statistical precipice"; the `rliable` package).

Input: the suite's run records (format ``bilevel-suite-run/1``, checked by
:func:`bilevel_bench.suite.run_records.check_records`). Output: a :class:`SuiteAggregate` with
one :class:`LeaderAggregate` per track (``sample`` and ``model``, never pooled) and leader.

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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats as sps

from bilevel_bench.stats import mean_se
from bilevel_bench.suite.run_records import (
    APPLICATIONS,
    BUDGET_COUNTERS,
    TRACKS,
    check_records,
    finite_list,
)
from bilevel_envs.validation import check_choice, check_float, check_int

BACKENDS = ("auto", "rliable", "scipy")
#: default thresholds of the performance profiles and budget fractions of the efficiency curves
DEFAULT_TAUS = np.linspace(0.0, 1.0, 41)
DEFAULT_FRACTIONS = np.linspace(0.0, 1.0, 21)


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
    holds the median of each counter of ``budget.used`` over the runs, ``budget_fraction`` the
    median share of the limit spent (:func:`budget_fraction`).
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
    budget_fraction: float
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


def budget_fraction(record: Mapping[str, Any]) -> float:
    """The share of its budget limit the run spent, in the limit's unit: ``transitions +
    follower_updates`` on the sample track, ``model_queries`` on the model track (above 1 when
    the last iteration went past the limit); 0 for a run that failed before its env existed."""
    used, limit = record["budget"]["used"], record["budget"]["limit"]
    if used is None:
        return 0.0
    cost = (used["transitions"] + used["follower_updates"] if record["track"] == "sample"
            else used["model_queries"])
    return cost / limit


def final_score(record: Mapping[str, Any]) -> float:
    """The run's normalised score; 0 for a failed run (a failed run is a run)."""
    return 0.0 if record["status"] == "failed" else float(record["score"])


def all_statistics(taus: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Every aggregate of a leader in one statistic, so that one bootstrap (one set of
    resamples) serves them all. Input ``(B, runs, tasks, 2 + P)``: the final score, the AUC and
    the curve at ``P`` budget fractions; output ``(B, 5 + len(taus) + P)``: IQM, mean, median,
    optimality gap of the score, IQM of the AUC, the profile, the IQM of the curve."""
    fraction_above = profile(taus)

    def statistic(batch: np.ndarray) -> np.ndarray:
        score, auc, curve = batch[..., 0], batch[..., 1], batch[..., 2:]
        return np.concatenate([*(fn(score) for fn in METRICS.values()), iqm(auc),
                               fraction_above(score), iqm(curve)], axis=1)

    return statistic


def _leader_aggregate(track: str, leader: str, runs: list[dict[str, Any]], taus: np.ndarray,
                      fractions: np.ndarray, interval: dict[str, Any]) -> LeaderAggregate:
    tasks = task_order(runs)
    data = _run_matrix(f"track {track!r}, leader {leader!r}", runs, tasks, lambda r: [
        final_score(r), 0.0 if r["status"] == "failed" else r["auc"],
        *curve_on_fractions(r, fractions)])
    est = bootstrap_interval(data, all_statistics(taus), **interval)
    names = [*METRICS, "auc_iqm"]
    per_task = {}
    for m, task in enumerate(tasks):
        task_runs = [r for r in runs if r["task"] == task]
        per_task[task] = TaskSummary(task_runs[0]["application"], *mean_se(data[:, m, 0]),
                                     len(task_runs),
                                     sum(r["status"] == "failed" for r in task_runs))
    return LeaderAggregate(
        track=track, leader=leader, tasks=tuple(tasks),
        seeds=tuple(sorted({r["seed"] for r in runs})), runs=len(runs),
        failed=sum(r["status"] == "failed" for r in runs),
        **{name: _interval(est[:, k:k + 1]) for k, name in enumerate(names)},
        taus=taus, profile=est[:, len(names):len(names) + len(taus)],
        fractions=fractions, efficiency=est[:, len(names) + len(taus):],
        budget_used={c: float(np.median([(r["budget"]["used"] or {}).get(c, 0) for r in runs]))
                     for c in BUDGET_COUNTERS},
        budget_fraction=float(np.median([budget_fraction(r) for r in runs])),
        per_task=per_task)


def aggregate(records: Iterable[Mapping[str, Any]], *, reps: int = 2000, seed: int = 0,
              confidence: float = 0.95, taus: Sequence[float] | np.ndarray | None = None,
              fractions: Sequence[float] | np.ndarray | None = None,
              backend: str = "auto") -> SuiteAggregate:
    """Aggregate suite run records per track and leader (see the module's conventions). All
    intervals of one leader come from one set of bootstrap resamples.

    Args:
        records: run records (:func:`check_records` validates them first).
        reps: bootstrap resamples; seed: the bootstrap's seed (same seed, same intervals).
        confidence: level of the intervals (default 95 %).
        taus: thresholds of the performance profile (default 41 points in [0, 1]).
        fractions: budget fractions of the efficiency curves (default 21 points in [0, 1]).
        backend: ``"auto"`` (rliable if it imports, else scipy), ``"rliable"`` or ``"scipy"``.

    Raises:
        ValueError: for invalid records or arguments, naming them, before any bootstrap.
    """
    interval = dict(reps=check_int("reps", reps, 1), seed=check_int("seed", seed, 0),
                    confidence=check_float("confidence", confidence, 0.0, 1.0, low_open=True,
                                           high_open=True),
                    backend=resolve_backend(backend))
    records = check_records(records)
    taus = np.sort(finite_list("aggregate", "taus", DEFAULT_TAUS if taus is None else taus))
    fractions = np.sort(finite_list("aggregate", "fractions",
                                     DEFAULT_FRACTIONS if fractions is None else fractions))
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["track"], r["leader"]), []).append(r)
    tracks: dict[str, dict[str, LeaderAggregate]] = {}
    for track in TRACKS:
        leaders = [_leader_aggregate(t, leader, runs, taus, fractions, interval)
                   for (t, leader), runs in sorted(groups.items()) if t == track]
        if leaders:
            ranked = sorted(leaders, key=lambda a: (-a.iqm.point, a.leader))
            tracks[track] = {a.leader: a for a in ranked}
    return SuiteAggregate(suite=records[0]["suite"], suite_version=records[0]["suite_version"],
                          seeds=tuple(sorted({r["seed"] for r in records})),
                          backend=interval["backend"], reps=reps, seed=seed,
                          confidence=confidence, tracks=tracks)


def as_aggregate(records: Iterable[Mapping[str, Any]] | SuiteAggregate,
                 **aggregate_kwargs: Any) -> SuiteAggregate:
    """``records`` aggregated with ``aggregate_kwargs``, or an already computed
    :class:`SuiteAggregate` as is (the leaderboard and the figures accept either, so that one
    bootstrap serves both).

    Raises:
        ValueError: for ``aggregate_kwargs`` given with a :class:`SuiteAggregate`, and what
            :func:`aggregate` raises for records.
    """
    if isinstance(records, SuiteAggregate):
        if aggregate_kwargs:
            raise ValueError("aggregate arguments apply to records, not to a SuiteAggregate; "
                             f"got {sorted(aggregate_kwargs)}")
        return records
    return aggregate(records, **aggregate_kwargs)
