""":func:`check_problem`: every consistency check of a :class:`~bilevel_envs.BilevelProblem`."""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable

import numpy as np

from bilevel_envs.leader_env import LeaderEnv
from bilevel_envs.oracles import make_oracle
from bilevel_envs.policies import TabularPolicy
from bilevel_envs.problem import BilevelProblem, PairwiseObjective
from bilevel_envs.testing.derivatives import (
    FD_RTOL,
    directions,
    exact_hypergradient_check,
    pair_objective_check,
    reward_gradient_checks,
)
from bilevel_envs.testing.estimator import HypergradientEstimator, estimator_check
from bilevel_envs.testing.model import model_checks
from bilevel_envs.testing.report import CheckResult, ProblemCheckError, ProblemReport, skipped
from bilevel_envs.testing.sampler import (
    initial_states_check,
    rewards_check,
    sample_follower_env,
    sample_native,
    transitions_check,
)
from bilevel_envs.validation import check_bool, check_float, check_int

#: the statistical checks share the false-alarm budget ``alpha`` equally
STATISTICAL_CHECKS = ("sampler transitions", "sampler initial states", "hypergradient estimator")


def check_problem(problem: BilevelProblem, *, seed: int = 0, x: np.ndarray | None = None,
                  estimator: HypergradientEstimator | None = None,
                  n_transitions: int = 20_000, n_initial: int = 2_000, n_estimates: int = 2_000,
                  n_directions: int = 6, max_pairs: int = 1_000, alpha: float = 1e-3,
                  rtol: float = FD_RTOL, leader_env: bool = False,
                  raise_on_failure: bool = True) -> ProblemReport:
    """Check that the parts of a bilevel problem agree with each other.

    A problem states the same MDP several times — the follower's Gymnasium env, the
    per-transition reward functions and their ``grad_*`` derivatives, and (tabular problems) the
    exact :class:`~bilevel_envs.tabular.TabularModel` with its derivatives — and every leader
    reads a different subset. This runs, at one ``x`` near ``problem.x_init`` (or the given
    ``x``), what applies to the problem and reports the rest as skipped with the reason:

    * ``follower env check_env``: Gymnasium's ``check_env`` on ``problem.follower_env(x, 0)``;
      ``LeaderEnv check_env`` on a small :class:`~bilevel_envs.LeaderEnv` with
      ``leader_env=True`` (off by default: its steps solve the follower, seconds or more);
    * ``sampler rewards``: the env's rewards and ``info["leader_reward"]`` equal
      ``follower_reward`` / ``leader_reward`` at ``n_transitions`` sampled transitions;
    * tabular problems — ``sampler transitions``, ``sampler initial states``: chi-square tests
      of the env's (and a native oracle's) transitions and resets against ``P`` and ``μ``;
      ``TabularModel`` (validity) and ``TabularModel.dr`` / ``.dr_leader`` / ``.dP`` /
      ``.dmu`` against finite differences of the model (and the ``*_depends_on_x`` flags against
      ``dP``/``dmu``); ``follower_reward`` / ``leader_reward`` against the model's expected
      rewards; ``grad_log_transition`` / ``grad_log_initial`` against differences of the model's
      ``log P`` and ``log μ``; ``exact_hypergradient`` against differences of the exact ``J``;
      ``hypergradient estimator``: the mean of ``n_estimates`` estimates of ``estimator`` per
      context within measured standard errors of the exact ``dJ_ξ/dx``;
    * every problem — ``grad_follower_reward``, ``grad_leader_reward`` (and
      ``grad_pair_objective`` of a :class:`~bilevel_envs.problem.PairwiseObjective`) against
      finite differences of the functions they differentiate, and their ``weights=``
      contractions against the weighted sums.

    Statistics: the random checks use ``seed`` (same seed, same report); the three statistical
    checks share the false-alarm rate ``alpha`` equally (Bonferroni inside each), so a correct
    problem fails with probability at most ``alpha`` over seeds. Finite-difference checks are
    deterministic with relative tolerance ``rtol`` (see :mod:`bilevel_envs.testing.derivatives`).
    Power: a derivative off by more than ``rtol`` fails at once; the sampler tests detect a
    slip probability off by 10 % with the default ``n_transitions`` and by 2 % with 300,000
    (``tests/test_check_problem.py``); the estimator check has the power of its standard errors
    (it catches what the deterministic checks cannot see, e.g. a flag that makes estimators skip
    a term).

    The estimator check needs an estimator, which lives in the algorithms' layer (``leaders``)
    that this package never imports: pass ``estimator=leaders.testing.hpgd_estimator`` (HPGD's
    unbiased estimators, paper Alg. 5 and the trajectory-level one) or your own
    :class:`~bilevel_envs.testing.estimator.HypergradientEstimator`; without one it is skipped.

    Args:
        problem: the problem to check.
        seed: seed of every random choice (``x``, directions, samples).
        x: where to check; default ``x_init`` moved by up to 10 % of the box's width (at most
            0.2) in each coordinate, reflected into the interior (a special point such as 0
            could hide an error).
        estimator: a hypergradient estimator (see above), or None.
        n_transitions: follower-env transitions sampled, split evenly over the contexts (at
            most ``max_pairs`` per context for a problem without a model: no chi-square).
        n_initial: follower-env resets per context (initial-state test).
        n_estimates: estimates for the estimator check, split evenly over the contexts. The
            z-test needs enough of them for the measured standard error to be reliable: a
            heavy-tailed estimator (rare large values, e.g. Four-Rooms' far goal) measured on
            100 estimates can miss every large value and fail; the default suits the
            registered problems.
        n_directions: directions of the finite differences (the coordinates if ``d`` is at most
            this, else random unit vectors).
        max_pairs: ``(s, a)`` pairs per context at which per-transition terms are compared.
        alpha: total false-alarm rate of the statistical checks, in (0, 1).
        rtol: relative tolerance of the finite-difference checks.
        leader_env: also run ``check_env`` on a small ``LeaderEnv`` of the problem.
        raise_on_failure: raise :class:`ProblemCheckError` if a check fails.

    Returns:
        The :class:`~bilevel_envs.testing.report.ProblemReport` (``str(report)`` is a table).

    Raises:
        ProblemCheckError: (an ``AssertionError``) with ``raise_on_failure`` and a failed check;
            its message lists the failed checks, each naming the disagreeing term.
        TypeError, ValueError: for arguments of the wrong type or range.
    """
    if not isinstance(problem, BilevelProblem):
        raise TypeError(f"problem must be a BilevelProblem; got {type(problem).__name__}")
    seed = check_int("seed", seed, 0)
    for name, value, low in (("n_transitions", n_transitions, 100), ("n_initial", n_initial, 1),
                             ("n_estimates", n_estimates, 2), ("n_directions", n_directions, 1),
                             ("max_pairs", max_pairs, 1)):
        check_int(name, value, low)
    alpha = check_float("alpha", alpha, 0.0, 1.0, low_open=True, high_open=True)
    rtol = check_float("rtol", rtol, 0.0, low_open=True)
    check_bool("leader_env", leader_env)
    check_bool("raise_on_failure", raise_on_failure)
    if estimator is not None and not callable(estimator):
        raise TypeError(f"estimator must be a callable (problem, x, context, oracle, rng, "
                        f"n_samples) -> (n_samples, d) array, or None; got {estimator!r}")
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    x = default_x(problem, rng) if x is None else problem.check_x(x)
    U, labels = directions(problem.n_params, n_directions, rng)
    share = alpha / len(STATISTICAL_CHECKS)
    report = ProblemReport(repr(problem))
    add = report.results.append

    add(_run("follower env check_env", lambda: _env_check(
        "follower env check_env", lambda: problem.follower_env(x, 0).unwrapped)))
    per_context = {name: max(n // problem.n_contexts, low) for name, n, low in (
        ("transitions", n_transitions, 100), ("estimates", n_estimates, 2))}
    if not problem.is_tabular:  # no chi-square: the reward checks need max_pairs per context
        per_context["transitions"] = min(per_context["transitions"], max_pairs)
    samples: dict = {}
    initial: dict = {}
    add(_run("sampler rewards", lambda: _sample(
        problem, x, per_context["transitions"], n_initial, rng, samples, initial)))
    if problem.is_tabular:
        report.results.extend(_sampler_checks(problem, x, samples, initial,
                                              per_context["transitions"], share, rng))
        try:
            results, transitions = model_checks(problem, x, U, labels, rtol, rng, max_pairs)
        except Exception as exc:  # noqa: BLE001 - a problem's own code may raise anything
            results, transitions = [_raised("TabularModel", exc)], {}
        report.results.extend(results)
    else:
        for name in ("sampler transitions", "sampler initial states", "TabularModel"):
            add(skipped(name, "the problem is not tabular: no model to compare with"))
        transitions = {c: (t.obs[:max_pairs], t.actions[:max_pairs], t.next_obs[:max_pairs])
                       for c, t in samples.items()}
    if transitions:
        report.results.extend(_run_many(("grad_follower_reward", "grad_leader_reward"),
                                        lambda: reward_gradient_checks(
                                            problem, x, transitions, U, labels, rtol, rng)))
    else:
        for name in ("grad_follower_reward", "grad_leader_reward"):
            add(skipped(name, "no transitions to compare at (see the checks above)"))
    if isinstance(problem, PairwiseObjective) and not problem.decomposable:
        add(_run("grad_pair_objective", lambda: pair_objective_check(
            problem, x, _pairs(problem, x, rng, max_pairs), U, labels, rtol, rng)))
    report.results.extend(_exact_checks(problem, x, U, labels, rtol, estimator,
                                        per_context["estimates"], share, rng))
    if leader_env:
        add(_run("LeaderEnv check_env", lambda: _env_check(
            "LeaderEnv check_env", lambda: LeaderEnv(problem, n_envs=2, n_rollout_steps=50))))
    else:
        add(skipped("LeaderEnv check_env", "off by default (its steps solve the follower); "
                    "pass leader_env=True"))
    report.seconds = time.perf_counter() - start
    if raise_on_failure and not report.passed:
        raise ProblemCheckError(report)
    return report


def default_x(problem: BilevelProblem, rng: np.random.Generator) -> np.ndarray:
    """``x_init`` moved by ``U(−δ, δ)`` per coordinate, ``δ`` = 10 % of the box's width (at
    most 0.2), reflected at a margin of ``δ/10`` inside the bounds."""
    low, high = problem.x_space.low.ravel(), problem.x_space.high.ravel()
    x0 = np.asarray(problem.x_init, dtype=np.float64).ravel()
    delta = np.minimum(0.1 * np.where(np.isfinite(high - low), high - low, 2.0), 0.2)
    x = x0 + delta * rng.uniform(-1.0, 1.0, size=x0.size)
    lo, hi = low + delta / 10, high - delta / 10
    x = np.where(x < lo, 2 * lo - x, x)
    x = np.where(x > hi, 2 * hi - x, x)
    return problem.check_x(np.clip(x, lo, hi).reshape(problem.x_space.shape))


def _sampler_checks(problem, x, samples, initial, n, alpha, rng) -> list[CheckResult]:
    """The chi-square checks of the follower env's (and a native oracle's) samples."""
    names = ("sampler transitions", "sampler initial states")
    if not samples:
        return [skipped(name, "no follower env samples (see sampler rewards)") for name in names]
    try:
        models = {c: problem.tabular(x, c) for c in range(problem.n_contexts)}
        native = {c: sample_native(problem, x, c, n, rng, models[c].n_states) for c in models}
    except Exception as exc:  # noqa: BLE001 - a problem's own code may raise anything
        return [_raised(name, exc) for name in names]
    sources = {"follower env": samples}
    if all(t is not None for t in native.values()):
        sources["native oracle"] = native
    return [_run(names[0], lambda: transitions_check(models, sources, alpha)),
            _run(names[1], lambda: initial_states_check(models, initial, alpha))]


def _exact_checks(problem, x, U, labels, rtol, estimator, n_estimates, alpha, rng
                  ) -> list[CheckResult]:
    """The exact hypergradient against differences of ``J``; the estimator against it."""
    names = ("exact_hypergradient", "hypergradient estimator")
    if not problem.is_tabular:
        return [skipped(name, "the problem is not tabular: no exact hypergradient")
                for name in names]
    results = [_run(names[0], lambda: exact_hypergradient_check(problem, x, U, labels, rtol))]
    if estimator is None:
        results.append(skipped(names[1], "no estimator given (pass "
                                         "estimator=leaders.testing.hpgd_estimator for HPGD's)"))
    else:
        results.append(_run(names[1], lambda: estimator_check(problem, x, estimator,
                                                               n_estimates, alpha, rng)))
    return results


def _sample(problem, x, n, n_initial, rng, samples, initial) -> CheckResult:
    start = time.perf_counter()
    for c in range(problem.n_contexts):
        samples[c], initial[c] = sample_follower_env(problem, x, c, n, n_initial, rng)
    result = rewards_check(problem, x, samples)
    return dataclasses.replace(result, seconds=time.perf_counter() - start)


def _pairs(problem, x, rng, max_pairs) -> dict:
    """Trajectory pairs per context from uniform-policy rollouts (for ``grad_pair_objective``)."""
    length = problem.episode_length_bound or problem.max_episode_steps or 50
    n_states = problem.follower_observation_space.n
    uniform = TabularPolicy(np.full((n_states, problem.follower_action_space.n),
                                    1.0 / problem.follower_action_space.n))
    out = {}
    for c in range(problem.n_contexts):
        n_pairs = min(max_pairs, 200)
        rollouts = make_oracle(problem, x, c, uniform).rollout(rng, 2 * n_pairs, length)
        pairs = problem.trajectory_pairs(rollouts)
        out[c] = (pairs.traj0, pairs.traj1)
    return out


def _env_check(name: str, make: Callable) -> CheckResult:
    from gymnasium.utils.env_checker import check_env

    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env = make()
        check_env(env, skip_render_check=True)
    notes = sorted({str(w.message).split("\n")[0][:120] for w in caught})
    text = "Gymnasium's check_env passed" + (f" with warnings: {notes}" if notes else "")
    return CheckResult(name, True, None, text, time.perf_counter() - start)


def _run(name: str, check: Callable[[], CheckResult]) -> CheckResult:
    """Run one check; an exception (from the problem's code or an env checker) fails it."""
    try:
        return check()
    except Exception as exc:  # noqa: BLE001 - a problem's own code may raise anything
        return _raised(name, exc)


def _run_many(names: tuple[str, ...], checks: Callable[[], list[CheckResult]]
              ) -> list[CheckResult]:
    try:
        return checks()
    except Exception as exc:  # noqa: BLE001
        return [_raised(name, exc) for name in names]


def _raised(name: str, exc: Exception) -> CheckResult:
    return CheckResult(name, False, None, f"{name} raised {type(exc).__name__}: {exc}")
