"""Results on disk: one JSON file per run under ``<out>/runs/<key>.json``, written atomically
(readers never see a partial file), and an experiment's summary beside them."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO


def result_path(out_dir: str | os.PathLike, key: str) -> Path:
    """Where the result of the spec with ``key`` lives: ``<out_dir>/runs/<key>.json``."""
    return Path(out_dir) / "runs" / f"{key}.json"


def write_atomic(path: Path, write: Callable[[TextIO], None]) -> None:
    """Write a file via a temporary file in the same folder and ``os.replace``: readers see the
    old file or the complete new one, never a partial file (parent folders are created). The
    temporary file ends in ``.part``, so that a process killed mid-write leaves nothing that
    matches the readers' ``*.json`` globs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix + ".part")
    try:
        with os.fdopen(fd, "w") as f:
            write(f)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON atomically (see :func:`write_atomic`)."""
    write_atomic(path, lambda f: json.dump(data, f))


def load_result(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or ``None`` if the file is missing or not complete JSON."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def write_summary(out: Path, name: str, markdown: str, timing: str, **data: Any) -> None:
    """An experiment's summary: ``out/<name>.md`` (``markdown`` then ``timing``) and
    ``out/<name>.json`` (``data`` and ``timing``), both written atomically, and printed."""
    text = markdown + "\n\n" + timing + "\n"
    write_atomic(out / f"{name}.md", lambda f: f.write(text))
    write_json_atomic(out / f"{name}.json", {**data, "timing": timing})
    print(text, end="")


def output_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot hold results (a file, not writable, under a file), or ``None`` if it
    can. Nothing is created."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        return f"{str(path)!r} exists and is not a folder"
    probe = path
    while not probe.exists():  # the nearest existing ancestor decides whether we may create it
        if probe.parent == probe:
            return f"{str(path)!r} has no existing parent folder"
        probe = probe.parent
    if not probe.is_dir():
        return f"{str(path)!r} is under {str(probe)!r}, which is not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{str(probe)!r} is not writable"
    runs = path / "runs"
    if runs.exists() and (not runs.is_dir() or not os.access(runs, os.W_OK | os.X_OK)):
        return f"{str(runs)!r} is not a writable folder"
    return None
