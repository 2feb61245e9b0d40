"""What a log directory holds besides segments, and how it is put in order at open.

Files of one partition directory (besides the segments):

``logstore.checkpoint``
    JSON ``{"version": 0, "recovery_point": N, "log_start_offset": M}``, replaced atomically
    (tmp, fsync, rename, fsync dir). ``recovery_point``: every offset below it was fsynced, so
    recovery after a crash re-validates only from the segment that contains it. An unreadable
    checkpoint counts as absent (everything is re-validated: slow, never wrong).
``.clean_shutdown``
    Written last by a clean close, after data and checkpoint are fsynced; removed first thing at
    open (and the removal fsynced), so a crash during open or during use counts as unclean
    (Kafka's KAFKA-10471 lesson).

Leftovers of an interrupted operation, resolved before any segment is opened (Kafka's rules):
``*.deleted`` and ``*.tmp`` files are removed. ``*.cleaned`` files are an unfinished rewrite and
are removed, together with any ``*.swap`` at or above the lowest ``.cleaned`` base offset. The
remaining ``*.swap`` files are a finished rewrite whose swap-in was cut short: the live files they
replace (base offsets in the swap range) are removed and the swaps renamed to their final names.
Index files without a ``.log`` are removed (they are caches).
"""

from __future__ import annotations

import json
import os
from typing import NamedTuple

from .batch import HEADER, HEADER_SIZE, BatchHeader
from .files import (
    CLEANED_SUFFIX,
    DELETED_SUFFIX,
    LOG_SUFFIX,
    SWAP_SUFFIX,
    TMP_SUFFIX,
    fsync_dir,
    parse_segment_name,
    write_atomically,
)

__all__ = [
    "CHECKPOINT_NAME",
    "CLEAN_SHUTDOWN_NAME",
    "Checkpoint",
    "read_checkpoint",
    "write_checkpoint",
    "take_clean_shutdown_marker",
    "write_clean_shutdown_marker",
    "resolve_leftovers",
    "segment_base_offsets",
]

CHECKPOINT_NAME = "logstore.checkpoint"
CLEAN_SHUTDOWN_NAME = ".clean_shutdown"
_REBUILD_SUFFIX = ".rebuild"


class Checkpoint(NamedTuple):
    recovery_point: int
    log_start_offset: int


def read_checkpoint(directory: str) -> Checkpoint | None:
    """The persisted checkpoint, or ``None`` if missing or unreadable."""
    try:
        with open(os.path.join(directory, CHECKPOINT_NAME), "rb") as f:
            data = json.loads(f.read())
        if data.get("version") != 0:
            return None
        checkpoint = Checkpoint(int(data["recovery_point"]), int(data["log_start_offset"]))
        if checkpoint.recovery_point < 0 or checkpoint.log_start_offset < 0:
            return None
        return checkpoint
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def write_checkpoint(directory: str, checkpoint: Checkpoint) -> None:
    data = {"version": 0, **checkpoint._asdict()}
    write_atomically(os.path.join(directory, CHECKPOINT_NAME), json.dumps(data).encode())


def take_clean_shutdown_marker(directory: str) -> bool:
    """Remove the clean-shutdown marker (durably) and say whether it was there."""
    path = os.path.join(directory, CLEAN_SHUTDOWN_NAME)
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    fsync_dir(directory)
    return True


def write_clean_shutdown_marker(directory: str) -> None:
    write_atomically(os.path.join(directory, CLEAN_SHUTDOWN_NAME), b'{"version": 0}\n')


def resolve_leftovers(directory: str) -> bool:
    """Finish or undo interrupted operations (see the module docstring). Returns whether any file
    was removed or renamed (the caller then re-validates from the first affected segment)."""
    names = os.listdir(directory)
    changed = False
    cleaned: list[int] = []
    swaps: list[tuple[int, str, str]] = []
    for name in names:
        if name.endswith(TMP_SUFFIX) or name.endswith(_REBUILD_SUFFIX) or name.endswith(DELETED_SUFFIX):
            _unlink(os.path.join(directory, name))
            changed = True
            continue
        parsed = parse_segment_name(name)
        if parsed is None:
            continue
        base_offset, suffix, state = parsed
        if state == CLEANED_SUFFIX:
            cleaned.append(base_offset)
        elif state == SWAP_SUFFIX:
            swaps.append((base_offset, suffix, name))
    if cleaned:
        lowest = min(cleaned)
        for name in names:
            parsed = parse_segment_name(name)
            if parsed is None:
                continue
            base_offset, _suffix, state = parsed
            if state == CLEANED_SUFFIX or (state == SWAP_SUFFIX and base_offset >= lowest):
                _unlink(os.path.join(directory, name))
                changed = True
        swaps = [s for s in swaps if s[0] < lowest]
    if swaps:
        lower = min(base for base, _suffix, _name in swaps)
        upper = max(
            _next_offset_of(os.path.join(directory, name), base)
            for base, suffix, name in swaps
            if suffix == LOG_SUFFIX
        ) if any(suffix == LOG_SUFFIX for _b, suffix, _n in swaps) else lower
        for name in os.listdir(directory):
            parsed = parse_segment_name(name)
            if parsed and parsed[2] == "" and lower <= parsed[0] < max(upper, lower + 1):
                _unlink(os.path.join(directory, name))
        for _base, _suffix, name in swaps:
            os.replace(os.path.join(directory, name), os.path.join(directory, name[: -len(SWAP_SUFFIX)]))
        changed = True
    if changed:
        fsync_dir(directory)
    return changed


def segment_base_offsets(directory: str) -> list[int]:
    """Sorted base offsets of the live ``.log`` files; index files with no ``.log`` are removed."""
    logs: set[int] = set()
    indexes: list[tuple[int, str]] = []
    for name in os.listdir(directory):
        parsed = parse_segment_name(name)
        if parsed is None or parsed[2]:
            continue
        base_offset, suffix, _state = parsed
        if suffix == LOG_SUFFIX:
            logs.add(base_offset)
        else:
            indexes.append((base_offset, name))
    for base_offset, name in indexes:
        if base_offset not in logs:
            _unlink(os.path.join(directory, name))
    return sorted(logs)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _next_offset_of(path: str, base_offset: int) -> int:
    """One past the last offset of the batches in a ``.log`` (walks headers only)."""
    next_offset = base_offset
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        position = 0
        while position + HEADER_SIZE <= size:
            header = BatchHeader._make(HEADER.unpack_from(os.pread(f.fileno(), HEADER_SIZE, position)))
            if header.batch_length < HEADER_SIZE - 12 or position + header.size > size:
                break
            next_offset = header.next_offset
            position += header.size
    return next_offset
