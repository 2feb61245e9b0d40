"""Idempotent producers: producer id allocation and per-partition sequence de-duplication.

Kafka's rules (``ProducerStateManager``/``ProducerAppendInfo``), reduced to one node without
transactions:

* ``InitProducerId`` hands out a new producer id with epoch 0. Ids come from blocks of
  ``ID_BLOCK_SIZE``; the end of the current block is persisted (fsynced) *before* any id in it is
  handed out, and a restart continues from that persisted end, so an id is never given twice
  even after a crash (the unused rest of a block is skipped, as Kafka's ``ProducerIdManager``
  skips a lost block).
* Per (producer id, partition) the last ``BATCH_CACHE`` batches are remembered as
  ``(first_seq, last_seq, base_offset, last_offset)``: a producer has at most 5 batches in
  flight, so a retry is always one of them. A batch whose sequence range equals a remembered
  one is a *duplicate*: it is not written again and is answered with the original base offset.
* Otherwise ``first_seq`` must follow the last remembered ``last_seq`` (wrapping at 2**31-1 to 0)
  or the batch is refused with OUT_OF_ORDER_SEQUENCE_NUMBER (45). A new epoch must start at
  sequence 0; an epoch below the current one is INVALID_PRODUCER_EPOCH (47). A producer the
  partition knows nothing about (its batches have aged out) may start at any sequence, as in Kafka.
* The state survives a restart without a snapshot file: it is rebuilt from the batch headers of the
  partition's tail (producer_id, producer_epoch, base_sequence and last_offset_delta are in every
  header, outside the compressed records), scanning at most about ``scan_batches`` batches, lazily
  on the first idempotent produce to that partition. A producer whose last write is older than
  that becomes unknown, which only means a retry of such an old batch would not be recognised.

Thread safety: every method may be called from any connection thread. Check, append and record
for one producer on one partition run under that producer's lock (``ProducerEntry.lock``), so two
connections retrying the same batch cannot both write it; different producers never wait for
each other.
"""

from __future__ import annotations

import json
import os
import threading
import weakref
from collections import deque
from typing import NamedTuple

from logstore.batch import CONTROL_FLAG, HEADER, HEADER_SIZE, BatchHeader
from logstore.errors import OffsetOutOfRangeError
from logstore.files import write_atomically

__all__ = [
    "BATCH_CACHE",
    "ID_BLOCK_SIZE",
    "PRODUCER_IDS_FILE",
    "BatchMetadata",
    "PartitionProducers",
    "ProducerEntry",
    "ProducerIdAllocator",
    "ProducerStateManager",
    "next_sequence",
]

BATCH_CACHE = 5
ID_BLOCK_SIZE = 1000
PRODUCER_IDS_FILE = "logstore-server-producer-ids.json"

_INT32_MAX = 2**31 - 1
_SCAN_SLICE_BYTES = 16 * 1024 * 1024

# Kafka error codes this module decides.
OUT_OF_ORDER_SEQUENCE_NUMBER = 45
INVALID_PRODUCER_EPOCH = 47


def next_sequence(sequence: int, increment: int = 1) -> int:
    """``sequence + increment`` wrapping past 2**31-1 to 0 (Kafka's ``incrementSequence``)."""
    if sequence > _INT32_MAX - increment:
        return increment - (_INT32_MAX - sequence) - 1
    return sequence + increment


class BatchMetadata(NamedTuple):
    """One remembered batch of a producer on a partition."""

    first_seq: int
    last_seq: int
    base_offset: int
    last_offset: int

    @classmethod
    def from_header(cls, header: BatchHeader) -> BatchMetadata:
        return cls(
            header.base_sequence,
            next_sequence(header.base_sequence, header.last_offset_delta),
            header.base_offset,
            header.last_offset,
        )


class ProducerEntry:
    """A producer's state on one partition: its epoch and its last ``BATCH_CACHE`` batches."""

    __slots__ = ("epoch", "batches", "lock")

    def __init__(self, epoch: int = -1):
        self.epoch = epoch
        self.batches: deque[BatchMetadata] = deque(maxlen=BATCH_CACHE)
        self.lock = threading.Lock()

    def check(self, epoch: int, first_seq: int, last_seq: int) -> tuple[int, BatchMetadata | None]:
        """``(error_code, duplicate)`` for an incoming batch; ``(0, None)`` means append it.

        ``(0, metadata)`` means it is a retry of ``metadata``: answer with its offsets, write
        nothing. The caller holds ``self.lock``.
        """
        if self.epoch >= 0 and epoch < self.epoch:
            return INVALID_PRODUCER_EPOCH, None
        if epoch != self.epoch:
            # a new epoch restarts the sequence at 0, unless nothing is known of the producer
            if first_seq != 0 and self.epoch >= 0:
                return OUT_OF_ORDER_SEQUENCE_NUMBER, None
            return 0, None
        for batch in self.batches:
            if batch.first_seq == first_seq and batch.last_seq == last_seq:
                return 0, batch
        if self.batches and first_seq != next_sequence(self.batches[-1].last_seq):
            return OUT_OF_ORDER_SEQUENCE_NUMBER, None
        return 0, None

    def record(self, epoch: int, batch: BatchMetadata) -> None:
        """Remember a written batch (the caller holds ``self.lock``)."""
        if epoch != self.epoch:
            self.epoch = epoch
            self.batches.clear()
        self.batches.append(batch)


class PartitionProducers:
    """The producers of one partition, rebuilt from the log's tail when created. ``log`` and
    ``truncations`` say which log, in which state, it was built from."""

    def __init__(self, log=None):
        self._lock = threading.Lock()
        self._entries: dict[int, ProducerEntry] = {}
        self._log = weakref.ref(log) if log is not None else None  # (a deleted topic's log can go)
        self.truncations = getattr(log, "truncations", 0)

    @property
    def log(self):
        """The log this state was built from (None if that log is gone)."""
        return self._log() if self._log is not None else None

    def entry(self, producer_id: int) -> ProducerEntry:
        with self._lock:
            entry = self._entries.get(producer_id)
            if entry is None:
                entry = self._entries[producer_id] = ProducerEntry()
            return entry

    def known(self, producer_id: int) -> ProducerEntry | None:
        with self._lock:
            return self._entries.get(producer_id)

    def load(self, headers) -> None:
        """Replay batch headers in log order (used to rebuild the state at startup)."""
        for header in headers:
            if header.producer_id < 0 or header.attributes & CONTROL_FLAG:
                continue
            entry = self.entry(header.producer_id)
            if header.producer_epoch < entry.epoch:
                continue
            entry.record(header.producer_epoch, BatchMetadata.from_header(header))


def tail_headers(log, scan_batches: int) -> list[BatchHeader]:
    """About the last ``scan_batches`` batch headers of ``log``, oldest first.

    Only the public ``Log`` API is used: ``read_slice`` for where whole batches lie, then one
    ``os.pread`` of 61 bytes per batch; record bytes are never read. The window (in offsets) grows
    eightfold until it holds enough batches or reaches ``log_start_offset``.
    """
    end = log.log_end_offset
    window = 4096
    while True:
        start = log.log_start_offset
        first = max(start, end - window)
        headers = _headers_between(log, first, end)
        if len(headers) >= scan_batches or first <= start:
            return headers[-scan_batches:]
        window *= 8


def _headers_between(log, first: int, end: int) -> list[BatchHeader]:
    headers: list[BatchHeader] = []
    offset = first
    while offset < end:
        try:
            region = log.read_slice(offset, max_bytes=_SCAN_SLICE_BYTES, max_offset=end)
        except OffsetOutOfRangeError:  # retention moved the start meanwhile
            offset = log.log_start_offset
            if offset >= end:
                break
            continue
        if region.size == 0:
            break
        position, stop = region.position, region.position + region.size
        while position + HEADER_SIZE <= stop:
            header = BatchHeader._make(HEADER.unpack(os.pread(region.fd, HEADER_SIZE, position)))
            headers.append(header)
            position += header.size
        offset = headers[-1].next_offset if headers else end
    return headers


class ProducerIdAllocator:
    """Hands out producer ids that are never reused, across restarts (see the module docstring)."""

    def __init__(self, data_dir: str, *, block_size: int = ID_BLOCK_SIZE):
        self._path = os.path.join(data_dir, PRODUCER_IDS_FILE)
        self._block_size = block_size
        self._lock = threading.Lock()
        self._next = self._read()
        self._reserved_end = self._next  # nothing of the new run is reserved yet

    def _read(self) -> int:
        try:
            with open(self._path, "rb") as f:
                return int(json.loads(f.read())["next_producer_id"])
        except FileNotFoundError:
            return 0

    def allocate(self) -> int:
        with self._lock:
            if self._next >= self._reserved_end:
                end = self._next + self._block_size
                write_atomically(self._path, json.dumps({"version": 0, "next_producer_id": end}).encode())
                self._reserved_end = end
            producer_id = self._next
            self._next += 1
            return producer_id


def _current(state: PartitionProducers, log) -> bool:
    return state.log is log and state.truncations == getattr(log, "truncations", 0)


class ProducerStateManager:
    """Producer ids and per-partition producer state for one ``LogStore``."""

    def __init__(self, store, *, scan_batches: int = 1000):
        self._store = store
        self._scan_batches = scan_batches
        self._lock = threading.Lock()
        self._partitions: dict[tuple[str, int], PartitionProducers] = {}
        self._loading: dict[tuple[str, int], threading.Lock] = {}
        self.ids = ProducerIdAllocator(store.data_dir)

    def partition(self, topic: str, partition: int, log) -> PartitionProducers:
        """The state of one partition, rebuilt from ``log``'s tail on first use, and again when
        ``log`` is not the log it was built from (the topic was deleted and created again, even
        directly on the store) or was truncated since (Kafka truncates producer state with the
        log): a batch that truncation removed is then written again, never acknowledged with an
        offset that no longer holds it."""
        key = (topic, partition)
        with self._lock:
            state = self._partitions.get(key)
            if state is not None and _current(state, log):
                return state
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:  # one thread scans; the others wait for its result
            with self._lock:
                state = self._partitions.get(key)
            if state is not None and _current(state, log):
                return state
            state = PartitionProducers(log)
            state.load(tail_headers(log, self._scan_batches))
            with self._lock:
                self._partitions[key] = state
                self._loading.pop(key, None)
            return state

    def forget(self, topic: str, partition: int) -> None:
        """Drop a partition's state (its topic was deleted or recreated)."""
        with self._lock:
            self._partitions.pop((topic, partition), None)
