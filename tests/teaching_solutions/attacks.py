"""Hostile submissions for the grader's attack suite (``tests/test_grader_attacks.py``).

One submission per attack class an audit of the grader tried. Each is a template
(:class:`string.Template`: ``$outside``, ``$canary``, ``$grader_file`` are filled in by the
test) whose honest part is the starter's placeholders, so the right score is what that part
earns: 0, unless the entry says otherwise. Every attack is bounded by itself (a few seconds, a
few processes, a few GiB at most) so that it cannot harm the machine even if the grader's
defences failed. They try the internals of the earlier grader and of the current one alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from string import Template


@dataclass(frozen=True)
class Attack:
    """A hostile submission: the assignment, its source template and the score it deserves."""

    assignment: str
    source: str
    deserves: float = 0.0

    def render(self, **paths: str) -> str:
        return Template(self.source).substitute(paths)


#: the starter's placeholders for soft_vi (scores 0)
SOFT_VI_PLACEHOLDERS = '''
import numpy as np


def soft_max_value(q, lam):
    return np.zeros(q.shape[0])


def policy_from_q(q, lam):
    return np.full(q.shape, 1.0 / q.shape[1])


def soft_bellman_backup(model, v, lam):
    return np.zeros(model.n_states)


def soft_value_iteration(model, lam, tol=1e-8, max_iter=1000):
    return np.zeros(model.n_states), np.full(model.r.shape, 1.0 / model.n_actions)


def soft_policy_evaluation(model, pi, lam):
    return np.zeros(model.n_states)
'''

#: a log of what an attack managed, raised from soft_max_value: it shows in the feedback of 2.1a
_REPORT = '''
_LOG = []


def _try(what, action):
    try:
        action()
        _LOG.append(f"{what}=done")
    except BaseException as error:
        _LOG.append(f"{what}=refused({type(error).__name__})")


def _report():
    raise RuntimeError("report: " + "; ".join(_LOG))
'''

#: helpers the attacks share: find the grader's internals on the stack, write to every fd
_STACK = '''
import os
import sys
import json


def _frames():
    frame = sys._getframe(1)
    while frame is not None:
        yield frame
        frame = frame.f_back


def _grader_callables(name):
    for frame in _frames():
        for scope in (frame.f_locals, frame.f_globals):
            value = scope.get(name)
            if value is not None:
                yield value


def _to_every_fd(data):
    for fd in range(1, 64):
        try:
            os.write(fd, data)
        except OSError:
            pass
'''

GRADER_MONKEYPATCH = Attack("soft_vi", SOFT_VI_PLACEHOLDERS + _STACK + '''

def _patch(module_name, attribute, value):
    try:
        module = sys.modules.get(module_name) or __import__(module_name, fromlist=["_"])
        setattr(module, attribute, value)
        print("patched", module_name, attribute)
    except BaseException as error:
        print("refused:", module_name, attribute, type(error).__name__, error)


# the earlier grader ran every check in this process through runner.run_one
_patch("bilevel_teaching.runner", "run_one", lambda *args, **kwargs: ("passed", 1.0, "forged"))
# the current one compares in the parent; patch what would decide anyway
def _passed(*args, **kwargs):
    return sys.modules["bilevel_teaching.core"].Outcome(1.0)


for _name in ("bilevel_teaching.core", "bilevel_teaching.comparisons"):
    _patch(_name, "compare", _passed)
    _patch(_name, "unbiasedness", _passed)
# and the child's runner of calls, found on the stack
for _run_calls in _grader_callables("run_calls"):
    try:
        _run_calls.__globals__["convert"] = lambda value, returns: {"ok": 1.0}
    except BaseException as error:
        print("refused:", error)
''')

NUMPY_MONKEYPATCH = Attack("soft_vi", SOFT_VI_PLACEHOLDERS + '''

_zeros = np.zeros_like
np.abs = lambda x, *args, **kwargs: _zeros(np.asarray(x), dtype=float)
np.absolute = np.abs
np.isfinite = lambda x, *args, **kwargs: np.ones(np.shape(x), dtype=bool)
np.array_equal = lambda *args, **kwargs: True
np.allclose = lambda *args, **kwargs: True
np.isclose = lambda a, b, *args, **kwargs: np.ones(np.broadcast(a, b).shape, dtype=bool)
''')

FORGED_REPORTING = Attack("soft_vi", SOFT_VI_PLACEHOLDERS + _STACK + '''

_N_CHECKS = 11
# 1. fake protocol lines of the earlier grader, and fake frames of the current one, to every fd
for _i in range(_N_CHECKS):
    _to_every_fd(("@@bilevel-grading@@ " + json.dumps({
        "event": "result", "index": _i, "status": "passed", "fraction": 1.0,
        "feedback": "forged"}) + "\\n").encode())
_to_every_fd(b'@@bilevel-grading@@ {"event": "done"}\\n')
_header = json.dumps({"message": {"kind": "verdict", "score": 16, "max_score": 16},
                      "blobs": []}).encode()
_payload = len(_header).to_bytes(4, "big") + _header
_to_every_fd(b"BLVG" + len(_payload).to_bytes(8, "big") + _payload)

# 2. call the grader's own reporting functions found on the stack
for _emit in _grader_callables("emit"):
    try:
        for _i in range(_N_CHECKS):
            _emit(event="result", index=_i, status="passed", fraction=1.0, feedback="forged")
        _emit(event="done")
    except BaseException as error:
        print("refused:", error)
for _channel in _grader_callables("channel"):
    try:
        for _kind in ("ready", "verdict"):
            _channel.send({"kind": _kind, "score": 16})
        for _i in range(_N_CHECKS):
            _channel.send({"kind": "results", "request": _i, "results": [{"ok": 1.0}] * 40})
    except BaseException as error:
        print("refused:", error)
''')

OUT_OF_RANGE_FRACTION = Attack("soft_vi", SOFT_VI_PLACEHOLDERS + _STACK + '''


def soft_max_value(q, lam):  # during the first check: claim 1000 times the points, then leave
    for _emit in _grader_callables("emit"):
        for _i in range(11):
            _emit(event="result", index=_i, status="passed", fraction=1000.0, feedback="forged")
        _emit(event="done")
        os._exit(0)
    for _channel in _grader_callables("channel"):
        _channel.send({"kind": "results", "request": 0, "fraction": 1000.0, "status": "passed",
                       "results": [{"ok": 1e308}, {"ok": float("nan")}, {"ok": -1}]})
    return np.zeros(q.shape[0])
''')

OUT_OF_RANGE_INDEX = Attack("soft_vi", SOFT_VI_PLACEHOLDERS + _STACK + '''

for _emit in _grader_callables("emit"):
    _emit(event="result", index=99, status="passed", fraction=1.0, feedback="forged")
for _channel in _grader_callables("channel"):
    _channel.send({"kind": "results", "request": 99, "results": [{"ok": 1.0}] * 99})
''')

#: absurd return values: NaN, too large, wrong types, hostile objects
OUT_OF_RANGE_VALUES = Attack("soft_vi", '''
import numpy as np


class Hostile:
    def __array__(self, *args, **kwargs):
        raise RuntimeError("no array for you")

    def __float__(self):
        return float("nan")


def soft_max_value(q, lam):
    return np.full(q.shape[0], np.nan)


def policy_from_q(q, lam):
    return np.zeros((10**4, 10**4 + 1))  # 800 MB


def soft_bellman_backup(model, v, lam):
    return Hostile()


def soft_value_iteration(model, lam, tol=1e-8, max_iter=1000):
    nested = []
    for _ in range(5000):
        nested = [nested]
    return nested, "pi"


def soft_policy_evaluation(model, pi, lam):
    return {"V": [1, 2, 3]}
''')

TIMEOUT_EXTENSION = Attack("soft_vi", SOFT_VI_PLACEHOLDERS + _STACK + '''

import time


def soft_max_value(q, lam):
    if lam != 1.0:  # only the first call of check 2.1a hangs
        return np.zeros(q.shape[0])
    end = time.monotonic() + 20.0  # bounded: 20 s at most
    header_sent = False
    while time.monotonic() < end:
        for _emit in _grader_callables("emit"):  # the earlier grader: "start" resets the clock
            _emit(event="start", index=0)
        if any(True for _ in _grader_callables("channel")):
            # the current one: a frame that never ends, one byte at a time
            _to_every_fd(b"\\x00" if header_sent else b"BLVG" + (2**20).to_bytes(8, "big"))
            header_sent = True
        time.sleep(0.2)
    return np.zeros(q.shape[0])
''')

LEFTOVER_PROCESSES = Attack("soft_vi", SOFT_VI_PLACEHOLDERS + _REPORT + '''
import os
import sys
import time

_SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)  # bilevel-attack-sleeper"]


def _fork_sleeper():
    if os.fork() == 0:
        time.sleep(60)
        os._exit(0)


def _daemon():
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.execve(_SLEEPER[0], _SLEEPER, {})  # a new session and a clean environment
        os._exit(0)


def _posix_spawn():
    os.posix_spawn(_SLEEPER[0], _SLEEPER, dict(os.environ))


def _popen():
    sys.modules["subprocess"].Popen(_SLEEPER, start_new_session=True)


def _fork_exec():  # below the audit hooks: only the kernel filter stops it
    posixsubprocess = sys.modules.get("_posixsubprocess") or __import__("_posixsubprocess")
    posixsubprocess.fork_exec(_SLEEPER, [os.fsencode(_SLEEPER[0])], True, (), None, None,
                      -1, -1, -1, -1, -1, -1, *os.pipe(), False, False, -1, None, None, None,
                      -1, None, False)


def _system():
    if os.system(" ".join(repr(a) for a in _SLEEPER) + " &") != 0:
        raise OSError("os.system failed")


for _what, _action in (("fork", _fork_sleeper), ("daemon", _daemon),
                       ("posix_spawn", _posix_spawn), ("Popen", _popen),
                       ("fork_exec", _fork_exec), ("system", _system)):
    _try(_what, _action)


def soft_max_value(q, lam):
    _report()
''')

WRITES_OUTSIDE = Attack("soft_vi", SOFT_VI_PLACEHOLDERS + _REPORT + '''
import os
import shutil
import sqlite3
import sys
from pathlib import Path

OUTSIDE = Path("$outside")
CANARY = Path("$canary")
GRADER_FILE = Path("$grader_file")


def _ctypes_write():
    libc = sys.modules["ctypes"].CDLL(None)
    fd = libc.open(str(OUTSIDE / "ctypes.txt").encode(), os.O_WRONLY | os.O_CREAT, 0o644)
    if fd < 0:
        raise OSError("libc open failed")
    libc.close(fd)


_ATTEMPTS = [
    ("overwrite the canary", lambda: CANARY.write_text("pwned")),
    ("append to the canary", lambda: open(CANARY, "a").write("pwned")),
    ("create a file outside", lambda: open(OUTSIDE / "new.txt", "w").write("pwned")),
    ("os.open outside", lambda: os.open(OUTSIDE / "osopen.txt", os.O_WRONLY | os.O_CREAT)),
    ("numpy save outside", lambda: np.save(OUTSIDE / "array.npy", np.zeros(3))),
    ("mkdir outside", lambda: os.mkdir(OUTSIDE / "newdir")),
    ("remove the canary", lambda: os.remove(CANARY)),
    ("rename the canary", lambda: os.rename(CANARY, OUTSIDE / "renamed.txt")),
    ("copy outside", lambda: shutil.copy(CANARY, OUTSIDE / "copy.txt")),
    ("sqlite outside", lambda: sqlite3.connect(OUTSIDE / "db.sqlite").execute("create table t(x)")),
    ("symlink out and write through it",
     lambda: (os.symlink(CANARY, "link.txt"), open("link.txt", "w").write("pwned"))),
    ("hard link out and write through it",
     lambda: (os.link(CANARY, "hard.txt"), open("hard.txt", "w").write("pwned"))),
    # (these two change nothing even where they are not refused)
    ("open a grader file for writing", lambda: open(GRADER_FILE, "a").close()),
    ("chmod a grader file", lambda: os.chmod(GRADER_FILE, GRADER_FILE.stat().st_mode)),
    ("ctypes write outside", _ctypes_write),
    ("write inside the working folder", lambda: open("inside.txt", "w").write("ok")),
]


def soft_max_value(q, lam):
    for what, action in _ATTEMPTS:
        _try(what, action)
    _report()
''')

MEMORY_BOMB = Attack("soft_vi", SOFT_VI_PLACEHOLDERS + '''

def soft_max_value(q, lam):
    blocks = []
    for _ in range(4):  # at most 4 GiB, touched
        blocks.append(np.ones(2**27))
    return np.zeros(q.shape[0])


def policy_from_q(q, lam):
    return np.ones(10**12)  # 8 TB at once
''')

FORK_BOMB = Attack("soft_vi", SOFT_VI_PLACEHOLDERS + '''
import os
import time


def _bomb(depth):
    started = 0
    for _ in range(2):  # bounded: at most 126 processes, each alive 30 s
        try:
            pid = os.fork()
        except BaseException as error:
            return started, f"{type(error).__name__}: {error}"
        if pid == 0:
            if depth < 5:
                _bomb(depth + 1)
            time.sleep(30)
            os._exit(0)
        started += 1
    return started, ""


def soft_max_value(q, lam):
    started, error = _bomb(0)
    raise RuntimeError(f"report: forks started={started} ({error})")
''')

SOLVER_DELEGATION = Attack("soft_vi", '''
import numpy as np

from bilevel_envs.tabular import (evaluate_policy, expected_next, soft_max_value,
                                  soft_policy_iteration)
from bilevel_envs.tabular import softmax_policy as policy_from_q


def soft_bellman_backup(model, v, lam):
    return soft_max_value(model.r + model.gamma * expected_next(model.P, v), lam)


def soft_value_iteration(model, lam, tol=1e-8, max_iter=1000):
    solution = soft_policy_iteration(model, lam, tol=1e-12)
    return solution.v, solution.pi


def soft_policy_evaluation(model, pi, lam):
    return evaluate_policy(model, pi, lam=lam)
''')

#: delegation through re-exports, importlib and sys.modules, with an honest soft max and policy
#: (4 points: 2.1a, 2.1b, 2.2a, 2.2b)
SOLVER_DELEGATION_INDIRECT = Attack("soft_vi", '''
import importlib
import sys

import numpy as np

import bilevel_envs


def soft_max_value(q, lam):
    m = q.max(axis=-1, keepdims=True)
    return (m + lam * np.log(np.exp((q - m) / lam).sum(axis=-1, keepdims=True)))[..., 0]


def policy_from_q(q, lam):
    e = np.exp((q - q.max(axis=-1, keepdims=True)) / lam)
    return e / e.sum(axis=-1, keepdims=True)


def soft_bellman_backup(model, v, lam):
    tabular = importlib.import_module("bilevel_envs.tabular")
    return tabular.soft_max_value(model.r + model.gamma * tabular.expected_next(model.P, v), lam)


def soft_value_iteration(model, lam, tol=1e-8, max_iter=1000):
    solution = bilevel_envs.soft_policy_iteration(model, lam, tol=1e-12)
    return solution.v, solution.pi


def soft_policy_evaluation(model, pi, lam):
    return sys.modules["bilevel_envs.tabular"].evaluate_policy(model, pi, lam=lam)
''', deserves=4.0)

HPGD_DELEGATION = Attack("hpgd_estimator", '''
import numpy as np

from bilevel_teaching.assignments.hpgd_estimator import expected_transitions, setup

_EXACT = {context: setup(context).exact for context in (0, 1)}


def _noisy(rng, exact, n):
    return exact + rng.normal(0.0, 0.05, size=(n,) + np.shape(exact))


def leader_q_estimates(problem, oracle, rng, states, actions):
    return _EXACT[0].q_bar[states, actions] + rng.normal(0.0, 0.05, size=len(states))


def grad_q_estimates(problem, x, context, oracle, rng, states, actions):
    e = _EXACT[context]
    exact = np.where(actions[:, None] >= 0, e.dq[states, np.maximum(actions, 0)], e.dv[states])
    return exact + rng.normal(0.0, 0.05, size=exact.shape)


def grad_advantage_estimates(problem, x, context, oracle, rng, states, actions):
    exact = _EXACT[context].da[states, actions]
    return exact + rng.normal(0.0, 0.05, size=exact.shape)


def hypergradient_estimates(problem, x, context, oracle, rng, n_samples):
    return _noisy(rng, _EXACT[context].gradient, n_samples)


def expected_sampled_transitions(gamma, leader_gamma):
    return expected_transitions(gamma, leader_gamma)
''')

DESIGN_DELEGATION = Attack("design", '''
import gymnasium as gym
import numpy as np

import bilevel_envs  # noqa: F401
from bilevel_envs.envs.contract_design.closed_forms import project_optimum
from bilevel_envs.exact import ExactSolver, exact_objective
from leaders import HPGD

PROBLEM_KWARGS = dict(instance="project", lam=0.05, cost_scales=(1.0, 1.5))


def hard_bonus(problem):
    from bilevel_teaching.assignments.design import hard_bonus
    return hard_bonus(problem)


def effort_probability(problem, x):
    _, solution, _ = ExactSolver(problem, tol=1e-13).solve(x)
    return solution.pi[:, 0, 1]


def objective_closed_form(problem, x):
    return exact_objective(problem, x, tol=1e-13)


def design_contract(seed):
    env = gym.make("bilevel/ContractDesign-v0", **PROBLEM_KWARGS, contexts="all", n_envs=1,
                   n_rollout_steps=10)
    leader = HPGD(env, seed=seed, x0=project_optimum(env.unwrapped.problem).x)
    return leader.learn(1)
''')

#: delegation through a method of an allowed class: every check but the design itself fails
DESIGN_METHOD_DELEGATION = Attack("design", '''
import gymnasium as gym
import numpy as np

import bilevel_envs  # noqa: F401
from leaders import HPGD

PROBLEM_KWARGS = dict(instance="project", lam=0.05, cost_scales=(1.0, 1.5))


def objective_closed_form(problem, x):
    env = gym.make("bilevel/ContractDesign-v0", instance=problem.instance, lam=problem.lam,
                   gamma=problem.gamma, cost_scales=tuple(problem.cost_scales),
                   **problem.instance_kwargs, contexts="all", n_envs=1, n_rollout_steps=10)
    return HPGD(env, seed=0).exact_objective(np.asarray(x))
''')

REFERENCE_IMPORT = Attack("soft_vi", '''
import importlib

for _name in ("tests.teaching_solutions.soft_vi_solution", "teaching_solutions.soft_vi_solution"):
    try:
        _solution = importlib.import_module(_name)
        break
    except ModuleNotFoundError:
        continue
globals().update({k: v for k, v in vars(_solution).items() if not k.startswith("__")})
''')

ATTACKS: dict[str, Attack] = {
    "grader monkeypatch": GRADER_MONKEYPATCH,
    "numpy monkeypatch": NUMPY_MONKEYPATCH,
    "forged reporting": FORGED_REPORTING,
    "out-of-range fraction": OUT_OF_RANGE_FRACTION,
    "out-of-range index": OUT_OF_RANGE_INDEX,
    "out-of-range values": OUT_OF_RANGE_VALUES,
    "timeout extension": TIMEOUT_EXTENSION,
    "leftover processes": LEFTOVER_PROCESSES,
    "writes outside the temp dir": WRITES_OUTSIDE,
    "memory bomb": MEMORY_BOMB,
    "fork bomb": FORK_BOMB,
    "solver delegation": SOLVER_DELEGATION,
    "solver delegation (indirect)": SOLVER_DELEGATION_INDIRECT,
    "solver delegation (hpgd)": HPGD_DELEGATION,
    "solver delegation (design)": DESIGN_DELEGATION,
    "solver delegation (design, method)": DESIGN_METHOD_DELEGATION,
    "reference solution import": REFERENCE_IMPORT,
}
