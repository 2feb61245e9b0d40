"""Produce (v3-8), one partition at a time: validate without decoding, append, de-duplicate.

The bytes a producer sent for a partition go to ``Log.append_batches`` as they are: it checks
each batch's size, magic and CRC and rewrites only the base offsets (outside the CRC). Before
that, only the 61-byte batch headers are read here, for the checks Kafka makes on the header:

* the codec (attribute bits 0-2): zstd in Produce below v7 is UNSUPPORTED_COMPRESSION_TYPE (76),
  as Kafka answers (kafka-python picks zstd from an inferred broker version, not from the
  Produce version it negotiated); codec ids 5-7 are CORRUPT_MESSAGE (2);
* transactional and control batches are INVALID_RECORD (87): no transactions here;
* a batch with a producer id goes through ``producer_state`` (de-duplication and sequence
  checks, under that producer's lock), alone in its partition's data as Kafka requires of
  idempotent producers.

acks=all (-1) answers once the batch is durable: ``log.sync()`` (one group-commit fsync shared
with concurrent appenders; already done by the append itself for ``durability="append"``). A
topic with ``durability="none"`` is never fsynced, so there acks=all means written to the OS,
the most that topic promises. On one node the "in-sync replicas" are this node, so acks=1 and
acks=all differ only by that fsync.

Errors map to Kafka codes: CorruptBatchError 2, RecordTooLargeError 10 (MESSAGE_TOO_LARGE),
InvalidRecordError 87, an unknown topic or partition 3, a closing store 6 (the client retries
elsewhere or later), an OSError from the disk 56 (KAFKA_STORAGE_ERROR). Nothing is written when a
partition's data is refused.
"""

from __future__ import annotations

import logging

from logstore.batch import (
    CODEC_MASK,
    CONTROL_FLAG,
    HEADER_SIZE,
    TRANSACTIONAL_FLAG,
    Compression,
    unpack_header,
)
from logstore.errors import (
    CorruptBatchError,
    InvalidRecordError,
    LogClosedError,
    RecordTooLargeError,
    TopicError,
)
from logstore.server.producer_state import BatchMetadata, ProducerStateManager, next_sequence

__all__ = ["Appender", "batch_headers"]

logger = logging.getLogger("logstore.server")

NONE = 0
CORRUPT_MESSAGE = 2
UNKNOWN_TOPIC_OR_PARTITION = 3
NOT_LEADER_OR_FOLLOWER = 6
MESSAGE_TOO_LARGE = 10
KAFKA_STORAGE_ERROR = 56
UNSUPPORTED_COMPRESSION_TYPE = 76
INVALID_RECORD = 87


class Appender:
    """Appends Produce data to ``store``'s logs (thread-safe; see the module docstring)."""

    def __init__(self, store, producers: ProducerStateManager):
        self.store = store
        self.producers = producers

    def append(self, topic: str, partition: int, records, version: int, acks: int):
        """Append one partition's ``records`` (the bytes of a Produce request ``version``);
        returns ``(error_code, base_offset, log_start_offset, error_message)``."""
        try:
            log = self.store.log(topic, partition)
        except TopicError:
            return UNKNOWN_TOPIC_OR_PARTITION, -1, -1, None
        except LogClosedError:
            return NOT_LEADER_OR_FOLLOWER, -1, -1, "the server is shutting down"
        if not records:
            return INVALID_RECORD, -1, -1, "no record batches"
        try:
            headers = batch_headers(records)
        except CorruptBatchError as e:
            return CORRUPT_MESSAGE, -1, -1, str(e)
        for header in headers:
            codec = header.attributes & CODEC_MASK
            if codec > Compression.ZSTD:
                return CORRUPT_MESSAGE, -1, -1, f"unknown compression codec {codec}"
            if codec == Compression.ZSTD and version < 7:
                return UNSUPPORTED_COMPRESSION_TYPE, -1, -1, "zstd needs Produce v7 or later"
            if header.attributes & (TRANSACTIONAL_FLAG | CONTROL_FLAG):
                return INVALID_RECORD, -1, -1, "transactional and control batches are not supported"
        idempotent = headers[0].producer_id >= 0
        try:
            if idempotent:
                if len(headers) != 1:
                    return INVALID_RECORD, -1, -1, "an idempotent producer must send one batch per partition"
                error, base_offset = self._append_idempotent(topic, partition, log, records, headers[0])
                if error != NONE:
                    return error, -1, log.log_start_offset, None
            else:
                base_offset = log.append_batches(records).base_offset
            if acks == -1 and log.config.durability != "none":
                log.sync()
        except CorruptBatchError as e:
            return CORRUPT_MESSAGE, -1, -1, str(e)
        except RecordTooLargeError as e:
            return MESSAGE_TOO_LARGE, -1, -1, str(e)
        except InvalidRecordError as e:  # e.g. a keyless record in a compacted topic
            return INVALID_RECORD, -1, -1, str(e)
        except LogClosedError:
            return NOT_LEADER_OR_FOLLOWER, -1, -1, "the server is shutting down"
        except OSError as e:
            logger.error("append to %s-%d failed: %s", topic, partition, e)
            return KAFKA_STORAGE_ERROR, -1, -1, str(e)
        return NONE, base_offset, log.log_start_offset, None

    def _append_idempotent(self, topic: str, partition: int, log, records, header) -> tuple[int, int]:
        """``(error_code, base_offset)``: append unless the batch is a retry or out of sequence."""
        if header.producer_epoch < 0 or header.base_sequence < 0:
            return INVALID_RECORD, -1
        first_seq = header.base_sequence
        last_seq = next_sequence(first_seq, header.last_offset_delta)
        entry = self.producers.partition(topic, partition, log).entry(header.producer_id)
        with entry.lock:
            error, duplicate = entry.check(header.producer_epoch, first_seq, last_seq)
            if error != NONE:
                return error, -1
            if duplicate is not None:
                logger.debug(
                    "duplicate batch of producer %d seq %d-%d on %s-%d: answered with offset %d",
                    header.producer_id, first_seq, last_seq, topic, partition, duplicate.base_offset,
                )
                return NONE, duplicate.base_offset
            info = log.append_batches(records)
            entry.record(header.producer_epoch, BatchMetadata(first_seq, last_seq, info.base_offset, info.last_offset))
            return NONE, info.base_offset


def batch_headers(records) -> list:
    """The headers of the batches in a Produce partition's bytes, without reading the records.

    Raises ``CorruptBatchError`` when the bytes are not whole v2 batches (the CRC is checked
    later, by ``Log.append_batches``).
    """
    headers = []
    position, size = 0, len(records)
    while position < size:
        if size - position < HEADER_SIZE:
            raise CorruptBatchError(f"{size - position} trailing bytes are not a record batch", position=position)
        header = unpack_header(records, position)
        if position + header.size > size:
            raise CorruptBatchError(
                f"batch of {header.size} bytes runs past the {size} bytes sent", position=position
            )
        headers.append(header)
        position += header.size
    return headers
