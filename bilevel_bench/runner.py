"""The sweep engine: run many specs, keep one result file per spec, never run a spec twice.

A *spec* is any object with a ``key`` (a string naming its result file) and ``to_dict()``
(plain data that fully determines the run), e.g. a :class:`bilevel_bench.specs.Spec`; *run* is
a module-level function ``run(spec) -> dict`` (so worker processes and Ray can import it). The
engine knows nothing about experiments.

* **Resumable.** Results are written by the driver as runs finish, atomically, to
  ``<out>/runs/<key>.json`` (``{"key", "spec", **run(spec)}``); a sweep killed at any point and
  restarted with the same specs runs each unfinished spec once and loses nothing.
* **One run per spec across invocations.** A spec is run only under a claim
  (:mod:`bilevel_bench.claims`): two invocations writing into one folder share the work, and
  each waits for the specs the other is running, so both return every result.
* **Backends** (:mod:`bilevel_bench.backends`): local processes by default (one per core;
  ``workers=1`` runs in this process), or a Ray cluster. Workers die with the driver.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from bilevel_bench.backends import make_backend
from bilevel_bench.claims import Claim, claim_path, read_owner, try_claim
from bilevel_bench.storage import load_result, result_path, write_json_atomic

__all__ = ["RunFailed", "run_specs"]


class SweepSpec(Protocol):
    """What the engine needs of a spec."""

    @property
    def key(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


class RunFailed(RuntimeError):
    """A run raised; the message names the spec. Finished runs stay on disk."""


def run_specs(specs: Sequence[SweepSpec], out_dir: str | os.PathLike,
              run: Callable[[Any], dict[str, Any]], *, backend: str = "local",
              workers: int | None = None, address: str | None = None, progress: bool = True,
              poll_seconds: float = 0.5) -> list[dict[str, Any]]:
    """Run every spec whose result file is missing; return all results in spec order.

    Args:
        specs: the specs (a spec given twice runs once).
        out_dir: results folder (``runs/<key>.json`` per spec, ``runs/<key>.claim`` while a
            spec runs).
        run: the module-level function executed per spec; returns a JSON-serialisable dict.
        backend: ``"local"`` (processes on this machine) or ``"ray"`` (``ray.init(address)``).
        workers: local processes (default: all cores; 1 runs in this process).
        address: Ray cluster address (``None``: start a local Ray instance).
        progress: show a progress bar (tqdm) if available.
        poll_seconds: how often to look at specs another invocation is running.

    Raises:
        RunFailed: if a run raised (the other runs in flight are stopped; finished results
            stay on disk and a rerun resumes).
    """
    out = Path(out_dir)
    unique = list({spec.key: spec for spec in specs}.values())
    todo = deque(s for s in unique if load_result(result_path(out, s.key)) is None)
    if todo:
        (out / "runs").mkdir(parents=True, exist_ok=True)
        sweep = _Sweep(out, make_backend(run, backend, workers, address), poll_seconds,
                       _bar(len(todo), progress))
        sweep.run(todo)
    results = [load_result(result_path(out, spec.key)) for spec in specs]
    lost = [spec.key for spec, result in zip(specs, results) if result is None]
    if lost:  # e.g. result files deleted while the sweep ran
        raise RunFailed(f"{len(lost)} spec(s) have no result in {out / 'runs'}: {lost[:5]}; "
                        f"rerun to run them")
    return results


class _Sweep:
    """The driver's loop: claim, submit, collect, write, release; wait for others' claims."""

    def __init__(self, out: Path, backend, poll_seconds: float, bar):
        self.out, self.backend, self.poll, self.bar = out, backend, poll_seconds, bar
        self.in_flight: dict[Any, tuple[SweepSpec, Claim]] = {}
        self.waiting: dict[str, SweepSpec] = {}
        self.told: set[str] = set()

    def run(self, todo: deque) -> None:
        aborted = True
        try:
            while todo or self.waiting or self.in_flight:
                self._fill(todo)
                if self.in_flight:
                    timeout = self.poll if self.waiting else None
                    for handle, outcome in self.backend.wait(list(self.in_flight), timeout):
                        self._finish(handle, outcome)
                elif self.waiting:
                    time.sleep(self.poll)
                self._look_at_waiting(todo)
            aborted = False
        finally:
            for _, claim in self.in_flight.values():
                claim.release()
            self.backend.close(abort=aborted)
            if self.bar is not None:
                self.bar.close()

    def _done(self, spec: SweepSpec) -> bool:
        return load_result(result_path(self.out, spec.key)) is not None

    def _fill(self, todo: deque) -> None:
        while todo and len(self.in_flight) < self.backend.capacity:
            spec = todo.popleft()
            if self._done(spec):
                self._tick()
                continue
            claim = try_claim(claim_path(self.out, spec.key))
            if claim is None:
                self.waiting[spec.key] = spec
                self._tell_waiting(spec)
                continue
            if self._done(spec):  # finished by another invocation just before our claim
                claim.release()
                self._tick()
                continue
            self.waiting.pop(spec.key, None)
            try:
                handle = self.backend.submit(spec)
            except BaseException:  # e.g. Ctrl-C during an in-process run
                claim.release()
                raise
            self.in_flight[handle] = (spec, claim)

    def _finish(self, handle: Any, outcome: Any) -> None:
        spec, claim = self.in_flight.pop(handle)
        try:
            if isinstance(outcome, BaseException):
                raise RunFailed(f"the run of spec {spec.key} failed: {outcome!r}\nspec: "
                                f"{spec.to_dict()}\nfinished runs are kept in "
                                f"{self.out / 'runs'}; a rerun resumes") from outcome
            if not isinstance(outcome, dict):
                raise RunFailed(f"the run of spec {spec.key} returned "
                                f"{type(outcome).__name__}, not a dict")
            write_json_atomic(result_path(self.out, spec.key),
                              {"key": spec.key, "spec": spec.to_dict(), **outcome})
        finally:
            claim.release()  # after the result is on disk: nobody reruns a finished spec
        self._tick()

    def _look_at_waiting(self, todo: deque) -> None:
        for key, spec in list(self.waiting.items()):
            if self._done(spec):
                del self.waiting[key]
                self._tick()
            elif not claim_path(self.out, key).exists() or len(self.in_flight) < \
                    self.backend.capacity:
                del self.waiting[key]
                todo.append(spec)  # released without a result, or worth a new claim attempt

    def _tell_waiting(self, spec: SweepSpec) -> None:
        owner = read_owner(claim_path(self.out, spec.key)) or {}
        who = f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}"
        if who not in self.told:
            self.told.add(who)
            print(f"runs claimed by another invocation ({who}) are left to it; waiting for "
                  f"their results (if that process is gone for good, delete its "
                  f"{self.out / 'runs'}/*.claim files)", file=sys.stderr)

    def _tick(self) -> None:
        if self.bar is not None:
            self.bar.update(1)


def _bar(total: int, enabled: bool):
    if not enabled or total == 0:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="run")
