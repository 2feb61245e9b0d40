"""``logstore dump``: Kafka's line shapes on engine-written and kafka-python-written segments,
damaged files (torn, bit-flipped), index dumps and checks, JSON mode, and read-only behaviour.

Expected lines are built from the raw bytes with this file's own struct layout (an oracle
independent of logstore.batch), not from the dump tool's code.
"""

from __future__ import annotations

import ast
import io
import json
import os
import shutil
import struct
import types
from pathlib import Path

import cramjam
import crc32c
import pytest
from kafka.record.default_records import DefaultRecordBatchBuilder

import logstore.dump
import logstore.verify
from logstore import Log, LogConfig
from logstore.dump import dump_files

HEADER = struct.Struct(">qiibIhiqqqhii")  # the 61-byte batch header, field by field
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
PER_BATCH = 5


def run_dump(paths, **options):
    out, err = io.StringIO(), io.StringIO()
    code = dump_files([str(p) for p in paths], out=out, err=err, **options)
    return code, out.getvalue().splitlines(), err.getvalue().splitlines()


def raw_batches(data: bytes):
    """(position, header fields, size) of each whole batch, walked with the test's own struct."""
    position, found = 0, []
    while position + HEADER.size <= len(data):
        fields = HEADER.unpack_from(data, position)
        size = 12 + fields[1]
        if position + size > len(data):
            break
        found.append((position, fields, size))
        position += size
    return found


def batch_line(position, fields, size, *, valid=True):
    base, _length, leader_epoch, magic, crc, attrs, delta, _bts, max_ts, pid, epoch, base_seq, count = fields
    flag = {True: "true", False: "false"}
    last_seq = -1 if base_seq < 0 else base_seq + delta
    ts_type = "LogAppendTime" if attrs & 0x08 else "CreateTime"
    return (
        f"baseOffset: {base} lastOffset: {base + delta} count: {count} baseSequence: {base_seq} "
        f"lastSequence: {last_seq} producerId: {pid} producerEpoch: {epoch} partitionLeaderEpoch: {leader_epoch} "
        f"isTransactional: {flag[bool(attrs & 0x10)]} isControl: {flag[bool(attrs & 0x20)]} "
        f"deleteHorizonMs: OptionalLong.empty position: {position} {ts_type}: {max_ts} size: {size} "
        f"magic: {magic} compresscodec: {CODECS[attrs & 7]} crc: {crc} isvalid: {flag[valid]}"
    )


def index_entries(path: Path, base: int):
    data = path.read_bytes()
    return [(base + rel, pos) for rel, pos in struct.iter_unpack(">II", data)]


def time_entries(path: Path, base: int):
    data = path.read_bytes()
    return [(ts, base + rel) for ts, rel in struct.iter_unpack(">qI", data)]


def record_value(offset: int) -> bytes:
    return b"value-%03d" % offset


@pytest.fixture
def engine_dir(tmp_path):
    """A closed log with 15 batches of 5 records in 3 segments, every batch but the first indexed."""
    directory = tmp_path / "t-0"
    config = LogConfig(segment_bytes=800, index_interval_bytes=100, durability="none")
    with Log(directory, config) as log:
        for i in range(15):
            offsets = range(i * PER_BATCH, (i + 1) * PER_BATCH)
            log.append(
                [record_value(o) for o in offsets],
                keys=[b"key%d" % o for o in offsets],
                timestamps_ms=[1_000 + o for o in offsets],
            )
    return directory


def segment_files(directory: Path, suffix: str):
    return sorted(directory.glob("*" + suffix))


# --- engine-written segments --------------------------------------------------------------------


def test_log_dump_matches_kafka_lines_for_every_engine_segment(engine_dir):
    logs = segment_files(engine_dir, ".log")
    assert len(logs) >= 3
    code, out, err = run_dump(logs)
    assert code == 0 and err == []
    expected = []
    for path in logs:
        expected += [f"Dumping {path}", f"Log starting offset: {int(path.name[:20])}"]
        expected += [batch_line(*b) for b in raw_batches(path.read_bytes())]
    assert out == expected
    assert sum(line.startswith("baseOffset: ") for line in out) == 15


def test_print_data_log_prints_every_record_with_key_and_payload(engine_dir):
    log_path = segment_files(engine_dir, ".log")[1]
    code, out, _ = run_dump([log_path], print_data_log=True)
    assert code == 0
    records = [line for line in out if line.startswith("| ")]
    batches = raw_batches(log_path.read_bytes())
    first = batches[0][1][0]
    assert len(records) == len(batches) * PER_BATCH
    for i, line in enumerate(records):
        offset = first + i
        key = b"key%d" % offset
        assert line == (
            f"| offset: {offset} CreateTime: {1_000 + offset} keySize: {len(key)} valueSize: 9 sequence: -1 "
            f"headerKeys: [] key: {key.decode()} payload: {record_value(offset).decode()}"
        )
    # each batch line is followed by its records
    assert out[2].startswith("baseOffset: ") and out[3].startswith(f"| offset: {first} ")


def test_deep_iteration_without_print_data_log_has_no_keys(engine_dir):
    _, out, _ = run_dump([segment_files(engine_dir, ".log")[0]], deep_iteration=True)
    records = [line for line in out if line.startswith("| ")]
    assert records and not any("key:" in r or "payload:" in r for r in records)


def test_offset_and_time_index_dumps_list_the_file_entries(engine_dir):
    path = segment_files(engine_dir, ".index")[0]
    base = int(path.name[:20])
    entries = index_entries(path, base)
    assert len(entries) >= 2
    code, out, err = run_dump([path])
    assert code == 0 and err == []
    assert out == [f"Dumping {path}"] + [f"offset: {o} position: {p}" for o, p in entries]

    tpath = segment_files(engine_dir, ".timeindex")[0]
    tentries = time_entries(tpath, base)
    code, out, err = run_dump([tpath])
    assert code == 0 and err == []
    assert out == [f"Dumping {tpath}"] + [f"timestamp: {t} offset: {o}" for t, o in tentries]


def test_json_mode_one_object_per_batch_record_and_entry(engine_dir):
    log_path = segment_files(engine_dir, ".log")[0]
    index_path = segment_files(engine_dir, ".index")[0]
    code, out, _ = run_dump([log_path, index_path], print_data_log=True, as_json=True)
    assert code == 0
    objects = [json.loads(line) for line in out]
    batches = raw_batches(log_path.read_bytes())
    json_batches = [o for o in objects if o["type"] == "batch"]
    assert [(b["position"], b["baseOffset"], b["crc"], b["isvalid"]) for b in json_batches] == [
        (p, f[0], f[4], True) for p, f, _s in batches
    ]
    assert json_batches[0]["compresscodec"] == "none" and json_batches[0]["deleteHorizonMs"] is None
    records = [o for o in objects if o["type"] == "record"]
    assert len(records) == len(batches) * PER_BATCH
    assert records[7]["key"] == "key7" and records[7]["payload"] == "value-007"
    assert records[7]["timestamp"] == 1_007 and records[7]["timestampType"] == "CreateTime"
    entries = [(o["offset"], o["position"]) for o in objects if o["type"] == "index_entry"]
    assert entries == index_entries(index_path, 0)
    assert objects[0] == {"type": "file", "file": str(log_path), "kind": "log"}


def test_max_bytes_stops_early_without_the_invalid_bytes_line(engine_dir):
    log_path = segment_files(engine_dir, ".log")[0]
    batches = raw_batches(log_path.read_bytes())
    limit = batches[2][0] + 10  # inside the third batch
    _, out, _ = run_dump([log_path], max_bytes=limit)
    assert [line for line in out if line.startswith("baseOffset")] == [batch_line(*b) for b in batches[:2]]
    assert not any(line.startswith("Found") for line in out)


def test_unknown_file_is_ignored(engine_dir):
    path = engine_dir / "logstore.checkpoint"
    code, out, err = run_dump([path])
    assert code == 0 and out == [f"Dumping {path}"] and err == [f"Ignoring unknown file {path}"]


def test_missing_file_is_one_error_line_and_the_others_are_dumped(engine_dir, tmp_path):
    missing = tmp_path / "00000000000000000000.log"
    present = segment_files(engine_dir, ".log")[0]
    code, out, err = run_dump([missing, present])
    assert code == 2
    assert err == [f"logstore: error: No such file or directory: {missing}"]
    assert f"Dumping {present}" in out and any(line.startswith("baseOffset") for line in out)


# --- files written by kafka-python's batch builder ----------------------------------------------


@pytest.fixture
def kafka_snappy(monkeypatch):
    """kafka-python compresses snappy through python-snappy, which is not installed: give it
    cramjam's raw snappy (kafka-python adds the xerial framing itself)."""
    import kafka.codec

    shim = types.SimpleNamespace(compress=lambda data: bytes(cramjam.snappy.compress_raw(bytes(data))))
    monkeypatch.setattr(kafka.codec, "snappy", shim)


def kafka_batch(codec: str, base_offset: int, count: int, *, producer=(-1, -1, -1), transactional=False):
    pid, epoch, seq = producer
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=CODECS.index(codec),
        is_transactional=transactional,
        producer_id=pid,
        producer_epoch=epoch,
        base_sequence=seq,
        batch_size=1 << 20,
    )
    for i in range(count):
        offset = base_offset + i
        headers = [("h1", b"a"), ("h2", None)] if i % 2 else []
        key = None if i == 3 else b"k-%d" % offset
        builder.append(i, timestamp=5_000 + offset, key=key, value=b"payload %d " % offset * 8, headers=headers)
    data = bytearray(builder.build())
    struct.pack_into(">q", data, 0, base_offset)  # kafka-python leaves it to the broker; outside the CRC
    return bytes(data)


@pytest.mark.parametrize("codec", CODECS)
def test_kafka_python_batches_every_codec(tmp_path, codec, kafka_snappy):
    data = kafka_batch(codec, 0, 10) + kafka_batch(codec, 10, 10, producer=(7, 1, 100), transactional=True)
    path = tmp_path / "00000000000000000000.log"
    path.write_bytes(data)
    batches = raw_batches(data)
    assert [f[5] & 7 for _p, f, _s in batches] == [CODECS.index(codec)] * 2  # really compressed
    code, out, err = run_dump([path], print_data_log=True)
    assert code == 0 and err == []
    batch_lines = [line for line in out if line.startswith("baseOffset")]
    assert batch_lines == [batch_line(*b) for b in batches]
    assert f"compresscodec: {codec} " in batch_lines[0] and "isvalid: true" in batch_lines[1]
    assert "baseSequence: 100 lastSequence: 109 producerId: 7 producerEpoch: 1" in batch_lines[1]
    assert "isTransactional: true" in batch_lines[1]
    records = [line for line in out if line.startswith("| ")]
    assert len(records) == 20
    assert records[1] == (
        "| offset: 1 CreateTime: 5001 keySize: 3 valueSize: 80 sequence: -1 headerKeys: [h1,h2] "
        "key: k-1 payload: " + "payload 1 " * 8
    )
    assert records[3].startswith("| offset: 3 CreateTime: 5003 keySize: -1 ") and "key:" not in records[3]
    assert records[12].startswith("| offset: 12 CreateTime: 5012 keySize: 4 valueSize: 88 sequence: 102 ")


def test_control_batch_prints_the_end_transaction_marker(tmp_path):
    builder = DefaultRecordBatchBuilder(2, 0, True, 9, 0, 0, 1 << 20)
    builder.append(0, timestamp=7_000, key=struct.pack(">hh", 0, 1), value=struct.pack(">hi", 0, 5), headers=[])
    data = bytearray(builder.build())
    attrs = struct.unpack_from(">h", data, 21)[0] | 0x20  # control flag
    struct.pack_into(">h", data, 21, attrs)
    struct.pack_into(">I", data, 17, crc32c.crc32c(bytes(data[21:])))
    path = tmp_path / "00000000000000000000.log"
    path.write_bytes(bytes(data))
    _, out, _ = run_dump([path], print_data_log=True)
    assert "isControl: true" in out[2] and "isvalid: true" in out[2]
    assert out[3] == (
        "| offset: 0 CreateTime: 7000 keySize: 4 valueSize: 6 sequence: 0 headerKeys: [] "
        "endTxnMarker: COMMIT coordinatorEpoch: 5"
    )


def test_non_consecutive_offsets_are_reported_on_stderr(tmp_path):
    path = tmp_path / "00000000000000000000.log"
    path.write_bytes(kafka_batch("none", 0, 5) + kafka_batch("none", 20, 5))
    _, _, err = run_dump([path], deep_iteration=True)
    assert err == [f"Non-consecutive offsets in {path}", "  4 is followed by 20"]


# --- damaged .log files -------------------------------------------------------------------------


def copy_segment(engine_dir: Path, tmp_path: Path) -> Path:
    source = segment_files(engine_dir, ".log")[0]
    target = tmp_path / "damaged" / source.name
    target.parent.mkdir()
    shutil.copy(source, target)
    return target


def test_truncated_log_prints_valid_batches_then_the_invalid_bytes(engine_dir, tmp_path):
    path = copy_segment(engine_dir, tmp_path)
    data = path.read_bytes()
    batches = raw_batches(data)
    cut = batches[3][0] + 100  # mid-batch: a torn write
    path.write_bytes(data[:cut])
    before = (path.read_bytes(), os.stat(path).st_mtime_ns)
    code, out, err = run_dump([path], print_data_log=True)
    assert code == 0
    assert [line for line in out if line.startswith("baseOffset")] == [batch_line(*b) for b in batches[:3]]
    assert out[-1] == f"Found 100 invalid bytes at the end of {path.name}"
    assert len(err) == 1 and f"end at position {batches[3][0]}" in err[0] and "torn write" in err[0]
    assert (path.read_bytes(), os.stat(path).st_mtime_ns) == before  # the dump never writes


def test_bit_flip_in_records_marks_the_batch_invalid_and_goes_on(engine_dir, tmp_path):
    path = copy_segment(engine_dir, tmp_path)
    data = bytearray(path.read_bytes())
    batches = raw_batches(bytes(data))
    data[batches[1][0] + 70] ^= 0x01  # inside the records of batch 1: covered by the CRC
    path.write_bytes(bytes(data))
    before = (path.read_bytes(), os.stat(path).st_mtime_ns)
    code, out, _ = run_dump([path], print_data_log=True)
    lines = [line for line in out if line.startswith("baseOffset")]
    assert lines == [batch_line(*b, valid=(i != 1)) for i, b in enumerate(batches)]
    assert "isvalid: false" in lines[1] and not any(line.startswith("Found") for line in out)
    assert code == 0 and (path.read_bytes(), os.stat(path).st_mtime_ns) == before


def test_bit_flip_in_a_length_ends_the_valid_bytes(engine_dir, tmp_path):
    path = copy_segment(engine_dir, tmp_path)
    data = bytearray(path.read_bytes())
    batches = raw_batches(bytes(data))
    data[batches[2][0] + 9] ^= 0x40  # batch_length grows by 4 MiB: runs past the end
    path.write_bytes(bytes(data))
    _, out, err = run_dump([path])
    assert [line for line in out if line.startswith("baseOffset")] == [batch_line(*b) for b in batches[:2]]
    assert out[-1] == f"Found {len(data) - batches[2][0]} invalid bytes at the end of {path.name}"
    assert f"position {batches[2][0]}" in err[0]


def test_json_mode_reports_the_invalid_tail(engine_dir, tmp_path):
    path = copy_segment(engine_dir, tmp_path)
    data = path.read_bytes()
    path.write_bytes(data + b"\x00" * 20)
    _, out, _ = run_dump([path], as_json=True)
    tail = json.loads(out[-1])
    assert tail["type"] == "invalid_bytes" and tail["bytes"] == 20 and tail["position"] == len(data)


# --- index checks -------------------------------------------------------------------------------


def copy_all(engine_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(engine_dir, target)
    return target


def test_verify_index_only_is_silent_on_a_clean_index(engine_dir):
    paths = segment_files(engine_dir, ".index") + segment_files(engine_dir, ".timeindex")
    code, out, err = run_dump(paths, verify_index_only=True)
    assert code == 0 and err == []
    assert out == [f"Dumping {p}" for p in paths]


def test_verify_index_only_reports_a_corrupted_entry(engine_dir, tmp_path):
    directory = copy_all(engine_dir, tmp_path)
    path = segment_files(directory, ".index")[0]
    data = bytearray(path.read_bytes())
    rel, pos = struct.unpack_from(">II", data, 8)
    struct.pack_into(">I", data, 8, rel - 1)  # entry 1 now claims the batch ends one offset earlier
    path.write_bytes(bytes(data))
    code, out, err = run_dump([path], verify_index_only=True)
    assert code == 1 and out == [f"Dumping {path}"]
    assert err == [f"Mismatches in :{path}", f"  Index offset: {rel - 1}, log offset: {rel}"]

    code, out, _ = run_dump([path], verify_index_only=True, as_json=True)
    mismatch = json.loads(out[-1])
    assert code == 1 and mismatch == {
        "type": "index_mismatch", "file": str(path), "indexOffset": rel - 1, "logOffset": rel, "position": pos
    }


def test_verify_index_only_reports_a_wrong_time_index_timestamp(engine_dir, tmp_path):
    directory = copy_all(engine_dir, tmp_path)
    path = segment_files(directory, ".timeindex")[0]
    data = bytearray(path.read_bytes())
    ts, rel = struct.unpack_from(">qI", data, 12)
    struct.pack_into(">q", data, 12, ts + 1)
    path.write_bytes(bytes(data))
    code, _, err = run_dump([path], verify_index_only=True)
    assert code == 1
    assert err[:2] == [f"Found timestamp mismatch in :{path}", f"  Index timestamp: {ts + 1}, log timestamp: {ts}"]


def test_index_sanity_check_pass_and_fail(engine_dir, tmp_path):
    path = segment_files(engine_dir, ".index")[0]
    code, out, err = run_dump([path], index_sanity_check=True)
    assert code == 0 and out == [f"Dumping {path}", f"{path} passed sanity check."] and err == []

    directory = copy_all(engine_dir, tmp_path)
    broken = segment_files(directory, ".index")[0]
    data = bytearray(broken.read_bytes())
    data[8:16] = data[0:8]  # entry 1 repeats entry 0: offsets no longer increase
    broken.write_bytes(bytes(data))
    code, out, err = run_dump([broken], index_sanity_check=True)
    assert code == 1 and out == [f"Dumping {broken}"]
    assert len(err) == 1 and err[0].startswith(f"{broken} failed sanity check:")


def test_zero_tail_stops_the_dump_and_fails_the_sanity_check(engine_dir, tmp_path):
    directory = copy_all(engine_dir, tmp_path)
    path = segment_files(directory, ".index")[0]
    tpath = segment_files(directory, ".timeindex")[0]
    entries = index_entries(path, 0)
    tentries = time_entries(tpath, 0)
    path.write_bytes(path.read_bytes() + bytes(8 * 5))  # a crash before trim: preallocated zeros
    tpath.write_bytes(tpath.read_bytes() + bytes(12 * 5))
    code, out, err = run_dump([path, tpath])
    assert code == 0 and err == []
    assert out == (
        [f"Dumping {path}"]
        + [f"offset: {o} position: {p}" for o, p in entries]
        + [f"Dumping {tpath}"]
        + [f"timestamp: {t} offset: {o}" for t, o in tentries]
    )
    code, _, err = run_dump([path], index_sanity_check=True)
    assert code == 1 and "zero tail" in err[0]


def test_empty_index(tmp_path):
    path = tmp_path / "00000000000000000000.index"
    path.write_bytes(b"")
    assert run_dump([path]) == (0, [f"Dumping {path}", f"{path} is empty."], [])


def test_dump_and_verify_modules_do_not_import_log_or_store():
    for module in (logstore.dump, logstore.verify):
        tree = ast.parse(Path(module.__file__).read_text())
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                imported.add(node.module or "")
                imported.update(f"{node.module}.{a.name}" if node.module else a.name for a in node.names)
            elif isinstance(node, ast.Import):
                imported.update(a.name for a in node.names)
        assert not any(name.split(".")[-1] in ("log", "store") for name in imported), (module.__name__, imported)
