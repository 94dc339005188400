"""Aggregates, leaderboard and plots of the suite's run records (bilevel_bench.suite): point
estimates against hand computations and rliable, coverage of the stratified-bootstrap intervals
on synthetic scores with a known truth, ranking power, record validation, exact leaderboard
text, figures."""

import copy
import json
import sys

import numpy as np
import pytest
from scipy import optimize, stats

from bilevel_bench.suite import aggregate as agg_mod
from bilevel_bench.suite.aggregate import (
    aggregate,
    bootstrap_interval,
    curve_on_fractions,
    iqm,
    mean,
    median,
    optimality_gap,
    profile,
    rliable_status,
)
from bilevel_bench.suite.leaderboard import write_leaderboard
from bilevel_bench.suite.plots import write_plots
from bilevel_bench.suite.run_records import check_records, load_records

RLIABLE, RLIABLE_REASON = rliable_status()
needs_rliable = pytest.mark.skipif(not RLIABLE, reason=f"rliable not importable: "
                                                        f"{RLIABLE_REASON}")
BACKENDS = ["scipy", pytest.param("rliable", marks=needs_rliable)]


def make_record(task, leader, seed, score, *, track="sample", application="four_rooms",
                status="ok", limit=1000, used=None, points=5):
    """A valid run record with J_init = 1, J* = 3 and a learning curve score·√(fraction)."""
    frac = np.linspace(0.0, 1.0, points)
    curve = score * np.sqrt(frac)
    ok = status == "ok"
    return {"format": "bilevel-suite-run/1", "suite": "cbrl-suite", "suite_version": 1,
            "task": task, "application": application, "leader": leader, "track": track,
            "seed": seed, "hyperparameters": {"learning_rate": 0.1}, "status": status,
            "error": None if ok else "RuntimeError: diverged",
            "budget": {"limit": limit, "used": used or {
                "transitions": limit, "follower_updates": 10, "model_queries": 0}},
            "x_final": [0.5] if ok else None, "J_init": 1.0,
            "J_final": 1.0 + 2.0 * score if ok else None, "J_final_se": None, "J_star": 3.0,
            "score": float(score) if ok else None,
            "curve": {"cost": (frac * limit).tolist(), "score": curve.tolist()} if ok else None,
            "auc": float(np.trapezoid(curve, frac)) if ok else None, "wall_seconds": 0.1}


def grid_records(scores, leader="a", track="sample", **kwargs):
    """Records of ``scores[seed, task]`` (NaN: a failed run), tasks t0, t1, ..."""
    return [make_record(f"t{m}", leader, s, 0.0 if np.isnan(v) else v, track=track,
                        status="failed" if np.isnan(v) else "ok", **kwargs)
            for s, row in enumerate(np.asarray(scores, dtype=float)) for m, v in enumerate(row)]


# Two tasks × four seeds; task t1's seed 0 failed (scores 0 by convention).
HAND = np.array([[0.1, np.nan], [0.2, 0.5], [0.9, 0.6], [1.4, 0.3]])


# ------------------------------------------------------------------------ point estimates
@pytest.mark.parametrize("backend", BACKENDS)
def test_point_estimates_equal_a_hand_computation(backend):
    a = aggregate(grid_records(HAND), reps=200, backend=backend).tracks["sample"]["a"]
    # pooled, sorted: 0 .1 .2 .3 .5 .6 .9 1.4; IQM drops two at each end
    assert a.iqm.point == pytest.approx((0.2 + 0.3 + 0.5 + 0.6) / 4)
    assert a.mean.point == pytest.approx((2.6 / 4 + 1.4 / 4) / 2)  # mean of task means
    assert a.median.point == pytest.approx(0.5)  # median of the two task means .65, .35
    assert a.optimality_gap.point == pytest.approx(1 - 3.6 / 8)  # 1.4 counts as 1
    assert a.profile[0, np.searchsorted(a.taus, 0.5)] == pytest.approx(3 / 8)  # .6 .9 1.4
    assert (a.runs, a.failed) == (8, 1)
    assert a.per_task["t1"].mean == pytest.approx(1.4 / 4) and a.per_task["t1"].failed == 1
    for v in (a.iqm, a.mean, a.median, a.optimality_gap, a.auc_iqm):
        assert v.low <= v.point <= v.high


@pytest.mark.parametrize("n_runs", [1, 2, 3, 4, 5, 7, 9])
def test_iqm_is_scipys_trimmed_mean_of_the_pooled_runs(n_runs):
    batch = np.random.default_rng(n_runs).normal(size=(3, n_runs, 3, 2))
    expected = stats.trim_mean(batch.reshape(3, -1, 2), 0.25, axis=1)
    assert iqm(batch) == pytest.approx(expected)


@needs_rliable
def test_metrics_equal_rliables():
    from rliable import metrics

    scores = np.random.default_rng(0).normal(0.5, 0.3, size=(7, 5))  # 35 runs: ⌊35/4⌋ cut
    batch = scores[None]
    assert iqm(batch)[0, 0] == pytest.approx(metrics.aggregate_iqm(scores))
    assert mean(batch)[0, 0] == pytest.approx(metrics.aggregate_mean(scores))
    assert median(batch)[0, 0] == pytest.approx(metrics.aggregate_median(scores))
    assert optimality_gap(batch)[0, 0] == pytest.approx(metrics.aggregate_optimality_gap(scores))
    taus = np.linspace(0, 1, 11)
    assert profile(taus)(batch)[0] == pytest.approx(
        [np.mean(scores > t) for t in taus])


@needs_rliable
def test_both_backends_agree_within_monte_carlo_error():
    scores = np.random.default_rng(1).normal(0.5, 0.3, size=(10, 4))
    rl = bootstrap_interval(scores, iqm, reps=4000, backend="rliable")[:, 0]
    sp = bootstrap_interval(scores, iqm, reps=4000, backend="scipy")[:, 0]
    assert rl[0] == sp[0]
    # the 2.5 % quantile of 4,000 resamples: its s.e. is ≈ 0.1 of the interval's half width
    assert rl[1:] == pytest.approx(sp[1:], abs=0.3 * (sp[2] - sp[1]) / 2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_seed_same_interval_and_the_global_generator_untouched(backend):
    scores = np.random.default_rng(2).uniform(size=(6, 3))
    np.random.seed(123)
    state = np.random.get_state()[1].copy()
    one = bootstrap_interval(scores, mean, reps=300, seed=5, backend=backend)
    assert np.array_equal(np.random.get_state()[1], state)
    assert np.array_equal(one, bootstrap_interval(scores, mean, reps=300, seed=5,
                                                  backend=backend))
    assert not np.array_equal(one, bootstrap_interval(scores, mean, reps=300, seed=6,
                                                      backend=backend))


def test_one_run_per_task_gives_the_point_as_interval():
    out = bootstrap_interval(np.array([[0.2, 0.4, 0.9]]), mean, reps=50)
    assert np.allclose(out, 0.5)


# ------------------------------------------------------------------------ coverage and power
MU = np.array([0.1, 0.3, 0.5, 0.7, 0.9])
SD = np.array([0.1, 0.15, 0.2, 0.25, 0.3])


def true_iqm():
    """IQM of the equal-weight mixture of N(MU_m, SD_m): the mean between its quartiles."""
    cdf = lambda x: stats.norm.cdf((x - MU) / SD).mean()  # noqa: E731
    lo, hi = (optimize.brentq(lambda x, q=q: cdf(x) - q, -5, 5, xtol=1e-14) for q in (.25, .75))
    a, b = (lo - MU) / SD, (hi - MU) / SD
    partial = MU * (stats.norm.cdf(b) - stats.norm.cdf(a)) - SD * (stats.norm.pdf(b)
                                                                   - stats.norm.pdf(a))
    return partial.mean() / 0.5


@pytest.mark.parametrize("backend", ["scipy", pytest.param("rliable", marks=[
    needs_rliable, pytest.mark.slow])])
@pytest.mark.parametrize("level", [0.95, 0.5])
def test_intervals_cover_the_true_iqm_and_mean_at_their_level(level, backend):
    """200 synthetic experiments, 5 tasks × 40 seeds: the coverage of the IQM's and the mean's
    intervals is within 3 binomial s.e. of the level (0.95: ± 0.046; 0.5: ± 0.106). The 0.5
    level is the control that the intervals are calibrated, not merely wide. (With 10 seeds per
    task the percentile intervals undercover: 0.915 for the IQM over 1,000 experiments.)"""
    truth = np.array([true_iqm(), MU.mean()])
    both = lambda batch: np.concatenate([iqm(batch), mean(batch)], axis=1)  # noqa: E731
    rng = np.random.default_rng(0)
    n_exp, covered = 200, np.zeros(2)
    for i in range(n_exp):
        data = rng.normal(MU, SD, size=(40, 5))
        _, low, high = bootstrap_interval(data, both, reps=500, seed=i, confidence=level,
                                          backend=backend)
        covered += (low <= truth) & (truth <= high)
    tol = 3 * np.sqrt(level * (1 - level) / n_exp)
    assert np.all(np.abs(covered / n_exp - level) <= tol), covered / n_exp


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_clearly_better_leader_is_ranked_apart_and_an_equal_one_is_not(backend):
    rng = np.random.default_rng(3)
    draw = lambda: rng.normal(MU, SD, size=(10, 5))  # noqa: E731
    records = (grid_records(draw(), "base") + grid_records(draw() + 0.3, "shifted")
               + grid_records(draw(), "same"))
    leaders = aggregate(records, reps=300, backend=backend).tracks["sample"]
    assert list(leaders)[0] == "shifted"
    base, shifted, same = leaders["base"], leaders["shifted"], leaders["same"]
    for metric in ("iqm", "mean"):
        assert getattr(shifted, metric).low > getattr(base, metric).high
        assert getattr(same, metric).low < getattr(base, metric).high  # negative control
        assert getattr(base, metric).low < getattr(same, metric).high


# ------------------------------------------------------------------------ records
def test_failed_runs_count_as_zero_and_tracks_stay_apart():
    records = (grid_records([[0.8, 0.8], [np.nan, 0.8]], "x")
               + grid_records([[0.2, 0.2], [0.2, 0.2]], "x", track="model"))
    records[2].update(curve={"cost": [], "score": []}, traceback="...",
                      budget={"limit": None, "used": None})  # failed before its env existed
    out = aggregate(records, reps=100)
    sample, model = out.tracks["sample"]["x"], out.tracks["model"]["x"]
    assert sample.failed == 1 and model.failed == 0
    assert sample.budget_used["transitions"] == 1000  # median of 1000, 1000, 1000 and none
    assert sample.budget_fraction == pytest.approx(1.01)  # (1000 + 10) / 1000
    assert model.budget_fraction == 0.0  # these records count no model queries
    assert sample.mean.point == pytest.approx(0.6) and model.mean.point == pytest.approx(0.2)
    assert np.all(sample.efficiency[0] <= 0.8 + 1e-12)
    assert json.loads(json.dumps(out.to_dict()))["tracks"]["model"]["x"]["runs"] == 4


def test_curves_are_interpolated_on_budget_fractions():
    r = make_record("t", "a", 0, 0.5, limit=200)
    r["curve"] = {"cost": [50.0, 150.0], "score": [0.2, 0.4]}
    got = curve_on_fractions(r, np.array([0.0, 0.125, 0.25, 0.5, 0.75, 1.0]))
    assert got == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.4])


def _mutated(change):
    record = make_record("t0", "a", 0, 0.5)
    change(record)
    return record


@pytest.mark.parametrize("change, field", [
    (lambda r: r.update(format="other/1"), "'format'"),
    (lambda r: r.pop("score"), "'score' is missing"),
    (lambda r: r.update(track="oracle"), "'track'"),
    (lambda r: r.update(application="chess"), "'application'"),
    (lambda r: r.update(seed=-1), "'seed'"),
    (lambda r: r.update(task=""), "'task'"),
    (lambda r: r["budget"].update(limit=0), "'budget.limit'"),
    (lambda r: r["budget"].update(used=None), "'budget'"),
    (lambda r: r.update(status="failed", error="E", budget={"limit": 0, "used": None}),
     "'budget.limit'"),
    (lambda r: r["budget"]["used"].pop("model_queries"), "'budget.used.model_queries'"),
    (lambda r: r.update(score=0.7), "'score' must be"),
    (lambda r: r.update(score=float("nan")), "'score'"),
    (lambda r: r.update(J_star=1.0), "'J_star' must exceed"),
    (lambda r: r.update(status="failed", error=None), "'error'"),
    (lambda r: r["curve"].update(score=[0.1]), "'curve'"),
    (lambda r: r["curve"].update(cost=[0, 500, 400, 800, 1000]), "'curve'"),
    (lambda r: r.update(hyperparameters=None), "'hyperparameters'"),
])
def test_invalid_records_are_rejected_naming_the_field(change, field):
    with pytest.raises(ValueError, match=field) as info:
        check_records([make_record("t1", "a", 0, 0.5), _mutated(change)])
    assert "run record 1" in str(info.value)


def test_invalid_record_sets_and_arguments_are_rejected():
    ok = make_record("t0", "a", 0, 0.5)
    with pytest.raises(ValueError, match="at least one"):
        check_records([])
    with pytest.raises(ValueError, match="same run"):
        check_records([ok, copy.deepcopy(ok)])
    with pytest.raises(ValueError, match="suite versions"):
        check_records([ok, {**make_record("t0", "a", 1, 0.5), "suite_version": 2}])
    with pytest.raises(ValueError, match="has application"):
        check_records([ok, make_record("t0", "b", 0, 0.5, application="tax")])
    with pytest.raises(ValueError, match="single dict"):
        check_records(ok)
    with pytest.raises(ValueError, match="same number of runs"):
        aggregate([ok, make_record("t0", "a", 1, 0.5), make_record("t1", "a", 0, 0.5)])
    for kwargs, name in (({"reps": 0}, "reps"), ({"backend": "numpy"}, "backend"),
                         ({"confidence": 1.0}, "confidence"), ({"taus": []}, "taus")):
        with pytest.raises(ValueError, match=name):
            aggregate([ok], **kwargs)


def test_without_rliable_auto_falls_back_to_scipy(monkeypatch):
    monkeypatch.setitem(sys.modules, "rliable", None)  # import rliable now raises ImportError
    assert agg_mod.resolve_backend("auto") == "scipy"
    with pytest.raises(ImportError, match=r"bilevel-envs\[rliable\]"):
        agg_mod.resolve_backend("rliable")
    assert aggregate(grid_records(HAND), reps=50).backend == "scipy"


def test_load_records_reads_run_files_and_skips_others(tmp_path):
    records = grid_records([[0.1, 0.2]])
    for i, r in enumerate(records):
        (tmp_path / "runs").mkdir(exist_ok=True)
        (tmp_path / "runs" / f"{i}.json").write_text(json.dumps(r))
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    assert load_records(tmp_path) == records
    with pytest.raises(ValueError, match="folder"):
        load_records(tmp_path / "missing")


# ------------------------------------------------------------------------ leaderboard, plots
LEADERBOARD = """\
# Leaderboard: cbrl-suite v1

Seeds: 0, 1. Intervals: 95 % stratified-bootstrap percentile intervals over tasks × seeds \
(scipy, 200 resamples, bootstrap seed 0).

Command: `bilevel-bench suite --quick`

Normalised score: (J(x_final) − J(x_init)) / (J* − J(x_init)), 0 at the start point, 1 at the \
reference optimum J*. IQM: interquartile mean over all runs; mean: over the tasks' mean scores; \
optimality gap: 1 − mean of min(score, 1) over all runs; AUC: area under the normalised \
learning curve against the budget fraction. A failed run is a run: it scores 0. Budget used: \
median over runs of the share of the task's limit spent (transitions + follower updates on the \
sample-based track, exact-model queries on the model-based one; above 100 % when the last \
iteration went past the limit).

## Sample-based track (no exact-model access)

| leader | runs (failed) | IQM [95 % CI] | mean [CI] | optimality gap [CI] | AUC IQM [CI] | \
budget used |
|---|---|---|---|---|---|---|
| `hpgd` | 4 (0) | 0.60 [0.60, 0.60] | 0.60 [0.60, 0.60] | 0.40 [0.40, 0.40] | \
0.39 [0.39, 0.39] | 101 % |
| `mine` | 4 (2) | 0.45 [0.45, 0.45] | 0.45 [0.45, 0.45] | 0.55 [0.55, 0.55] | \
0.29 [0.29, 0.29] | 101 % |

Mean normalised score ± s.e. over seeds per task (failed runs count as 0):

| task | application | `hpgd` | `mine` |
|---|---|---|---|
| `t1` | four_rooms | 0.30 ± 0.00 | 0.90 ± 0.00 |
| `t0` | tax | 0.90 ± 0.00 | 0.00 ± 0.00 (2 failed) |

## Model-based track (exact-model queries)

| leader | runs (failed) | IQM [95 % CI] | mean [CI] | optimality gap [CI] | AUC IQM [CI] | \
budget used |
|---|---|---|---|---|---|---|
| `amd` | 2 (0) | 1.00 [1.00, 1.00] | 1.00 [1.00, 1.00] | 0.00 [0.00, 0.00] | \
0.64 [0.64, 0.64] | 50 % |

Mean normalised score ± s.e. over seeds per task (failed runs count as 0):

| task | application | `amd` |
|---|---|---|
| `t1` | four_rooms | 1.00 ± 0.00 |
"""


def small_suite():
    """Runs whose scores are equal within each task: every resample is the data, so the exact
    text does not depend on the bootstrap's random stream."""
    model = {"transitions": 0, "follower_updates": 0, "model_queries": 500}
    apps = {"t0": "tax", "t1": "four_rooms"}
    records = [make_record(t, "hpgd", s, v, application=apps[t])
               for s in (0, 1) for t, v in (("t0", 0.9), ("t1", 0.3))]
    records += [make_record("t0", "mine", s, 0.0, status="failed", application="tax")
                for s in (0, 1)]
    records += [make_record("t1", "mine", s, 0.9, application="four_rooms") for s in (0, 1)]
    records += [make_record("t1", "amd", s, 1.0, track="model", used=model,
                            application="four_rooms") for s in (0, 1)]
    return records


def test_leaderboard_text_is_exact_and_independent_of_record_order(tmp_path):
    records = small_suite()
    text = write_leaderboard(records, tmp_path / "lb.md", command="bilevel-bench suite --quick",
                             reps=200, backend="scipy")
    assert text == LEADERBOARD
    assert (tmp_path / "lb.md").read_text() == LEADERBOARD
    shuffled = [records[i] for i in np.random.default_rng(0).permutation(len(records))]
    assert write_leaderboard(shuffled, tmp_path / "again.md", command="bilevel-bench suite "
                             "--quick", reps=200, backend="scipy") == LEADERBOARD


def test_leaderboard_flags_different_task_sets_and_bad_arguments(tmp_path):
    records = grid_records([[0.5, 0.6]], "a") + grid_records([[0.5]], "b")
    assert "different task sets" in write_leaderboard(records, tmp_path / "lb.md", reps=50)
    with pytest.raises(ValueError, match="command"):
        write_leaderboard(records, tmp_path / "lb.md", command=3)
    agg = aggregate(records, reps=50)
    with pytest.raises(ValueError, match="aggregate arguments"):
        write_leaderboard(agg, tmp_path / "lb.md", reps=10)


def test_plots_are_written_as_non_empty_pngs(tmp_path):
    rng = np.random.default_rng(4)
    records = (grid_records(rng.uniform(size=(3, 3)), "hpgd")
               + grid_records(rng.uniform(size=(3, 3)), "my_leader")
               + grid_records(rng.uniform(size=(3, 1)), "amd", track="model"))
    paths = write_plots(records, tmp_path / "figs", reps=100, backend="scipy")
    assert sorted(paths) == ["aggregate_intervals", "performance_profiles", "sample_efficiency"]
    for path in paths.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
