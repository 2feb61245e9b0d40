"""``logstore dump``: print segment files offline, the way Kafka's ``kafka-dump-log`` does.

The tool reads files and never writes them (every file is opened ``"rb"``; indexes are opened
with ``writable=False``, which reads them with one ``np.fromfile`` and never maps them). It
imports neither :mod:`logstore.log` nor :mod:`logstore.store`, so it works on a directory that
``Log`` would refuse to open: a torn tail, a bad CRC, an index with a zero tail. Reading the files
is :mod:`logstore.segment_reader`'s (shared with ``logstore verify``); this module prints.

The file type is chosen by suffix: ``.log`` (record batches), ``.index`` (offset index),
``.timeindex`` (time index), each optionally followed by a state suffix (``.cleaned``, ``.swap``,
``.deleted``); anything else is ``Ignoring unknown file`` on stderr, as Kafka does.

Output lines have the shapes of Kafka's ``DumpLogSegments`` (``core/.../tools/DumpLogSegments.scala``)
so scripts written for one read the other::

    Dumping 00000000000000000000.log
    Log starting offset: 0
    baseOffset: 0 lastOffset: 2 count: 3 ... position: 0 CreateTime: 1002 size: 106 magic: 2 compresscodec: none crc: 1680634429 isvalid: true
    | offset: 0 CreateTime: 1000 keySize: 2 valueSize: 2 sequence: -1 headerKeys: [h] key: k0 payload: v0
    Found 17 invalid bytes at the end of 00000000000000000000.log
    offset: 65 position: 1963                 (.index)
    timestamp: 1029 offset: 129               (.timeindex)

Reports that Kafka prints on stderr (index mismatches, non-consecutive offsets, time index
errors) come on stderr after every file is dumped. Differences from Kafka, on purpose: a batch
whose records cannot be decoded is reported and the dump goes on (Kafka stops with a stack
trace); where the valid bytes of a damaged ``.log`` end, and why, is printed on stderr next to
Kafka's ``Found N invalid bytes`` line; a tombstone's key is printed (Kafka prints neither key nor
payload of a record without a value); only magic 2 batches are read (a legacy v0/v1 batch ends
the valid bytes).

``--json`` prints one JSON object per line instead -- a file, a batch, a record, an index entry,
a tail of invalid bytes, a mismatch -- each with a ``"type"`` field; reports go to stdout too.
Keys and payloads are UTF-8 text (bad bytes replaced), plus ``keyBase64``/``payloadBase64`` when
the bytes are not valid UTF-8.

Exit status: 0 after dumping; 1 when ``--verify-index-only`` finds a mismatch or
``--index-sanity-check`` fails; 2 when a file cannot be read (the other files are still dumped).
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import sys
from typing import NamedTuple

from .batch import BatchHeader, decode
from .dump_format import batch_fields, data_fields, decoded_text, kafka_line, last_sequence, record_fields
from .errors import CorruptBatchError, CorruptIndexError
from .index import OffsetIndex, TimeIndex
from .segment_reader import LogScanner, LogTail, ScannedBatch, classify, matching_log, open_index

__all__ = [
    "ScannedBatch",
    "LogTail",
    "LogScanner",
    "classify",
    "matching_log",
    "last_sequence",
    "add_parser",
    "run",
    "dump_files",
    "os_error_text",
]

class _Reports:
    """What Kafka prints on stderr after all files: per file, in the order found."""

    def __init__(self):
        self.index_mismatches: dict[str, list[tuple[int, int, str]]] = {}
        self.non_consecutive: dict[str, list[tuple[int, int]]] = {}
        self.timestamp_mismatches: dict[str, list[tuple[int, int]]] = {}
        self.out_of_order: dict[str, list[tuple[int, int]]] = {}
        self.offsets_not_found: list[tuple[int, int]] = []

    @property
    def index_problems(self) -> bool:
        return bool(self.index_mismatches or self.timestamp_mismatches or self.out_of_order or self.offsets_not_found)


class _Options(NamedTuple):
    print_data: bool
    deep: bool
    verify_only: bool
    sanity_only: bool
    max_bytes: int | None
    json: bool


class _Dumper:
    def __init__(self, options: _Options, out, err):
        self.options = options
        self.out = out
        self.err = err
        self.reports = _Reports()
        self.exit_code = 0

    # - emitting -

    def line(self, text: str) -> None:
        print(text, file=self.out)

    def emit(self, object_type: str, /, **fields) -> None:
        print(json.dumps({"type": object_type, **fields}), file=self.out)

    # - files -

    def dump(self, path: str) -> None:
        kind, base_offset = classify(path)
        if self.options.json:
            self.emit("file", file=path, kind=kind)
        else:
            self.line(f"Dumping {path}")
        if kind is None:
            if self.options.json:
                self.emit("ignored", file=path)
            else:
                print(f"Ignoring unknown file {path}", file=self.err)
            return
        try:
            if kind == "log":
                self.dump_log(path, base_offset)
            elif kind == "index":
                self.dump_offset_index(path, base_offset or 0)
            else:
                self.dump_time_index(path, base_offset or 0)
        except BrokenPipeError:
            raise
        except OSError as error:
            print(f"logstore: error: {os_error_text(error)}", file=self.err)
            self.exit_code = 2

    def dump_log(self, path: str, base_offset: int | None) -> None:
        options = self.options
        if base_offset is not None:
            if options.json:
                self.emit("log_start", file=path, baseOffset=base_offset)
            else:
                self.line(f"Log starting offset: {base_offset}")
        scanner = LogScanner(path, limit=options.max_bytes)
        last_offset = -1
        gaps = []
        for batch in scanner:
            self.print_batch(path, batch)
            if not options.deep:
                continue
            try:
                records = decode(batch.data, verify_crc=False)
            except CorruptBatchError as error:
                self.problem(path, f"cannot read the records of the batch at position {batch.position}: {error}")
                continue
            for record in records:
                if last_offset != -1 and record.offset != last_offset + 1:
                    gaps.append((last_offset, record.offset))
                last_offset = record.offset
                self.print_record(path, batch.header, record)
        if gaps:
            self.reports.non_consecutive.setdefault(os.path.abspath(path), []).extend(gaps)
        tail = scanner.tail
        if tail is not None and tail.invalid_bytes and options.max_bytes is None:
            name = os.path.basename(path)
            if options.json:
                self.emit("invalid_bytes", file=path, position=tail.position, bytes=tail.invalid_bytes, reason=tail.reason)
            else:
                self.line(f"Found {tail.invalid_bytes} invalid bytes at the end of {name}")
                print(f"Valid bytes of {path} end at position {tail.position}: {tail.reason}", file=self.err)

    def print_batch(self, path: str, batch: ScannedBatch) -> None:
        if self.options.json:
            self.emit("batch", file=path, **batch_fields(batch))
        else:
            self.line(kafka_line(batch_fields(batch)))

    def print_record(self, path: str, h: BatchHeader, record) -> None:
        fields = record_fields(h, record)
        data = self.options.print_data and not h.is_control
        if self.options.json:
            if data:
                fields.update(data_fields("key", record.key))
                fields.update(data_fields("payload", record.value))
            self.emit("record", file=path, **fields)
            return
        text = "| " + kafka_line(fields)
        if data and record.key is not None:
            text += f" key: {decoded_text(record.key)}"
        if data and record.value is not None:
            text += f" payload: {decoded_text(record.value)}"
        self.line(text)

    def problem(self, path: str, message: str) -> None:
        if self.options.json:
            self.emit("error", file=path, message=message)
        else:
            print(message, file=self.err)

    # - indexes -

    def _sanity(self, path: str, index) -> bool:
        """Run the index's sanity check; print the outcome when it is the only thing asked."""
        try:
            index.sanity_check()
        except CorruptIndexError as error:
            if self.options.json:
                self.emit("sanity_check", file=path, passed=False, message=str(error))
            else:
                print(f"{path} failed sanity check: {error}", file=self.err)
            self.exit_code = max(self.exit_code, 1)
            return False
        if self.options.json:
            self.emit("sanity_check", file=path, passed=True)
        else:
            self.line(f"{path} passed sanity check.")
        return True

    def _log_batches(self, index_path: str) -> list[tuple[int, BatchHeader]] | None:
        log_path = matching_log(index_path)
        if not os.path.exists(log_path):
            if self.options.verify_only:
                self.problem(index_path, f"Cannot verify {index_path}: {log_path} does not exist")
                self.exit_code = max(self.exit_code, 1)
            return None
        return [(b.position, b.header) for b in LogScanner(log_path, keep_data=False)]

    def _empty(self, path: str) -> None:
        if self.options.json:
            self.emit("empty", file=path)
        else:
            self.line(f"{path} is empty.")

    def dump_offset_index(self, path: str, base_offset: int) -> None:
        index = open_index(OffsetIndex, path, base_offset)
        if index.entries == 0:
            self._empty(path)
            return
        if self.options.sanity_only:
            self._sanity(path, index)
            return
        batches = self._log_batches(path)
        by_position = None if batches is None else {p: h.last_offset for p, h in batches}
        offsets, positions = index.to_arrays()
        mismatches = []
        for i, (offset, position) in enumerate(zip(offsets.tolist(), positions.tolist(), strict=True)):
            if i > 0 and offset == base_offset:
                break  # a zero tail: the rest of a preallocated, untrimmed file
            if by_position is not None:
                log_offset = by_position.get(position, -1)
                if log_offset != offset:
                    note = "" if log_offset != -1 else f" (no batch starts at position {position})"
                    mismatches.append((offset, log_offset, note))
                    if self.options.json:
                        self.emit("index_mismatch", file=path, indexOffset=offset, logOffset=log_offset, position=position)
            if self.options.verify_only:
                continue
            if self.options.json:
                self.emit("index_entry", file=path, offset=offset, position=position)
            else:
                self.line(f"offset: {offset} position: {position}")
        if mismatches:
            self.reports.index_mismatches.setdefault(os.path.abspath(path), []).extend(mismatches)

    def dump_time_index(self, path: str, base_offset: int) -> None:
        index = open_index(TimeIndex, path, base_offset)
        if index.entries == 0:
            self._empty(path)
            return
        if self.options.sanity_only:
            self._sanity(path, index)
            return
        batches = self._log_batches(path)
        last_offsets = None if batches is None else [h.last_offset for _p, h in batches]
        max_timestamps = None if batches is None else [h.max_timestamp for _p, h in batches]
        timestamps, offsets = index.to_arrays()
        previous = -1
        key = os.path.abspath(path)
        for i, (timestamp, offset) in enumerate(zip(timestamps.tolist(), offsets.tolist(), strict=True)):
            if i > 0 and offset == base_offset:
                break  # zero tail
            if last_offsets is not None:
                self._check_time_entry(path, key, timestamp, offset, previous, last_offsets, max_timestamps)
            if not self.options.verify_only:
                if self.options.json:
                    self.emit("time_index_entry", file=path, timestamp=timestamp, offset=offset)
                else:
                    self.line(f"timestamp: {timestamp} offset: {offset}")
            previous = timestamp

    def _check_time_entry(self, path, key, timestamp, offset, previous, last_offsets, max_timestamps) -> None:
        """Kafka's checks: the entry's offset ends a batch, whose max timestamp is the entry's, and
        timestamps increase."""
        slot = bisect.bisect_left(last_offsets, offset)
        found = last_offsets[slot] if slot < len(last_offsets) else -1
        if found != offset:
            self.reports.offsets_not_found.append((offset, found))
            if self.options.json:
                self.emit("time_index_offset_not_found", file=path, indexOffset=offset, logOffset=found)
            return
        if max_timestamps[slot] != timestamp:
            self.reports.timestamp_mismatches.setdefault(key, []).append((timestamp, max_timestamps[slot]))
            if self.options.json:
                self.emit(
                    "time_index_mismatch", file=path, indexTimestamp=timestamp, logTimestamp=max_timestamps[slot]
                )
        if previous >= timestamp:
            self.reports.out_of_order.setdefault(key, []).append((timestamp, previous))
            if self.options.json:
                self.emit("time_index_out_of_order", file=path, indexTimestamp=timestamp, previousTimestamp=previous)

    # - the end -

    def finish(self) -> int:
        reports = self.reports
        if reports.index_problems:
            self.exit_code = max(self.exit_code, 1)
        if self.options.json:
            for path, gaps in reports.non_consecutive.items():
                for before, after in gaps:
                    self.emit("non_consecutive", file=path, offset=before, nextOffset=after)
            return self.exit_code
        err = self.err
        for path, mismatches in reports.index_mismatches.items():
            print(f"Mismatches in :{path}", file=err)
            for index_offset, log_offset, note in mismatches:
                print(f"  Index offset: {index_offset}, log offset: {log_offset}{note}", file=err)
        for path, found in reports.timestamp_mismatches.items():
            print(f"Found timestamp mismatch in :{path}", file=err)
            for index_ts, log_ts in found:
                print(f"  Index timestamp: {index_ts}, log timestamp: {log_ts}", file=err)
        for path, found in reports.out_of_order.items():
            print(f"Found out of order timestamp in :{path}", file=err)
            for index_ts, previous in found:
                print(f"  Index timestamp: {index_ts}, Previously indexed timestamp: {previous}", file=err)
        if reports.offsets_not_found:
            print("The following indexed offsets are not found in the log.", file=err)
            for index_offset, log_offset in reports.offsets_not_found:
                print(f"Indexed offset: {index_offset}, found log offset: {log_offset}", file=err)
        for path, gaps in reports.non_consecutive.items():
            print(f"Non-consecutive offsets in {path}", file=err)
            for before, after in gaps:
                print(f"  {before} is followed by {after}", file=err)
        return self.exit_code


def os_error_text(error: OSError) -> str:
    """``"No such file or directory: x.log"`` rather than ``"[Errno 2] ..."``."""
    if error.filename is not None and error.strerror:
        return f"{error.strerror}: {error.filename}"
    return str(error)


# --- command line -------------------------------------------------------------------------------


def dump_files(
    paths,
    *,
    print_data_log: bool = False,
    deep_iteration: bool = False,
    verify_index_only: bool = False,
    index_sanity_check: bool = False,
    max_bytes: int | None = None,
    as_json: bool = False,
    out=None,
    err=None,
) -> int:
    """Dump ``paths`` to ``out``/``err`` (default stdout/stderr); returns the exit status."""
    options = _Options(
        print_data=print_data_log,
        deep=deep_iteration or print_data_log,
        verify_only=verify_index_only,
        sanity_only=index_sanity_check,
        max_bytes=max_bytes,
        json=as_json,
    )
    dumper = _Dumper(options, out or sys.stdout, err or sys.stderr)
    for path in paths:
        dumper.dump(os.fspath(path))
    return dumper.finish()


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of bytes, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "dump",
        help="print segment files (.log, .index, .timeindex) like kafka-dump-log",
        description=(
            "Print the batches of .log files and the entries of .index/.timeindex files, in the "
            "line format of Kafka's kafka-dump-log. Reads only; works on damaged files. An index "
            "is checked against the .log of the same name when that file exists."
        ),
        epilog="exit status: 0 dumped; 1 --verify-index-only or --index-sanity-check found a problem; "
        "2 a file could not be read",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="segment files; the type comes from the suffix")
    parser.add_argument(
        "--print-data-log", action="store_true", help="print record keys and payloads (implies --deep-iteration)"
    )
    parser.add_argument("--deep-iteration", action="store_true", help="print every record, not only batches")
    parser.add_argument(
        "--verify-index-only",
        action="store_true",
        help="check index entries against the .log without printing them; mismatches go to stderr",
    )
    parser.add_argument(
        "--index-sanity-check",
        action="store_true",
        help="only run the index sanity check (order of entries, no zero tail, whole entries)",
    )
    parser.add_argument(
        "--max-bytes", type=_non_negative, default=None, metavar="N", help="read at most N bytes of each .log"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line (file, batch, record, entry)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    return dump_files(
        args.files,
        print_data_log=args.print_data_log,
        deep_iteration=args.deep_iteration,
        verify_index_only=args.verify_index_only,
        index_sanity_check=args.index_sanity_check,
        max_bytes=args.max_bytes,
        as_json=args.json,
    )
