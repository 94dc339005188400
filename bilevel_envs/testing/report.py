"""What :func:`~bilevel_envs.testing.check_problem` returns: one :class:`CheckResult` per check,
collected in a :class:`ProblemReport`; :class:`ProblemCheckError` carries a failed report."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check.

    Attributes:
        name: what was checked, e.g. ``"grad_leader_reward"`` or ``"sampler transitions"``.
        passed: ``True``/``False``; ``None`` when the check was skipped (``message`` says why).
        statistic: the number the verdict rests on (a max. relative error, a p-value, a max.
            |z|), or ``None``.
        message: a one-line account naming the term, context and location of a disagreement.
        seconds: the wall time of the check.
    """

    name: str
    passed: bool | None
    statistic: float | None
    message: str
    seconds: float = 0.0

    @property
    def skipped(self) -> bool:
        return self.passed is None

    def line(self) -> str:
        status = {True: "ok", False: "FAIL", None: "skip"}[self.passed]
        return f"[{status:>4}] {self.name}: {self.message}"


def skipped(name: str, reason: str) -> CheckResult:
    """A skipped check with its reason."""
    return CheckResult(name, None, None, reason)


@dataclass
class ProblemReport:
    """Every check of one problem, in the order they ran.

    Attributes:
        problem: ``repr`` of the checked problem.
        results: the checks.
        seconds: total wall time.
    """

    problem: str
    results: list[CheckResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        """No check failed (skipped checks do not count)."""
        return not self.failures

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if r.passed is False]

    def __getitem__(self, name: str) -> CheckResult:
        for result in self.results:
            if result.name == name:
                return result
        raise KeyError(f"no check named {name!r}; checks: {[r.name for r in self.results]}")

    def __str__(self) -> str:
        lines = [f"check_problem({self.problem}): {len(self.failures)} failed, "
                 f"{sum(r.skipped for r in self.results)} skipped, {self.seconds:.1f} s"]
        return "\n".join(lines + [r.line() for r in self.results])


class ProblemCheckError(AssertionError):
    """Raised by :func:`~bilevel_envs.testing.check_problem` when a check fails; the message
    lists the failed checks (each naming its term) and ``report`` holds every result."""

    def __init__(self, report: ProblemReport):
        self.report = report
        failed = "\n".join(r.line() for r in report.failures)
        super().__init__(f"{len(report.failures)} check(s) of {report.problem} failed:\n{failed}")
