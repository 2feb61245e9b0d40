"""Zigzag varints, one at a time (plain Python) and for many values at once (numpy).

The encoding is the one :mod:`logstore.batch`'s docstring specifies for records (zigzag, 7 bits
per byte, least significant group first; at most 5 bytes for a varint, 10 for a varlong). It is
kept apart so that the record encoder and the record decoder share one implementation of it, and
so that neither needs :mod:`logstore.batch` (which imports both).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "INT64_MIN",
    "INT64_MAX",
    "U64",
    "zigzag",
    "varint_bytes",
    "varint_width",
    "read_varint",
    "zigzag_array",
    "unzigzag",
    "widths",
    "varint_columns",
    "scatter_varints",
]

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


# --- scalar -------------------------------------------------------------------------------------


def zigzag(value: int) -> int:
    return (value << 1) ^ (value >> 63)


def varint_bytes(value: int) -> bytes:
    """Canonical zigzag varint of ``value`` (int32 or int64 range)."""
    z = (value << 1) ^ (value >> 63)
    if z < 0x80:
        return _SMALL_VARINTS[z]
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


_SMALL_VARINTS = [bytes((z,)) for z in range(0x80)]


def varint_width(z: int) -> int:
    """Bytes in the canonical varint of the (already zigzagged) non-negative ``z``."""
    return max(1, (z.bit_length() + 6) // 7)


def read_varint(data: bytes, pos: int, end: int, max_bytes: int) -> tuple[int, int]:
    """Decode one zigzag varint at ``pos``; returns (value, next position). ValueError if bad.

    ``max_bytes`` is 5 for a varint (int32) and 10 for a varlong (int64).
    """
    raw = 0
    shift = 0
    for _ in range(max_bytes):
        if pos >= end:
            raise ValueError("varint runs past the end of its record")
        b = data[pos]
        pos += 1
        raw |= (b & 0x7F) << shift
        if b < 0x80:
            if raw >> (32 if max_bytes == 5 else 64):
                raise ValueError("varint overflows its type")
            return (raw >> 1) ^ -(raw & 1), pos
        shift += 7
    raise ValueError(f"varint longer than {max_bytes} bytes")


# --- vectorised ---------------------------------------------------------------------------------

U64 = np.uint64
_WIDTH_LIMITS = np.array([1 << (7 * k) for k in range(1, 10)], dtype=U64)  # 2**7 .. 2**63


def zigzag_array(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.int64, copy=False)
    return ((values << 1) ^ (values >> 63)).view(U64)


def unzigzag(raw: np.ndarray) -> np.ndarray:
    return (raw >> U64(1)).view(np.int64) ^ -((raw & U64(1)).view(np.int64))


def widths(z: np.ndarray) -> np.ndarray:
    """Canonical varint widths (1..10) of the zigzagged values ``z`` (uint64)."""
    return np.searchsorted(_WIDTH_LIMITS, z, side="right") + 1


def varint_columns(z: np.ndarray, width: int) -> list[np.ndarray]:
    """The ``width`` bytes of each value's varint, one uint8 array per byte position."""
    cols = []
    for j in range(width):
        col = (z >> U64(7 * j)) & U64(0x7F)
        if j < width - 1:
            col |= U64(0x80)
        cols.append(col.astype(np.uint8))
    return cols


def scatter_varints(out: np.ndarray, pos: np.ndarray, z, width) -> None:
    """Write varints of ``z`` (array or int) with ``width`` (array or int) at ``out[pos]``."""
    if isinstance(z, int):
        z = np.full(len(pos), z, dtype=U64)
    if isinstance(width, int):
        for j, col in enumerate(varint_columns(z, width)):
            out[pos + j] = col
        return
    max_width = int(width.max())
    for j in range(max_width):
        byte = ((z >> U64(7 * j)) & U64(0x7F)).astype(np.uint8)
        byte |= (width > j + 1).astype(np.uint8) << 7
        if j == 0:
            out[pos] = byte
        else:
            sel = width > j
            out[pos[sel] + j] = byte[sel]
