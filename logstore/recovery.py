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

import bisect
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
from .segment import Segment

__all__ = [
    "LoadedLog",
    "open_segments",
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
        # The range a rewrite replaces comes from its .log.swap files only: a base whose .log was
        # already renamed into place (the crash fell between its .log and its index renames) has
        # index swaps left alone, and its new live .log must not be taken for an original.
        logs = [(base, name) for base, suffix, name in swaps if suffix == LOG_SUFFIX]
        if logs:
            lower = min(base for base, _name in logs)
            upper = max(_next_offset_of(os.path.join(directory, name), base) for base, name in logs)
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



class LoadedLog(NamedTuple):
    segments: list  # of Segment, oldest first; the last is active and ready for appends
    log_start_offset: int
    recovery_point: int  # every offset below it is known to be on disk
    clean: bool  # the previous close was clean and nothing needed re-validation
    truncated_bytes: int  # bytes cut by recovery (torn or damaged tails)


def open_segments(directory: str, config) -> LoadedLog:
    """Put a partition directory in order and open its segments (the open-time recovery).

    Order: take the clean-shutdown marker (durably), resolve leftovers, read the checkpoint,
    list segments. After a clean close only the active segment's tail (one index interval) is
    read, and checked; otherwise every segment from the one containing the checkpointed recovery
    point is re-validated (:meth:`Segment.recover`), and everything after a damaged point goes,
    as in Kafka. Sealed segments below the recovery point are not touched (opened lazily).
    An empty directory gets one empty active segment (at the checkpointed log start, if any).
    """

    clean = take_clean_shutdown_marker(directory)
    leftovers = resolve_leftovers(directory)
    checkpoint = read_checkpoint(directory)
    bases = segment_base_offsets(directory)
    clean = clean and not leftovers and checkpoint is not None
    max_batch_bytes = max(config.max_batch_bytes, config.segment_bytes)
    if not bases:
        start = checkpoint.log_start_offset if checkpoint else 0
        segments = [Segment.create(directory, start, config)]
        fsync_dir(directory)
        return LoadedLog(segments, start, start, clean, 0)
    segments = [Segment.open(directory, base, config, active=(i == len(bases) - 1)) for i, base in enumerate(bases)]
    truncated = 0
    if clean and segments[-1].load_active():
        recovery_point = segments[-1].next_offset
    elif clean:
        # the active segment does not look like a clean close left it: re-validate it
        truncated += segments[-1].recover(max_batch_bytes=max_batch_bytes)
        clean = False
        recovery_point = min(checkpoint.recovery_point, segments[-1].next_offset)
    else:
        recover_from = checkpoint.recovery_point if checkpoint else 0
        first = max(0, bisect.bisect_right(bases, recover_from) - 1)
        keep = len(segments)
        for i in range(first, len(segments)):
            is_last = i == len(segments) - 1
            cut = segments[i].recover(max_batch_bytes=max_batch_bytes, contiguous_from=recover_from if is_last else None)
            truncated += cut
            if cut and not is_last:
                keep = i + 1  # nothing after a damaged point survives (Kafka's rule)
                break
            if not is_last:
                segments[i].seal()
        for segment in segments[keep:]:
            segment.delete_files()
        segments = segments[:keep]
        recovery_point = min(recover_from, segments[-1].next_offset)
    log_start = segments[0].base_offset
    if checkpoint is not None:
        log_start = max(log_start, min(checkpoint.log_start_offset, segments[-1].next_offset))
    if truncated or leftovers:
        fsync_dir(directory)
    return LoadedLog(segments, log_start, max(recovery_point, log_start), clean, truncated)
