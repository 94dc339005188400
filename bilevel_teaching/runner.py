"""Grades a submission: the child process runs it, the parent (this module) judges.

For each check the parent plans the calls (:class:`~bilevel_teaching.core.Plan`), sends them
to a child process (:mod:`.child_process`, running ``bilevel_teaching._child``) and reads back
the raw outputs. The child runs confined (:mod:`.sandbox`, :mod:`.import_guard`) in a fresh
temporary folder, in a session of its own. The parent owns every deadline: the import of the
submission and each check's calls must be done within ``timeout`` seconds (from the moment the
child has prepared, before any of the submission's code ran, and from the request), and the
whole grading within ``total_timeout``; nothing the child sends changes them. Every message is
size-checked and validated (:mod:`.protocol`, :func:`~bilevel_teaching.calls.parse_result`); a
malformed one is that check's error.

If a check overruns its time or the child dies, the parent kills the child's process group,
records that check as ``timeout`` / ``error`` and starts a fresh child for the next check: one
infinite loop costs one check, not the whole grade. When the calls are done, the child's
process group is killed (and any process left in its session swept away), and only then are
the outputs judged: expected values, comparisons, diagnoses and scores are all computed here.
Every check draws its random numbers from ``SeedSequence([seed, index])``, so the same seed
gives the same calls and the same score.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from bilevel_teaching.calls import Results, parse_result
from bilevel_teaching.child_process import ChildGone, ChildProcess, Timeout
from bilevel_teaching.core import (
    Check,
    CheckFailed,
    CheckResult,
    Context,
    FollowsFrom,
    Plan,
    SubmissionError,
)
from bilevel_teaching.protocol import ProtocolError
from bilevel_teaching.sandbox import Limits

#: seconds a single check (or the import of the submission) may take
DEFAULT_TIMEOUT = 120.0
#: seconds the grading child may take to start, before the submission is imported (the
#: grader's own imports and preparation: not counted in the submission's time)
STARTUP_LIMIT = 120.0
_MALFORMED = ("the grading process sent malformed output {when} ({error}), so nothing it sent "
              "counts. Return your answers from your functions; do not write to the grader's "
              "channels.")
_LINK_LENGTH = 100  # characters of a cause's feedback quoted in a follow-on failure


class ImportFailure(Exception):
    """The submission could not be imported (feedback for every check)."""


@dataclass
class _Verdict:
    status: str
    fraction: float
    feedback: str
    cause: str | None = None  # explained by this earlier check (shown if that check failed)
    follows: str | None = None  # could not be judged because this earlier check failed


# ---------------------------------------------------------------------------- one grading
class _Grading:
    """The state of one grading run (see :func:`run_checks`)."""

    def __init__(self, assignment: str, module: ModuleType, submission: Path, timeout: float,
                 seed: int, total_timeout: float, limits: Limits | None):
        self.checks: Sequence[Check] = module.CHECKS
        self.signatures: Mapping[str, str] = getattr(module, "SIGNATURES", {})
        self.timeout, self.seed = timeout, seed
        self.end = time.monotonic() + total_timeout
        self.total_timeout = total_timeout
        cpu = math.ceil(total_timeout) + 30
        limits = limits or Limits(cpu_seconds=cpu)
        self.setup = {"assignment": assignment, "submission": str(submission),
                      "parent": os.getpid(), "limits": limits.to_plain(),
                      "policy": module.IMPORTS.to_plain()}
        self.child: ChildProcess | None = None
        self.started = 0  # children started so far
        self.plans: dict[int, Plan] = {}
        self.raw: dict[int, Results] = {}
        self.verdicts: dict[int, _Verdict] = {}

    def deadline(self) -> float:
        return min(time.monotonic() + self.timeout, self.end)

    def start_child(self) -> ChildProcess:
        """A fresh child that has imported the submission; :class:`ImportFailure` if it could
        not (the first time), or another exception of :meth:`ChildProcess.exchange`."""
        first = self.started == 0
        self.started += 1
        startup = min(time.monotonic() + STARTUP_LIMIT, self.end)
        child = ChildProcess(self.setup, startup)
        try:
            prepared = child.receive(startup)
            why = "" if isinstance(prepared, dict) and prepared.get("kind") == "prepared" else \
                "an unexpected first message"
        except Timeout:
            why = f"it took more than {STARTUP_LIMIT:g} s"
        except ChildGone as gone:
            why = f"it exited with code {gone.code}; its output ended with:\n{gone.output}"
        except ProtocolError as error:
            why = str(error)
        if why:
            child.stop()
            raise ImportFailure(f"the grading process did not start ({why}). This is not your "
                                "code's fault: please tell your instructor.")
        deadline = self.deadline()
        try:
            message = child.receive(deadline)
        except Timeout:
            child.stop()
            if first:
                raise ImportFailure(
                    f"importing your file took more than {self.timeout:g} s. Does it run "
                    "experiments at import time? Put them under `if __name__ == \"__main__\":`."
                ) from None
            raise
        except ChildGone as gone:
            child.stop()
            if first:
                shown = f"\nIts output ended with:\n{gone.output}" if gone.output else ""
                raise ImportFailure(f"the grading process exited (code {gone.code}) while "
                                    "importing your file." + shown) from None
            raise
        except ProtocolError as error:
            child.stop()
            raise ImportFailure(_MALFORMED.format(error=error, when="while importing your file")
                                ) from None
        if isinstance(message, dict) and message.get("kind") == "import_error":
            child.stop()
            try:
                error = parse_result({"raised": message.get("error")})
                text = f"could not import your file: {error.describe()}"
            except ProtocolError:
                text = "could not import your file (the grading process sent a malformed report)"
            raise ImportFailure(text)
        if not (isinstance(message, dict) and message.get("kind") == "ready"):
            child.stop()
            raise ImportFailure(_MALFORMED.format(error="an unexpected message",
                                                  when="while importing your file"))
        return child

    def run_calls(self, index: int, plan: Plan) -> Results:
        """Send check ``index``'s calls to the child and validate the answer."""
        if self.child is None:
            self.child = self.start_child()
        calls = list(plan.calls)
        answer = self.child.exchange({"kind": "request", "id": index,
                                      "calls": [c.to_wire() for c in calls]}, self.deadline())
        if not (isinstance(answer, dict) and answer.get("kind") == "results"
                and answer.get("request") == index and isinstance(answer.get("results"), list)):
            raise ProtocolError("an answer that is not the results of this check")
        return Results(calls, [parse_result(entry) for entry in answer["results"]],
                       self.signatures)

    def stop_child(self) -> None:
        if self.child is not None:
            self.child.stop()
            self.child = None

    def collect(self) -> None:
        """Plan every check and collect the raw outputs of its calls (child alive)."""
        for index, check in enumerate(self.checks):
            context = Context(np.random.default_rng(np.random.SeedSequence([self.seed, index])),
                              {self.checks[j].question: r for j, r in self.raw.items()})
            try:
                plan = check.plan(context)
            except FollowsFrom as follows:
                self.verdicts[index] = _Verdict("failed", 0.0, "", follows=follows.question)
                continue
            except CheckFailed as failure:
                self.verdicts[index] = _Verdict("failed", 0.0, str(failure))
                continue
            self.plans[index] = plan
            if time.monotonic() >= self.end:
                self.verdicts[index] = _Verdict("not run", 0.0, (
                    f"not run: the time limit of the whole grading ({self.total_timeout:g} s) "
                    "was reached"))
                continue
            try:
                self.raw[index] = self.run_calls(index, plan) if plan.calls else \
                    Results((), (), self.signatures)
            except ImportFailure as failure:
                self.verdicts[index] = _Verdict("not run", 0.0, str(failure))
                for i in range(index + 1, len(self.checks)):
                    self.verdicts[i] = _Verdict("not run", 0.0, (
                        f"not run: your file could not be imported (see {check.question})"))
                return
            except Timeout:
                self.stop_child()
                self.verdicts[index] = _Verdict("timeout", 0.0, (
                    f"stopped when the whole grading reached its time limit "
                    f"({self.total_timeout:g} s)." if time.monotonic() >= self.end else
                    f"stopped after {self.timeout:g} s (the time limit of one check). Look for "
                    "an infinite loop or a missing stopping rule; a correct solution needs a few "
                    "seconds at most."))
            except ChildGone as gone:
                self.stop_child()
                shown = f"\nIts output ended with:\n{gone.output}" if gone.output else ""
                self.verdicts[index] = _Verdict("error", 0.0, (
                    f"the grading process exited (code {gone.code}) while running this check: "
                    "does your code call os._exit(), or run out of memory or CPU time?" + shown))
            except ProtocolError as error:
                self.stop_child()
                self.verdicts[index] = _Verdict("error", 0.0, _MALFORMED.format(
                    error=error, when="during this check"))

    def judge(self) -> None:
        """Judge every collected output (every child is gone by now)."""
        for index, plan in self.plans.items():
            if index in self.verdicts:
                continue
            try:
                outcome = plan.judge(self.raw[index])
            except CheckFailed as failure:
                self.verdicts[index] = _Verdict("failed", 0.0, str(failure))
                continue
            except SubmissionError as error:
                self.verdicts[index] = _Verdict("error", 0.0, str(error))
                continue
            except FollowsFrom as follows:
                self.verdicts[index] = _Verdict("failed", 0.0, "", follows=follows.question)
                continue
            except Exception as error:  # noqa: BLE001 - a report must always be printed
                self.verdicts[index] = _Verdict("error", 0.0, (
                    f"the grader could not judge this output ({type(error).__name__}: {error}); "
                    "the check gets no points. Please tell your instructor."))
                continue
            status = "passed" if outcome.fraction == 1.0 else \
                "failed" if outcome.fraction == 0.0 else "partial"
            self.verdicts[index] = _Verdict(status, outcome.fraction, outcome.feedback,
                                            cause=outcome.cause)

    def results(self) -> list[CheckResult]:
        """The results, with follow-on failures linked to the failures they come from."""
        by_question = {c.question: i for i, c in enumerate(self.checks)}

        def link(question: str, sure: bool) -> str | None:
            i = by_question.get(question)
            if i is None or self.verdicts[i].status == "passed":
                return None
            cause = self.checks[i]
            first = _first_line(self.verdicts[i].feedback) or self.verdicts[i].status
            verb = "follows" if sure else "may follow"
            return (f"This {verb} from the failure of check {cause.question} ({cause.name}): "
                    f"{first}")

        out = []
        for index, check in enumerate(self.checks):
            verdict = self.verdicts[index]
            feedback = verdict.feedback
            if verdict.follows is not None:
                feedback = link(verdict.follows, True) or (
                    f"not judged: check {verdict.follows} produced no result to judge")
            elif verdict.status not in ("passed", "not run"):
                note = link(verdict.cause, True) if verdict.cause else None
                for question in check.depends_on:
                    if note is None:
                        note = link(question, False)
                if note:
                    feedback = f"{feedback}\n{note}" if feedback else note
            out.append(CheckResult(check.title, check.points, verdict.fraction * check.points,
                                   verdict.status, feedback))
        return out


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= _LINK_LENGTH else line[:_LINK_LENGTH] + " [...]"


def run_checks(assignment: str, module: ModuleType, submission: Path, timeout: float, seed: int,
               total_timeout: float | None = None, limits: Limits | None = None
               ) -> list[CheckResult]:
    """Grade ``submission`` against the checks of the assignment ``module``.

    Args:
        assignment: the assignment's name.
        module: its grader module (``CHECKS``, ``IMPORTS``, ``SIGNATURES``).
        submission: the resolved path of the submission.
        timeout: seconds the submission may take to answer one check (or to be imported).
        seed: seed of every random number the checks draw.
        total_timeout: seconds the whole grading may take (default ``timeout`` times the
            number of checks plus one).
        limits: the child's resource limits (default :class:`~.sandbox.Limits` with a CPU limit
            just above ``total_timeout``).
    """
    total = timeout * (len(module.CHECKS) + 1) if total_timeout is None else total_timeout
    grading = _Grading(assignment, module, submission, timeout, seed, total, limits)
    try:
        grading.collect()
    finally:
        grading.stop_child()
    grading.judge()
    return grading.results()
