"""The log against a plain list model, under a Hypothesis state machine.

Rules: append a batch, roll, read from any offset, read a slice, look up a timestamp, truncate,
reopen after a clean close, reopen after a crash (files left as a killed process leaves them).
The model is a list of (value, timestamp) and the list of batch boundaries (truncation is batch
granular).
"""

from __future__ import annotations

import bisect
import gc
import shutil
import tempfile

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from logstore import Log, LogConfig
from logstore import batch as batch_format

CONFIG = LogConfig(segment_bytes=700, index_interval_bytes=100, durability="none", segment_index_bytes=96)


class LogMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="logstore-model-")
        self.log = Log(self.directory, CONFIG)
        self.values: list[bytes] = []
        self.timestamps: list[int] = []
        self.batch_starts: list[int] = []

    def teardown(self):
        self.log.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    @rule(
        values=st.lists(st.binary(max_size=60), min_size=1, max_size=8),
        timestamp=st.integers(min_value=0, max_value=10_000),
    )
    def append(self, values, timestamp):
        info = self.log.append(values, timestamps_ms=timestamp)
        assert info.base_offset == len(self.values)
        self.batch_starts.append(len(self.values))
        self.values.extend(values)
        self.timestamps.extend([timestamp] * len(values))

    @rule()
    def roll(self):
        self.log.roll()

    @rule(data=st.data())
    def read(self, data):
        offset = data.draw(st.integers(min_value=0, max_value=len(self.values)))
        records = self.log.read(offset, max_bytes=data.draw(st.integers(min_value=1, max_value=2000)))
        assert [r.offset for r in records] == list(range(offset, offset + len(records)))
        assert [r.value for r in records] == self.values[offset : offset + len(records)]
        if offset < len(self.values):
            assert records, "at least one record when not at the end"

    @rule(data=st.data())
    def read_slice(self, data):
        offset = data.draw(st.integers(min_value=0, max_value=len(self.values)))
        piece = self.log.read_slice(offset, max_bytes=data.draw(st.integers(min_value=1, max_value=2000)))
        if offset == len(self.values):
            assert piece.size == 0
            return
        raw = piece.read()
        headers = [h for _p, h in batch_format.iter_batches(raw)]
        assert headers and sum(h.size for h in headers) == len(raw)
        assert headers[0].base_offset <= offset <= headers[0].last_offset

    @rule(wanted=st.integers(min_value=0, max_value=10_001))
    def offset_for_timestamp(self, wanted):
        target = wanted
        got = self.log.offset_for_timestamp(target)
        # Kafka's rule: the first record with ts >= target inside the first segment whose largest
        # timestamp is >= target. The model checks the part that holds whatever the layout: the
        # answer has ts >= target, and None only when no record qualifies.
        if got is None:
            assert all(ts < target for ts in self.timestamps)
        else:
            assert self.timestamps[got.offset] == got.timestamp_ms >= target

    @precondition(lambda self: self.values)
    @rule(data=st.data())
    def truncate(self, data):
        offset = data.draw(st.integers(min_value=1, max_value=len(self.values)))
        i = bisect.bisect_right(self.batch_starts, offset) - 1
        batch_start = self.batch_starts[i]
        batch_end = self.batch_starts[i + 1] if i + 1 < len(self.batch_starts) else len(self.values)
        new_end = batch_start if offset < batch_end else offset
        assert self.log.truncate(offset) == new_end
        del self.values[new_end:]
        del self.timestamps[new_end:]
        self.batch_starts = [b for b in self.batch_starts if b < new_end]

    @rule()
    def reopen_clean(self):
        self.log.close()
        self.log = Log(self.directory, CONFIG)
        assert self.log.was_clean_shutdown

    @rule()
    def reopen_after_crash(self):
        log = self.log
        log._closed = True
        for segment in log._segments:
            if segment._file is not None:
                segment._file.close()
        del log
        self.log = None
        gc.collect()
        self.log = Log(self.directory, CONFIG)
        assert not self.log.was_clean_shutdown

    @invariant()
    def ends_match(self):
        assert self.log.log_end_offset == len(self.values)
        assert self.log.log_start_offset == 0


TestLogModel = LogMachine.TestCase
TestLogModel.settings = __import__("hypothesis").settings(max_examples=40, stateful_step_count=30, deadline=None)
