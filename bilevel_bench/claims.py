"""Claims: at most one process runs a spec, however many invocations write into one folder.

Before running a spec, the driver creates ``<out>/runs/<key>.claim`` with ``O_CREAT | O_EXCL``
(atomic: exactly one process succeeds), writes its pid, host and start time into it and holds
an exclusive ``flock`` on it for the run. The kernel drops that lock when the process dies,
however it dies (SIGKILL included), so a claim file whose lock can be taken is *stale*: its
owner is gone and the taker owns the claim. The owner writes the result first, then removes
the claim. Where ``fcntl`` is missing (Windows), a claim is stale when its host is this host
and its pid is not running.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: pid-based stale detection only
    fcntl = None  # type: ignore[assignment]


def claim_path(out_dir: str | os.PathLike, key: str) -> Path:
    """The claim file of the spec with ``key``: ``<out_dir>/runs/<key>.claim``."""
    return Path(out_dir) / "runs" / f"{key}.claim"


def owner_info() -> dict[str, Any]:
    """What a claim records about its owner: pid, host and start time (seconds since epoch)."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "claimed_at": time.time()}


@dataclass
class Claim:
    """A held claim: the claim file and the open descriptor whose lock marks it live."""

    path: Path
    fd: int

    def release(self) -> None:
        """Remove the claim file (if it is still ours) and drop the lock. Idempotent."""
        if self.fd < 0:
            return
        try:
            if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self.fd)
        self.fd = -1


def try_claim(path: Path) -> Claim | None:
    """Claim ``path`` for this process, taking over a stale claim; ``None`` if another live
    process holds it. The parent folder must exist."""
    for _ in range(8):  # retries only when the file vanishes or is replaced under us
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        except FileExistsError:
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                continue  # released meanwhile: try to create it again
            if not _lock(fd, path, created=False):
                os.close(fd)
                return None
        else:
            if not _lock(fd, path, created=True):  # taken over between our create and lock
                os.close(fd)
                return None
        if not _same_file(path, fd):  # released and recreated while we locked: start over
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(owner_info()).encode())
        return Claim(path, fd)
    return None


def read_owner(path: Path) -> dict[str, Any] | None:
    """The owner recorded in a claim file, or ``None`` if it is missing or unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _lock(fd: int, path: Path, created: bool) -> bool:
    """Take the claim's lock (``True``), or report a live owner (``False``)."""
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
    if created:
        return True
    owner = read_owner(path)  # no flock: a claim of this host with a dead pid is stale
    return owner is not None and owner.get("host") == socket.gethostname() \
        and not _pid_alive(owner.get("pid"))


def _same_file(path: Path, fd: int) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
