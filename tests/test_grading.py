"""The teaching assignments' grader: reference solutions get full marks, wrong ones fail with the
expected feedback (with enough digits, and follow-on failures linked to their cause), starters
score low without crashing, bad input and hanging submissions are handled
(``bilevel_teaching``, ``examples/teaching``, ``tests/teaching_solutions``). Hostile submissions:
``tests/test_grader_attacks.py``."""

from __future__ import annotations

import json
import re
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from bilevel_teaching import ASSIGNMENTS, assignment_module, comparisons, core, grade
from bilevel_teaching.__main__ import main

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "tests" / "teaching_solutions"
STARTERS = {name: ROOT / "examples" / "teaching" / name / f"{name}.py" for name in ASSIGNMENTS}


@pytest.fixture(scope="module")
def reports():
    """Grade each file once: ``reports(assignment, kind)`` with kind solution/wrong/starter."""
    cache = {}

    def get(assignment: str, kind: str):
        if (assignment, kind) not in cache:
            path = STARTERS[assignment] if kind == "starter" else \
                SOLUTIONS / f"{assignment}_{kind}.py"
            cache[assignment, kind] = grade(assignment, path)
        return cache[assignment, kind]

    return get


def by_question(report) -> dict[str, core.CheckResult]:
    return {r.title.split()[0]: r for r in report.results}


# ---------------------------------------------------------------------------- the three files
@pytest.mark.parametrize("assignment", sorted(ASSIGNMENTS))
def test_reference_solution_gets_full_marks(reports, assignment):
    report = reports(assignment, "solution")
    failures = [f"{r.title}: {r.feedback}" for r in report.results if r.status != "passed"]
    assert not failures, failures
    assert report.score == report.max_score > 0
    assert f"Score: {report.max_score:g}/{report.max_score:g}" in report.format()


#: per assignment: the highest score the wrong solution may get, and (question, status,
#: feedback fragment) that must appear
WRONG = {
    "soft_vi": (4, [("2.1a", "failed", "you returned the hard maximum"),
                    ("2.2a", "failed", "greedy (argmax) policy"),
                    ("2.3a", "failed", "hard maximum over actions"),
                    ("2.4a", "failed", "unregularised optimal values"),
                    ("2.4c", "failed", "times the requested tolerance"),
                    ("2.5a", "failed", "entropy bonus")]),
    "hpgd_estimator": (4, [("2.1", "failed", "weighting the tail by gamma_L^k"),
                           ("2.2a", "failed", "without the entropy bonus"),
                           ("2.4a", "failed", "without its 1/lambda"),
                           ("2.4b", "failed", "without its 1/lambda"),
                           ("2.6", "failed", "both restarts")]),
    "design": (3, [("2.1", "failed", "only the cheapest type"),
                   ("2.2", "failed", "respond hard (all or nothing)"),
                   ("2.3", "failed", "(expected 4.18271209241, found 10)"),
                   ("2.4b", "failed", "what no contract at all earns"),
                   ("2.5", "failed", "respond hard")]),
}


@pytest.mark.parametrize("assignment", sorted(ASSIGNMENTS))
def test_wrong_solution_fails_with_the_expected_feedback(reports, assignment):
    report = reports(assignment, "wrong")
    threshold, expected = WRONG[assignment]
    assert report.score <= threshold < report.max_score / 3
    results = by_question(report)
    for question, status, fragment in expected:
        assert results[question].status == status, (question, results[question])
        assert fragment in results[question].feedback, (question, results[question].feedback)


@pytest.mark.parametrize("assignment", sorted(ASSIGNMENTS))
def test_starter_runs_and_scores_low(reports, assignment):
    report = reports(assignment, "starter")
    assert report.score == 0
    for result in report.results:
        assert result.status == "failed", (result.title, result.status, result.feedback)
        assert result.feedback  # says what is missing
    assert any("placeholder" in r.feedback for r in report.results)


# ---------------------------------------------------------------------------- the command line
def test_cli_prints_the_report_and_exits_0(capsys):
    assert main(["design", str(STARTERS["design"]), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["assignment"] == "design" and data["score"] == 0 and data["max_score"] == 14
    assert [w["question"] for w in data["written"]] == ["1.1", "1.2", "1.3", "1.4"]


def test_cli_rejects_an_unknown_assignment(capsys):
    assert main(["soft_value_iteration", str(STARTERS["soft_vi"])]) == 2
    err = capsys.readouterr().err
    assert "unknown assignment 'soft_value_iteration'" in err
    assert "design" in err and "hpgd_estimator" in err and "soft_vi" in err


@pytest.mark.parametrize("name, message", [("missing.py", "does not exist"),
                                           ("notes.txt", "must be a Python file")])
def test_cli_rejects_missing_and_non_python_files(tmp_path, capsys, name, message):
    if name.endswith(".txt"):
        (tmp_path / name).write_text("hello")
    assert main(["soft_vi", str(tmp_path / name)]) == 2
    assert message in capsys.readouterr().err


def test_grade_validates_its_arguments():
    for timeout in (0, -1, float("inf"), float("nan"), 1e9, "10", True):
        with pytest.raises(ValueError, match="timeout must be a number of seconds in"):
            grade("soft_vi", STARTERS["soft_vi"], timeout=timeout)
    for seed in (-1, 1.5, True, 2**63):
        with pytest.raises(ValueError, match="seed must be an integer"):
            grade("soft_vi", STARTERS["soft_vi"], seed=seed)
    with pytest.raises(ValueError, match="unknown assignment"):
        assignment_module("nope")


@pytest.mark.parametrize("value", ["inf", "nan", "0", "-3", "abc", "1e9"])
def test_cli_rejects_a_bad_timeout_without_a_traceback(capsys, value):
    assert main(["soft_vi", str(STARTERS["soft_vi"]), "--timeout", value]) == 2
    err = capsys.readouterr().err
    assert "--timeout" in err and "Traceback" not in err
    assert f"--timeout must be a number of seconds in (0, 86400]; got {value!r}" in err


def test_cli_rejects_a_bad_seed(capsys):
    assert main(["soft_vi", str(STARTERS["soft_vi"]), "--seed", "-1"]) == 2
    assert "--seed must be an integer" in capsys.readouterr().err


# ---------------------------------------------------------------------------- robustness
def _submission(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "submission.py"
    path.write_text(textwrap.dedent(body))
    return path


SOFT_VI_ZEROS = """
    import numpy as np

    def policy_from_q(q, lam):
        return np.full(q.shape, 1.0 / q.shape[1])

    def soft_bellman_backup(model, v, lam):
        return np.zeros(model.n_states)

    def soft_value_iteration(model, lam, tol=1e-8, max_iter=1000):
        return np.zeros(model.n_states), np.full(model.r.shape, 1.0 / model.n_actions)

    def soft_policy_evaluation(model, pi, lam):
        return np.zeros(model.n_states)
"""


def test_a_hanging_check_is_stopped_and_the_others_still_run(tmp_path):
    path = _submission(tmp_path, SOFT_VI_ZEROS + """
    def soft_max_value(q, lam):
        print("thinking...")  # output must not confuse the grader
        if lam == 1.0:  # the first case of check 2.1a
            while True:
                pass
        return q.max(axis=-1) + lam * np.log(np.exp((q - q.max(-1, keepdims=True)) / lam
                                                    ).sum(-1))
    """)
    report = grade("soft_vi", path, timeout=3)
    results = by_question(report)
    assert results["2.1a"].status == "timeout" and "stopped after 3 s" in results["2.1a"].feedback
    assert results["2.1b"].status == "passed"  # the next check ran in a fresh process
    assert all(r.status in ("failed", "passed") for r in report.results[1:])


def test_the_whole_grading_has_a_time_limit_too(tmp_path):
    path = _submission(tmp_path, SOFT_VI_ZEROS + """
    def soft_max_value(q, lam):
        while True:
            pass
    """)
    start = time.monotonic()
    report = grade("soft_vi", path, timeout=30, total_timeout=4)
    assert time.monotonic() - start < 15
    results = by_question(report)
    assert results["2.1a"].status == "timeout"
    assert "the whole grading reached its time limit (4 s)" in results["2.1a"].feedback
    assert {r.status for r in report.results[1:]} == {"not run"}
    assert "the time limit of the whole grading (4 s) was reached" in results["2.5b"].feedback


def test_an_unstable_soft_max_gets_the_stability_hint(tmp_path):
    path = _submission(tmp_path, SOFT_VI_ZEROS + """
    def soft_max_value(q, lam):
        return lam * np.log(np.exp(q / lam).sum(axis=-1))  # overflows for large q / lam
    """)
    results = by_question(grade("soft_vi", path))
    assert results["2.1a"].status == "passed"
    assert results["2.1b"].status == "failed"
    assert "contains NaN or inf" in results["2.1b"].feedback
    assert "subtract m(s) = max_a q(s, a)" in results["2.1b"].feedback


def test_a_file_that_hangs_at_import_gets_not_run(tmp_path):
    path = _submission(tmp_path, "while True:\n    pass\n")
    report = grade("soft_vi", path, timeout=2)
    assert report.score == 0
    assert {r.status for r in report.results} == {"not run"}
    assert "importing your file took more than 2 s" in report.results[0].feedback


def test_syntax_errors_are_reported_with_the_line(tmp_path):
    path = _submission(tmp_path, "import numpy as np\n\ndef soft_max_value(q, lam)\n    pass\n")
    report = grade("soft_vi", path)
    assert {r.status for r in report.results} == {"not run"}
    assert "SyntaxError" in report.results[0].feedback and "line 3" in report.results[0].feedback


def test_exceptions_missing_functions_and_exits_are_reported(tmp_path):
    path = _submission(tmp_path, """
    import os
    import sys

    def soft_max_value(q, lam):
        raise ValueError("boom")

    def policy_from_q(q, lam):
        sys.exit(1)

    def soft_bellman_backup(model, v, lam):
        os._exit(3)
    """)
    results = by_question(grade("soft_vi", path, timeout=30))
    assert results["2.1a"].status == "error"
    assert "ValueError: boom (in soft_max_value, line 6" in results["2.1a"].feedback
    assert results["2.2a"].status == "error" and "sys.exit()" in results["2.2a"].feedback
    assert results["2.3a"].status == "error" and "exited (code 3)" in results["2.3a"].feedback
    assert results["2.3b"].status == "error"  # the run continued after the dead process
    assert "does not define the function soft_value_iteration" in results["2.4a"].feedback


# ---------------------------------------------------------------------------- determinism, truth
def _in_process(monkeypatch, assignment: str, question: str, path: Path, seed: int):
    """Plan, run (in this process, through the message encoding) and judge one check."""
    import sys

    from bilevel_teaching._child import import_submission, run_calls
    from bilevel_teaching.calls import Results, parse_result
    from bilevel_teaching.protocol import FrameBuffer, decode, encode

    monkeypatch.setattr(sys, "path", list(sys.path))  # import_submission extends it
    module = assignment_module(assignment)
    index = [c.question for c in module.CHECKS].index(question)
    plan = module.CHECKS[index].plan(core.Context(
        np.random.default_rng(np.random.SeedSequence([seed, index])), {}))
    frames = FrameBuffer()
    frames.feed(encode([c.to_wire() for c in plan.calls]))
    calls = decode(frames.next_payload())
    entries = run_calls(import_submission(path), calls, path)
    frames.feed(encode(entries))
    values = [parse_result(e) for e in decode(frames.next_payload())]
    return plan.judge(Results(plan.calls, values, module.SIGNATURES))


def test_statistical_checks_are_reproducible(monkeypatch):
    import sys

    for name in ("submission", "hpgd_estimator_solution"):  # imported here: removed after
        monkeypatch.setitem(sys.modules, name, None)
        monkeypatch.delitem(sys.modules, name)
    path = SOLUTIONS / "hpgd_estimator_wrong.py"
    first = _in_process(monkeypatch, "hpgd_estimator", "2.1", path, 0)
    assert first.fraction == 0 and first == _in_process(monkeypatch, "hpgd_estimator", "2.1",
                                                        path, 0)
    assert _in_process(monkeypatch, "hpgd_estimator", "2.1", path, 1).feedback != first.feedback


@pytest.mark.parametrize("context", [0, 1])
def test_exact_terms_sum_to_the_library_hypergradient(context):
    from bilevel_envs.exact import ExactSolver
    from bilevel_envs.hypergradient import leader_values
    from bilevel_teaching.assignments import hpgd_estimator as g

    su = g.setup(context)
    problem = g._problem()
    solver = ExactSolver(problem, tol=1e-13)
    values = solver.per_context(su.x, [context], with_gradient=True)
    np.testing.assert_allclose(su.exact.gradient, values.gradient[0], rtol=1e-9, atol=1e-12)
    # ∂V = Σ_a π ∂Q and Σ_a π ∂A = 0 (policy held fixed)
    np.testing.assert_allclose(np.einsum("sa,sad->sd", su.exact.pi, su.exact.da), 0, atol=1e-12)
    assert leader_values(su.model, su.exact.pi, problem.lam).objective == pytest.approx(
        su.model.mu @ su.exact.v_bar)


def test_design_ground_truth_matches_the_closed_forms():
    from bilevel_envs.envs.contract_design import closed_forms as cd
    from bilevel_teaching.assignments import design

    problem = design.problem()
    assert design.hard_bonus(problem) == pytest.approx(cd.project_hard_optimum(problem)[0])
    x = np.array([0.9, 0.1, 0.2, 0.0])
    u, v = design._parts(problem, x)
    assert design.exact_objective(problem, x) == pytest.approx(
        cd.project_objective_closed_form(problem, u, v), rel=1e-10)


# ---------------------------------------------------------------------------- the statistics
def test_unbiasedness_passes_a_correct_estimator_and_names_a_mistake():
    rng = np.random.default_rng(0)
    exact = np.array([1.0, -0.5])
    mistake = {"forgetting the factor two.": exact / 2}
    samples = exact + rng.normal(0, 1, size=(40_000, 2))
    assert comparisons.unbiasedness(samples, exact, "x", ["a", "b"],
                                    targets=mistake).fraction == 1
    wrong = comparisons.unbiasedness(samples - exact / 2, exact, "x", ["a", "b"],
                                     targets=mistake)
    assert wrong.fraction == 0 and "consistent with this mistake: forgetting" in wrong.feedback
    noisy = comparisons.unbiasedness(exact + rng.normal(0, 50, size=(400, 2)), exact, "x",
                                     ["a", "b"], targets=mistake)
    assert noisy.fraction == 0 and "too noisy" in noisy.feedback
    constant = comparisons.unbiasedness(np.ones((10, 2)), exact, "x", ["a", "b"])
    assert constant.fraction == 0 and "identical" in constant.feedback


def test_z_threshold_is_four_or_bonferroni():
    assert comparisons.z_threshold(1) == 4.0
    assert comparisons.z_threshold(30) == pytest.approx(4.15, abs=0.01)
    assert comparisons.z_threshold(1000) > comparisons.z_threshold(100) > 4


# ---------------------------------------------------------------------------- the report
def test_failures_show_the_error_at_the_scale_of_the_tolerance(reports):
    feedback = by_question(reports("soft_vi", "wrong"))["2.1a"].feedback
    # tolerance ~3e-9 on values ~2: 12 significant digits, and where the largest error is
    assert re.search(r"at index \(\d+,\) \(expected -?\d\.\d{10,}, found -?\d\.\d{10,}\)",
                     feedback), feedback
    assert comparisons.significant_digits([4.18], 1e-8) == 12
    assert comparisons.significant_digits([1.0], 1e-3) == 6


def test_follow_on_failures_point_to_their_cause(reports):
    wrong = by_question(reports("soft_vi", "wrong"))
    # evidence: the backup is the submission's own soft max of the right Q, V is a fixed point
    # of the submission's own backup, pi is its own policy_from_q of Q*
    assert "This follows from the failure of check 2.1a" in wrong["2.3a"].feedback
    assert "This follows from the failure of check 2.3a" in wrong["2.4a"].feedback
    assert "This follows from the failure of check 2.2a" in wrong["2.4b"].feedback
    assert "This may follow from the failure of check 2.2a" in wrong["2.2b"].feedback
    assert "follows from" not in wrong["2.5a"].feedback  # no dependency
    design = by_question(reports("design", "wrong"))
    assert "This may follow from the failure of check 2.2" in design["2.5"].feedback


def test_checks_that_depend_on_a_missing_design_say_so(tmp_path):
    path = _submission(tmp_path, """
    import numpy as np

    def effort_probability(problem, x):
        return np.zeros(2)
    """)
    results = by_question(grade("design", path))
    assert "does not define the function design_contract(seed)" in results["2.4a"].feedback
    for question in ("2.4b", "2.4c", "2.5"):
        assert results[question].status == "failed"
        assert results[question].feedback.startswith(
            "This follows from the failure of check 2.4a (design_contract: a trained leader"), \
            results[question].feedback
