"""Property tests: both indexes answer every lookup exactly like a sorted-list model (``bisect``).

The model of an index is two plain lists. ``floor(x)`` in the model is ``bisect_right(keys, x) - 1``.
The indexes must agree with the model after appends, after ``truncate_to``, and after a trim and a
reopen, both sealed (lazy ``np.fromfile``) and writable (re-preallocated mmap).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from bisect import bisect_left, bisect_right

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from logstore.index import OffsetIndex, TimeIndex

U32_MAX = 2**32 - 1
I64_MAX = 2**63 - 1

bases = st.integers(0, 2**40)
relative_offsets = st.one_of(st.integers(0, 64), st.integers(0, U32_MAX))
positions = st.one_of(st.integers(0, 4096), st.integers(0, U32_MAX))
timestamps = st.one_of(st.integers(-3, 64), st.integers(-3, I64_MAX))


def model_floor(keys: list[int], values: list[int], target: int, empty: tuple[int, int]):
    slot = bisect_right(keys, target) - 1
    return empty if slot < 0 else (keys[slot], values[slot])


def targets_near(draw, keys: list[int], low: int, high: int, n: int = 25) -> list[int]:
    """Lookup targets: the keys themselves and their neighbours, plus anything in range."""
    near = st.sampled_from(keys).flatmap(lambda k: st.integers(k - 1, k + 1)) if keys else st.nothing()
    return draw(st.lists(st.one_of(near, st.integers(low, high)), min_size=1, max_size=n))


# --- offset index -------------------------------------------------------------------------------


@given(
    base=bases,
    relatives=st.lists(relative_offsets, unique=True, max_size=40).map(sorted),
    data=st.data(),
)
def test_offset_floor_matches_model(base, relatives, data):
    offsets = [base + r for r in relatives]
    positions_ = sorted(data.draw(st.lists(positions, min_size=len(offsets), max_size=len(offsets))))
    slack = data.draw(st.integers(0, 3))
    empty = (base, 0)
    directory = tempfile.mkdtemp()
    try:
        path = os.path.join(directory, "x.index")
        index = OffsetIndex(path, base, max_index_bytes=8 * (len(offsets) + slack) or 8)
        for offset, position in zip(offsets, positions_, strict=True):
            index.append(offset, position)

        def check(index, keys, values):
            for target in targets_near(data.draw, keys, base - 3, base + U32_MAX + 3):
                assert index.floor(target) == model_floor(keys, values, target, empty), target
            assert [a.tolist() for a in index.to_arrays()] == [keys, values]

        check(index, offsets, positions_)
        cut = data.draw(st.integers(base - 1, base + U32_MAX + 1), label="truncate_to")
        index.truncate_to(cut)
        keep = bisect_left(offsets, cut)
        offsets, positions_ = offsets[:keep], positions_[:keep]
        check(index, offsets, positions_)
        index.close()
        assert os.path.getsize(path) == 8 * len(offsets)
        sealed = OffsetIndex(path, base, writable=False)
        sealed.sanity_check()
        check(sealed, offsets, positions_)
        reopened = OffsetIndex(path, base, max_index_bytes=8 * (len(offsets) + 1))
        reopened.sanity_check()
        check(reopened, offsets, positions_)
        reopened.close()
    finally:
        shutil.rmtree(directory)


# --- time index ---------------------------------------------------------------------------------


@given(
    base=bases,
    attempts=st.lists(st.tuples(timestamps, relative_offsets), max_size=40),
    data=st.data(),
)
def test_time_floor_matches_model(base, attempts, data):
    # Offsets must not decrease, timestamps may do anything: the index keeps only new maxima.
    relatives = sorted(r for _, r in attempts)
    attempts = [(ts, base + r) for (ts, _), r in zip(attempts, relatives, strict=True)]
    keys: list[int] = []  # accepted timestamps
    values: list[int] = []  # their offsets
    empty = (-1, base)
    directory = tempfile.mkdtemp()
    try:
        path = os.path.join(directory, "x.timeindex")
        index = TimeIndex(path, base, max_index_bytes=12 * (len(attempts) + 2))
        for timestamp, offset in attempts:
            accepted = timestamp > (keys[-1] if keys else -1)
            assert index.append(timestamp, offset) is accepted
            if accepted:
                keys.append(timestamp)
                values.append(offset)
        assert index.last_entry == ((keys[-1], values[-1]) if keys else empty)

        def check(index, keys, values):
            for target in targets_near(data.draw, keys, -5, I64_MAX):
                assert index.floor(target) == model_floor(keys, values, target, empty), target
            assert [a.tolist() for a in index.to_arrays()] == [keys, values]

        check(index, keys, values)
        cut = data.draw(st.integers(base - 1, base + U32_MAX + 1), label="truncate_to")
        index.truncate_to(cut)
        keep = bisect_left(values, cut)
        keys, values = keys[:keep], values[:keep]
        check(index, keys, values)
        index.close()
        sealed = TimeIndex(path, base, writable=False)
        sealed.sanity_check()
        check(sealed, keys, values)
        reopened = TimeIndex(path, base, max_index_bytes=12 * (len(keys) + 2))
        reopened.sanity_check()
        check(reopened, keys, values)
        reopened.close()
    finally:
        shutil.rmtree(directory)


# --- interleaved operations ---------------------------------------------------------------------


class OffsetIndexMachine(RuleBasedStateMachine):
    """Append, look up, truncate, trim and reopen in any order; the model is two lists."""

    CAPACITY = 24

    def __init__(self):
        super().__init__()
        self.directory = tempfile.mkdtemp()
        self.path = os.path.join(self.directory, "x.index")
        self.offsets: list[int] = []
        self.positions: list[int] = []

    @initialize(base=st.integers(0, 2**33))
    def open_index(self, base):
        self.base = base
        self.index = OffsetIndex(self.path, base, max_index_bytes=8 * self.CAPACITY)

    def teardown(self):
        if hasattr(self, "index"):
            self.index.close()
        shutil.rmtree(self.directory)

    @rule(step=st.integers(1, 5), advance=st.integers(0, 5000))
    def append(self, step, advance):
        offset = (self.offsets[-1] + step) if self.offsets else self.base + step - 1
        position = (self.positions[-1] if self.positions else 0) + advance
        if len(self.offsets) >= self.CAPACITY:
            assert self.index.is_full and not self.index.can_append(offset)
            try:
                self.index.append(offset, position)
            except ValueError:
                return
            raise AssertionError("append to a full index succeeded")
        self.index.append(offset, position)
        self.offsets.append(offset)
        self.positions.append(position)

    @precondition(lambda self: self.offsets)
    @rule(back=st.integers(0, 3), position=st.integers(0, U32_MAX))
    def append_out_of_order(self, back, position):
        try:
            self.index.append(self.offsets[-1] - back, position)
        except ValueError:
            return
        raise AssertionError("append of a non-increasing offset succeeded")

    @rule(delta=st.integers(-3, 130))
    def floor(self, delta):
        target = self.base + delta
        assert self.index.floor(target) == model_floor(self.offsets, self.positions, target, (self.base, 0))

    @rule(delta=st.integers(-1, 130))
    def truncate_to(self, delta):
        self.index.truncate_to(self.base + delta)
        keep = bisect_left(self.offsets, self.base + delta)
        del self.offsets[keep:], self.positions[keep:]

    @rule(sealed_first=st.booleans())
    def trim_and_reopen(self, sealed_first):
        self.index.close()
        if sealed_first:
            sealed = OffsetIndex(self.path, self.base, writable=False)
            assert [a.tolist() for a in sealed.to_arrays()] == [self.offsets, self.positions]
        self.index = OffsetIndex(self.path, self.base, max_index_bytes=8 * self.CAPACITY)

    @invariant()
    def agrees_with_model(self):
        if hasattr(self, "index"):
            assert self.index.entries == len(self.offsets)
            assert self.index.last_offset == (self.offsets[-1] if self.offsets else self.base)
            self.index.sanity_check()


class TimeIndexMachine(RuleBasedStateMachine):
    """The same for the time index, including the reserved final slot."""

    CAPACITY = 12

    def __init__(self):
        super().__init__()
        self.directory = tempfile.mkdtemp()
        self.path = os.path.join(self.directory, "x.timeindex")
        self.timestamps: list[int] = []
        self.offsets: list[int] = []

    @initialize(base=st.integers(0, 2**33))
    def open_index(self, base):
        self.base = base
        self.index = TimeIndex(self.path, base, max_index_bytes=12 * self.CAPACITY)

    def teardown(self):
        if hasattr(self, "index"):
            self.index.close()
        shutil.rmtree(self.directory)

    @rule(timestamp=st.integers(-2, 60), step=st.integers(0, 3), final=st.booleans())
    def append(self, timestamp, step, final):
        offset = (self.offsets[-1] if self.offsets else self.base) + step
        new_max = timestamp > (self.timestamps[-1] if self.timestamps else -1)
        room = len(self.timestamps) < self.CAPACITY - (0 if final else 1)
        if new_max and not room:
            try:
                self.index.append(timestamp, offset, final=final)
            except ValueError:
                return
            raise AssertionError("append to a full time index succeeded")
        assert self.index.append(timestamp, offset, final=final) is new_max
        if new_max:
            self.timestamps.append(timestamp)
            self.offsets.append(offset)

    @rule(timestamp=st.integers(-3, 64))
    def floor(self, timestamp):
        expected = model_floor(self.timestamps, self.offsets, timestamp, (-1, self.base))
        assert self.index.floor(timestamp) == expected

    @rule(delta=st.integers(-1, 40))
    def truncate_to(self, delta):
        self.index.truncate_to(self.base + delta)
        keep = bisect_left(self.offsets, self.base + delta)
        del self.timestamps[keep:], self.offsets[keep:]

    @rule()
    def trim_and_reopen(self):
        self.index.close()
        sealed = TimeIndex(self.path, self.base, writable=False)
        assert [a.tolist() for a in sealed.to_arrays()] == [self.timestamps, self.offsets]
        self.index = TimeIndex(self.path, self.base, max_index_bytes=12 * self.CAPACITY)

    @invariant()
    def agrees_with_model(self):
        if hasattr(self, "index"):
            assert self.index.entries == len(self.timestamps)
            assert self.index.is_full == (len(self.timestamps) >= self.CAPACITY - 1)
            self.index.sanity_check()


TestOffsetIndexMachine = OffsetIndexMachine.TestCase
TestOffsetIndexMachine.settings = settings(max_examples=40, stateful_step_count=40, deadline=None)
TestTimeIndexMachine = TimeIndexMachine.TestCase
TestTimeIndexMachine.settings = settings(max_examples=40, stateful_step_count=40, deadline=None)
