"""kill -9 of a process that appends with fsync per append, at random moments.

After each append returns, the child prints the last offset it was given; whatever the parent
has read when it kills the child was acknowledged as durable. After reopen every acknowledged
record must be there, byte for byte, the log must be a prefix of the child's deterministic
sequence, and no corrupt record may come back. (SIGKILL keeps the page cache, so this checks the
process-crash path: torn appends, rolls and checkpoints cut at any instruction. Power loss is
covered by the damage-function tests in test_recovery.py, which tear the unflushed tail.)

The default suite runs a few dozen trials; ``-m slow`` runs hundreds.
"""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time

import pytest

from logstore import Log, LogConfig

CHILD = r"""
import sys
from logstore import Log, LogConfig
config = LogConfig(segment_bytes=16384, index_interval_bytes=512, durability=sys.argv[2])
log = Log(sys.argv[1], config)
offset = log.log_end_offset
while True:
    n = 1 + offset % 7
    values = [b"%08d|" % (offset + j) + bytes([(offset + j) % 251]) * ((offset + j) % 90) for j in range(n)]
    info = log.append(values, keys=[b"k%d" % ((offset + j) % 13) for j in range(n)], timestamps_ms=offset)
    offset = info.last_offset + 1
    sys.stdout.write("%d\n" % info.last_offset)
    sys.stdout.flush()
"""


def expected_value(offset: int) -> bytes:
    return b"%08d|" % offset + bytes([offset % 251]) * (offset % 90)


def config() -> LogConfig:
    return LogConfig(segment_bytes=16384, index_interval_bytes=512, durability="append")


def run_trial(directory: str, rng: random.Random, durability: str = "append") -> int:
    env = dict(os.environ)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, directory, durability],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    acked = -1
    deadline = time.monotonic() + rng.uniform(0.05, 0.6)
    buffer = b""
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([child.stdout], [], [], 0.01)
            if ready:
                chunk = os.read(child.stdout.fileno(), 65536)
                if not chunk:
                    break
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                if lines:
                    acked = int(lines[-1])
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        err = child.stderr.read()
        child.stdout.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL, err.decode(errors="replace")
    return acked


def check(directory: str, acked: int) -> int:
    with Log(directory, config()) as log:
        end = log.log_end_offset
        assert end > acked, f"acknowledged offset {acked} lost (log end {end})"
        offset = 0
        while offset < end:
            records = log.read(offset, max_bytes=1 << 20)
            assert records, offset
            for record in records:
                assert record.offset == offset
                assert record.value == expected_value(offset)
                assert record.key == b"k%d" % (offset % 13)
                assert record.timestamp_ms >= 0
                offset += 1
        return end


def trials(tmp_path, count: int, seed: int) -> None:
    rng = random.Random(seed)
    directory = str(tmp_path / "p")
    last_end = 0
    for _trial in range(count):
        acked = run_trial(directory, rng)
        end = check(directory, acked)
        assert end >= last_end  # nothing fsynced by an earlier trial is lost later
        last_end = end
    assert last_end > 0


@pytest.mark.crash
def test_kill9_during_fsync_per_append(tmp_path):
    seed = int(os.environ.get("LOGSTORE_CRASH_SEED", "20261125"))
    trials(tmp_path, count=int(os.environ.get("LOGSTORE_CRASH_TRIALS", "24")), seed=seed)


@pytest.mark.crash
@pytest.mark.slow
def test_kill9_many_trials(tmp_path):
    seed = int(os.environ.get("LOGSTORE_CRASH_SEED", str(random.randrange(1 << 30))))
    print(f"crash seed {seed}")
    trials(tmp_path, count=300, seed=seed)
