"""The graders' data model: checks, their plans, outcomes, results and reports.

A grader is a list of :class:`Check` s. A check is planned and judged in the *parent* process
only: :attr:`Check.plan` builds the inputs (from the check's seeded generator) and returns a
:class:`Plan` — the calls to make on the submission (:class:`~bilevel_teaching.calls.Call`)
and a ``judge`` that turns their raw outputs into an :class:`Outcome`. The child process that
imports the submission only executes the calls and sends back what they returned
(:mod:`bilevel_teaching.runner`); expected values, comparisons, diagnoses and scores are
computed here, after the child is gone. Helpers raise :class:`CheckFailed` with the feedback
for the student; the runner turns it into zero points for that check.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from bilevel_teaching.calls import Call, Results


class CheckFailed(Exception):
    """Raised inside a judge with the feedback for the student (the check earns 0 points)."""


class SubmissionError(Exception):
    """The submission raised (or exited) during a call; the check gets the status ``error``."""


class FollowsFrom(Exception):
    """This check cannot be judged because the check ``question`` failed before it."""

    def __init__(self, question: str):
        super().__init__(question)
        self.question = question


@dataclass(frozen=True)
class Outcome:
    """What one check found: the fraction of its points earned, the feedback and, when the
    failure is explained by an earlier check's function, that check's question (``cause``)."""

    fraction: float
    feedback: str = ""
    cause: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"fraction must be in [0, 1]; got {self.fraction}")


def passed(feedback: str = "") -> Outcome:
    return Outcome(1.0, feedback)


def failed(feedback: str, cause: str | None = None) -> Outcome:
    return Outcome(0.0, feedback, cause)


@dataclass(frozen=True)
class Context:
    """What a check's plan may use: its own seeded generator and the validated raw results of
    the checks planned before it (by question), e.g. the contract a design check returned."""

    rng: np.random.Generator
    earlier: Mapping[str, Results]

    def results_of(self, question: str) -> Results:
        """The results of check ``question``; :class:`FollowsFrom` if it produced none."""
        if question not in self.earlier:
            raise FollowsFrom(question)
        return self.earlier[question]


@dataclass(frozen=True)
class Plan:
    """The calls one check makes on the submission, and how to judge what they return."""

    calls: Sequence[Call]
    judge: Callable[[Results], Outcome]


@dataclass(frozen=True)
class Check:
    """One auto-graded item of an assignment.

    Attributes:
        question: the question number on the assignment sheet, e.g. ``"2.3"``.
        name: a short description shown in the report.
        points: points for a full pass.
        plan: ``plan(context) -> Plan``, run in the parent; ``context.rng`` is seeded from the
            grading seed and the check's position, so the same seed gives the same calls.
        depends_on: questions whose functions this check's functions use: if one of them
            failed too, the report says this failure may follow from it.
    """

    question: str
    name: str
    points: float
    plan: Callable[[Context], Plan]
    depends_on: tuple[str, ...] = ()

    @property
    def title(self) -> str:
        return f"{self.question} {self.name}"


@dataclass(frozen=True)
class WrittenPart:
    """A question marked by the TA (the grader lists it but does not score it)."""

    question: str
    name: str
    points: float


#: report label of each status
STATUS_LABELS = {"passed": "ok", "partial": "PARTIAL", "failed": "FAILED", "error": "ERROR",
                 "timeout": "TIMEOUT", "not run": "NOT RUN"}


@dataclass
class CheckResult:
    """The graded result of one check.

    ``status`` is ``"passed"``, ``"partial"``, ``"failed"`` (wrong answer), ``"error"`` (the
    submission raised, crashed or sent malformed output), ``"timeout"`` or ``"not run"`` (the
    submission could not be imported, or the overall time limit was reached).
    """

    title: str
    points: float
    earned: float
    status: str
    feedback: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUS_LABELS:
            raise ValueError(f"unknown status {self.status!r}")
        if not 0.0 <= self.earned <= self.points:
            raise ValueError(f"earned must be in [0, {self.points}]; got {self.earned}")

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "points": self.points, "earned": self.earned,
                "status": self.status, "feedback": self.feedback}


@dataclass
class Report:
    """All results of grading one submission."""

    assignment: str
    title: str
    submission: str
    results: list[CheckResult]
    written: Sequence[WrittenPart] = field(default_factory=tuple)

    @property
    def score(self) -> float:
        return float(sum(r.earned for r in self.results))

    @property
    def max_score(self) -> float:
        return float(sum(r.points for r in self.results))

    def to_dict(self) -> dict[str, Any]:
        return {"assignment": self.assignment, "title": self.title,
                "submission": self.submission, "score": self.score,
                "max_score": self.max_score, "results": [r.to_dict() for r in self.results],
                "written": [{"question": w.question, "name": w.name, "points": w.points}
                            for w in self.written]}

    def format(self, width: int = 78) -> str:
        """The human-readable report: one line per check, feedback indented below it."""
        lines = [f"Grading {self.assignment}: {self.title}", f"submission: {self.submission}", ""]
        for r in self.results:
            label = STATUS_LABELS[r.status]
            lines.append(f"[{_num(r.earned):>4}/{_num(r.points):<3}] {label:<7} {r.title}")
            if r.feedback and r.status != "passed":
                lines.extend("      " + line for line in _wrap(r.feedback, width - 6))
        lines.append("")
        lines.append(f"Score: {_num(self.score)}/{_num(self.max_score)} (auto-graded part)")
        if self.written:
            parts = ", ".join(f"{w.question} ({_num(w.points)} pts)" for w in self.written)
            total = sum(w.points for w in self.written)
            lines.append(f"Not graded here (written, marked by the TA, {_num(total)} pts): "
                         f"{parts}")
        return "\n".join(lines)


def _num(value: float) -> str:
    return f"{value:g}"


def _wrap(text: str, width: int) -> list[str]:
    out: list[str] = []
    for paragraph in text.splitlines():
        out.extend(textwrap.wrap(paragraph, width) or [""])
    return out
