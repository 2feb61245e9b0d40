"""``logstore verify``: check every segment of a data directory, offline and read-only.

For every partition directory (``<topic>-<partition>``) and every segment in it:

* every batch is whole, has magic 2, and passes its CRC-32C check (the full batch is read);
* offsets grow: each batch starts after the previous one ends (within a segment and across
  segments), no batch starts below its segment's base offset, and ``last_offset_delta >= 0``;
* nothing follows the last batch (a torn or garbage tail is reported with its position);
* the offset index passes its sanity check, and each entry points at the start of a batch whose
  last offset is the entry's offset;
* the time index passes its sanity check (timestamps increase, no zero tail), and each entry's
  offset ends a batch whose max timestamp is the entry's timestamp.

Files are opened ``"rb"`` and indexes with ``writable=False``; the store's lock is not taken, so
verify runs beside a live store -- but the active segment of a live store changes under it
(appends, an index that is not trimmed yet), so run it on a stopped store when exactness matters.
Like :mod:`logstore.dump`, this module imports neither ``logstore.log`` nor ``logstore.store``: it
must work on a directory that ``Log`` would refuse to open.

Output: one line per problem, ``PATH: position P: what``, where ``P`` is a byte position in that
file, then a summary line. A progress bar goes to stderr when stderr is a terminal.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from typing import NamedTuple

import numpy as np

from .batch import BatchHeader
from .errors import CorruptIndexError
from .files import INDEX_SUFFIX, LOG_SUFFIX, TIMEINDEX_SUFFIX, parse_segment_name, segment_path
from .index import OffsetIndex, TimeIndex
from .segment_reader import LogScanner

__all__ = ["Problem", "VerifyResult", "partition_dirs", "verify_data_dir", "add_parser", "run"]

_PARTITION_DIR = re.compile(r"^(?P<topic>.+)-(?P<partition>\d+)$")


class Problem(NamedTuple):
    path: str
    position: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}: position {self.position}: {self.message}"


class VerifyResult(NamedTuple):
    partitions: int
    segments: int
    bytes_checked: int
    problems: list[Problem]
    notes: list[Problem]  # worth knowing, not damage (an untrimmed active index)


class _Collector:
    def __init__(self):
        self.problems: list[Problem] = []
        self.notes: list[Problem] = []

    def problem(self, path: str, position: int, message: str) -> None:
        self.problems.append(Problem(path, position, message))

    def note(self, path: str, position: int, message: str) -> None:
        self.notes.append(Problem(path, position, message))


# --- finding the files --------------------------------------------------------------------------


def partition_dirs(data_dir: str, topic: str | None = None) -> list[str]:
    """The partition directories of ``data_dir`` (sorted by topic, then partition number).

    ``data_dir`` may itself be a partition directory (it holds ``.log`` files). Directories being
    deleted (``...-delete``) are skipped by the name pattern.
    """
    names = os.listdir(data_dir)  # OSError for a missing or unreadable directory
    found = []
    for name in names:
        match = _PARTITION_DIR.match(name)
        if match is None or not os.path.isdir(os.path.join(data_dir, name)):
            continue
        if topic is not None and match.group("topic") != topic:
            continue
        found.append((match.group("topic"), int(match.group("partition")), os.path.join(data_dir, name)))
    if not found and _segment_bases(data_dir):
        match = _PARTITION_DIR.match(os.path.basename(os.path.abspath(data_dir)))
        if topic is None or (match is not None and match.group("topic") == topic):
            return [data_dir]
    return [path for _t, _p, path in sorted(found)]


def _segment_bases(directory: str) -> list[int]:
    bases = []
    for name in os.listdir(directory):
        parsed = parse_segment_name(name)
        if parsed is not None and parsed[1] == LOG_SUFFIX and parsed[2] == "":
            bases.append(parsed[0])
    return sorted(bases)


# --- progress -----------------------------------------------------------------------------------


class _Progress:
    """A one-line progress bar on ``stream`` (no dependency); silent when disabled."""

    WIDTH = 30

    def __init__(self, stream, total_bytes: int, total_segments: int, enabled: bool):
        self.stream = stream
        self.total_bytes = max(total_bytes, 1)
        self.total_segments = total_segments
        self.enabled = enabled
        self.done_bytes = 0
        self.done_segments = 0
        self._last_draw = 0.0

    def advance(self, nbytes: int) -> None:
        self.done_bytes += nbytes
        self._draw()

    def segment_done(self) -> None:
        self.done_segments += 1
        self._draw(force=True)

    def _draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last_draw < 0.1:
            return
        self._last_draw = now
        fraction = min(self.done_bytes / self.total_bytes, 1.0)
        filled = int(fraction * self.WIDTH)
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        self.stream.write(
            f"\rverify [{bar}] {fraction:4.0%} {self.done_segments}/{self.total_segments} segments "
            f"{self.done_bytes / 2**20:.1f}/{self.total_bytes / 2**20:.1f} MiB"
        )
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r" + " " * 100 + "\r")
            self.stream.flush()


# --- checking -----------------------------------------------------------------------------------


def verify_data_dir(
    data_dir: str, *, topic: str | None = None, progress_stream=None, show_progress: bool = False
) -> VerifyResult:
    """Check every segment under ``data_dir`` (see the module docstring); reads only."""
    directories = partition_dirs(data_dir, topic)
    plan = [(directory, _segment_bases(directory)) for directory in directories]
    total_bytes = sum(
        _size(segment_path(directory, base, LOG_SUFFIX)) for directory, bases in plan for base in bases
    )
    total_segments = sum(len(bases) for _d, bases in plan)
    progress = _Progress(progress_stream or sys.stderr, total_bytes, total_segments, show_progress)
    result = _Collector()
    checked = 0
    try:
        for directory, bases in plan:
            next_offset = None  # the offset after the previous segment's last batch
            for i, base in enumerate(bases):
                active = i == len(bases) - 1
                next_offset, nbytes = _verify_segment(directory, base, next_offset, result, progress, active=active)
                checked += nbytes
                progress.segment_done()
    finally:
        progress.close()
    return VerifyResult(len(plan), total_segments, checked, result.problems, result.notes)


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def _verify_segment(directory: str, base: int, next_offset: int | None, result: _Collector, progress, *, active: bool):
    # The indexes are read before the .log: a live store only appends, so every entry read now
    # points at bytes the .log scan below will see.
    offset_index = _load_index(OffsetIndex, segment_path(directory, base, INDEX_SUFFIX), base, result, active)
    time_index = _load_index(TimeIndex, segment_path(directory, base, TIMEINDEX_SUFFIX), base, result, active)
    log_path = segment_path(directory, base, LOG_SUFFIX)
    batches: list[tuple[int, BatchHeader]] = []
    scanner = LogScanner(log_path, progress=progress.advance)
    for batch in scanner:
        header = batch.header
        if batch.crc_error is not None:
            result.problem(log_path, batch.position, f"batch {_span(header)}: {batch.crc_error}")
        if header.last_offset_delta < 0:
            result.problem(log_path, batch.position, f"batch at base offset {header.base_offset} has a negative last offset delta")
        if header.base_offset < base:
            result.problem(log_path, batch.position, f"batch {_span(header)} starts below the segment's base offset {base}")
        elif next_offset is not None and header.base_offset < next_offset:
            result.problem(
                log_path,
                batch.position,
                f"offsets go backwards: batch {_span(header)} starts below {next_offset}, "
                "the offset after the previous batch",
            )
        next_offset = max(next_offset or 0, header.next_offset)
        batches.append((batch.position, header))
    tail = scanner.tail
    if tail is not None and tail.invalid_bytes:
        result.problem(log_path, tail.position, f"{tail.invalid_bytes} invalid bytes after the last valid batch: {tail.reason}")
    if offset_index is not None:
        _check_offset_entries(offset_index, batches, result)
    if time_index is not None:
        _check_time_entries(time_index, batches, result)
    return next_offset, scanner.file_size or 0


def _span(header: BatchHeader) -> str:
    return f"(offsets {header.base_offset}..{header.last_offset})"


class _LoadedIndex(NamedTuple):
    path: str
    entry_bytes: int
    columns: tuple  # (offsets, positions) or (timestamps, offsets), only the entries to check


def _load_index(cls, path: str, base: int, result: _Collector, active: bool) -> _LoadedIndex | None:
    """Read an index, report a zero tail and sanity-check failures, keep the entries before them.

    A zero tail (all-zero entries at the end: the preallocated part of a file that was not
    trimmed) is normal for the active segment of a running store or after a crash, and the
    index is rebuilt at recovery; it is a note there and a problem in a sealed segment.
    """
    if not os.path.exists(path):
        return None
    index = cls(path, base, writable=False)
    first, second = index.to_arrays()
    count = len(first)
    if cls is OffsetIndex:
        nonzero = np.flatnonzero((first != base) | (second != 0))
    else:
        nonzero = np.flatnonzero((first != 0) | (second != base))
    tail_start = int(nonzero[-1]) + 1 if len(nonzero) else 0
    if tail_start < count:
        message = (
            f"{count - tail_start} zero entries at the end from entry {tail_start} (the index was not "
            "trimmed: the store is running or did not shut down cleanly; rebuilt at recovery)"
        )
        (result.note if active else result.problem)(path, tail_start * index.ENTRY_BYTES, message)
    try:
        index.sanity_check()
    except CorruptIndexError as error:
        position = error.position or 0
        bad = position // index.ENTRY_BYTES
        # a failure inside the zero tail already reported is the same finding; a partial entry
        # at the end of the file (bad == count) is not
        if bad < max(tail_start, 1) or bad >= count:
            message = str(error).split(f" in {path}")[0]
            result.problem(path, position, f"{message} (the index is rebuilt from the .log at recovery)")
        tail_start = min(tail_start, bad)
    return _LoadedIndex(path, index.ENTRY_BYTES, (first[:tail_start].tolist(), second[:tail_start].tolist()))


def _check_offset_entries(index: _LoadedIndex, batches, result: _Collector) -> None:
    last_offset_at = {position: header.last_offset for position, header in batches}
    offsets, positions = index.columns
    for slot, (offset, position) in enumerate(zip(offsets, positions, strict=True)):
        found = last_offset_at.get(position)
        if found is None:
            what = f"no batch starts at .log position {position}"
        elif found != offset:
            what = f"the batch at .log position {position} ends at offset {found}"
        else:
            continue
        result.problem(index.path, slot * index.entry_bytes, f"entry {slot} (offset {offset}, position {position}): {what}")


def _check_time_entries(index: _LoadedIndex, batches, result: _Collector) -> None:
    max_timestamp_of = {header.last_offset: header.max_timestamp for _p, header in batches}
    timestamps, offsets = index.columns
    for slot, (timestamp, offset) in enumerate(zip(timestamps, offsets, strict=True)):
        found = max_timestamp_of.get(offset)
        if found is None:
            what = f"no batch ends at offset {offset}"
        elif found != timestamp:
            what = f"the batch ending at offset {offset} has max timestamp {found}"
        else:
            continue
        result.problem(
            index.path, slot * index.entry_bytes, f"entry {slot} (timestamp {timestamp}, offset {offset}): {what}"
        )


# --- command line -------------------------------------------------------------------------------


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "verify",
        help="check every segment of a data directory (CRCs, offsets, indexes); read-only",
        description=(
            "Check every segment of every partition directory (<topic>-<partition>) under DATA_DIR: "
            "the CRC of every batch, offsets increasing, offset index entries pointing at batch starts "
            "with matching last offsets, time index entries in order and matching batch timestamps. "
            "Opens files read-only and does not take the store's lock, so it can run beside a live "
            "store; but a live store's active segment changes under it, so stop the store first if "
            "exactness matters. DATA_DIR may also be a single partition directory."
        ),
        epilog="exit status: 0 no problems; 1 problems found (listed as PATH: position P: problem); "
        "2 usage or input error",
    )
    parser.add_argument("data_dir", metavar="DATA_DIR", help="a logstore data directory")
    parser.add_argument("--topic", metavar="T", help="only the partitions of topic T")
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument(
        "--progress", dest="progress", action="store_true", default=None, help="always draw the progress bar"
    )
    progress.add_argument(
        "--no-progress", dest="progress", action="store_false", help="never draw it (default: when stderr is a terminal)"
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace, out=None, err=None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    show = args.progress if args.progress is not None else err.isatty()
    result = verify_data_dir(args.data_dir, topic=args.topic, progress_stream=err, show_progress=show)
    if result.partitions == 0:
        what = f"no partitions of topic {args.topic!r}" if args.topic else "no partition directories"
        print(f"logstore: error: {what} in {args.data_dir}", file=err)
        return 2
    for problem in result.problems:
        print(problem, file=out)
    for note in result.notes:
        print(f"{note.path}: position {note.position}: note: {note.message}", file=out)
    checked = (
        f"{_plural(result.segments, 'segment')} in {_plural(result.partitions, 'partition')}, "
        f"{_plural(result.bytes_checked, 'byte')} of .log checked"
    )
    if result.problems:
        damaged = len({os.path.splitext(p.path)[0] for p in result.problems})
        print(f"verify: {_plural(len(result.problems), 'problem')} in {_plural(damaged, 'segment')} ({checked})", file=out)
        return 1
    print(f"verify: no problems ({checked})", file=out)
    return 0


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"
