"""Plain data: nested containers of NumPy scalars and arrays turned into JSON-serialisable Python
values (checkpoint headers, result files, env specs)."""

from __future__ import annotations

from typing import Any

import numpy as np


def to_plain_data(value: Any) -> Any:
    """``value`` with every NumPy scalar and array (inside dicts, lists and tuples) replaced by the
    equivalent Python value; dict keys become strings, tuples become lists."""
    if isinstance(value, dict):
        return {str(k): to_plain_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain_data(v) for v in value]
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value
