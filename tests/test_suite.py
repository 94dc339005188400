"""The versioned suite: tasks, references, evaluate() and ``bilevel-bench suite``.

Runs use tiny budgets (``budget_scale``) on the cheapest tasks; the numbers they check are the
record's own arithmetic and the exact ``J`` recomputed independently.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from bilevel_bench.cli import main
from bilevel_bench.experiments.suite import tune
from bilevel_bench.suite import TASKS, evaluate, get_task, load_references
from bilevel_bench.suite.evaluate import make_specs, rescore
from bilevel_bench.suite.tasks import APPLICATIONS, CURVE_FRACTIONS, TASK_IDS, make_problem
from bilevel_envs.exact import ExactSolver
from leaders import HPGD

TINY = "contract/project_2types"
SCALE = 0.01  # 1 % of the budget: a few leader iterations


# ---------------------------------------------------------------------------- tasks
def test_suite_tasks():
    assert len(set(TASK_IDS)) == len(TASKS)
    cells = {(t.env_kwargs["lam"], t.env_kwargs["beta"]) for t in TASKS
             if t.application == "four_rooms" and not t.headroom}
    assert cells == {(lam, beta) for lam in (0.001, 0.003, 0.005) for beta in (1.0, 3.0, 5.0)}
    for application in APPLICATIONS:
        assert any(t.headroom for t in TASKS if t.application == application), application
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        get_task("nope")
    with pytest.raises(ValueError, match="budget must be a positive integer"):
        type(TASKS[0])(**{**TASKS[0].__dict__, "budget": 0})


def test_references_are_consistent():
    refs = load_references()
    for task in TASKS:
        ref = refs[task.id]
        assert ref["J_star"] > ref["J_init"], task.id
        if task.tabular:
            assert ref["kind"] == "exact" and ref["method"]["starts"] >= 8
            best_start = max(ref["method"]["start_values"])
            if "polished" in ref["method"]:  # a run's final x led to a higher maximum
                assert ref["J_star"] > best_start
                assert ref["J_star"] > ref["method"]["polished"]["previous_J_star"] >= best_start
            else:
                assert ref["J_star"] == best_start
    # J* is the exact J of the shipped x*, recomputed independently
    problem = make_problem(get_task("contract/tree"))
    ref = refs["contract/tree"]
    assert ExactSolver(problem).objective(np.array(ref["x_star"])) == pytest.approx(
        ref["J_star"], abs=1e-9)
    # on the two-type project the multi-start ascent reaches the closed-form optimum
    from bilevel_envs.envs.contract_design.closed_forms import project_optimum

    optimum = project_optimum(make_problem(get_task(TINY))).objective
    assert refs[TINY]["J_star"] == pytest.approx(optimum, abs=1e-7)


# ---------------------------------------------------------------------------- evaluate
def test_evaluate_records(tmp_path):
    records = evaluate("hpgd", tasks=[TINY], seeds=2, budget_scale=SCALE, out=tmp_path,
                       hyperparameters={"learning_rate": 0.01, "estimator": "every_visit"})
    assert len(records) == 2 and [r["seed"] for r in records] == [0, 1]
    problem = make_problem(get_task(TINY))
    for r in records:
        assert r["status"] == "ok", r["error"]
        assert r["format"] == "bilevel-suite-run/1" and r["suite"] == "cbrl-suite"
        assert r["track"] == "sample" and r["application"] == "contract"
        assert r["budget"]["used"]["transitions"] + r["budget"]["used"]["follower_updates"] \
            >= r["budget"]["limit"]
        exact = ExactSolver(problem).objective(np.array(r["x_final"]))
        assert r["J_final"] == pytest.approx(exact, abs=1e-9)
        assert r["score"] == pytest.approx((exact - r["J_init"]) / (r["J_star"] - r["J_init"]))
        assert len(r["curve"]["score"]) == len(CURVE_FRACTIONS)
        assert r["curve"]["score"][-1] == pytest.approx(r["score"])
        assert r["auc"] == pytest.approx(np.trapezoid([0, *r["curve"]["score"]],
                                                      [0, *CURVE_FRACTIONS]))
    assert records[0]["x_final"] != records[1]["x_final"]  # seeds differ
    # resumable: the finished runs are read back, not rerun
    mtimes = sorted(p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*.json"))
    again = evaluate("hpgd", tasks=[TINY], seeds=2, budget_scale=SCALE, out=tmp_path,
                     hyperparameters={"learning_rate": 0.01, "estimator": "every_visit"})
    assert [r["x_final"] for r in again] == [r["x_final"] for r in records]
    assert sorted(p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*.json")) == mtimes


def test_rescore_renormalises_without_rerunning():
    record = evaluate("hpgd", tasks=[TINY], seeds=1, budget_scale=SCALE,
                      hyperparameters={"learning_rate": 0.01})[0]
    refs = load_references()
    same = rescore(record, refs)
    assert same["score"] == pytest.approx(record["score"])
    assert same["curve"]["score"] == pytest.approx(record["curve"]["score"])
    better = {TINY: {**refs[TINY], "J_star": refs[TINY]["J_star"] + 1.0}}
    moved = rescore(record, better)
    gap = better[TINY]["J_star"] - record["J_init"]
    assert moved["score"] == pytest.approx((record["J_final"] - record["J_init"]) / gap)
    assert moved["curve"]["score"][-1] == pytest.approx(moved["score"])
    assert moved["auc"] < record["auc"] and moved["J_final"] == record["J_final"]


class NaNLeader(HPGD):
    """HPGD that returns a NaN gradient."""

    def estimate_gradient(self) -> tuple[np.ndarray, dict[str, Any]]:
        grad, info = super().estimate_gradient()
        return grad * np.nan, info


def test_failed_runs_are_recorded_and_others_finish():
    records = evaluate(NaNLeader, tasks=[TINY], seeds=1, budget_scale=SCALE,
                       hyperparameters={"learning_rate": 0.01})
    assert records[0]["status"] == "failed"
    assert "non-finite gradient" in records[0]["error"]
    assert records[0]["score"] is None and records[0]["budget"]["used"]["transitions"] > 0
    # a local class (not importable by name) runs in this process; HPGD beside it finishes
    ok = evaluate(HPGD, tasks=[TINY], seeds=1, budget_scale=SCALE,
                  hyperparameters={"learning_rate": 0.01})
    assert ok[0]["status"] == "ok" and ok[0]["leader"] == "leaders.hpgd:HPGD"


def test_evaluate_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown task"):
        evaluate("hpgd", tasks=["four_rooms/nope"], seeds=1)
    with pytest.raises(ValueError, match="does not accept"):
        evaluate("hpgd", tasks=[TINY], seeds=1, hyperparameters={"learning_rat": 0.1})
    with pytest.raises(ValueError, match="budget_scale"):
        evaluate("hpgd", tasks=[TINY], seeds=1, budget_scale=0.0)
    with pytest.raises(ValueError, match="unknown task"):
        evaluate("hpgd", seeds=1, hyperparameters={"contract/nope": {"learning_rate": 0.1}})


# ---------------------------------------------------------------------------- the CLI
@pytest.mark.parametrize("argv, message", [
    (["--leader", "no_such_leader"], "no_such_leader"),
    (["--leader", "collections:OrderedDict"], "collections:OrderedDict"),
    (["--leader", "no.such.module:Class"], "no.such.module:Class"),
    (["--leader", "hpgd", "--leader-kwargs", '{"learning_rat": 1}'], "does not accept"),
    (["--leader", "hpgd", "--tasks", "contract/nope"], "invalid choice"),
    (["--leader", "hpgd", "--budget-scale", "0"], "--budget-scale"),
    (["--leader", "hpgd", "--budget-scale", "-1"], "--budget-scale"),
    (["--leader-kwargs", "[1]"], "--leader-kwargs"),
])
def test_cli_bad_input(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(["suite", *argv, "--out", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert message in err and err.startswith("bilevel-bench suite: error:")
    assert not out.exists()  # nothing ran, nothing written


def test_cli_quick_dry_run_says_small_budgets_do_not_reproduce(tmp_path, capsys):
    assert main(["suite", "--leader", "hpgd", "amd", "--quick", "--dry-run",
                 "--out", str(tmp_path / "q")]) == 0
    out = capsys.readouterr().out
    assert "14 runs (2 leaders × 4 tasks × 2 seeds" in out
    assert "2 runs not planned: leaders that need a decomposable J" in out  # AMD on rlhf/tiny
    assert "do not reproduce" in out and not (tmp_path / "q").exists()


def test_cli_runs_and_summarises(tmp_path, capsys):
    hyper = tmp_path / "h.json"
    hyper.write_text(json.dumps({"hpgd": {TINY: {"learning_rate": 0.01}}}))
    assert main(["suite", "--leader", "hpgd", "--tasks", TINY, "--seeds", "1",
                 "--budget-scale", str(SCALE), "--hyperparameters", str(hyper),
                 "--workers", "1", "--no-plots", "--out", str(tmp_path / "o")]) == 0
    text = (tmp_path / "o" / "suite.md").read_text()
    assert f"| sample | hpgd | {TINY} | 1 | 0 |" in text


def test_tune_selects_the_best_mean_score(tmp_path):
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"learning_rate": [0.1, 0.01], "max_grad_norm": [1.0]}))
    points = tune.load_grid(str(grid), ["hpgd"])["hpgd"]
    assert points == [{"learning_rate": 0.1, "max_grad_norm": 1.0},
                      {"learning_rate": 0.01, "max_grad_norm": 1.0}]

    def result(lr, score, status="ok"):
        return {"leader": "hpgd", "task": TINY, "status": status, "score": score,
                "spec": {"hyperparameters": {"learning_rate": lr}}}

    results = [result(0.1, 0.9), result(0.1, 0.1), result(0.01, 0.6), result(0.01, 0.5),
               result(1.0, 2.0), result(1.0, None, "failed")]
    assert tune.select(results) == {"hpgd": {TINY: {"learning_rate": 0.01}}}
    grid.write_text(json.dumps({"learning_rate": []}))
    with pytest.raises(ValueError, match="non-empty list"):
        tune.load_grid(str(grid), ["hpgd"])


def test_cli_tune_runs_the_grid_on_held_out_seeds(tmp_path, capsys):
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"learning_rate": [0.01, 0.1]}))
    out = tmp_path / "t"
    assert main(["suite", "--leader", "hpgd", "--tune", str(grid), "--tune-seeds", "1",
                 "--tasks", TINY, "--seeds", "1", "--budget-scale", str(SCALE),
                 "--workers", "1", "--no-plots", "--out", str(out)]) == 0
    selection = json.loads((out / tune.SELECTION_FILE).read_text())
    assert selection["seeds"] == [tune.TUNE_SEED_OFFSET] and selection["runs"] == 2
    chosen = selection["selection"]["hpgd"][TINY]
    records = [json.loads(p.read_text()) for p in (out / "runs").glob("*.json")]
    final = [r for r in records if r["seed"] == 0]
    assert len(records) == 3 and final[0]["spec"]["hyperparameters"] == chosen
    assert "tuning: 2 runs" in capsys.readouterr().out


def test_task_decomposable_flag_matches_the_problem():
    for task in TASKS:
        assert task.decomposable == make_problem(task).decomposable, task.id


def test_leaders_that_need_a_decomposable_j_skip_trajectory_level_tasks():
    """AMD and RT-Q do not apply to RLHF: those pairs are not planned (not failed runs)."""
    specs = make_specs("amd", ["rlhf/tiny", TINY, "rlhf/grid"], seeds=2)
    assert {s.task for s in specs} == {TINY} and len(specs) == 2
    assert {s.task for s in make_specs("hpgd", ["rlhf/tiny", TINY], seeds=1)} == {"rlhf/tiny", TINY}
    for leader in ("amd", "hpgd_rtq"):
        with pytest.raises(ValueError, match="needs a decomposable J"):
            make_specs(leader, ["rlhf/tiny"], seeds=1)


def test_decomposable_only_agrees_with_what_each_builtin_leader_refuses():
    """The suite plans by ``Leader.decomposable_only``; each built-in leader's constructor must
    refuse a trajectory-level problem exactly when that flag is set."""
    import gymnasium as gym

    from leaders.registry import BUILTIN_LEADERS

    for name, cls in BUILTIN_LEADERS.items():
        env = gym.make("bilevel/RLHF-v0", instance="tiny")
        assert not env.unwrapped.problem.decomposable
        if cls.decomposable_only:
            with pytest.raises(ValueError, match="trajectory-level objective"):
                cls(env)
        else:
            cls(env)
