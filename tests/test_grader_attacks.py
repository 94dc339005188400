"""The grader against hostile submissions (``tests/teaching_solutions/attacks.py``): each attack
scores exactly what its honest part earns, leaves no process behind and changes no file outside
its working folder; and the grader's building blocks (message decoding, the kernel filter, the
import rules) hold on their own."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import bilevel_teaching
from bilevel_teaching import grade, runner
from bilevel_teaching.calls import Results, parse_result
from bilevel_teaching.core import CheckFailed
from bilevel_teaching.import_guard import ImportPolicy, RefusedImport, Rules
from bilevel_teaching.protocol import FrameBuffer, ProtocolError, decode, encode
from tests.teaching_solutions.attacks import ATTACKS

ROOT = Path(__file__).resolve().parent.parent
GRADER_FILE = Path(runner.__file__)
#: every process started while the attacks are graded carries this variable (unless it clears
#: its environment: those are found by their command line)
MARKER = "BILEVEL_ATTACK_SUITE"
SLEEPER = b"bilevel-attack-sleeper"


@dataclass
class Graded:
    reports: dict
    seconds: dict
    survivors: list
    children: list
    outside: dict
    grader_before: dict
    grader_after: dict


def _grader_files() -> dict[str, tuple[str, int]]:
    """Hash and mode of every file of the installed grader."""
    package = Path(bilevel_teaching.__file__).parent
    return {str(p): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode)
            for p in sorted(package.rglob("*.py"))}


def _marked_processes(marker: str, groups: list[int]) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if marker.encode() in environ or SLEEPER in cmdline or \
                int(fields[2]) in groups or int(fields[3]) in groups:
            found.append(int(entry))
    return found


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Grade every attack once (in parallel), then look for anything they left behind."""
    marker = uuid.uuid4().hex
    children: list[int] = []
    original = runner.ChildProcess.__init__

    def recording(self, *args, **kwargs):
        original(self, *args, **kwargs)
        children.append(self.process.pid)

    outside = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(MARKER, marker)
        patch.setattr(runner.ChildProcess, "__init__", recording)
        grader_before = _grader_files()

        def run(item):
            name, attack = item
            folder = tmp_path_factory.mktemp("attack")
            (folder / "outside").mkdir()
            canary = folder / "outside" / "canary.txt"
            canary.write_text("original")
            outside[name] = folder / "outside"
            path = folder / "submission.py"
            path.write_text(attack.render(outside=str(folder / "outside"), canary=str(canary),
                                          grader_file=str(GRADER_FILE)))
            start = time.monotonic()
            report = grade(attack.assignment, path,
                           timeout=3 if name == "timeout extension" else 30)
            return name, report, time.monotonic() - start

        with ThreadPoolExecutor(max_workers=4) as pool:
            done = list(pool.map(run, ATTACKS.items()))
    time.sleep(0.2)
    survivors = _marked_processes(marker, children)
    for pid in survivors:  # never leave them running, whatever the test says
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return Graded({n: r for n, r, _ in done}, {n: s for n, _, s in done}, survivors, children,
                  outside, grader_before, _grader_files())


def by_question(report):
    return {r.title.split()[0]: r for r in report.results}


# ---------------------------------------------------------------------------- every attack
@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_an_attack_earns_only_its_honest_part(graded, name):
    report = graded.reports[name]
    assert report.score == ATTACKS[name].deserves, [(r.title, r.status, r.feedback[:200])
                                                     for r in report.results]
    for result in report.results:
        assert 0 <= result.earned <= result.points


def test_no_attack_leaves_a_process_behind(graded):
    assert graded.children  # the suite did start grading children
    assert graded.survivors == []


def test_no_attack_changes_a_file_outside_its_folder(graded):
    for name, folder in graded.outside.items():
        assert sorted(p.name for p in folder.iterdir()) == ["canary.txt"], name
        assert (folder / "canary.txt").read_text() == "original", name
    assert graded.grader_after == graded.grader_before


# ---------------------------------------------------------------------------- one class each
def _report_of(graded, name) -> str:
    feedback = by_question(graded.reports[name])["2.1a"].feedback
    assert "report:" in feedback, feedback
    return feedback


def test_monkeypatching_the_grader_or_numpy_changes_nothing(graded):
    # patching the child's own conversion (through a function's globals) only spoils the output
    patched = by_question(graded.reports["grader monkeypatch"])["2.1a"]
    assert patched.status == "failed" and "got shape ()" in patched.feedback
    numpy = by_question(graded.reports["numpy monkeypatch"])["2.1a"]
    assert numpy.status == "failed" and "placeholder" in numpy.feedback


def test_forged_messages_are_rejected(graded):
    for name in ("forged reporting", "out-of-range index"):
        report = graded.reports[name]
        assert {r.status for r in report.results} == {"not run"}
        assert "malformed output while importing your file" in report.results[0].feedback
    fraction = by_question(graded.reports["out-of-range fraction"])["2.1a"]
    assert fraction.status == "failed" and fraction.earned == 0


def test_absurd_return_values_fail_with_a_reason(graded):
    results = by_question(graded.reports["out-of-range values"])
    assert "contains NaN or inf" in results["2.1a"].feedback
    assert "too large" in results["2.2a"].feedback
    assert "got a Hostile" in results["2.3a"].feedback
    assert "must return a pair (V, pi)" in results["2.4a"].feedback
    assert "got a dict" in results["2.5a"].feedback


def test_a_check_cannot_extend_its_deadline(graded):
    result = by_question(graded.reports["timeout extension"])["2.1a"]
    assert result.status == "timeout" and "stopped after 3 s" in result.feedback
    assert graded.seconds["timeout extension"] < 18  # the attack would run 20 s


def test_no_process_can_be_started(graded):
    feedback = _report_of(graded, "leftover processes")
    for route in ("fork", "daemon", "posix_spawn", "Popen", "fork_exec", "system"):
        assert f"{route}=refused" in feedback, feedback
    assert "forks started=0" in _report_of(graded, "fork bomb")


def test_writes_outside_the_working_folder_are_refused(graded):
    feedback = _report_of(graded, "writes outside the temp dir")
    attempts = feedback.split("report: ", 1)[1].split(" (in _report", 1)[0].split("; ")
    refused = [a for a in attempts if "=refused" in a]
    assert "write inside the working folder=done" in feedback
    assert len(refused) == len(attempts) - 1, attempts


def test_memory_is_bounded(graded):
    results = by_question(graded.reports["memory bomb"])
    for question in ("2.1a", "2.2a"):
        assert results[question].status == "error"
        assert "MemoryError" in results[question].feedback


@pytest.mark.parametrize("name, refused", [
    ("solver delegation", "bilevel_envs.tabular.evaluate_policy is not allowed"),
    ("solver delegation (hpgd)",
     "bilevel_teaching is not allowed in the hpgd_estimator assignment (it is the grader)"),
    ("solver delegation (design)", "is not allowed in the design assignment"),
    ("reference solution import", "tests is not allowed in the soft_vi assignment"),
])
def test_importing_the_solvers_is_refused_with_the_allowed_modules(graded, name, refused):
    report = graded.reports[name]
    assert {r.status for r in report.results} == {"not run"}
    assert refused in report.results[0].feedback, report.results[0].feedback
    assert "Allowed: " in report.results[0].feedback


def test_indirect_delegation_is_refused_where_it_happens(graded):
    results = by_question(graded.reports["solver delegation (indirect)"])
    assert [q for q, r in results.items() if r.status == "passed"] == ["2.1a", "2.1b", "2.2a",
                                                                        "2.2b"]
    assert "bilevel_envs.tabular.soft_max_value is not allowed" in results["2.3a"].feedback
    assert "soft_policy_iteration is not allowed" in results["2.4a"].feedback
    assert "evaluate_policy is not allowed" in results["2.5a"].feedback
    method = by_question(graded.reports["solver delegation (design, method)"])["2.3"]
    assert method.status == "error" and "Leader.exact_objective is not allowed" in \
        method.feedback


# ---------------------------------------------------------------------------- building blocks
def test_messages_round_trip_and_malformed_frames_are_rejected():
    message = {"a": [1, 2.5, None, "x"], "b": np.arange(6.0).reshape(2, 3),
               "c": np.array([True, False])}
    frames = FrameBuffer()
    frames.feed(encode(message))
    decoded = decode(frames.next_payload())
    assert decoded["a"] == [1, 2.5, None, "x"] and decoded["b"].shape == (2, 3)
    assert frames.pending == 0

    def payload(header: bytes, *blobs: bytes) -> bytes:
        return len(header).to_bytes(4, "big") + header + b"".join(blobs)

    with pytest.raises(ProtocolError, match="not a grading frame"):
        junk = FrameBuffer()
        junk.feed(b"@@bilevel-grading@@ {}\n")
        junk.next_payload()
    with pytest.raises(ProtocolError, match="limit"):
        big = FrameBuffer(max_frame=100)
        big.feed(b"BLVG" + (10**9).to_bytes(8, "big"))
        big.next_payload()
    # an array header that claims 10^12 numbers in a few bytes: refused before allocating
    buffer = __import__("io").BytesIO()
    np.save(buffer, np.zeros(3))
    blob = buffer.getvalue().replace(b"(3,)", b"(1000000000000,)")
    with pytest.raises(ProtocolError, match="shape"):
        decode(payload(b'{"message": {"$array": 0}, "blobs": [%d]}' % len(blob), blob))
    buffer = __import__("io").BytesIO()
    np.save(buffer, np.array([object()], dtype=object), allow_pickle=True)
    blob = buffer.getvalue()
    with pytest.raises(ProtocolError, match="dtype"):
        decode(payload(b'{"message": {"$array": 0}, "blobs": [%d]}' % len(blob), blob))
    with pytest.raises(ProtocolError, match="JSON"):
        decode(payload(b"[" * 100_000))
    with pytest.raises(ProtocolError):
        decode(payload(b'{"message": 1, "blobs": [5]}'))


def test_results_are_validated_before_a_judge_sees_them():
    for entry in ({"ok": 1, "extra": 2}, {"verdict": "passed"}, "passed",
                  {"raised": {"type": "E"}}, {"missing": 1}):
        with pytest.raises(ProtocolError):
            parse_result(entry)
    from bilevel_teaching.calls import Call

    results = Results([Call("f"), Call("f"), Call("g", returns="number")],
                      [np.array([1.0, np.nan]), np.zeros(3), parse_result({"missing": True})],
                      {"g": "g(x)"})
    with pytest.raises(CheckFailed, match="NaN or inf"):
        results.array(0, (2,), "f")
    with pytest.raises(CheckFailed, match=r"shape \(2,\)"):
        results.array(1, (2,), "f")
    with pytest.raises(CheckFailed, match=r"does not define the function g\(x\)"):
        results.number(2, "g")
    with pytest.raises(ProtocolError):
        Results([Call("f")], [], {})


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="seccomp is Linux-only")
def test_the_kernel_filter_refuses_processes_and_signals_but_not_threads():
    script = textwrap.dedent("""
        import os, sys, threading
        from bilevel_teaching.sandbox import deny_processes
        if not deny_processes():
            print("unsupported"); sys.exit(0)
        out = []
        for name, action in (("fork", os.fork), ("kill_parent", lambda: os.kill(os.getppid(), 0)),
                             ("spawn", lambda: os.posix_spawn("/bin/true", ["true"], {}))):
            try:
                action(); out.append(name + "=done")
            except PermissionError:
                out.append(name + "=refused")
        os.kill(os.getpid(), 0)  # itself: allowed
        t = threading.Thread(target=lambda: out.append("thread=done")); t.start(); t.join()
        print(" ".join(out))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    assert done.returncode == 0, done.stderr
    if done.stdout.strip() == "unsupported":
        pytest.skip("no seccomp filter for this architecture")
    assert done.stdout.split() == ["fork=refused", "kill_parent=refused", "spawn=refused",
                                   "thread=done"]


def test_the_import_rules():
    rules = Rules(ImportPolicy(allow=("numpy", "bilevel_envs.tabular:TabularModel"),
                               deny={"bilevel_envs.tabular": "the solvers"}),
                  "soft_vi", frozenset({"helpers"}))
    for allowed in ("numpy.linalg", "math", "helpers", "bilevel_envs", "bilevel_envs.tabular"):
        rules.check_module(allowed)
    for refused in ("bilevel_envs.exact", "tests.teaching_solutions.soft_vi_solution",
                    "teaching_solutions", "bilevel_teaching", "scipy", "subprocess", "ctypes"):
        with pytest.raises(RefusedImport, match="Allowed: numpy, "):
            rules.check_module(refused)
    from bilevel_envs import tabular

    rules.check_object("bilevel_envs.tabular", "TabularModel", tabular.TabularModel)
    rules.check_object("bilevel_envs", "TabularModel", tabular.TabularModel)  # a re-export
    with pytest.raises(RefusedImport, match="the solvers"):
        rules.check_object("bilevel_envs.tabular", "soft_value_iteration",
                           tabular.soft_value_iteration)
    with pytest.raises(RefusedImport):
        rules.check_object("bilevel_envs", "soft_value_iteration", tabular.soft_value_iteration)


def test_reference_solutions_are_not_part_of_the_package():
    import tomllib
    from setuptools import find_packages

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = find_packages(where=str(ROOT), include=include)
    assert "bilevel_teaching" in packages
    assert not [p for p in packages if p.split(".")[0] in ("tests", "teaching_solutions")]
