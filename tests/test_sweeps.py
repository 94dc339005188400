"""The sweep runner: resumable, atomic, validated up front; local processes and Ray agree."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from bilevel_bench.experiments.table3 import run_spec, table3_spec
from bilevel_bench.runner import result_path, run_specs, spec_key


def tiny_specs(n_seeds=2, iterations=40):
    return [table3_spec(algorithm, 0.003, 1.0, seed, 0.5, 0.5 if algorithm == "zero_order"
                        else None, iterations=iterations, eval_last=10, eval_every=5,
                        n_rollout_steps=100)
            for algorithm in ("hpgd", "amd", "zero_order") for seed in range(n_seeds)]


class Counting:
    """A runner that records which specs it executed."""

    def __init__(self):
        self.keys = []

    def __call__(self, spec):
        self.keys.append(spec_key(spec))
        return run_spec(spec)


def test_finished_specs_are_not_rerun_and_files_are_complete(tmp_path):
    specs = tiny_specs()
    first = Counting()
    results = run_specs(specs, tmp_path, workers=1, progress=False, runner=first)
    assert len(first.keys) == len(specs) and all(r is not None for r in results)
    again = Counting()
    assert run_specs(specs, tmp_path, workers=1, progress=False, runner=again) == results
    assert again.keys == []
    files = list((tmp_path / "runs").iterdir())
    assert sorted(f.name for f in files) == sorted(f"{spec_key(s)}.json" for s in specs)
    for f in files:
        json.loads(f.read_text())  # every file is complete JSON


def test_same_seed_same_numbers_across_worker_counts(tmp_path):
    specs = tiny_specs(n_seeds=1)
    one = run_specs(specs, tmp_path / "a", workers=1, progress=False)
    two = run_specs(specs, tmp_path / "b", workers=2, progress=False)
    for a, b in zip(one, two):
        assert a["metrics"] == b["metrics"] and a["x_final"] == b["x_final"]


@pytest.mark.parametrize("mutate, pattern", [
    (lambda s: s.update(lam=-1.0), r"lam=-1.0 is out of range"),
    (lambda s: s.pop("seed"), r"missing \['seed'\]"),
    (lambda s: s.update(experiment="table4"), r"naming one experiment.*'table4'"),
    (lambda s: s.update(learning_rate="fast"), r"learning_rate='fast' is out of range"),
])
def test_malformed_spec_fails_before_anything_runs(tmp_path, mutate, pattern):
    specs = tiny_specs(n_seeds=1)
    mutate(specs[-1])
    counting = Counting()
    with pytest.raises((ValueError, KeyError), match=pattern):
        run_specs(specs, tmp_path, workers=1, progress=False, runner=counting)
    assert not (tmp_path / "runs").exists() and counting.keys == []


def test_unknown_experiment_is_named(tmp_path):
    specs = tiny_specs(n_seeds=1)
    for spec in specs:
        spec["experiment"] = "table4"
    with pytest.raises(KeyError, match=r"unknown experiment 'table4'; expected one of"):
        run_specs(specs, tmp_path, workers=1, progress=False)


SWEEP_SCRIPT = """
import sys
from bilevel_bench.runner import run_specs
from tests.test_sweeps import tiny_specs
run_specs(tiny_specs(n_seeds=3, iterations=400), sys.argv[1], workers=1, progress=False)
"""


def test_killed_sweep_resumes_running_each_unfinished_spec_once(tmp_path):
    specs = tiny_specs(n_seeds=3, iterations=400)
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.Popen([sys.executable, "-c", SWEEP_SCRIPT, str(tmp_path)], env=env)
    runs = tmp_path / "runs"
    deadline = time.time() + 120
    while time.time() < deadline:
        done = [f for f in runs.glob("*.json")] if runs.exists() else []
        if len(done) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {f.name: f.stat().st_mtime_ns for f in runs.glob("*.json")}
    assert 2 <= len(finished) < len(specs), "kill the sweep mid-way"
    assert not any(f.name.startswith(".tmp") and f.suffix == ".json"
                   for f in runs.iterdir() if f.name in finished)
    counting = Counting()
    results = run_specs(specs, tmp_path, workers=1, progress=False, runner=counting)
    assert all(r is not None for r in results)
    assert sorted(counting.keys) == sorted(spec_key(s) for s in specs
                                           if f"{spec_key(s)}.json" not in finished)
    for name, mtime in finished.items():  # nothing finished was redone
        assert (runs / name).stat().st_mtime_ns == mtime
    # Leftover temporary files of the killed run do not count as results.
    assert all(result_path(tmp_path, s).exists() for s in specs)


def test_ray_backend_runs_the_same_sweep(tmp_path):
    ray = pytest.importorskip("ray")
    specs = tiny_specs(n_seeds=1)
    local = run_specs(specs, tmp_path / "local", workers=1, progress=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = run_specs(specs, tmp_path / "ray", backend="ray", progress=False)
    finally:
        ray.shutdown()
    for a, b in zip(local, remote):
        assert a["metrics"] == b["metrics"] and a["x_final"] == b["x_final"]


@pytest.mark.parametrize("experiment", ["contract", "rlhf"])
def test_instance_experiments_validate_their_specs(experiment):
    from bilevel_bench.experiments import experiment_module

    module = experiment_module(experiment)
    make = module.contract_spec if experiment == "contract" else module.rlhf_spec
    instance = next(iter(module.INSTANCES))
    spec = make(instance, "hpgd", 0)
    module.validate_spec(spec)
    for mutate, pattern in [(lambda s: s.update(seed=-1), "seed=-1"),
                            (lambda s: s.update(iterations=float("nan")), "iterations=nan"),
                            (lambda s: s.update(instance="nowhere"), "instance='nowhere'"),
                            (lambda s: s.pop("algorithm"), "algorithm=None"),
                            (lambda s: s.update(colour="blue"), r"unknown \['colour'\]")]:
        bad = dict(spec)
        mutate(bad)
        with pytest.raises(ValueError, match=pattern):
            module.validate_spec(bad)
