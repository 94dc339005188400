"""Scoring a leader on the suite: one run per task × seed, one versioned record per run.

    from bilevel_bench.suite import evaluate
    records = evaluate("hpgd", tasks=["contract/tree"], seeds=3, out="results/my-suite")

A run builds the task's env for the leader's track (:attr:`Leader.track`: ``"sample"`` or
``"model"``), makes the leader with :func:`leaders.registry.make_leader` at the task's
``x_init`` and runs it until its consumption (``env.unwrapped.budget``: ``sample_cost`` on the
sample track, ``model_queries`` on the model track) reaches the task's limit — a callback stops
the loop after the iteration that reaches it. At the budget fractions of
:data:`~bilevel_bench.suite.tasks.CURVE_FRACTIONS` the current ``x`` is scored with the task's
``J`` (:class:`~bilevel_bench.suite.references.Evaluator`: exact, or Monte Carlo with its s.e.).

Record (``format`` :data:`RECORD_FORMAT`, one JSON file per run, resumable through
:func:`bilevel_bench.runner.run_specs`): ``task``, ``application``, ``leader``, ``track``,
``seed``, ``hyperparameters``, ``status`` (``"ok"``/``"failed"``) and ``error``, ``budget``
(``limit`` and the ``used`` counters), ``x_final``, ``J_init``, ``J_final`` (and ``J_final_se``
for Monte-Carlo tasks), ``J_star``, ``score = (J(x_final) − J(x_init)) / (J* − J(x_init))``, the
``curve`` (``cost``: the scheduled budget points; ``score``: the normalised score there), its
``auc`` (trapezoid of the normalised score over the budget fraction, from score 0 at cost 0)
and ``wall_seconds``. A run whose leader raises or produces a non-finite ``x`` is recorded as
failed with the error (numbers it did not reach are ``null``); the other runs go on.
"""

from __future__ import annotations

import functools
import os
import tempfile
import time
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from bilevel_bench.checks import Choice, Integer, JSONObject, Positive, SpecError, Text
from bilevel_bench.runner import run_specs
from bilevel_bench.specs import Spec, spec_field
from bilevel_bench.suite.references import Evaluator, load_references
from bilevel_bench.suite.tasks import (
    CURVE_FRACTIONS,
    SUITE_NAME,
    SUITE_VERSION,
    TASK_IDS,
    TRACKS,
    get_task,
    initial_x,
)

RECORD_FORMAT = "bilevel-suite-run/1"
#: a run that has not used its budget after this many leader iterations fails (a leader that
#: consumes nothing would otherwise never stop)
MAX_ITERATIONS = 200_000
#: hyperparameter key holding the leader env's sampling settings (not a leader argument)
ENV_KWARGS = "env_kwargs"
SAMPLING_KEYS = frozenset({"contexts", "n_envs", "n_rollout_steps", "n_followers", "n_pairs"})


@dataclass(frozen=True, kw_only=True)
class SuiteRunSpec(Spec):
    """One run of the suite: a leader on a task with a seed (see the module docstring)."""

    EXPERIMENT: ClassVar[str] = "suite"
    VERSION: ClassVar[int] = SUITE_VERSION

    task: str = spec_field(check=Choice(*TASK_IDS), help=f"task of {SUITE_NAME}")
    leader: str = spec_field(check=Text(), help="leader: a registered name or module:Class")
    seed: int = spec_field(check=Integer(0, 2**32 - 1), help="random seed")
    hyperparameters: dict = spec_field({}, check=JSONObject(),
                                       help="the leader's keyword arguments (and env_kwargs)")
    budget_scale: float = spec_field(1.0, check=Positive(), flag=True,
                                     help="multiply every task's budget by this factor")


# ---------------------------------------------------------------------------- leaders
def leader_name(leader: Any) -> str:
    """The name a record gives ``leader``: the string itself, or ``module:QualName`` of a class
    or function."""
    if isinstance(leader, str):
        return leader
    module, qualname = getattr(leader, "__module__", None), getattr(leader, "__qualname__", None)
    if module is None or qualname is None:
        raise TypeError(f"leader must be a name, 'module:Class', a Leader class or a callable; "
                        f"got {leader!r}")
    return f"{module}:{qualname}"


def leader_track(leader: Any) -> str:
    """The track of a leader spec (its ``track`` attribute; ``"sample"`` by default).

    Raises:
        ValueError: for an unknown leader or a track outside :data:`TRACKS`.
        TypeError: for an object that is not a Leader class or callable.
    """
    from leaders.registry import resolve_leader

    track = getattr(resolve_leader(leader), "track", "sample")
    if track not in TRACKS:
        raise ValueError(f"leader {leader_name(leader)}: track must be one of {TRACKS}; got "
                         f"{track!r}")
    return track


def check_leader_kwargs(leader: Any, kwargs: Mapping[str, Any]) -> None:
    """Check, without running anything, that the leader accepts ``kwargs`` (besides the env,
    ``seed`` and ``x0`` the suite passes) and that its ``env_kwargs`` are sampling settings.

    Raises:
        ValueError: for an unknown leader or a keyword it does not accept.
        TypeError: for an object that is not a Leader class or callable.
    """
    from leaders.registry import accepted_kwargs, resolve_leader

    target = resolve_leader(leader)
    kwargs = dict(kwargs)
    env_kwargs = kwargs.pop(ENV_KWARGS, {})
    if not isinstance(env_kwargs, dict) or not set(env_kwargs) <= SAMPLING_KEYS:
        raise ValueError(f"hyperparameters['{ENV_KWARGS}'] may set only {sorted(SAMPLING_KEYS)}"
                         f"; got {env_kwargs!r}")
    accepted = accepted_kwargs(target)
    unknown = sorted(set(kwargs) - accepted) if accepted is not None else []
    if unknown:
        raise ValueError(f"leader {leader_name(leader)} does not accept {unknown}; it accepts "
                         f"{sorted(accepted)}")
    reserved = sorted({"env", "seed", "x0"} & set(kwargs))
    if reserved:
        raise ValueError(f"hyperparameters may not set {reserved}: the suite sets the env, the "
                         f"seed and the task's x_init")


def hyperparameters_for(config: Mapping[str, Any] | None, task_id: str) -> dict[str, Any]:
    """The leader kwargs of ``task_id`` in ``config``: a flat kwargs dict (every task), or a dict
    keyed by task ids and ``"*"`` (every task; a task's own entry wins key by key).

    Raises:
        ValueError: for a per-task dict naming a task that is not in the suite.
    """
    if not config:
        return {}
    if not is_per_task(config):
        return dict(config)
    unknown = sorted(k for k in config if k != "*" and k not in TASK_IDS)
    if unknown:
        raise ValueError(f"hyperparameters name unknown task(s) {unknown}; tasks: "
                         f"{', '.join(TASK_IDS)}")
    return {**config.get("*", {}), **config.get(task_id, {})}


def is_per_task(config: Mapping[str, Any]) -> bool:
    """Whether a hyperparameter dict is keyed by task ids (and ``"*"``)."""
    return bool(config) and all(k == "*" or "/" in k for k in config)


# ---------------------------------------------------------------------------- one run
class _StopAtBudget:
    """The callback that scores the curve and stops the leader at its budget."""

    def __init__(self, env, track: str, limit: int, score_of):
        self.env, self.track, self.limit, self.score_of = env, track, limit, score_of
        self.schedule = [f * limit for f in CURVE_FRACTIONS]
        self.curve: list[float] = []
        self.iterations = 0

    def cost(self) -> int:
        budget = self.env.unwrapped.budget
        return int(budget.sample_cost if self.track == "sample" else budget.model_queries)

    def __call__(self, leader, record) -> bool:
        self.iterations += 1
        cost = self.cost()
        if len(self.curve) < len(self.schedule) and cost >= self.schedule[len(self.curve)]:
            x = np.asarray(leader.x, dtype=np.float64)
            if not np.all(np.isfinite(x)):
                raise FloatingPointError(f"non-finite x after iteration {self.iterations}")
            score = self.score_of(x)
            while len(self.curve) < len(self.schedule) and cost >= self.schedule[len(self.curve)]:
                self.curve.append(score)
        return cost < self.limit and self.iterations < MAX_ITERATIONS


def run_spec(spec: SuiteRunSpec, leader_object: Any = None) -> dict[str, Any]:
    """Run one spec and return its record (module docstring). ``leader_object`` replaces the
    spec's leader (a class or callable that cannot be imported by name; in-process runs)."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from bilevel_bench.suite.tasks import make_env
    from leaders.registry import make_leader

    start = time.perf_counter()
    task = get_task(spec.task)
    ref = load_references()[task.id]
    j_init, j_star = float(ref["J_init"]), float(ref["J_star"])
    leader_spec = spec.leader if leader_object is None else leader_object
    kwargs = dict(spec.hyperparameters)
    env_kwargs = kwargs.pop(ENV_KWARGS, {})
    record: dict[str, Any] = {
        "format": RECORD_FORMAT, "suite": SUITE_NAME, "suite_version": SUITE_VERSION,
        "task": task.id, "application": task.application, "leader": spec.leader,
        "track": None, "seed": spec.seed, "hyperparameters": dict(spec.hyperparameters),
        "status": "ok", "error": None,
        "budget": {"limit": None, "used": None}, "x_final": None, "J_init": j_init,
        "J_final": None, "J_final_se": None, "J_star": j_star, "score": None,
        "curve": {"cost": [], "score": []}, "auc": None, "wall_seconds": None}
    evaluate = Evaluator(task)

    def normalised(value: float) -> float:
        return (value - j_init) / (j_star - j_init)

    env = stop = None
    try:
        track = leader_track(leader_spec)
        record["track"] = track
        limit = task.limit(track, spec.budget_scale)
        record["budget"]["limit"] = limit
        env = make_env(task, track, env_kwargs)
        x0 = initial_x(task, env.unwrapped.problem)
        leader = make_leader(leader_spec, env, seed=spec.seed, x0=x0, **kwargs)
        if hasattr(leader, "hyperparameters"):
            record["hyperparameters"] = _plain({**spec.hyperparameters,
                                                **leader.hyperparameters()})
        stop = _StopAtBudget(env, track, limit, lambda x: normalised(evaluate(x)[0]))
        leader.learn(MAX_ITERATIONS, callback=stop)
        x_final = np.asarray(leader.x, dtype=np.float64)
        if not np.all(np.isfinite(x_final)):
            raise FloatingPointError("the final x is not finite")
        record["x_final"] = x_final.tolist()
        if stop.cost() < limit:
            raise RuntimeError(f"used {stop.cost()} of its budget of {limit} in "
                               f"{stop.iterations} iterations (limit {MAX_ITERATIONS})")
        j_final, j_se = evaluate(x_final, final=True)
        record.update(J_final=j_final, J_final_se=j_se, score=normalised(j_final))
    except Exception as exc:  # the run fails, the sweep goes on
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}"[:2000],
                      traceback=traceback.format_exc(limit=8)[-4000:])
    finally:
        if env is not None and hasattr(env.unwrapped, "budget"):
            record["budget"]["used"] = _plain(env.unwrapped.budget.as_dict())
    if stop is not None:
        scores = stop.curve
        record["curve"] = {"cost": [float(c) for c in stop.schedule[:len(scores)]],
                           "score": [float(s) for s in scores]}
        if record["status"] == "ok":
            record["auc"] = float(np.trapezoid([0.0, *scores], [0.0, *CURVE_FRACTIONS]))
    record["wall_seconds"] = time.perf_counter() - start
    return record


def rescore(record: dict[str, Any], references: Mapping[str, Any] | None = None
            ) -> dict[str, Any]:
    """``record`` renormalised with ``references`` (default: the shipped ones): its ``J_star``,
    ``J_init``, ``score``, curve and ``auc`` — for when a better ``J*`` is found. The measured
    values (``J_final`` and the curve's ``J``) are kept; nothing is rerun."""
    ref = (references or load_references())[record["task"]]
    old_init, old_star = record["J_init"], record["J_star"]
    new_init, new_star = float(ref["J_init"]), float(ref["J_star"])

    def renormalise(score: float) -> float:
        return (old_init + score * (old_star - old_init) - new_init) / (new_star - new_init)

    out = {**record, "J_init": new_init, "J_star": new_star,
           "curve": {**record["curve"],
                     "score": [renormalise(v) for v in record["curve"]["score"]]}}
    if record["J_final"] is not None:
        out["score"] = (record["J_final"] - new_init) / (new_star - new_init)
    if record["auc"] is not None:
        out["auc"] = float(np.trapezoid([0.0, *out["curve"]["score"]],
                                        [0.0, *CURVE_FRACTIONS]))
    return out


def _plain(data: Any) -> Any:
    from bilevel_envs.plain_data import to_plain_data

    return to_plain_data(data)


# ---------------------------------------------------------------------------- the API
def make_specs(leader: Any, tasks: Iterable[str] | None = None, seeds: int | Iterable[int] = 10,
               budget_scale: float = 1.0, hyperparameters: Mapping[str, Any] | None = None
               ) -> list[SuiteRunSpec]:
    """The specs of one leader on ``tasks`` × ``seeds``, checked before anything runs.

    Raises:
        ValueError: for an unknown task or leader, kwargs the leader does not accept, or a
            budget scale that is not positive.
        TypeError: for an object that is not a Leader class or callable.
    """
    task_ids = list(TASK_IDS if tasks is None else tasks)
    for task_id in task_ids:
        get_task(task_id)
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not seed_list:
        raise ValueError("seeds must name at least one seed")
    leader_track(leader)
    task_ids = applicable_tasks(leader, task_ids)
    specs = []
    for task_id in task_ids:
        kwargs = hyperparameters_for(hyperparameters, task_id)
        check_leader_kwargs(leader, kwargs)
        for seed in seed_list:
            try:
                specs.append(SuiteRunSpec(task=task_id, leader=leader_name(leader), seed=seed,
                                          hyperparameters=kwargs, budget_scale=budget_scale))
            except SpecError as exc:
                raise ValueError(str(exc)) from None
    return specs


def applicable_tasks(leader: Any, task_ids: list[str]) -> list[str]:
    """``task_ids`` without the tasks ``leader`` does not apply to (a leader that needs a
    decomposable J on a trajectory-level task: AMD or RT-Q on RLHF).

    Raises:
        ValueError: when none is left.
    """
    from leaders.registry import resolve_leader

    factory = resolve_leader(leader)
    if not getattr(factory, "decomposable_only", False):
        return task_ids
    kept = [t for t in task_ids if get_task(t).decomposable]
    if not kept:
        raise ValueError(f"leader {leader_name(leader)!r} needs a decomposable J (a discounted "
                         f"sum of leader rewards); none of the tasks {task_ids} has one")
    return kept


def runner_of(leader: Any):
    """``(run, in_process)``: the run function for ``leader`` — :func:`run_spec` for a name or
    an importable ``module:Class``, else a partial binding the object (this process only)."""
    from leaders.registry import resolve_leader

    if isinstance(leader, str):
        return run_spec, False
    try:
        importable = resolve_leader(leader_name(leader)) is leader
    except (ValueError, TypeError, ImportError, AttributeError):
        importable = False
    return (run_spec, False) if importable else \
        (functools.partial(run_spec, leader_object=leader), True)


def evaluate(leader: Any, tasks: Iterable[str] | None = None,
             seeds: int | Iterable[int] = 10, budget_scale: float = 1.0,
             hyperparameters: Mapping[str, Any] | None = None,
             out: str | os.PathLike | None = None, workers: int | None = 1,
             progress: bool = False) -> list[dict[str, Any]]:
    """Score ``leader`` on the suite; return one record per task × seed (module docstring).

    Args:
        leader: anything :func:`leaders.registry.resolve_leader` accepts: a registered name,
            ``"package.module:Class"``, a :class:`~leaders.base.Leader` subclass or a callable
            ``(env, **kwargs) -> Leader``.
        tasks: task ids (default: the whole suite).
        seeds: a count (seeds ``0..n-1``) or the seeds.
        budget_scale: multiply every task's budget (``< 1`` does not reproduce the shipped
            leaderboard).
        hyperparameters: the leader's kwargs, flat or per task (see :func:`hyperparameters_for`).
        out: results folder (one file per run; runs already there are not rerun); default a
            temporary folder.
        workers: local processes (1: this process; a leader that cannot be imported by name
            runs in this process only).
        progress: show a progress bar.

    Raises:
        ValueError, TypeError: for bad arguments (see :func:`make_specs`), before anything runs.
    """
    specs = make_specs(leader, tasks, seeds, budget_scale, hyperparameters)
    run, in_process = runner_of(leader)
    if in_process and workers not in (None, 1):
        raise ValueError(f"workers must be 1 for a leader that cannot be imported by name "
                         f"({leader_name(leader)}); got {workers}")
    if out is None:
        with tempfile.TemporaryDirectory(prefix="bilevel-suite-") as tmp:
            return run_specs(specs, tmp, run, workers=1 if in_process else workers,
                             progress=progress)
    return run_specs(specs, Path(out), run, workers=1 if in_process else workers,
                     progress=progress)
