"""Where runs execute: in this process, in local worker processes, or on a Ray cluster.

Each backend offers ``capacity`` (runs at a time), ``submit(spec) -> handle``,
``wait(handles, timeout) -> [(handle, outcome)]`` (an outcome is the run's result or the
exception it raised) and ``close(abort)``. Local workers die with the driver: on Linux the
kernel kills them when it dies (``PR_SET_PDEATHSIG``), elsewhere a watchdog thread in each
worker exits when its parent changes; they ignore Ctrl-C, which the driver handles.
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Collection
from typing import Any

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>

Outcome = Any  # a run's result (a dict) or the exception it raised


class Finished:
    """The handle of a run that already finished (in this process): its outcome."""

    __slots__ = ("outcome",)

    def __init__(self, outcome: Outcome):
        self.outcome = outcome


class InProcess:
    """Run each spec in this process, one at a time (``--workers 1``)."""

    capacity = 1

    def __init__(self, run: Callable[[Any], Any]):
        self.run = run

    def submit(self, spec: Any) -> Finished:
        try:
            return Finished(self.run(spec))
        except Exception as exc:  # handed to the scheduler, which names the spec
            return Finished(exc)

    def wait(self, handles: Collection, timeout: float | None) -> list[tuple[Any, Outcome]]:
        return [(handle, handle.outcome) for handle in handles]

    def close(self, abort: bool) -> None:
        pass


class LocalPool:
    """``workers`` local processes (fork where available: cheap, and works from any
    ``__main__``; spawn elsewhere), each dying with this process."""

    def __init__(self, run: Callable[[Any], Any], workers: int):
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        self.capacity = workers
        self.run = run
        self.pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=context,
                                           initializer=prepare_worker,
                                           initargs=(os.getpid(),))

    def submit(self, spec: Any) -> cf.Future:
        return self.pool.submit(self.run, spec)

    def wait(self, handles: Collection, timeout: float | None) -> list[tuple[Any, Outcome]]:
        done, _ = cf.wait(handles, timeout=timeout, return_when=cf.FIRST_COMPLETED)
        return [(future, future.exception() or future.result()) for future in done]

    def close(self, abort: bool) -> None:
        if abort:  # do not wait for runs nobody will collect
            for process in list(getattr(self.pool, "_processes", {}).values()):
                if process.is_alive():
                    process.kill()
        self.pool.shutdown(wait=not abort, cancel_futures=abort)


class RayPool:
    """One Ray task (1 CPU) per spec on the cluster at ``address`` (``None``: a local Ray)."""

    def __init__(self, run: Callable[[Any], Any], address: str | None):
        try:
            import ray
        except ImportError as exc:
            raise ImportError("backend='ray' needs Ray: pip install 'bilevel-envs[ray]'") from exc
        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": {"OPENBLAS_NUM_THREADS": "1"}})
        self.capacity = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.remote = ray.remote(num_cpus=1)(run)

    def submit(self, spec: Any) -> Any:
        return self.remote.remote(spec)

    def wait(self, handles: Collection, timeout: float | None) -> list[tuple[Any, Outcome]]:
        done, _ = self.ray.wait(list(handles), num_returns=1, timeout=timeout)
        outcomes = []
        for ref in done:
            try:
                outcomes.append((ref, self.ray.get(ref)))
            except Exception as exc:  # the task's error, handed to the scheduler
                outcomes.append((ref, exc))
        return outcomes

    def close(self, abort: bool) -> None:
        if self.started:
            self.ray.shutdown()  # stops the local Ray and its workers


def make_backend(run: Callable[[Any], Any], backend: str, workers: int | None,
                 address: str | None):
    """The backend called ``backend`` (``"local"`` or ``"ray"``) running ``run``.

    Raises:
        ValueError: naming the allowed values, for an unknown backend or ``workers < 1``.
    """
    if backend == "ray":
        return RayPool(run, address)
    if backend != "local":
        raise ValueError(f"backend must be 'local' or 'ray'; got {backend!r}")
    workers = (os.cpu_count() or 1) if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1; got {workers!r}")
    # One BLAS thread per worker: the parallelism is across runs.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    return InProcess(run) if workers == 1 else LocalPool(run, workers)


# ---------------------------------------------------------------------------- worker set-up
def prepare_worker(parent_pid: int) -> None:
    """Pool initializer: ignore Ctrl-C (the driver stops the pool) and die with the driver."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent_pid)


def die_with_parent(parent_pid: int) -> None:
    """End this process when ``parent_pid`` (its parent) dies, however the parent dies.

    Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)``, then a check that the parent did not die
    before the call. Elsewhere (or if ``prctl`` fails): a daemon thread that exits the process
    within half a second of the parent changing.
    """
    armed = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if os.getppid() != parent_pid:
        os._exit(1)
    if not armed:
        threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True,
                         name="die-with-parent").start()


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    os._exit(1)
