"""logstore: Apache Kafka's storage layer as an embeddable Python library.

Vocabulary, used the same way everywhere:

* *offset*: the number of a record; *position*: a byte in a ``.log`` file.
* *base_offset*: the first offset of a segment, and its file name (20 digits).
* *relative_offset*: offset minus base_offset, as stored in the indexes (u32).
* *log_start_offset* / *log_end_offset*: the first offset kept / the next offset to be assigned.
* *durable_offset*: every offset below it has been fsynced (the recovery point).
* *batch*: Kafka's record batch v2, the unit of compression and CRC.
* *active segment*: the segment being appended to. *slice*: ``(fd, position, size)`` of a ``.log``.

Assumptions about the disk (what the guarantees rest on): ``fsync`` of a file makes its written
bytes durable; ``fsync`` of a directory makes creations, renames and unlinks in it durable; a
crash may lose or tear anything written after the last fsync, and may leave garbage in a file's
tail, but does not change bytes that were fsynced. Under those assumptions a reopened log is a
prefix of what was appended that contains every record below the durable offset at the crash.
"""

from .batch import Compression, Record
from .config import LogConfig
from .consumer import GroupConsumer
from .errors import (
    ConfigError,
    CorruptBatchError,
    CorruptIndexError,
    CorruptionError,
    InvalidRecordError,
    LogClosedError,
    LogLockedError,
    LogStoreError,
    OffsetOutOfRangeError,
    ProtocolError,
    RecordTooLargeError,
    TopicError,
)
from .group_offsets import OffsetAndMetadata
from .log import EARLIEST, LATEST, MAX_TIMESTAMP, AppendInfo, Log, OffsetAndTimestamp
from .segment import FileSlice
from .store import LogStore, PartitionAppend, TopicDescription

__version__ = "0.1.0"

__all__ = [
    "LogStore",
    "TopicDescription",
    "PartitionAppend",
    "GroupConsumer",
    "OffsetAndMetadata",
    "Log",
    "LogConfig",
    "AppendInfo",
    "OffsetAndTimestamp",
    "Record",
    "Compression",
    "FileSlice",
    "LATEST",
    "EARLIEST",
    "MAX_TIMESTAMP",
    "LogStoreError",
    "CorruptionError",
    "CorruptBatchError",
    "CorruptIndexError",
    "OffsetOutOfRangeError",
    "RecordTooLargeError",
    "InvalidRecordError",
    "LogClosedError",
    "LogLockedError",
    "ConfigError",
    "TopicError",
    "ProtocolError",
]
