"""Recovery after an unclean stop: damage functions x cut points over every file type, leftovers.

The property every test checks: after reopen the log is a prefix of what was appended, every
record below the durable offset of the crash is there byte for byte, and no damaged record is
ever returned as data.
"""

from __future__ import annotations

import gc
import os
import random

import pytest

from logstore import CorruptBatchError, Log, LogConfig
from logstore.files import segment_prefix
from logstore.recovery import CHECKPOINT_NAME, CLEAN_SHUTDOWN_NAME


def config(**changes) -> LogConfig:
    base = dict(segment_bytes=4096, index_interval_bytes=300, durability="none")
    base.update(changes)
    return LogConfig(**base)


def value(i: int) -> bytes:
    return b"%06d:" % i + bytes([i % 251]) * (20 + i % 37)


def crash(log: Log) -> None:
    """Drop the log without closing it: no trim, no checkpoint, no clean marker (like kill -9
    after the page cache reached the disk)."""
    log._closed = True
    for segment in log._segments:
        if segment._file is not None:
            segment._file.close()
    del log
    gc.collect()


def build(directory, n_batches=60, durable_batches=None, **changes):
    """Append n_batches of 3 records; fsync after durable_batches of them. Returns the values."""
    log = Log(directory, config(**changes))
    appended = []
    for b in range(n_batches):
        values = [value(3 * b + j) for j in range(3)]
        log.append(values, timestamps_ms=1000 + b)
        appended.extend(values)
        if durable_batches is not None and b + 1 == durable_batches:
            log.sync()
    durable = log.durable_offset
    crash(log)
    return appended, durable


def read_all(log: Log) -> list[bytes]:
    out = []
    offset = log.log_start_offset
    while offset < log.log_end_offset:
        records = log.read(offset, max_bytes=1 << 20)
        if not records:
            break
        out.extend(r.value for r in records)
        offset = records[-1].offset + 1
    return out


def active_log_path(directory) -> str:
    logs = sorted(n for n in os.listdir(directory) if n.endswith(".log"))
    return os.path.join(directory, logs[-1])


# --- damage functions: each takes (path, cut) with cut in [0, 1) -------------------------------


def truncate_at(path, cut):
    size = os.path.getsize(path)
    os.truncate(path, int(size * cut))


def zero_tail(path, cut):
    size = os.path.getsize(path)
    start = int(size * cut)
    with open(path, "r+b") as f:
        f.seek(start)
        f.write(b"\0" * (size - start))


def flip_byte(path, cut):
    size = os.path.getsize(path)
    if size == 0:
        return
    at = min(size - 1, int(size * cut))
    with open(path, "r+b") as f:
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0x5A]))


def append_garbage(path, cut):
    rng = random.Random(int(cut * 1000))
    with open(path, "ab") as f:
        f.write(bytes(rng.randrange(256) for _ in range(1 + int(cut * 500))))


DAMAGE = [truncate_at, zero_tail, flip_byte, append_garbage]
CUTS = [0.0, 0.13, 0.5, 0.77, 0.999]


@pytest.mark.parametrize("damage", DAMAGE, ids=lambda f: f.__name__)
@pytest.mark.parametrize("cut", CUTS)
def test_damaged_active_log_recovers_to_a_prefix(tmp_path, damage, cut):
    directory = tmp_path / "p"
    appended, durable = build(directory, durable_batches=None)
    assert durable == 0
    damage(active_log_path(directory), cut)
    with Log(directory, config()) as log:
        assert not log.was_clean_shutdown
        got = read_all(log)
        assert got == appended[: len(got)]
        assert log.log_end_offset == len(got)
        # the log takes appends again at the recovered end
        log.append([b"after"])
        assert log.read(len(got))[0].value == b"after"


@pytest.mark.parametrize("damage", DAMAGE, ids=lambda f: f.__name__)
@pytest.mark.parametrize("cut", CUTS)
@pytest.mark.parametrize("suffix", [".index", ".timeindex"])
def test_damaged_index_files_are_rebuilt(tmp_path, damage, cut, suffix):
    directory = tmp_path / "p"
    appended, _ = build(directory)
    for name in os.listdir(directory):
        if name.endswith(suffix):
            damage(os.path.join(directory, name), cut)
    with Log(directory, config()) as log:
        assert read_all(log) == appended
        for i in (0, 17, 100, 179):
            assert log.read(i)[0].value == appended[i]
        assert log.offset_for_timestamp(1030).offset == 90


def test_damaged_index_of_sealed_segment_after_clean_shutdown_is_rebuilt(tmp_path):
    directory = tmp_path / "p"
    with Log(directory, config()) as log:
        appended = []
        for b in range(60):
            values = [value(3 * b + j) for j in range(3)]
            log.append(values, timestamps_ms=1000 + b)
            appended.extend(values)
    first_index = os.path.join(directory, segment_prefix(0) + ".index")
    assert os.path.getsize(first_index) > 16
    with open(first_index, "r+b") as f:  # non-monotonic garbage
        f.write(b"\xff" * 16)
    with Log(directory, config()) as log:
        assert log.was_clean_shutdown
        assert read_all(log) == appended
        assert log.read(5)[0].value == appended[5]


def test_durable_records_survive_and_torn_tail_is_cut(tmp_path):
    directory = tmp_path / "p"
    appended, durable = build(directory, n_batches=40, durable_batches=25)
    assert durable == 75
    truncate_at(active_log_path(directory), 0.5)
    with Log(directory, config()) as log:
        got = read_all(log)
        assert len(got) >= 75 or log.log_start_offset > 0
        assert got == appended[: len(got)]
        assert log.recovered_bytes_truncated >= 0


def test_corruption_below_recovery_point_is_never_served(tmp_path):
    directory = tmp_path / "p"
    with Log(directory, config()) as log:
        for b in range(60):
            log.append([value(3 * b + j) for j in range(3)], timestamps_ms=1000 + b)
    first_log = os.path.join(directory, segment_prefix(0) + ".log")
    size = os.path.getsize(first_log)
    with open(first_log, "r+b") as f:
        f.seek(size // 2)
        byte = f.read(1)
        f.seek(size // 2)
        f.write(bytes([byte[0] ^ 1]))
    with Log(directory, config()) as log:
        assert log.was_clean_shutdown  # sealed segments are trusted at open (not re-read)
        with pytest.raises(CorruptBatchError) as info:
            read_all(log)
        assert info.value.path == first_log
        assert info.value.position is not None and info.value.position <= size // 2


def test_clean_marker_is_taken_at_open(tmp_path):
    directory = tmp_path / "p"
    with Log(directory, config()) as log:
        log.append([b"x"])
    assert os.path.exists(directory / CLEAN_SHUTDOWN_NAME)
    log = Log(directory, config())
    assert log.was_clean_shutdown
    assert not os.path.exists(directory / CLEAN_SHUTDOWN_NAME)  # removed before anything else
    crash(log)
    with Log(directory, config()) as log:
        assert not log.was_clean_shutdown
        assert read_all(log) == [b"x"]


def test_unreadable_checkpoint_means_full_revalidation(tmp_path):
    directory = tmp_path / "p"
    appended, _ = build(directory)
    with open(directory / CHECKPOINT_NAME, "wb") as f:
        f.write(b"{not json")
    with Log(directory, config()) as log:
        assert read_all(log) == appended


def test_leftover_files_are_resolved(tmp_path):
    directory = tmp_path / "p"
    with Log(directory, config()) as log:
        for b in range(60):
            log.append([value(3 * b + j) for j in range(3)], timestamps_ms=1000 + b)
        bases = [s.base_offset for s in log.segments]
    assert len(bases) >= 3
    # an unfinished rewrite (.cleaned), a pending delete, a temp file, an orphan index
    prefix = segment_prefix(bases[1])
    with open(directory / (prefix + ".log.cleaned"), "wb") as f:
        f.write(b"partial")
    with open(directory / (segment_prefix(bases[0]) + ".log.deleted"), "wb") as f:
        f.write(b"old")
    with open(directory / "logstore.checkpoint.tmp", "wb") as f:
        f.write(b"{")
    with open(directory / (segment_prefix(99999) + ".index"), "wb") as f:
        f.write(b"\0" * 8)
    with Log(directory, config()) as log:
        names = os.listdir(directory)
        assert not any(n.endswith((".cleaned", ".deleted", ".tmp")) for n in names)
        assert segment_prefix(99999) + ".index" not in names
        assert log.log_end_offset == 180


def test_finished_swap_is_completed(tmp_path):
    """A .swap holding the rewritten first segment replaces the original at open."""
    directory = tmp_path / "p"
    with Log(directory, config()) as log:
        for b in range(60):
            log.append([value(3 * b + j) for j in range(3)], timestamps_ms=1000 + b)
        first_end = log.segments[1].base_offset
    prefix = segment_prefix(0)
    for suffix in (".log", ".index", ".timeindex"):
        with open(directory / (prefix + suffix), "rb") as src:
            data = src.read()
        with open(directory / (prefix + suffix + ".swap"), "wb") as dst:
            dst.write(data)
    with Log(directory, config()) as log:
        assert not any(n.endswith(".swap") for n in os.listdir(directory))
        got = read_all(log)
        assert len(got) == 180 and got[:first_end] == [value(i) for i in range(first_end)]


def test_clean_marker_with_a_damaged_active_tail_is_still_recovered(tmp_path):
    """A clean marker is a claim, not a proof: the active segment's tail is checked anyway."""
    directory = tmp_path / "p"
    with Log(directory, config()) as log:
        for b in range(60):
            log.append([value(3 * b + j) for j in range(3)], timestamps_ms=1000 + b)
    append_garbage(active_log_path(directory), 0.5)
    with Log(directory, config()) as log:
        assert not log.was_clean_shutdown
        assert log.recovered_bytes_truncated > 0
        assert read_all(log) == [value(i) for i in range(180)]


def test_sealed_index_pointing_between_batches_is_rebuilt_on_use(tmp_path):
    """An entry can keep the index ordered and still point at no batch: the read rebuilds."""
    directory = tmp_path / "p"
    with Log(directory, config()) as log:
        for b in range(60):
            log.append([value(3 * b + j) for j in range(3)], timestamps_ms=1000 + b)
        first_end = log.segments[1].base_offset
    index_path = os.path.join(directory, segment_prefix(0) + ".index")
    with open(index_path, "r+b") as f:
        data = bytearray(f.read())
        assert len(data) >= 16
        # move entry 0's position forward by 3 bytes: still ordered, but not a batch start
        position = int.from_bytes(data[4:8], "big") + 3
        data[4:8] = position.to_bytes(4, "big")
        f.seek(0)
        f.write(data)
    with Log(directory, config()) as log:
        assert log.was_clean_shutdown
        for offset in range(first_end):
            assert log.read(offset)[0].value == value(offset)


def test_recovery_rebuilds_the_indexes_appends_wrote_byte_for_byte(tmp_path):
    # One indexing rule everywhere (append, recovery, rebuild): as Kafka's LogSegment, a batch's
    # max timestamp counts before the time entry made at that batch.
    directory = tmp_path / "p"
    cfg = LogConfig(durability="none", segment_bytes=2048, index_interval_bytes=100, preallocate_bytes=0)

    def stamp(i):
        return 1000 + 7 * i
    with Log(directory, cfg) as log:
        for i in range(60):
            log.append([b"v%03d" % i * 8], timestamps_ms=stamp(i))
    names = sorted(n for n in os.listdir(directory) if n.endswith((".index", ".timeindex")))
    written = {n: open(directory / n, "rb").read() for n in names}
    assert len(names) >= 6
    # the first segment: its first time entry is made at the batch of its first offset entry, and
    # holds that batch's timestamp (rising timestamps: each batch is a new max), not the previous one
    indexed = int.from_bytes(written[names[0]][:4], "big")
    timestamp, relative = int.from_bytes(written[names[1]][:8], "big"), int.from_bytes(written[names[1]][8:12], "big")
    assert relative == indexed > 0 and timestamp == stamp(indexed)
    for n in names:
        os.unlink(directory / n)
    os.unlink(directory / CLEAN_SHUTDOWN_NAME)
    os.unlink(directory / CHECKPOINT_NAME)  # recovery from offset 0: every segment re-validated
    with Log(directory, cfg) as log:
        assert not log.was_clean_shutdown
    assert {n: open(directory / n, "rb").read() for n in names} == written
