"""The messages between the grader and its child process, and their strict decoding.

A message is a JSON value in which NumPy arrays appear as ``{"$array": i}``, the index of a
``.npy`` blob sent after the JSON (never pickle). On the wire a message is one *frame*::

    b"BLVG" | payload length (uint64, big-endian) | JSON length (uint32) | JSON | blobs ...

The parent decodes what the child sends as untrusted input: the frame, the JSON and every blob
are size-checked before anything is allocated, arrays must be plain numbers (bool, integer or
float dtypes; no objects, no records) and nesting is bounded. Whatever fails these checks raises
:class:`ProtocolError`.
"""

from __future__ import annotations

import io
import json
import math
import struct
from typing import Any

import numpy as np

MAGIC = b"BLVG"
_FRAME = struct.Struct(">4sQ")
_JSON_LENGTH = struct.Struct(">I")
#: the largest frame the parent accepts from the child (raw outputs of one check)
MAX_FRAME_BYTES = 256 * 1024**2
MAX_JSON_BYTES = 8 * 1024**2
MAX_BLOBS = 100_000
MAX_DEPTH = 12
#: dtype kinds an array may have: bool, signed and unsigned integers, floats
ARRAY_KINDS = frozenset("biuf")


class ProtocolError(Exception):
    """A frame or message that does not follow the protocol (malformed, too large, ...)."""


# ---------------------------------------------------------------------------- encoding
def encode(message: Any) -> bytes:
    """The frame of ``message``: JSON values, tuples (sent as lists) and NumPy arrays/scalars."""
    blobs: list[bytes] = []

    def plain(value: Any, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise ValueError("message nested too deeply")
        if isinstance(value, np.ndarray):
            if value.dtype.kind not in ARRAY_KINDS:
                raise TypeError(f"cannot send an array of dtype {value.dtype}")
            buffer = io.BytesIO()
            np.save(buffer, np.ascontiguousarray(value), allow_pickle=False)
            blobs.append(buffer.getvalue())
            return {"$array": len(blobs) - 1}
        if isinstance(value, np.generic):
            return plain(value.item(), depth)
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, (list, tuple)):
            return [plain(item, depth + 1) for item in value]
        if isinstance(value, dict):
            if not all(isinstance(key, str) for key in value):
                raise TypeError("message keys must be strings")
            return {key: plain(item, depth + 1) for key, item in value.items()}
        raise TypeError(f"cannot send a {type(value).__name__}")

    body = plain(message, 0)
    header_bytes = json.dumps({"message": body, "blobs": [len(b) for b in blobs]},
                              allow_nan=True, separators=(",", ":")).encode()
    payload = b"".join([_JSON_LENGTH.pack(len(header_bytes)), header_bytes, *blobs])
    return _FRAME.pack(MAGIC, len(payload)) + payload


# ---------------------------------------------------------------------------- framing
class FrameBuffer:
    """Collects bytes from a stream and cuts them into frame payloads."""

    def __init__(self, max_frame: int = MAX_FRAME_BYTES):
        self.max_frame = max_frame
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self._buffer += data

    @property
    def pending(self) -> int:
        """Bytes received that do not form a complete frame yet."""
        return len(self._buffer)

    def next_payload(self) -> bytes | None:
        """The payload of the next complete frame, ``None`` if it has not fully arrived."""
        if len(self._buffer) < _FRAME.size:
            return None
        magic, length = _FRAME.unpack_from(self._buffer)
        if magic != MAGIC:
            raise ProtocolError("data that is not a grading frame arrived on the result channel")
        if length > self.max_frame:
            raise ProtocolError(f"a frame of {length} bytes (the limit is {self.max_frame})")
        end = _FRAME.size + length
        if len(self._buffer) < end:
            return None
        payload = bytes(self._buffer[_FRAME.size:end])
        del self._buffer[:end]
        return payload


# ---------------------------------------------------------------------------- decoding
def decode(payload: bytes) -> Any:
    """The message in ``payload``; :class:`ProtocolError` for anything malformed."""
    if len(payload) < _JSON_LENGTH.size:
        raise ProtocolError("a truncated frame")
    (json_length,) = _JSON_LENGTH.unpack_from(payload)
    if json_length > MAX_JSON_BYTES or _JSON_LENGTH.size + json_length > len(payload):
        raise ProtocolError(f"a JSON part of {json_length} bytes")
    start = _JSON_LENGTH.size
    try:
        header = json.loads(payload[start:start + json_length].decode("utf-8"))
    except (ValueError, RecursionError) as error:
        raise ProtocolError(f"malformed JSON ({type(error).__name__})") from None
    if not (isinstance(header, dict) and set(header) == {"message", "blobs"}
            and isinstance(header["blobs"], list) and len(header["blobs"]) <= MAX_BLOBS
            and all(type(n) is int and n >= 0 for n in header["blobs"])):
        raise ProtocolError("a malformed frame header")
    offset = start + json_length
    if offset + sum(header["blobs"]) != len(payload):
        raise ProtocolError("blob lengths that do not add up to the frame")
    blobs = []
    for length in header["blobs"]:
        blobs.append(payload[offset:offset + length])
        offset += length
    return _resolve(header["message"], blobs, 0)


def _resolve(value: Any, blobs: list[bytes], depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise ProtocolError("a message nested too deeply")
    if isinstance(value, list):
        return [_resolve(item, blobs, depth + 1) for item in value]
    if isinstance(value, dict):
        if set(value) == {"$array"}:
            index = value["$array"]
            if type(index) is not int or not 0 <= index < len(blobs):
                raise ProtocolError("a reference to a missing array")
            return decode_array(blobs[index])
        return {key: _resolve(item, blobs, depth + 1) for key, item in value.items()}
    return value


def decode_array(blob: bytes) -> np.ndarray:
    """A ``.npy`` blob as an array, checking its header against its size before reading it."""
    stream = io.BytesIO(blob)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except (ValueError, SyntaxError, TypeError, OverflowError) as error:
        raise ProtocolError(f"a malformed array ({error})") from None
    if dtype.kind not in ARRAY_KINDS or dtype.hasobject or dtype.itemsize > 16:
        raise ProtocolError(f"an array of dtype {dtype} (only numbers are accepted)")
    if len(shape) > 16 or any(type(n) is not int or n < 0 for n in shape):
        raise ProtocolError(f"an array of shape {shape}")
    data = blob[stream.tell():]
    if math.prod(shape) * dtype.itemsize != len(data):
        raise ProtocolError(f"an array of shape {shape} and dtype {dtype} in {len(data)} bytes")
    array = np.frombuffer(data, dtype=dtype)
    return array.reshape(shape, order="F" if fortran else "C").copy()
