"""Runs a submission's checks in a separate process, with a time limit per check.

The parent (:func:`run_checks`) starts ``python -m bilevel_teaching._child``, which runs
:func:`child_main`: it imports the submission file by path and runs the checks one after the
other, reporting each event as a JSON line on its protocol stream. The submission's own output
goes to stderr, of which the parent keeps the end (for crash reports), so ``print`` in a
submission cannot confuse the protocol.

If a check exceeds its time limit or the child dies (``sys.exit``, a crash), the parent kills
the child, records that check as ``timeout`` / ``error`` and starts a fresh child at the next
check: one infinite loop costs one check, not the whole grade. Every check draws its random
numbers from ``SeedSequence([seed, index])``, so a restarted child sees the same numbers.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TextIO

import numpy as np

from bilevel_teaching.core import Check, CheckFailed, CheckResult, Outcome

MARKER = "@@bilevel-grading@@ "
#: seconds a single check (or the import of the submission) may take
DEFAULT_TIMEOUT = 120.0
_STDERR_TAIL = 1500  # characters of the submission's output shown when it crashes


# ---------------------------------------------------------------------------- parent side
@dataclass
class _Session:
    """What one child process reported before it finished or was stopped."""

    results: dict[int, CheckResult]
    next_index: int  # where a new child has to continue (== len(checks) when done)
    import_failure: str | None = None


def run_checks(assignment: str, checks: list[Check], submission: Path, timeout: float,
               seed: int) -> list[CheckResult]:
    """Grade ``submission`` against ``checks`` of ``assignment`` in child processes."""
    results: dict[int, CheckResult] = {}
    index = 0
    while index < len(checks):
        session = _run_child(assignment, checks, submission, index, timeout, seed)
        results.update(session.results)
        if session.import_failure is not None:
            for i in range(index, len(checks)):
                results.setdefault(i, CheckResult(checks[i].title, checks[i].points, 0.0,
                                                  "not run", session.import_failure))
            break
        index = session.next_index
    return [results[i] for i in range(len(checks))]


def _run_child(assignment: str, checks: list[Check], submission: Path, start: int,
               timeout: float, seed: int) -> _Session:
    command = [sys.executable, "-m", "bilevel_teaching._child", assignment,
               str(submission), str(start), str(seed)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL, env=_child_environment(), text=True,
                               encoding="utf-8", errors="replace")
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True)
    reader.start()
    output = _Tail(process.stderr)
    try:
        return _follow(process, lines, checks, start, timeout, output)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        reader.join(timeout=5)
        output.text()  # joins its reader


def _follow(process: subprocess.Popen, lines: queue.Queue, checks: list[Check], start: int,
            timeout: float, output: _Tail) -> _Session:
    """Read the child's events until it is done, dies or overruns a time limit."""
    results: dict[int, CheckResult] = {}
    running: int | None = None  # the check in progress (None: importing, or between checks)
    resume = start  # where a new child continues if this one stops now
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.0))
        except queue.Empty:
            process.kill()
            if running is None:
                if resume == start:
                    return _Session(results, start, import_failure=(
                        f"importing your file took more than {timeout:g} s. Does it run "
                        "experiments at import time? Put them under "
                        "`if __name__ == \"__main__\":`."))
                return _Session(results, resume)
            check = checks[running]
            results[running] = CheckResult(check.title, check.points, 0.0, "timeout", (
                f"stopped after {timeout:g} s (the time limit of one check). Look for an "
                "infinite loop or a missing stopping rule; a correct solution needs a few "
                "seconds at most."))
            return _Session(results, running + 1)
        if line is None:  # the child's stream ended
            code = process.wait()
            tail = output.text()
            shown = f"\nIts output ended with:\n{tail}" if tail else ""
            if running is None:
                if resume == start:
                    return _Session(results, start, import_failure=(
                        f"the grading process exited (code {code}) while importing your file."
                        + shown))
                return _Session(results, resume)
            check = checks[running]
            results[running] = CheckResult(check.title, check.points, 0.0, "error", (
                f"the grading process exited (code {code}) while running this check: does your "
                "code call sys.exit() or os._exit()?" + shown))
            return _Session(results, running + 1)
        event = json.loads(line)
        kind = event["event"]
        if kind == "import_error":
            return _Session(results, start, import_failure=event["feedback"])
        if kind == "start":
            running = event["index"]
            deadline = time.monotonic() + timeout
        elif kind == "result":
            i = event["index"]
            results[i] = CheckResult(checks[i].title, checks[i].points,
                                     event["fraction"] * checks[i].points, event["status"],
                                     event["feedback"])
            running, resume = None, i + 1
        elif kind == "done":
            process.wait()
            return _Session(results, len(checks))


def _pump(stream: TextIO, lines: queue.Queue) -> None:
    """Forward the child's protocol lines (and nothing else) to ``lines``; ``None`` at EOF."""
    for raw in stream:
        if raw.startswith(MARKER):
            lines.put(raw[len(MARKER):])
    lines.put(None)


class _Tail:
    """Reads a stream in a thread and keeps its last ``size`` characters, however much comes."""

    def __init__(self, stream: TextIO, size: int = _STDERR_TAIL):
        self.size = size
        self._text = ""
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: TextIO) -> None:
        for chunk in iter(lambda: stream.read(4096), ""):
            self._text = (self._text + chunk)[-self.size:]

    def text(self) -> str:
        """The end of the stream (waits briefly for the writer to have finished)."""
        self._thread.join(timeout=5)
        return self._text.strip()


def _child_environment() -> dict[str, str]:
    """The parent's environment, with this copy of the package first on the path."""
    import bilevel_envs

    root = str(Path(bilevel_envs.__file__).resolve().parent.parent)
    environment = dict(os.environ)
    path = environment.get("PYTHONPATH", "")
    environment["PYTHONPATH"] = root + (os.pathsep + path if path else "")
    environment.setdefault("OPENBLAS_NUM_THREADS", "1")
    environment.setdefault("OMP_NUM_THREADS", "1")
    environment["PYTHONDONTWRITEBYTECODE"] = "1"  # no __pycache__ next to submissions
    return environment


# ---------------------------------------------------------------------------- child side
def import_submission(path: Path) -> ModuleType:
    """Import the file at ``path`` as the module ``submission`` (its folder joins sys.path)."""
    import importlib.util

    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location("submission", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["submission"] = module
    spec.loader.exec_module(module)
    return module


def describe_exception(error: BaseException, submission: Path) -> str:
    """``Type: message`` and where it happened, preferring a line of the submission."""
    frames = traceback.extract_tb(error.__traceback__)
    own = [f for f in frames if Path(f.filename).resolve() == submission]
    if isinstance(error, SyntaxError) and error.filename and \
            Path(error.filename).resolve() == submission:
        where = f" (line {error.lineno}: {(error.text or '').strip()})"
    elif own:
        frame = own[-1]
        where = f" (in {frame.name}, line {frame.lineno}: {frame.line})"
    elif frames:
        frame = frames[-1]
        where = f" (in {Path(frame.filename).name}:{frame.lineno}, {frame.name})"
    else:
        where = ""
    message = str(error).strip() or "(no message)"
    return f"{type(error).__name__}: {message}{where}"


def run_one(check: Check, submission: ModuleType, path: Path, rng: np.random.Generator
            ) -> tuple[str, float, str]:
    """``(status, fraction, feedback)`` of one check; never raises."""
    try:
        outcome = check.run(submission, rng)
    except CheckFailed as failure:
        return "failed", 0.0, str(failure)
    except (Exception, SystemExit) as error:  # the submission's code raised
        if isinstance(error, SystemExit):
            return "error", 0.0, "your code called sys.exit() (or exit()) during this check"
        if isinstance(error, NotImplementedError):
            return "error", 0.0, f"not implemented yet ({describe_exception(error, path)})"
        return "error", 0.0, f"your code raised {describe_exception(error, path)}"
    if not isinstance(outcome, Outcome):  # a grader bug, not the student's
        raise TypeError(f"check {check.title!r} returned {outcome!r}, not an Outcome")
    status = "passed" if outcome.fraction == 1.0 else "failed" if outcome.fraction == 0.0 \
        else "partial"
    return status, outcome.fraction, outcome.feedback


def child_main(assignment: str, submission: str, start: int, seed: int) -> None:
    """The child process: import the submission, run the checks from ``start``, report."""
    from bilevel_teaching import assignment_module

    # The protocol gets its own copy of stdout; anything printed goes to stderr instead.
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def emit(**event: Any) -> None:
        protocol.write(MARKER + json.dumps(event) + "\n")
        protocol.flush()

    checks = assignment_module(assignment).CHECKS
    path = Path(submission).resolve()
    try:
        module = import_submission(path)
    except (Exception, SystemExit) as error:
        emit(event="import_error",
             feedback=f"could not import your file: {describe_exception(error, path)}")
        return
    for index in range(start, len(checks)):
        emit(event="start", index=index)
        rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
        status, fraction, feedback = run_one(checks[index], module, path, rng)
        emit(event="result", index=index, status=status, fraction=fraction, feedback=feedback)
    emit(event="done")
