"""The grading child process: ``python -m bilevel_teaching._child <request fd> <result fd>``.

It receives its setup from the parent, confines itself (:mod:`bilevel_teaching.sandbox`),
prepares the assignment's library objects, installs the import guard
(:mod:`bilevel_teaching.import_guard`), imports the submission and then answers each request of
the parent: it calls the submission's functions with the arguments the request describes and
sends back what they returned, as plain data (:mod:`bilevel_teaching.protocol`). It decides
nothing: expected values, comparisons and scores are the parent's.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from bilevel_teaching import import_guard, sandbox
from bilevel_teaching.protocol import FrameBuffer, decode, encode
from bilevel_teaching.student_objects import BUILDERS, PREPARE, convert

_TEXT_LIMIT = 1500


class Channel:
    """The two pipes to the parent: requests in, results out."""

    def __init__(self, incoming: int, outgoing: int):
        self.incoming, self.outgoing = incoming, outgoing
        self.frames = FrameBuffer(max_frame=2**40)  # the parent is trusted

    def receive(self) -> Any:
        """The next message, or ``None`` once the parent has closed the pipe."""
        while True:
            payload = self.frames.next_payload()
            if payload is not None:
                return decode(payload)
            data = os.read(self.incoming, 1 << 20)
            if not data:
                return None
            self.frames.feed(data)

    def send(self, message: Any) -> None:
        data = memoryview(encode(message))
        while data:
            written = os.write(self.outgoing, data)
            data = data[written:]


def import_submission(path: Path) -> ModuleType:
    """Import the file at ``path`` as the module ``submission`` (its folder joins sys.path)."""
    import importlib.util

    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location("submission", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["submission"] = module
    spec.loader.exec_module(module)
    return module


def own_modules(folder: Path) -> frozenset[str]:
    """Top-level names of the modules next to the submission (the student's own helpers)."""
    names = {p.stem for p in folder.glob("*.py")} | \
        {p.parent.name for p in folder.glob("*/__init__.py")}
    reserved = set(import_guard.LIBRARY_ROOTS) | {n.split(".")[0]
                                                  for n in import_guard.ALWAYS_DENIED}
    return frozenset(n for n in names if n.isidentifier() and n not in reserved
                     and n not in sys.stdlib_module_names)


def describe_exception(error: BaseException, submission: Path) -> dict[str, str]:
    """``type``, ``message`` and ``where`` (preferring a line of the submission) of ``error``."""
    frames = traceback.extract_tb(error.__traceback__)
    own = [f for f in frames if Path(f.filename).resolve() == submission]
    if isinstance(error, SyntaxError) and error.filename and \
            Path(error.filename).resolve() == submission:
        where = f" (line {error.lineno}: {(error.text or '').strip()})"
    elif own:
        frame = own[-1]
        where = f" (in {frame.name}, line {frame.lineno}: {frame.line})"
    elif frames:
        frame = frames[-1]
        where = f" (in {Path(frame.filename).name}:{frame.lineno}, {frame.name})"
    else:
        where = ""
    try:
        message = str(error).strip() or "(no message)"
    except Exception:  # noqa: BLE001 - the submission's exception may not print
        message = "(a message that cannot be printed)"
    return {"type": type(error).__name__, "message": message[:_TEXT_LIMIT], "where": where}


class _Unavailable(Exception):
    """An argument refers to a call that returned nothing usable."""


_UNAVAILABLE = object()


def _resolve(value: Any, shared: dict[Any, Any], returned: list[Any]) -> Any:
    """A request argument with its placeholders replaced by objects."""
    if isinstance(value, list):
        return [_resolve(v, shared, returned) for v in value]
    if not isinstance(value, dict):
        return value
    if "$build" in value:
        key = ("build", value["share"])
        if value["share"] is None or key not in shared:
            obj = BUILDERS[value["$build"]](_resolve(value["params"], shared, returned))
            if value["share"] is None:
                return obj
            shared[key] = obj
        return shared[key]
    if "$rng" in value:
        key = ("rng", value["share"])
        if value["share"] is None or key not in shared:
            rng = np.random.default_rng(value["$rng"])
            if value["share"] is None:
                return rng
            shared[key] = rng
        return shared[key]
    if "$ref" in value:
        result = returned[value["$ref"]]
        if result is _UNAVAILABLE:
            raise _Unavailable()
        return result if value["item"] is None else result[value["item"]]
    return {k: _resolve(v, shared, returned) for k, v in value.items()}


def run_calls(module: ModuleType, calls: list[dict[str, Any]], path: Path) -> list[dict]:
    """Make the calls of one request; after a call raises, the rest (but probes) are skipped."""
    results: list[dict[str, Any]] = []
    returned: list[Any] = []
    shared: dict[Any, Any] = {}
    stopped = False
    for call in calls:
        value: Any = _UNAVAILABLE
        if stopped and not call["probe"]:
            entry: dict[str, Any] = {"skipped": True}
        else:
            try:
                function = getattr(module, call["function"], None)
                if not callable(function):
                    entry = {"missing": True}
                else:
                    args = [_resolve(a, shared, returned) for a in call["args"]]
                    if call["numpy_seed"] is not None:
                        np.random.seed(call["numpy_seed"])
                    with np.errstate(all="ignore"):
                        value = function(*args)
                    entry = convert(value, call["returns"])
                    if "ok" not in entry:
                        value = _UNAVAILABLE
            except _Unavailable:
                entry = {"skipped": True}
            except BaseException as error:  # noqa: BLE001 - whatever the submission raises
                entry, value = {"raised": describe_exception(error, path)}, _UNAVAILABLE
                stopped = stopped or not call["probe"]
        results.append(entry)
        returned.append(value)
    return results


def main(argv: list[str]) -> None:
    channel = Channel(int(argv[1]), int(argv[2]))
    setup = channel.receive()
    os.chdir(setup["sandbox"])
    sandbox.die_with_parent(setup["parent"])
    sandbox.apply_limits(sandbox.Limits(**setup["limits"]))
    sandbox.deny_processes()
    path = Path(setup["submission"]).resolve()
    frames = sandbox.SubmissionFrames(str(path.parent))
    sandbox.install_audit_policy(setup["sandbox"], frames)
    PREPARE[setup["assignment"]]()
    import_guard.install(import_guard.ImportPolicy.from_plain(setup["policy"]),
                         setup["assignment"], frames, own_modules(path.parent))
    channel.send({"kind": "prepared"})  # the submission's time starts now
    try:
        module = import_submission(path)
    except BaseException as error:  # noqa: BLE001 - whatever the submission raises
        channel.send({"kind": "import_error", "error": describe_exception(error, path)})
        return
    channel.send({"kind": "ready"})
    while (request := channel.receive()) is not None:
        channel.send({"kind": "results", "request": request["id"],
                      "results": run_calls(module, request["calls"], path)})


if __name__ == "__main__":
    main(sys.argv)
