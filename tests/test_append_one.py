"""``append_batches`` of a single batch takes ``Segment.append_one`` (the producer's hot path).

The fast path must leave exactly the files, offsets and answers the general path leaves, roll
where it rolls (size, age, a full index) and refuse what it refuses. Each test runs the same
appends twice, once with the fast path disabled (``append_one`` always declines), and compares.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from logstore import Log, LogConfig
from logstore import batch as batch_format
from logstore.errors import CorruptBatchError, LogClosedError, RecordTooLargeError
from logstore.segment import Segment

START_MS = 1_700_000_000_000


class Clock:
    def __init__(self) -> None:
        self.now_ms = START_MS

    def __call__(self) -> int:
        return self.now_ms


def _files(directory) -> dict[str, bytes]:
    return {name: open(os.path.join(directory, name), "rb").read()
            for name in sorted(os.listdir(directory)) if name.endswith((".log", ".index", ".timeindex"))}


def _run(directory, config: LogConfig, steps, *, fast: bool) -> tuple[list, dict, int]:
    """Append each step's batch with append_batches; returns (AppendInfos, files after close,
    how many appends the fast path took)."""
    taken = []
    real = Segment.append_one

    def spy(self, *args):
        done = real(self, *args) if fast else False
        taken.append(done)
        return done

    clock = Clock()
    infos = []
    with pytest.MonkeyPatch.context() as patch, Log(directory, config, clock_ms=clock) as log:
        patch.setattr(Segment, "append_one", spy)
        for values, timestamp_ms, advance_ms in steps:
            clock.now_ms += advance_ms
            infos.append(log.append_batches(batch_format.encode(values, base_offset=99, timestamps_ms=timestamp_ms)))
        read_back = [r.value for r in log.read(0, max_bytes=10**7)] if infos else []
    assert read_back == [v for values, _ts, _adv in steps for v in values]
    return infos, _files(directory), sum(taken)


step = st.tuples(
    st.lists(st.binary(min_size=0, max_size=300), min_size=1, max_size=4),  # values of one batch
    st.integers(START_MS - 50, START_MS + 5000),  # its timestamp (not always rising)
    st.sampled_from([0, 0, 1, 7, 400]),  # clock advance before it (ms)
)
configs = st.builds(
    lambda segment_bytes, segment_ms, index_bytes, interval: LogConfig(
        durability="none", segment_bytes=segment_bytes, segment_ms=segment_ms,
        segment_index_bytes=index_bytes, index_interval_bytes=interval, preallocate_bytes=0,
    ),
    st.sampled_from([700, 2000, 10**6]),
    st.sampled_from([500, 10**9]),
    st.sampled_from([24, 48, 10 * 1024]),  # 24: two offset entries, one time entry + the final slot
    st.sampled_from([0, 100, 4096]),
)


@given(config=configs, steps=st.lists(step, min_size=1, max_size=25))
def test_fast_path_leaves_what_the_general_path_leaves(tmp_path_factory, config, steps):
    base = tmp_path_factory.mktemp("runs")
    general = _run(base / "general", config, steps, fast=False)
    fast = _run(base / "fast", config, steps, fast=True)
    assert fast[0] == general[0]  # offsets, max timestamps, counts
    assert fast[1] == general[1]  # the same segments, byte for byte, indexes included
    assert general[2] == 0


@pytest.mark.parametrize("changes, steps", [
    pytest.param({"segment_bytes": 1000}, [([b"x" * 100], START_MS, 0)] * 12, id="size"),
    pytest.param({"segment_ms": 1000}, [([b"x"], START_MS, 0), ([b"y"], START_MS, 600)] * 4, id="age"),
    pytest.param({"segment_index_bytes": 24, "index_interval_bytes": 0},
                 [([b"x"], START_MS + i, 0) for i in range(9)], id="index-full"),
])
def test_fast_path_is_taken_and_declines_at_each_roll(tmp_path, changes, steps):
    config = LogConfig(durability="none", preallocate_bytes=0, **changes)
    general = _run(tmp_path / "general", config, steps, fast=False)
    infos, files, taken = _run(tmp_path / "fast", config, steps, fast=True)
    assert (infos, files) == general[:2]
    segments = sum(name.endswith(".log") for name in files)
    assert segments >= 3
    assert taken == len(steps) - (segments - 1)  # only the appends that rolled took the general path


def test_fast_path_refusals_match_the_general_path(tmp_path):
    config = LogConfig(durability="none", segment_bytes=2048, max_batch_bytes=1024, preallocate_bytes=0)
    with Log(tmp_path / "p", config) as log:
        big = batch_format.encode([b"v" * 1500], timestamps_ms=1)
        with pytest.raises(RecordTooLargeError, match="exceeds max_batch_bytes=1024"):
            log.append_batches(big)
        flipped = bytearray(batch_format.encode([b"a"], timestamps_ms=5))
        flipped[-1] ^= 1
        with pytest.raises(CorruptBatchError, match="CRC-32C mismatch"):
            log.append_batches(flipped)
        assert log.log_end_offset == 0 and log.active_segment.size == 0
        log.close()
        with pytest.raises(LogClosedError):
            log.append_batches(batch_format.encode([b"a"], timestamps_ms=5))
    with Log(tmp_path / "q", config.replace(max_batch_bytes=4096)) as log:
        huge = batch_format.encode([b"v" * 3000], timestamps_ms=1)
        with pytest.raises(RecordTooLargeError, match="do not fit in a segment of 2048 bytes"):
            log.append_batches(huge)
        assert log.log_end_offset == 0 and log.active_segment.size == 0
