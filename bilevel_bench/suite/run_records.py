"""The suite's run records (format ``bilevel-suite-run/1``, one JSON object per run, written by
:func:`bilevel_bench.suite.evaluate`): their validation, with errors that name the record and
the field, and their loading from a results folder."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bilevel_envs.validation import check_choice, check_float, check_int

FORMAT = "bilevel-suite-run/1"
TRACKS = ("sample", "model")
APPLICATIONS = ("four_rooms", "contract", "rlhf", "tax")
BUDGET_COUNTERS = ("transitions", "follower_updates", "model_queries")
_SCORE_RTOL = 1e-6  # a record's score must match (J_final − J_init)/(J* − J_init) this closely


def _real(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_))


def finite_list(where: str, name: str, value: Any) -> np.ndarray:
    """Field ``name`` of the record at ``where`` as a float array: a non-empty list of finite
    numbers, else ``ValueError`` naming the record and the field."""
    arr = np.asarray(value, dtype=object)
    if arr.ndim != 1 or arr.size == 0 or not all(_real(v) and math.isfinite(v) for v in arr):
        raise ValueError(f"{where}: field '{name}' must be a non-empty list of finite numbers; "
                         f"got {value!r}"[:300])
    return arr.astype(np.float64)


def check_record(record: Any, where: str = "run record") -> dict[str, Any]:
    """``record`` if it is a valid run record of format ``bilevel-suite-run/1``.

    A run with ``status == "ok"`` needs finite ``J_final``, ``score``, ``auc`` and a learning
    curve (``cost`` non-decreasing, ≥ 0, as long as ``score``); a failed run needs an ``error``
    text and may leave those fields null, and ``budget.used`` (with ``budget.limit``) too if it
    failed before its env was made. ``score`` must equal
    ``(J_final − J_init)/(J_star − J_init)`` (relative tolerance 1e-6), with ``J_star > J_init``.

    Raises:
        ValueError: naming the record (``where``, task, leader, seed) and the field at fault.
    """
    if not isinstance(record, Mapping):
        raise ValueError(f"{where} must be a JSON object (dict); got {type(record).__name__}")
    fmt = record.get("format")
    if fmt != FORMAT:
        raise ValueError(f"{where}: field 'format' must be {FORMAT!r}; got {fmt!r}")
    where = (f"{where} (task {record.get('task')!r}, leader {record.get('leader')!r}, "
             f"seed {record.get('seed')!r})")

    def get(name: str) -> Any:
        if name not in record:
            raise ValueError(f"{where}: field '{name}' is missing")
        return record[name]

    def check(name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(f"field '{name}'", get(name), *args, **kwargs)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None

    for name in ("suite", "task", "leader"):
        if not isinstance(get(name), str) or not get(name):
            raise ValueError(f"{where}: field '{name}' must be a non-empty string; "
                             f"got {get(name)!r}")
    check("suite_version", check_int, 1)
    check("seed", check_int, 0)
    check("application", check_choice, APPLICATIONS)
    check("track", check_choice, TRACKS)
    status = check("status", check_choice, ("ok", "failed"))
    if not isinstance(get("hyperparameters"), Mapping):
        raise ValueError(f"{where}: field 'hyperparameters' must be an object (dict)")
    error = get("error")
    if not (error is None or isinstance(error, str)) or (status == "failed" and not error):
        raise ValueError(f"{where}: field 'error' must be null or a string, and a failed run's "
                         f"error text; got {error!r}")
    budget = get("budget")
    # a run that failed before its env existed has neither a limit nor counters
    unset = status == "failed" and isinstance(budget, Mapping) and budget.get("used") is None
    if not isinstance(budget, Mapping) or not (unset or isinstance(budget.get("used"), Mapping)):
        raise ValueError(f"{where}: field 'budget' must be {{'limit': int, 'used': {{...}}}}; "
                         f"got {budget!r}")
    try:
        if not (unset and budget.get("limit") is None):
            check_int("field 'budget.limit'", budget.get("limit"), 1)
        for counter in () if unset else BUDGET_COUNTERS:
            check_int(f"field 'budget.used.{counter}'", budget["used"].get(counter), 0)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    j_init = check("J_init", check_float)
    j_star = check("J_star", check_float)
    if not j_star > j_init:
        raise ValueError(f"{where}: field 'J_star' must exceed 'J_init' (the score divides by "
                         f"J_star − J_init); got J_star={j_star!r}, J_init={j_init!r}")
    check("wall_seconds", check_float, 0.0)
    if status == "failed":
        return dict(record)
    j_final = check("J_final", check_float)
    score = check("score", check_float)
    check("auc", check_float)
    if get("J_final_se") is not None:
        check("J_final_se", check_float, 0.0)
    if not isinstance(get("x_final"), list):
        raise ValueError(f"{where}: field 'x_final' must be a list; got {get('x_final')!r}")
    expected = (j_final - j_init) / (j_star - j_init)
    if abs(score - expected) > _SCORE_RTOL * max(1.0, abs(expected)):
        raise ValueError(f"{where}: field 'score' must be (J_final − J_init)/(J_star − J_init) "
                         f"= {expected!r}; got {score!r}")
    curve = get("curve")
    if not isinstance(curve, Mapping):
        raise ValueError(f"{where}: field 'curve' must be {{'cost': [...], 'score': [...]}}")
    cost = finite_list(where, "curve.cost", curve.get("cost"))
    finite_list(where, "curve.score", curve.get("score"))
    if len(curve["score"]) != cost.size or cost[0] < 0 or np.any(np.diff(cost) < 0):
        raise ValueError(f"{where}: field 'curve' must have as many scores as costs and costs "
                         "that are ≥ 0 and non-decreasing")
    return dict(record)


def check_records(records: Iterable[Any]) -> list[dict[str, Any]]:
    """Every record checked (:func:`check_record`), of one suite and version, no run twice.

    Raises:
        ValueError: for an empty list, an invalid record, mixed suites or versions (their scores
            are not comparable), or two records of one (track, leader, task, seed).
    """
    if isinstance(records, (str, bytes, Mapping)):
        raise ValueError("records must be a list of run records (dicts); got a single "
                         f"{type(records).__name__}")
    checked = [check_record(r, f"run record {i}") for i, r in enumerate(records)]
    if not checked:
        raise ValueError("records must hold at least one run record; got none")
    suites = sorted({(r["suite"], r["suite_version"]) for r in checked})
    if len(suites) > 1:
        raise ValueError(f"records mix suites or suite versions {suites}; aggregate one at a time")
    seen: dict[tuple, int] = {}
    apps: dict[str, str] = {}
    for i, r in enumerate(checked):
        key = (r["track"], r["leader"], r["task"], r["seed"])
        if key in seen:
            raise ValueError(f"run records {seen[key]} and {i} are the same run "
                             f"(track, leader, task, seed) = {key}")
        seen[key] = i
        if apps.setdefault(r["task"], r["application"]) != r["application"]:
            raise ValueError(f"run record {i}: task {r['task']!r} has application "
                             f"{r['application']!r}, earlier records {apps[r['task']]!r}")
    return checked


def load_records(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """The run records of the JSON files under ``folder`` (recursively, sorted by path) whose
    ``format`` is a suite-run format; other JSON files there are skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"folder must be an existing directory; got {str(folder)!r}")
    records = []
    for path in sorted(folder.rglob("*.json")):
        data = json.loads(path.read_text())
        if isinstance(data, dict) and str(data.get("format", "")).startswith("bilevel-suite-run/"):
            records.append(data)
    return records
