"""The confinement of the grading child, installed before the submission is imported.

Three layers, each independent of the submission's cooperation:

* **resource limits** (:func:`apply_limits`): address space, CPU seconds, file size, open files,
  no core files and, for users other than root, a cap on the number of processes;
* **kernel filter** (:func:`deny_processes`, Linux x86-64 and aarch64): a seccomp filter that
  refuses to create processes (``fork``, ``vfork``, ``clone`` without ``CLONE_THREAD``), to
  signal or trace other processes and to read or write their memory — threads stay allowed.
  It cannot be removed once installed, and it also binds code the submission compiles;
* **audit policy** (:func:`install_audit_policy`, :pep:`578`): while the submission's code is on
  the stack, Python-level file writes outside the sandbox folder, process creation, signals to
  other processes, network connections and ``ctypes`` are refused with a :class:`PermissionError`
  that says why.

The parent kills the child's whole process group when grading ends (:mod:`.runner`), and the
child asks the kernel to kill it if the parent dies first (:func:`die_with_parent`).
"""

from __future__ import annotations

import os
import platform
import resource
import struct
import sys
import sysconfig
from collections.abc import Callable
from dataclasses import asdict, dataclass
from types import FrameType
from typing import Any


@dataclass(frozen=True)
class Limits:
    """Resource limits of a grading child.

    Attributes:
        memory_bytes: address space (``RLIMIT_AS``), bytes.
        cpu_seconds: CPU time of the child (``RLIMIT_CPU``), seconds; the parent's wall-clock
            deadlines are shorter, this is the backstop if the parent is gone.
        file_bytes: the largest file the child may write (``RLIMIT_FSIZE``), bytes.
        open_files: file descriptors (``RLIMIT_NOFILE``).
        extra_processes: ``RLIMIT_NPROC`` is set to the number of processes and threads the
            user already runs plus this many (the kernel ignores it for root; the seccomp filter
            refuses new processes for everyone).
    """

    memory_bytes: int = 3 * 1024**3
    cpu_seconds: int = 3600
    file_bytes: int = 64 * 1024**2
    open_files: int = 256
    extra_processes: int = 64

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if type(value) is not int or value < 1:
                raise ValueError(f"Limits.{name} must be a positive integer; got {value!r}")

    def to_plain(self) -> dict[str, int]:
        return asdict(self)


def apply_limits(limits: Limits) -> None:
    """Set the resource limits of this process (soft = hard, so they cannot be raised)."""
    def cap(which: int, value: int) -> None:
        _, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(which, (value, value))

    cap(resource.RLIMIT_AS, limits.memory_bytes)
    cap(resource.RLIMIT_FSIZE, limits.file_bytes)
    cap(resource.RLIMIT_NOFILE, limits.open_files)
    cap(resource.RLIMIT_CORE, 0) if hasattr(resource, "RLIMIT_CORE") else None
    _, hard_cpu = resource.getrlimit(resource.RLIMIT_CPU)
    cpu = limits.cpu_seconds if hard_cpu == resource.RLIM_INFINITY else \
        min(limits.cpu_seconds, hard_cpu)
    # soft: SIGXCPU (stops the child), hard one second later: SIGKILL
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1 if hard_cpu == resource.RLIM_INFINITY
                                             else min(cpu + 1, hard_cpu)))
    if hasattr(resource, "RLIMIT_NPROC"):
        cap(resource.RLIMIT_NPROC, user_tasks() + limits.extra_processes)


def user_tasks() -> int:
    """Processes and threads of this process's real user (what ``RLIMIT_NPROC`` counts)."""
    uid = os.getuid()
    total = 0
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return 1024  # no /proc: a generous cap
    for pid in entries:
        try:
            with open(f"/proc/{pid}/status", "rb") as status:
                fields = dict(line.split(b":", 1) for line in status if b":" in line)
        except OSError:
            continue
        if int(fields.get(b"Uid", b"-1").split()[0]) == uid:
            total += int(fields.get(b"Threads", b"1").strip() or 1)
    return total


# ---------------------------------------------------------------------------- kernel filter
_LD_W_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_ALLOW, _ERRNO = 0x7FFF0000, 0x00050000
_EPERM, _ENOSYS = 1, 38
_CLONE_THREAD = 0x00010000
#: per architecture: audit arch value and syscall numbers
_SYSCALLS = {
    "x86_64": (0xC000003E, {"fork": 57, "vfork": 58, "clone": 56, "clone3": 435, "kill": 62,
                            "tkill": 200, "tgkill": 234, "rt_sigqueueinfo": 129,
                            "rt_tgsigqueueinfo": 297, "ptrace": 101, "process_vm_readv": 310,
                            "process_vm_writev": 311, "pidfd_send_signal": 424,
                            "pidfd_getfd": 438}),
    "aarch64": (0xC00000B7, {"clone": 220, "clone3": 435, "kill": 129, "tkill": 130,
                             "tgkill": 131, "rt_sigqueueinfo": 138, "rt_tgsigqueueinfo": 240,
                             "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271,
                             "pidfd_send_signal": 424, "pidfd_getfd": 438}),
}


def _assemble(program: list[Any]) -> tuple[bytes, int]:
    """Classic BPF from ``(code, k, jt, jf)`` tuples whose jumps may name string labels."""
    labels, count = {}, 0
    for item in program:
        if isinstance(item, str):
            labels[item] = count
        else:
            count += 1
    out, index = [], 0
    for item in program:
        if isinstance(item, str):
            continue
        code, k, jt, jf = item
        jt = labels[jt] - index - 1 if isinstance(jt, str) else jt
        jf = labels[jf] - index - 1 if isinstance(jf, str) else jf
        if not (0 <= jt <= 255 and 0 <= jf <= 255):
            raise ValueError("BPF jumps must go forward by at most 255 instructions")
        out.append(struct.pack("HBBI", code, jt, jf, k & 0xFFFFFFFF))
        index += 1
    return b"".join(out), index


def _filter_program(arch: int, nr: dict[str, int], pid: int) -> list[Any]:
    """Deny new processes and any signal, trace or memory access aimed at another process."""
    program: list[Any] = [(_LD_W_ABS, 4, 0, 0), (_JEQ, arch, 0, "deny"), (_LD_W_ABS, 0, 0, 0)]
    if arch == _SYSCALLS["x86_64"][0]:
        program.append((_JGE, 0x40000000, "deny", 0))  # the x32 ABI: another syscall table
    for name in ("fork", "vfork", "ptrace", "process_vm_readv", "process_vm_writev",
                 "pidfd_send_signal", "pidfd_getfd"):
        if name in nr:
            program.append((_JEQ, nr[name], "deny", 0))
    program.append((_JEQ, nr["clone3"], "nosys", 0))  # flags unreadable: glibc falls back to clone
    program.append((_JEQ, nr["clone"], "clone", 0))
    for name in ("kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo"):
        program.append((_JEQ, nr[name], "own_pid", 0))
    program += [  # (classic BPF jumps only forward)
        (_RET, _ALLOW, 0, 0),
        "clone", (_LD_W_ABS, 16, 0, 0), (_JSET, _CLONE_THREAD, "allow", "deny"),
        # the first argument (low 32 bits): this process, its group (-pid) or 0 (its group)
        "own_pid", (_LD_W_ABS, 16, 0, 0), (_JEQ, pid, "allow", 0), (_JEQ, 0, "allow", 0),
        (_JEQ, (-pid) & 0xFFFFFFFF, "allow", "deny"),
        "allow", (_RET, _ALLOW, 0, 0),
        "deny", (_RET, _ERRNO | _EPERM, 0, 0),
        "nosys", (_RET, _ERRNO | _ENOSYS, 0, 0),
    ]
    return program


def deny_processes() -> bool:
    """Install the seccomp filter (see the module docstring); ``False`` where unsupported."""
    machine = platform.machine().lower()
    if not sys.platform.startswith("linux") or machine not in _SYSCALLS:
        return False
    import ctypes

    arch, nr = _SYSCALLS[machine]
    code, length = _assemble(_filter_program(arch, nr, os.getpid()))
    buffer = ctypes.create_string_buffer(code, len(code))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    program = SockFprog(length, ctypes.addressof(buffer))
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_no_new_privs, pr_set_seccomp, seccomp_mode_filter = 38, 22, 2
    if libc.prctl(pr_set_no_new_privs, 1, 0, 0, 0) != 0:
        return False
    return libc.prctl(pr_set_seccomp, seccomp_mode_filter, ctypes.byref(program), 0, 0) == 0


def die_with_parent(parent: int) -> None:
    """Ask the kernel to SIGKILL this process when its parent exits (Linux); exit now if the
    parent is already gone."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)


# ---------------------------------------------------------------------------- audit policy
_STDLIB = tuple(os.path.realpath(p) + os.sep for p in
                {sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"]})
_SITE = tuple(os.path.realpath(p) + os.sep for p in
              {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})


def is_stdlib_file(filename: str) -> bool:
    """Whether code from ``filename`` belongs to the standard library (or is frozen)."""
    if filename.startswith("<"):
        return True
    path = os.path.realpath(filename)
    return path.startswith(_STDLIB) and not path.startswith(_SITE)


class SubmissionFrames:
    """Tells whether the submission's code (files in its folder) is running."""

    def __init__(self, folder: str):
        self.folder = os.path.realpath(folder)
        self._verdicts: dict[str, bool] = {}

    def owns(self, filename: str) -> bool:
        verdict = self._verdicts.get(filename)
        if verdict is None:
            verdict = not filename.startswith("<") and \
                os.path.dirname(os.path.realpath(filename)) == self.folder
            self._verdicts[filename] = verdict
        return verdict

    def on_stack(self, frame: FrameType | None) -> bool:
        """Whether a frame of the submission is ``frame`` or one of its callers."""
        while frame is not None:
            if self.owns(frame.f_code.co_filename):
                return True
            frame = frame.f_back
        return False

    def nearest_is_submission(self, frame: FrameType | None) -> bool:
        """Whether the nearest caller outside the standard library is the submission."""
        while frame is not None:
            filename = frame.f_code.co_filename
            if self.owns(filename):
                return True
            if not is_stdlib_file(filename):
                return False
            frame = frame.f_back
        return False


#: audit event -> positions of the path arguments it writes to (the next one: its dir_fd)
_WRITE_EVENTS: dict[str, tuple[tuple[int, int | None], ...]] = {
    "os.rename": ((0, 2), (1, 3)), "os.link": ((0, 2), (1, 3)), "os.symlink": ((0, None), (1, 2)),
    "os.remove": ((0, 1),), "os.rmdir": ((0, 1),), "os.mkdir": ((0, 2),),
    "os.chmod": ((0, 2),), "os.chown": ((0, 3),), "os.utime": ((0, 3),),
    "os.truncate": ((0, None),), "os.setxattr": ((0, None),), "os.removexattr": ((0, None),),
    "os.chflags": ((0, None),), "os.lchflags": ((0, None),), "os.lchmod": ((0, None),),
    "shutil.rmtree": ((0, 1),), "shutil.move": ((0, None), (1, None)),
    "shutil.copyfile": ((1, None),), "shutil.copymode": ((1, None),),
    "shutil.copystat": ((1, None),), "shutil.copytree": ((1, None),),
    "shutil.make_archive": ((0, None),), "shutil.unpack_archive": ((1, None),),
    "tempfile.mkstemp": ((0, None),), "tempfile.mkdtemp": ((0, None),),
    "sqlite3.connect": ((0, None),),
}
_PROCESS_EVENTS = frozenset({"os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.spawn",
                             "os.system", "os.startfile", "subprocess.Popen", "pty.spawn"})
_NETWORK_EVENTS = frozenset({"socket.connect", "socket.bind", "socket.sendto",
                             "socket.sendmsg"})
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def install_audit_policy(sandbox: str, submission: SubmissionFrames) -> Callable[..., None]:
    """Refuse, while the submission's code runs, what the module docstring lists.

    Args:
        sandbox: the only folder the submission may write to.
        submission: which frames are the submission's.

    Returns:
        the hook (installed for the rest of the process's life).
    """
    root = os.path.realpath(sandbox)
    own_pid, own_group = os.getpid(), os.getpgrp()

    def inside(path: Any, dir_fd: Any) -> bool:
        if isinstance(path, int):
            return True  # an open descriptor: its opening was checked
        try:
            path = os.fsdecode(path)
            if isinstance(dir_fd, int) and dir_fd >= 0 and not os.path.isabs(path):
                path = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), path)
            resolved = os.path.realpath(path)
        except (OSError, TypeError, ValueError):
            return False
        return resolved == root or resolved.startswith(root + os.sep) or resolved == os.devnull

    def refuse(what: str) -> None:
        raise PermissionError(f"not allowed while grading: {what}")

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "open":
            flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
            mode = args[1] if len(args) > 1 and isinstance(args[1], str) else ""
            if not (flags & _WRITE_FLAGS or any(c in mode for c in "wax+")):
                return
            if not inside(args[0], None) and submission.on_stack(sys._getframe(1)):
                refuse(f"writing to {args[0]!r} (write only inside the working folder)")
        elif event in _WRITE_EVENTS:
            if submission.on_stack(sys._getframe(1)):
                for position, fd_position in _WRITE_EVENTS[event]:
                    if position >= len(args):
                        continue
                    dir_fd = args[fd_position] if fd_position is not None and \
                        fd_position < len(args) else None
                    if not inside(args[position], dir_fd):
                        refuse(f"{event} on {args[position]!r} (change files only inside the "
                               "working folder)")
        elif event in _PROCESS_EVENTS:
            if submission.on_stack(sys._getframe(1)):
                refuse(f"starting processes ({event})")
        elif event in ("os.kill", "os.killpg"):
            target = args[0] if args else None
            if target not in (own_pid, own_group, 0) and submission.on_stack(sys._getframe(1)):
                refuse(f"signalling other processes ({event})")
        elif event in _NETWORK_EVENTS and submission.on_stack(sys._getframe(1)):
            refuse(f"network access ({event})")
        elif event.startswith("ctypes.") and submission.nearest_is_submission(sys._getframe(1)):
            refuse(f"ctypes ({event})")

    sys.addaudithook(hook)
    return hook
