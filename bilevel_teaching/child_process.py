"""One grading child process as the parent sees it: started in a session of its own with a
fresh temporary folder, talked to through two pipes (requests in, results out) with deadlines the
parent owns, its output kept as a short tail, and killed — with everything left in its session —
when grading ends."""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bilevel_teaching.protocol import MAX_FRAME_BYTES, FrameBuffer, decode, encode

#: the environment variable that marks the processes of one grading (for the final sweep)
TOKEN_VARIABLE = "BILEVEL_GRADING_TOKEN"
_OUTPUT_TAIL = 1500  # characters of the submission's output shown when it crashes


class Timeout(Exception):
    """The child did not answer before the deadline."""


class ChildGone(Exception):
    """The child closed its result channel (it exited, was killed or closed the pipe)."""

    def __init__(self, code: int | None, output: str):
        super().__init__(code)
        self.code, self.output = code, output


class ChildProcess:
    """One grading child: its own session, a fresh folder, two pipes and an output tail."""

    def __init__(self, setup: dict[str, Any], deadline: float):
        self.sandbox = tempfile.mkdtemp(prefix="bilevel-grading-")
        self.token = uuid.uuid4().hex
        request_read, self.requests = os.pipe()
        self.results, result_write = os.pipe()
        self.output, output_write = os.pipe()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bilevel_teaching._child", str(request_read),
                 str(result_write)],
                stdin=subprocess.DEVNULL, stdout=output_write, stderr=output_write,
                pass_fds=(request_read, result_write), start_new_session=True,
                cwd=self.sandbox, env=_child_environment(self.sandbox, self.token))
        except BaseException:
            for fd in (self.requests, self.results, self.output):
                os.close(fd)
            _remove_tree(self.sandbox)
            raise
        finally:
            for fd in (request_read, result_write, output_write):
                os.close(fd)
        for fd in (self.requests, self.results, self.output):
            os.set_blocking(fd, False)
        self.frames = FrameBuffer(MAX_FRAME_BYTES)
        self._tail = ""
        self._output_open = self._results_open = True
        self._stopped = False
        try:
            self.send({**setup, "sandbox": self.sandbox}, deadline)
        except BaseException:
            self.stop()
            raise

    # -- messages
    def exchange(self, message: Any, deadline: float) -> Any:
        """Send ``message`` and return the child's next message."""
        return self._pump(memoryview(encode(message)), deadline, answer=True)

    def send(self, message: Any, deadline: float) -> None:
        self._pump(memoryview(encode(message)), deadline, answer=False)

    def receive(self, deadline: float) -> Any:
        """The child's next message."""
        return self._pump(memoryview(b""), deadline, answer=True)

    def _pump(self, pending: memoryview, deadline: float, answer: bool) -> Any:
        """Write ``pending`` and read (the result channel and the output tail) until a message
        is complete (``answer``) or everything is written; :class:`Timeout`, :class:`ChildGone`
        or :class:`~bilevel_teaching.protocol.ProtocolError` otherwise."""
        while True:
            if answer:
                payload = self.frames.next_payload()
                if payload is not None:
                    return decode(payload)
            elif not pending:
                return None
            if answer and not self._results_open:
                raise ChildGone(self._exit_code(), self.output_tail())
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Timeout()
            readable, writable = self._wait(remaining, write=bool(pending))
            for fd in readable:
                self._read(fd)
            if writable:
                try:
                    pending = pending[os.write(self.requests, pending[:1 << 16]):]
                except BlockingIOError:
                    pass
                except BrokenPipeError:
                    pending = memoryview(b"")  # the child is gone; its EOF will tell

    def _wait(self, seconds: float, write: bool) -> tuple[list[int], bool]:
        """The open channels with data to read, and whether requests can be written, after at
        most ``seconds`` (a poll, not ``select``: descriptors may be numbered beyond 1024)."""
        poll = select.poll()
        for fd, is_open in ((self.results, self._results_open), (self.output, self._output_open)):
            if is_open:
                poll.register(fd, select.POLLIN)
        if write:
            poll.register(self.requests, select.POLLOUT)
        events = poll.poll(max(seconds, 0.0) * 1000)
        readable = [fd for fd, _ in events if fd != self.requests]
        return readable, any(fd == self.requests for fd, _ in events)

    def _read(self, fd: int) -> None:
        try:
            data = os.read(fd, 1 << 20)
        except BlockingIOError:
            return
        if fd == self.output:
            self._output_open = bool(data)
            self._tail = (self._tail + data.decode("utf-8", "replace"))[-_OUTPUT_TAIL:]
        else:
            self._results_open = bool(data)
            self.frames.feed(data)

    def output_tail(self) -> str:
        """The end of what the child printed (read for up to a second more)."""
        end = time.monotonic() + 1.0
        while self._output_open and time.monotonic() < end:
            if self.output not in self._wait(end - time.monotonic(), write=False)[0]:
                break
            self._read(self.output)
        return self._tail.strip()

    def _exit_code(self) -> int | None:
        """The child's exit status once it has exited (up to a second), without reaping it."""
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            try:
                info = os.waitid(os.P_PID, self.process.pid,
                                 os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return self.process.returncode
            if info is not None:
                return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
            time.sleep(0.01)
        return None

    # -- the end
    def stop(self) -> None:
        """Kill the child's process group (before reaping it, so the group id cannot have been
        reused), sweep what is left of its session and remove its folder."""
        if self._stopped:
            return
        self._stopped = True
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        kill_leftovers(self.process.pid, self.token)  # while the unreaped child holds its pid
        self.process.wait()
        for fd in (self.requests, self.results, self.output):
            try:
                os.close(fd)
            except OSError:
                pass
        _remove_tree(self.sandbox)


def _remove_tree(folder: str) -> None:
    """Remove ``folder``, making what the child locked (``chmod 0``) writable first."""
    def unlock(function: Any, path: str, _: Any) -> None:
        try:
            os.chmod(os.path.dirname(path), 0o700)
            os.chmod(path, 0o700)
            function(path)
        except OSError:
            pass

    shutil.rmtree(folder, onerror=unlock)
    shutil.rmtree(folder, ignore_errors=True)


def kill_leftovers(session: int, token: str) -> int:
    """SIGKILL every process still in ``session`` (or its process group) or carrying the
    grading ``token`` in its environment; returns how many there were (Linux, via /proc)."""
    if not os.path.isdir("/proc"):
        return 0
    killed, marker = 0, f"{TOKEN_VARIABLE}={token}".encode()
    for _ in range(5):
        found = 0
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry}/stat", "rb") as stat:
                    fields = stat.read().rsplit(b")", 1)[1].split()
                group, sid = int(fields[2]), int(fields[3])
                ours = session in (group, sid)
                if not ours:
                    with open(f"/proc/{entry}/environ", "rb") as environ:
                        ours = marker in environ.read()
            except (OSError, IndexError, ValueError):
                continue
            if ours:
                try:
                    os.kill(int(entry), signal.SIGKILL)
                    found += 1
                except OSError:
                    pass
        killed += found
        if not found:
            break
        time.sleep(0.05)
    return killed


def _child_environment(sandbox: str, token: str) -> dict[str, str]:
    """The parent's environment, with this copy of the package first on the path, one BLAS
    thread, the sandbox as home and temporary folder, and the grading token."""
    import bilevel_envs

    root = str(Path(bilevel_envs.__file__).resolve().parent.parent)
    environment = dict(os.environ)
    path = environment.get("PYTHONPATH", "")
    environment["PYTHONPATH"] = root + (os.pathsep + path if path else "")
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        environment.setdefault(name, "1")
    for name in ("HOME", "TMPDIR", "TEMP", "TMP", "XDG_CACHE_HOME", "MPLCONFIGDIR"):
        environment[name] = sandbox
    environment["PYTHONDONTWRITEBYTECODE"] = "1"  # no __pycache__ next to submissions
    environment[TOKEN_VARIABLE] = token
    return environment
