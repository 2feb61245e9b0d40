"""Kafka's ``kafka-dump-log`` field formatting, for :mod:`logstore.dump`.

Turns batch headers and records into the ordered ``name: value`` fields of Kafka's
``DumpLogSegments`` lines (and the same fields for ``--json``). Pure functions: no file is read
here; :mod:`logstore.segment_reader` reads and :mod:`logstore.dump` prints.
"""

from __future__ import annotations

import base64
import struct

from .batch import BatchHeader
from .errors import CorruptBatchError
from .segment_reader import ScannedBatch

__all__ = [
    "last_sequence",
    "kafka_line",
    "batch_fields",
    "record_fields",
    "codec_name",
    "decoded_text",
    "data_fields",
    "control_fields",
]

_INT32_MAX = 2**31 - 1
_CONTROL_TYPES = {
    0: "ABORT",
    1: "COMMIT",
    2: "LEADER_CHANGE",
    3: "SNAPSHOT_HEADER",
    4: "SNAPSHOT_FOOTER",
    5: "KRAFT_VERSION",
    6: "KRAFT_VOTERS",
}


# --- output -------------------------------------------------------------------------------------


def last_sequence(header: BatchHeader) -> int:
    """The batch's last sequence number (-1 without one); sequences wrap at 2**31 - 1."""
    return _add_sequence(header.base_sequence, header.last_offset_delta)


def _add_sequence(base: int, delta: int) -> int:
    if base < 0:
        return -1
    if base > _INT32_MAX - delta:
        return delta - (_INT32_MAX - base) - 1
    return base + delta


def kafka_line(fields: dict) -> str:
    """``name: value`` pairs as Kafka prints them: lower-case booleans, ``[a,b]`` lists, Java's
    ``OptionalLong``, and the timestamp labelled by its type (``CreateTime: 1000``)."""
    parts = []
    for name, value in fields.items():
        if name == "timestampType":
            continue
        if name in ("maxTimestamp", "timestamp"):
            name = fields["timestampType"]
        elif name == "deleteHorizonMs":
            value = "OptionalLong.empty" if value is None else f"OptionalLong[{value}]"
        elif isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, list):
            value = "[" + ",".join(value) + "]"
        parts.append(f"{name}: {value}")
    return " ".join(parts)


def batch_fields(batch: ScannedBatch) -> dict:
    """A batch line's fields, named and ordered as in Kafka's output."""
    h = batch.header
    return {
        "baseOffset": h.base_offset,
        "lastOffset": h.last_offset,
        "count": h.records_count,
        "baseSequence": h.base_sequence,
        "lastSequence": last_sequence(h),
        "producerId": h.producer_id,
        "producerEpoch": h.producer_epoch,
        "partitionLeaderEpoch": h.partition_leader_epoch,
        "isTransactional": h.is_transactional,
        "isControl": h.is_control,
        "deleteHorizonMs": h.delete_horizon_ms,
        "position": batch.position,
        "timestampType": h.timestamp_type,
        "maxTimestamp": h.max_timestamp,
        "size": h.size,
        "magic": h.magic,
        "compresscodec": codec_name(h),
        "crc": h.crc,
        "isvalid": batch.crc_error is None,
    }


def record_fields(h: BatchHeader, record) -> dict:
    key, value = record.key, record.value
    fields = {
        "offset": record.offset,
        "timestampType": h.timestamp_type,
        "timestamp": record.timestamp_ms,
        "keySize": -1 if key is None else len(key),
        "valueSize": -1 if value is None else len(value),
        "sequence": _add_sequence(h.base_sequence, record.offset - h.base_offset),
        "headerKeys": [k for k, _v in record.headers],
    }
    if h.is_control:
        fields.update(control_fields(key, value))
    return fields


def codec_name(header: BatchHeader) -> str:
    try:
        return header.compression.name.lower()
    except CorruptBatchError:
        return f"unknown({header.attributes & 0x07})"


def decoded_text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def data_fields(name: str, raw: bytes | None) -> dict:
    if raw is None:
        return {name: None}
    try:
        return {name: raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {name: decoded_text(raw), name + "Base64": base64.b64encode(raw).decode("ascii")}


def control_fields(key: bytes | None, value: bytes | None) -> dict:
    """What a control record says: end-transaction marker or another control type."""
    if key is None or len(key) < 4:
        return {"controlType": "UNKNOWN(-1)"}
    type_id = struct.unpack_from(">h", key, 2)[0]
    name = _CONTROL_TYPES.get(type_id, "UNKNOWN")
    if name in ("ABORT", "COMMIT") and value is not None and len(value) >= 6:
        return {"endTxnMarker": name, "coordinatorEpoch": struct.unpack_from(">i", value, 2)[0]}
    return {"controlType": f"{name}({type_id})"}
