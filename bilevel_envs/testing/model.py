"""Checks of a tabular problem's model: its validity, its derivatives against finite differences
of itself, the per-transition rewards against its expected rewards, and the per-transition score
terms ``∂x log P`` and ``∂x log μ`` against differences of its logarithms.

The per-transition terms are compared at transitions drawn from the model: every state with
every action (or, for large models, one random action per state plus random pairs up to
``max_pairs``), each with one next state drawn from ``P(·|s, a)`` — so a term that is nonzero
only at a few states (Four-Rooms' leader reward, at the goal) is compared there too.
"""

from __future__ import annotations

import time

import numpy as np

from bilevel_envs.problem import BilevelProblem
from bilevel_envs.tabular import TabularModel
from bilevel_envs.testing.derivatives import MODEL_STEP, Worst, _scale, contraction_problem
from bilevel_envs.testing.report import CheckResult, skipped

#: the model's fields and their derivatives
DERIVATIVES = (("r", "dr"), ("r_leader", "dr_leader"), ("P", "dP"), ("mu", "dmu"))
#: a row of P is a full distribution (no termination) when its sum is this close to 1
FULL_ROW = 1e-9
_EPS_SCALE = np.finfo(np.float64).eps


def model_pairs(model: TabularModel, rng: np.random.Generator, max_pairs: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """The ``(s, a)`` pairs the per-transition terms are compared at (see module docstring)."""
    S, A = model.n_states, model.n_actions
    if S * A <= max_pairs:
        return np.repeat(np.arange(S), A), np.tile(np.arange(A), S)
    extra = max(max_pairs - S, 0)
    states = np.concatenate([np.arange(S), rng.integers(S, size=extra)])
    return states, rng.integers(A, size=states.size)


def draw_next(model: TabularModel, states: np.ndarray, actions: np.ndarray,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One next state per pair from ``P(·|s, a)`` renormalised, and whether the pair can
    continue (a zero row ends the episode: its next state is reported as ``s``)."""
    rows = model.P[states, actions]
    mass = rows.sum(-1)
    cdf = np.cumsum(rows, axis=-1) / np.where(mass > 0, mass, 1.0)[:, None]
    nxt = np.minimum((rng.random(len(rows))[:, None] >= cdf).sum(-1), model.n_states - 1)
    continues = mass > 0
    return np.where(continues, nxt, states), continues


def expected_reward_check(problem: BilevelProblem, x: np.ndarray, models: dict[int, TabularModel],
                          pairs: dict[int, tuple], name: str, field: str, rtol: float
                          ) -> CheckResult:
    """``model.<field>[s, a]`` against ``Σ_s' P(s'|s, a) <name>(s, a, s')`` (rows that end the
    episode with some probability: against the reward if it does not depend on ``s'``; such
    pairs with rewards that do are not compared)."""
    start = time.perf_counter()
    worst = Worst(name, name, f"TabularModel.{field} (the expectation of {name} over "
                              "P(s'|s, a))")
    excluded = 0
    for c, model in models.items():
        states, actions = pairs[c]
        S = model.n_states
        values = np.asarray(getattr(problem, name)(
            x, c, np.repeat(states, S), np.repeat(actions, S), np.tile(np.arange(S), states.size)),
            dtype=np.float64).reshape(states.size, S)
        rows = model.P[states, actions]
        full = np.abs(rows.sum(-1) - 1.0) <= FULL_ROW
        constant = np.ptp(values, axis=1) <= 1e-12 * (1 + np.abs(values).max())
        expected = np.where(full, (rows * values).sum(-1), values[:, 0])
        compared = full | constant
        excluded += int((~compared).sum())
        table = np.asarray(getattr(model, field))[states, actions]
        worst.update(table[compared], expected[compared], 0.0, 1.0,
                     lambda i, c=c, s=states[compared], a=actions[compared]:
                     f"at context {c}, (s={s[i[0]]}, a={a[i[0]]})")
    result = worst.result(rtol, time.perf_counter() - start)
    if excluded:
        note = (f" ({excluded} pairs that may end the episode with rewards depending on s' "
                "not compared)")
        result = CheckResult(result.name, result.passed, result.statistic,
                             result.message + note, result.seconds)
    return result


def model_checks(problem: BilevelProblem, x: np.ndarray, U: np.ndarray, labels: list[str],
                 rtol: float, rng: np.random.Generator, max_pairs: int
                 ) -> tuple[list[CheckResult], dict[int, tuple]]:
    """All checks of the tabular model and of the score terms; also returns, per context, the
    transitions ``(obs, actions, next_obs)`` drawn from the model (for the reward gradients)."""
    start = time.perf_counter()
    h = MODEL_STEP
    contexts = range(problem.n_contexts)
    models, pairs, transitions, invalid = {}, {}, {}, []
    for c in contexts:
        model = problem.tabular(x, c)
        try:
            model.check()
        except ValueError as exc:
            invalid.append(f"at context {c}: {exc}")
            continue
        models[c] = model
        states, actions = model_pairs(model, rng, max_pairs)
        nxt, continues = draw_next(model, states, actions, rng)
        pairs[c] = (states, actions)
        transitions[c] = (states, actions, nxt, continues)
    validity = CheckResult("TabularModel", not invalid, None, "; ".join(invalid) if invalid else
                           "shapes, P (rows ≥ 0, sums ≤ 1), μ (a distribution) and the "
                           "discounts are valid at every context")
    if invalid:
        return [validity], {}
    worst = {deriv: Worst(f"TabularModel.{deriv}", f"TabularModel.{field}")
             for field, deriv in DERIVATIVES}
    scores = {"grad_log_transition": Worst("grad_log_transition", "log P(s'|s, a) of the model"),
              "grad_log_initial": Worst("grad_log_initial", "log μ(s) of the model")}
    flags = {"dP": "transitions_depend_on_x", "dmu": "initial_depends_on_x"}
    for c, model in models.items():
        for deriv, flag in flags.items():
            value = getattr(model, deriv)
            if value is not None and np.any(value) and not getattr(problem, flag):
                worst[deriv].problems.append(
                    f"TabularModel.{deriv} is nonzero at context {c} but problem.{flag} is "
                    f"False: the estimators skip its score term")
        states, actions, nxt, continues = transitions[c]
        score_args = _score_arguments(problem, model, c, states, actions, nxt, continues)
        score_grads = {}
        for name, args in score_args.items():
            method = getattr(problem, name)
            grads = np.asarray(method(x, c, *args), dtype=np.float64)
            text = contraction_problem(name, method, grads, problem.n_params, rng, x, c, *args)
            if text:
                scores[name].problems.append(f"{text} at context {c}")
            else:
                score_grads[name] = grads
        for k, u in enumerate(U):
            plus, minus = problem.tabular(x + h * u, c), problem.tabular(x - h * u, c)
            for field, deriv in DERIVATIVES:
                p, m = getattr(plus, field), getattr(minus, field)
                numeric = (p - m) / (2 * h)
                analytic = getattr(model, deriv)
                if analytic is None:
                    if np.abs(numeric).max() > 1e3 * _EPS_SCALE * _scale(p, m) / h:
                        worst[deriv].problems.append(
                            f"TabularModel.{deriv} is None but {field} depends on x (finite "
                            f"difference up to {np.abs(numeric).max():.3g} at context {c}, "
                            f"{labels[k]})")
                    continue
                worst[deriv].update(analytic @ u, numeric, _scale(p, m), h,
                                    lambda i, c=c, k=k, f=field: _entry_text(f, c, i, labels[k]))
            for name, grads in score_grads.items():
                args = score_args[name]
                if name == "grad_log_transition":
                    s, a, s2 = args
                    lp, lm = np.log(plus.P[s, a, s2]), np.log(minus.P[s, a, s2])
                else:
                    s, s2 = args[0], args[0]
                    a = np.full(len(s), -1)
                    lp, lm = np.log(plus.mu[s]), np.log(minus.mu[s])
                worst_score = scores[name]
                worst_score.update(grads @ u, (lp - lm) / (2 * h), _scale(lp, lm), h,
                                   lambda i, c=c, k=k, s=s, a=a, s2=s2:
                                   f"at context {c}, transition (s={s[i[0]]}, a={a[i[0]]}, "
                                   f"s'={s2[i[0]]}), {labels[k]}")
    seconds = time.perf_counter() - start
    results = [validity]
    for field, deriv in DERIVATIVES:
        absent = all(getattr(m, deriv) is None for m in models.values())
        if absent and not worst[deriv].problems:
            results.append(CheckResult(f"TabularModel.{deriv}", True, 0.0,
                                       f"{deriv} is None and {field} does not depend on x "
                                       "(its finite differences are 0)", seconds))
        else:
            results.append(worst[deriv].result(rtol, seconds))
    results += [expected_reward_check(problem, x, models, pairs, "follower_reward", "r", rtol),
                expected_reward_check(problem, x, models, pairs, "leader_reward", "r_leader",
                                      rtol)]
    for name, flag in (("grad_log_transition", "transitions_depend_on_x"),
                       ("grad_log_initial", "initial_depends_on_x")):
        if getattr(problem, flag):
            results.append(scores[name].result(rtol, seconds))
        else:
            results.append(skipped(name, f"problem.{flag} is False: x moves neither the term "
                                         "nor the estimates"))
    return results, {c: t[:3] for c, t in transitions.items()}


def _score_arguments(problem, model, c, states, actions, nxt, continues) -> dict[str, tuple]:
    """The arguments of the score terms at context ``c``: continuing transitions for
    ``∂log P``, the states with ``μ > 0`` for ``∂log μ``."""
    out = {}
    if problem.transitions_depend_on_x:
        keep = continues & (model.P[states, actions, nxt] > 0)
        out["grad_log_transition"] = (states[keep], actions[keep], nxt[keep])
    if problem.initial_depends_on_x:
        out["grad_log_initial"] = (np.flatnonzero(model.mu > 0),)
    return out


def _entry_text(field: str, context: int, index: tuple[int, ...], label: str) -> str:
    names = {"r": ("s", "a"), "r_leader": ("s", "a"), "P": ("s", "a", "s'"), "mu": ("s",)}
    where = ", ".join(f"{n}={i}" for n, i in zip(names[field], index))
    return f"at context {context}, ({where}), {label}"
