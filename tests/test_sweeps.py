"""The sweep engine and the specs: resumable, atomic, one run per spec across concurrent
invocations, workers that die with the driver, validated specs; local processes and Ray
agree."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import ClassVar

import pytest

from bilevel_bench.checks import Boolean, Integer, Nullable, Real, SpecError, Text
from bilevel_bench.claims import claim_path, try_claim
from bilevel_bench.experiments.table3.run import run_spec
from bilevel_bench.experiments.table3.spec import Table3Spec
from bilevel_bench.runner import RunFailed, run_specs
from bilevel_bench.specs import Spec, spec_field
from bilevel_bench.storage import result_path, write_atomic, write_json_atomic

ENV = dict(os.environ, PYTHONPATH=os.getcwd())


def tiny_specs(n_seeds=2, iterations=40):
    return [Table3Spec(algorithm=algorithm, lam=0.003, beta=1.0, seed=seed, learning_rate=0.5,
                       perturbation_constant=0.5 if algorithm == "zero_order" else None,
                       iterations=iterations, eval_last=10, eval_every=5, n_rollout_steps=100)
            for algorithm in ("hpgd", "amd", "zero_order") for seed in range(n_seeds)]


class Counting:
    """A runner that records which specs it executed."""

    def __init__(self):
        self.keys = []

    def __call__(self, spec):
        self.keys.append(spec.key)
        return run_spec(spec)


@dataclass(frozen=True, kw_only=True)
class EchoSpec(Spec):
    """A spec whose run appends ``key pid`` to ``log``, sleeps, and returns its seed."""

    EXPERIMENT: ClassVar[str] = "echo"
    VERSION: ClassVar[int] = 1
    seed: int = spec_field(check=Integer(0), help="seed")
    seconds: float = spec_field(0.0, check=Real(0.0, 120.0), help="sleep")
    log: str | None = spec_field(None, check=Nullable(Text()), help="file the run appends to")
    fail: bool = spec_field(False, check=Boolean(), help="raise after the sleep")


def echo(spec: EchoSpec) -> dict:
    if spec.log:
        with open(spec.log, "a") as f:
            f.write(f"{spec.key} {os.getpid()}\n")
    time.sleep(spec.seconds)
    if spec.fail:
        raise RuntimeError(f"seed {spec.seed} failed on purpose")
    return {"seed": spec.seed, "pid": os.getpid()}


def echo_specs(n, seconds, log):
    return [EchoSpec(seed=i, seconds=seconds, log=str(log)) for i in range(n)]


# ---------------------------------------------------------------------------- resuming
def test_finished_specs_are_not_rerun_and_files_are_complete(tmp_path):
    specs = tiny_specs()
    first = Counting()
    results = run_specs(specs, tmp_path, first, workers=1, progress=False)
    assert len(first.keys) == len(specs) and all(r is not None for r in results)
    assert [r["spec"] for r in results] == [s.to_dict() for s in specs]
    again = Counting()
    assert run_specs(specs, tmp_path, again, workers=1, progress=False) == results
    assert again.keys == []
    files = list((tmp_path / "runs").iterdir())
    assert sorted(f.name for f in files) == sorted(f"{s.key}.json" for s in specs)
    for f in files:
        json.loads(f.read_text())  # every file is complete JSON; no claim is left behind


def test_same_seed_same_numbers_across_worker_counts(tmp_path):
    specs = tiny_specs(n_seeds=1)
    one = run_specs(specs, tmp_path / "a", run_spec, workers=1, progress=False)
    two = run_specs(specs, tmp_path / "b", run_spec, workers=2, progress=False)
    for a, b in zip(one, two):
        assert a["metrics"] == b["metrics"] and a["x_final"] == b["x_final"]


def test_a_failing_run_names_its_spec_keeps_the_others_and_releases_its_claim(tmp_path):
    specs = [EchoSpec(seed=0), EchoSpec(seed=1, fail=True), EchoSpec(seed=2)]
    with pytest.raises(RunFailed, match=rf"spec {specs[1].key} failed.*on purpose"):
        run_specs(specs, tmp_path, echo, workers=1, progress=False)
    assert result_path(tmp_path, specs[0].key).exists()
    assert not list((tmp_path / "runs").glob("*.claim"))
    results = run_specs(specs[::2], tmp_path, echo, workers=1, progress=False)
    assert [r["seed"] for r in results] == [0, 2]


def test_a_write_in_progress_is_invisible_to_result_globs(tmp_path):
    """While a result is being written (and after a kill mid-write, which leaves the temporary
    file behind) the folder's ``*.json`` glob — what the loaders read — does not see it."""
    target = result_path(tmp_path, "abc")
    seen = []

    def write(f):
        f.write("{")  # a partial JSON document
        seen.extend(p.name for p in target.parent.glob("*.json"))
        seen.append(len(list(target.parent.iterdir())))

    write_atomic(target, lambda f: (write(f), f.write("}")))
    assert seen == [1]  # the temporary file exists, no *.json yet
    assert [p.name for p in target.parent.glob("*.json")] == ["abc.json"]


SWEEP_SCRIPT = """
import sys
from bilevel_bench.experiments.table3.run import run_spec
from bilevel_bench.runner import run_specs
from tests.test_sweeps import tiny_specs
run_specs(tiny_specs(n_seeds=3, iterations=400), sys.argv[1], run_spec, workers=1,
          progress=False)
"""


def test_killed_sweep_resumes_running_each_unfinished_spec_once(tmp_path):
    specs = tiny_specs(n_seeds=3, iterations=400)
    proc = subprocess.Popen([sys.executable, "-c", SWEEP_SCRIPT, str(tmp_path)], env=ENV)
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
    assert not any(name.startswith(".tmp") for name in finished)
    counting = Counting()  # the killed run's claim is stale: taken over, not waited for
    results = run_specs(specs, tmp_path, counting, workers=1, progress=False)
    assert all(r is not None for r in results)
    assert sorted(counting.keys) == sorted(s.key for s in specs
                                           if f"{s.key}.json" not in finished)
    for name, mtime in finished.items():  # nothing finished was redone
        assert (runs / name).stat().st_mtime_ns == mtime
    assert all(result_path(tmp_path, s.key).exists() for s in specs)


# ---------------------------------------------------------------------------- claims
CONCURRENT_SCRIPT = """
import json, sys
from bilevel_bench.runner import run_specs
from tests.test_sweeps import echo, echo_specs
out, log, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
results = run_specs(echo_specs(8, 0.3, log), out, echo, workers=workers, progress=False,
                    poll_seconds=0.05)
print(json.dumps([r["seed"] for r in results]))
"""


def test_two_invocations_into_one_folder_run_each_spec_once(tmp_path):
    log = tmp_path / "log"
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT_SCRIPT, str(tmp_path / "out"),
                               str(log), str(workers)], env=ENV, stdout=subprocess.PIPE,
                              text=True) for workers in (1, 2)]
    outputs = [proc.communicate(timeout=120)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0]
    for output in outputs:  # each invocation returns every result
        assert json.loads(output) == list(range(8))
    keys = [line.split()[0] for line in log.read_text().splitlines()]
    assert sorted(keys) == sorted(s.key for s in echo_specs(8, 0.3, log))  # each once


def test_a_live_claim_is_waited_for_and_a_stale_one_taken_over(tmp_path):
    log = tmp_path / "log"
    live, stale, free = echo_specs(3, 0.0, log)
    (tmp_path / "runs").mkdir()
    claim_path(tmp_path, stale.key).write_text('{"pid": 1, "host": "gone"}')  # nobody's lock
    held = try_claim(claim_path(tmp_path, live.key))  # another "invocation" runs this one
    assert held is not None and try_claim(claim_path(tmp_path, live.key)) is None
    results = {}
    thread = threading.Thread(target=lambda: results.update(all=run_specs(
        [live, stale, free], tmp_path, echo, workers=1, progress=False, poll_seconds=0.02)))
    thread.start()
    time.sleep(0.5)
    assert thread.is_alive()  # waiting for the live claim
    write_json_atomic(result_path(tmp_path, live.key), {"key": live.key, "seed": "theirs"})
    held.release()
    thread.join(timeout=30)
    assert [r["seed"] for r in results["all"]] == ["theirs", 1, 2]
    assert sorted(line.split()[0] for line in log.read_text().splitlines()) == sorted(
        [stale.key, free.key])
    assert not list((tmp_path / "runs").glob("*.claim"))


ORPHAN_SCRIPT = """
import sys
from bilevel_bench.runner import run_specs
from tests.test_sweeps import echo, echo_specs
run_specs(echo_specs(2, 100.0, sys.argv[2]), sys.argv[1], echo, workers=2, progress=False)
"""


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in "ZX"  # a zombie is dead
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killing_the_driver_kills_its_workers(tmp_path):
    log = tmp_path / "log"
    driver = subprocess.Popen([sys.executable, "-c", ORPHAN_SCRIPT, str(tmp_path / "out"),
                               str(log)], env=ENV)
    deadline = time.time() + 60
    while time.time() < deadline and (not log.exists() or
                                      len(log.read_text().splitlines()) < 2):
        time.sleep(0.05)
    workers = [int(line.split()[1]) for line in log.read_text().splitlines()]
    assert len(workers) == 2 and driver.pid not in workers
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    deadline = time.time() + 10
    while time.time() < deadline and not all(_gone(pid) for pid in workers):
        time.sleep(0.05)
    alive = [pid for pid in workers if not _gone(pid)]
    for pid in alive:  # do not leave them behind if the test fails
        os.kill(pid, signal.SIGKILL)
    assert alive == []


# ---------------------------------------------------------------------------- specs
@pytest.mark.parametrize("change, pattern", [
    ({"lam": -1.0}, r"lam must be a finite number > 0; got -1.0"),
    ({"learning_rate": "fast"}, r"learning_rate must be a finite number > 0; got 'fast'"),
    ({"iterations": 0}, r"iterations must be an integer in \[1, 1000000\]; got 0"),
    ({"iterations": 5.0}, r"iterations must be an integer"),
    ({"seed": True}, r"seed must be an integer"),
    ({"move_prob": float("nan")}, r"move_prob must be a finite number in \[0, 1\]"),
    ({"estimator": "magic"}, r"estimator must be one of 'paper', 'every_visit'"),
    ({"perturbation_constant": 0.5}, r"perturbation_constant applies to zero_order only"),
    ({"eval_last": 50}, r"eval_last must be <= iterations \(40\)"),
    ({"n_envs": 10_000, "n_rollout_steps": 10_000}, r"n_rollout_steps × n_envs must be"),
])
def test_malformed_specs_are_refused_naming_the_field_and_range(change, pattern):
    spec = tiny_specs(n_seeds=1)[0]
    with pytest.raises(SpecError, match=pattern):
        spec.replace(**change)


def test_specs_round_trip_as_plain_json_and_reject_unknown_or_missing_fields():
    spec = tiny_specs(n_seeds=1)[-1]
    data = json.loads(json.dumps(spec.to_dict()))
    assert Table3Spec.from_dict(data) == spec and Table3Spec.from_dict(data).key == spec.key
    assert data["experiment"] == "table3" and data["spec_version"] == Table3Spec.VERSION
    for bad, pattern in [({**data, "colour": 1}, r"unknown \['colour'\]"),
                         ({k: v for k, v in data.items() if k != "seed"}, r"missing \['seed'\]"),
                         ({**data, "experiment": "table4"}, r"experiment must be 'table3'"),
                         ({**data, "spec_version": 1},
                          rf"spec_version must be {Table3Spec.VERSION} "),
                         ([1, 2], "must be a dict")]:
        with pytest.raises(SpecError, match=pattern):
            Table3Spec.from_dict(bad)
    with pytest.raises(SpecError, match="perturbation_constant is required for zero_order"):
        Table3Spec.from_dict({**data, "perturbation_constant": None})


def test_equal_specs_have_equal_keys_whatever_the_number_types():
    a = Table3Spec(algorithm="amd", lam=0.003, beta=1, seed=0, learning_rate=1)
    b = Table3Spec(algorithm="amd", lam=0.003, beta=1.0, seed=0, learning_rate=1.0)
    assert a.key == b.key and len(a.key) == 16 and a.beta == 1.0 and type(a.beta) is float
    assert a.replace(seed=1).key != a.key


def test_ray_backend_runs_the_same_sweep(tmp_path):
    ray = pytest.importorskip("ray")
    specs = tiny_specs(n_seeds=1)
    local = run_specs(specs, tmp_path / "local", run_spec, workers=1, progress=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = run_specs(specs, tmp_path / "ray", run_spec, backend="ray", progress=False)
    finally:
        ray.shutdown()
    for a, b in zip(local, remote):
        assert a["metrics"] == b["metrics"] and a["x_final"] == b["x_final"]
