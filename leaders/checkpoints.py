"""Leader checkpoints: an ``.npz`` of plain arrays with a JSON header, written atomically, never
unpickled, and read back with every field checked before it touches a leader or an env.

A checkpoint is untrusted input: a damaged or foreign file, a hostile header (unknown
hyperparameters, paths, negative counters, values of the wrong type) or arrays of the wrong
dtype, shape or with NaN all give one :class:`CheckpointError` (a ``ValueError``) naming the
field; nothing reaches a compiled kernel unchecked.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from bilevel_envs.plain_data import to_plain_data

FORMAT_VERSION = 2
#: the header's fields and their JSON types
HEADER_FIELDS: dict[str, type | tuple[type, ...]] = {
    "format_version": int, "class": str, "hyperparameters": dict, "num_iterations": int,
    "rng": dict, "env_seed": int, "env_ready": bool, "env_resets": int, "env": dict,
    "env_fingerprint": (str, type(None)), "env_id": (str, type(None)), "extra": dict,
    "records": list,
}
#: largest array a checkpoint may hold (x, optimiser state, warm starts, AMD tables)
MAX_ARRAY_ITEMS = 10**8


class CheckpointError(ValueError):
    """A file that is not a valid checkpoint for the leader and env it is loaded onto."""


def write_checkpoint(path: str | os.PathLike, header: dict[str, Any],
                     arrays: dict[str, np.ndarray]) -> Path:
    """Write ``header`` (plain data) and ``arrays`` to ``path`` (``.npz`` appended if missing)
    through a temporary file and an atomic rename."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_suffix(".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    os.close(fd)
    try:
        with open(tmp, "wb") as f:
            np.savez(f, header=np.array(json.dumps(to_plain_data(header))), **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The header and arrays of a checkpoint file, with the header's fields type-checked.

    Raises:
        CheckpointError: for a missing, damaged or foreign file, a header of another format
            version, a missing or mistyped field, or an array that is not plain numbers.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            if "header" not in data.files:
                raise CheckpointError(f"{path} is not a leader checkpoint (no header)")
            header = json.loads(str(data["header"]))
            arrays = {k: np.array(data[k]) for k in data.files if k != "header"}
    except CheckpointError:
        raise
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}") from None
    except (OSError, EOFError, zipfile.BadZipFile, json.JSONDecodeError, ValueError,
            TypeError, KeyError) as exc:  # truncated, foreign, pickled objects, bad JSON
        raise CheckpointError(f"{path} is not a readable leader checkpoint ({type(exc).__name__}"
                              f": {exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: the header must be a JSON object")
    if header.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: unsupported checkpoint format "
                              f"{header.get('format_version')!r} (this version reads "
                              f"{FORMAT_VERSION})")
    for field, types in HEADER_FIELDS.items():
        if field not in header:
            raise CheckpointError(f"{path}: the header has no {field!r}")
        value = header[field]
        bad_bool = isinstance(value, bool) and types is int
        if bad_bool or not isinstance(value, types):
            raise CheckpointError(f"{path}: header field {field!r} has the wrong type "
                                  f"({type(value).__name__})")
    unknown = sorted(set(header) - set(HEADER_FIELDS))
    if unknown:
        raise CheckpointError(f"{path}: unknown header fields {unknown}")
    for field in ("num_iterations", "env_resets"):
        if header[field] < 0:
            raise CheckpointError(f"{path}: {field} must be >= 0; got {header[field]}")
    if not 0 <= header["env_seed"] < 2**32:
        raise CheckpointError(f"{path}: env_seed must be in 0..2**32-1; got {header['env_seed']}")
    for name, array in arrays.items():
        if array.dtype.kind not in "biuf" or array.size > MAX_ARRAY_ITEMS:
            raise CheckpointError(f"{path}: array {name!r} must hold at most {MAX_ARRAY_ITEMS:,} "
                                  f"plain numbers; got dtype {array.dtype}, {array.size:,} items")
    return header, arrays


def check_array(name: str, array: np.ndarray | None, shape: tuple[int, ...],
                source: str = "checkpoint") -> np.ndarray:
    """A restored float array of exactly ``shape`` with finite entries (a fresh float64 copy).

    Raises:
        CheckpointError: naming the array and the expected shape.
    """
    if array is None:
        raise CheckpointError(f"{source}: array {name!r} is missing")
    if array.dtype.kind not in "iuf" or array.shape != tuple(shape) \
            or not np.all(np.isfinite(array)):
        raise CheckpointError(f"{source}: array {name!r} must be finite numbers of shape "
                              f"{tuple(shape)}; got {array.dtype} {array.shape}")
    return np.array(array, dtype=np.float64)
