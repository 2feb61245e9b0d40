"""The one error hierarchy of logstore.

Every error that logstore raises on purpose derives from :class:`LogStoreError`. Errors are grouped
by when they happen; each carries structured attributes so callers never parse messages.

Misused arguments raise the builtin ``ValueError`` / ``TypeError``; ``OSError`` from the file system
passes through untouched (a full disk is not a logstore bug).
"""

from __future__ import annotations

__all__ = [
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


class LogStoreError(Exception):
    """Base class of every error logstore raises on purpose."""


# --- Damage found in stored bytes -------------------------------------------------------------


class CorruptionError(LogStoreError):
    """Stored bytes are not what was written: a bad CRC, an impossible length, a broken index.

    ``path`` names the file (``None`` when decoding bytes that did not come from a file) and
    ``position`` the byte in it where the damage starts (``None`` when unknown).
    """

    def __init__(self, message: str, *, path: str | None = None, position: int | None = None):
        where = ""
        if path is not None:
            where = f" in {path}"
            if position is not None:
                where += f" at position {position}"
        elif position is not None:
            where = f" at position {position}"
        super().__init__(message + where)
        self.path = path
        self.position = position

    def __reduce__(self):  # keep pickling (multiprocessing) working with keyword arguments
        return (_rebuild, (type(self), self.args[0], self.path, self.position))


def _rebuild(cls, message, path, position):
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.path = path
    error.position = position
    return error


class CorruptBatchError(CorruptionError):
    """A record batch failed validation (size, magic, CRC, record framing, codec stream)."""


class CorruptIndexError(CorruptionError):
    """An offset or time index failed its sanity check; it is a cache and can be rebuilt."""


# --- Reading ------------------------------------------------------------------------------------


class OffsetOutOfRangeError(LogStoreError):
    """The requested offset is below ``log_start_offset`` or above ``log_end_offset``."""

    def __init__(self, offset: int, log_start_offset: int, log_end_offset: int):
        super().__init__(
            f"offset {offset} is out of range [{log_start_offset}, {log_end_offset}]"
        )
        self.offset = offset
        self.log_start_offset = log_start_offset
        self.log_end_offset = log_end_offset

    def __reduce__(self):
        return (type(self), (self.offset, self.log_start_offset, self.log_end_offset))


# --- Writing ------------------------------------------------------------------------------------


class RecordTooLargeError(LogStoreError):
    """A batch is larger than the segment (or message size limit) can hold; nothing was written."""


class InvalidRecordError(LogStoreError, ValueError):
    """A record breaks a rule of its topic (a keyless record in a compacted topic); nothing was
    written. Also a ``ValueError``."""


# --- Lifecycle ----------------------------------------------------------------------------------


class LogClosedError(LogStoreError):
    """The log (or store) was closed; open it again to use it."""


class LogLockedError(LogStoreError):
    """Another process holds the data directory's lock."""


class ConfigError(LogStoreError, ValueError):
    """A configuration value is invalid (also a ``ValueError``)."""


class TopicError(LogStoreError):
    """A topic does not exist, already exists, or its name is not allowed."""


# --- Network ------------------------------------------------------------------------------------


class ProtocolError(LogStoreError):
    """Bytes received from a client are not a valid Kafka protocol request."""
