"""Fetch over loopback: ``os.sendfile`` against the pread + sendall path, in the same run.

Run with ``pytest bench/test_bench_fetch.py --benchmark-only`` (``BENCH_FETCH_MB`` sets the
partition size, default 256). One benchmarked call streams the whole partition (incompressible
1 MB batches, in page cache after the warm-up) to a raw-socket client that sends Fetch v11
requests of ``FETCH_MB`` one after another, as a consumer does, and drains each response into a
reused buffer without parsing it. The client is a separate process (fetch offsets computed
beforehand from ``Log.read_slice``), so the server's CPU time can be measured on its own.

``extra_info``: ``MB_per_s`` (record bytes per wall second) and ``server_cpu_s_per_GB`` (user +
system CPU of the server process per GB sent). On loopback the kernel charges the receiving side's
TCP work to the sender and the receiver's copy bounds throughput, so the two paths move about the
same MB/s when the server is otherwise idle. The ``busy-python-thread`` runs add one thread doing
pure-Python work in the server process, as other requests' handlers would: ``os.sendfile`` sends
a whole region per call outside the GIL, while the copy path must take the GIL back for every
1 MiB pread + sendall and waits for the busy thread's switch interval each time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest
from kafka.protocol.consumer.fetch import FetchRequest

from logstore.batch import HEADER, HEADER_SIZE, BatchHeader
from logstore.server import serve
from logstore.store import LogStore

SIZE_MB = int(os.environ.get("BENCH_FETCH_MB", "256"))
FETCH_MB = 8
ROUNDS = 5

CLIENT = r"""
import json, socket, struct, sys, time
port, frames = int(sys.argv[1]), [bytes.fromhex(f) for f in json.loads(sys.stdin.readline())]
buffer = bytearray(16 << 20)
view = memoryview(buffer)
sock = socket.create_connection(("127.0.0.1", port))
sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
for line in sys.stdin:
    count = int(line)
    start, received = time.perf_counter(), 0
    for frame in frames[:count]:
        sock.sendall(frame)
        got = 0
        while got < 4:
            got += sock.recv_into(view[got:4])
        (remaining,) = struct.unpack_from(">i", buffer)
        received += remaining + 4
        while remaining:
            n = sock.recv_into(view[: min(remaining, len(buffer))])
            if not n:
                raise SystemExit("server closed the connection")
            remaining -= n
    print(json.dumps([time.perf_counter() - start, received]), flush=True)
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = LogStore(tmp_path_factory.mktemp("bench-fetch") / "data", background=False)
    s.create_topic("big", config={"durability": "none"})
    values = [os.urandom(1000) for _ in range(1000)]
    for _ in range(SIZE_MB):
        s.append("big", values, partition=0)
    yield s
    s.close()


@pytest.fixture(scope="module")
def plan(store):
    """``[(fetch_offset, record bytes the response carries)]`` covering the partition."""
    log = store.log("big", 0)
    steps, offset = [], 0
    while offset < log.log_end_offset:
        region = log.read_slice(offset, max_bytes=FETCH_MB << 20)
        position = region.position
        while True:  # walk to the last batch of the region
            header = BatchHeader._make(HEADER.unpack(os.pread(region.fd, HEADER_SIZE, position)))
            if position + header.size >= region.position + region.size:
                break
            position += header.size
        steps.append((offset, region.size))
        offset = header.next_offset
    return steps


def fetch_frame(offset: int, correlation_id: int) -> bytes:
    Topic = FetchRequest.FetchTopic
    partition = Topic.FetchPartition(partition=0, fetch_offset=offset, partition_max_bytes=FETCH_MB << 20)
    message = FetchRequest[11](
        max_wait_ms=0, min_bytes=1, max_bytes=64 << 20, topics=[Topic(topic="big", partitions=[partition])]
    )
    message.with_header(correlation_id=correlation_id, client_id="bench")
    return bytes(message.encode(header=True, framed=True))


class Client:
    """The client process: ``run(n)`` streams the first ``n`` fetches, returns (seconds, bytes)."""

    def __init__(self, port: int, plan):
        self.process = subprocess.Popen(
            [sys.executable, "-c", CLIENT, str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        frames = [fetch_frame(offset, i).hex() for i, (offset, _size) in enumerate(plan)]
        self.process.stdin.write(json.dumps(frames) + "\n")

    def run(self, count: int):
        self.process.stdin.write(f"{count}\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the client process died")
        return json.loads(line)

    def close(self):
        self.process.stdin.close()
        self.process.wait(10)


def spin(stop: threading.Event) -> None:
    """Pure-Python work holding the GIL, as other requests' handlers would."""
    while not stop.is_set():
        sum(range(1000))


@pytest.mark.parametrize("busy", [False, True], ids=["idle", "busy-python-thread"])
@pytest.mark.parametrize("path", ["sendfile", "mapped", "pread+sendall"])
def test_fetch_throughput(benchmark, store, plan, path, busy):
    record_bytes = sum(size for _offset, size in plan)
    stop = threading.Event()
    transport = {"sendfile": "sendfile", "mapped": "mapped", "pread+sendall": "copy"}[path]
    with serve(store, port=0, transport=transport) as server:
        client = Client(server.port, plan)
        spinner = threading.Thread(target=spin, args=(stop,))
        try:
            client.run(len(plan))  # warm up: page cache, connection
            if busy:
                spinner.start()
            cpu_before, wall = time.process_time(), []
            benchmark.pedantic(lambda: wall.append(client.run(len(plan))[0]), rounds=ROUNDS, iterations=1)
            cpu = time.process_time() - cpu_before
        finally:
            stop.set()
            if spinner.is_alive():
                spinner.join()
            client.close()
        stats = server.stats
        sent = {"sendfile": stats.bytes_sendfile, "mapped": stats.bytes_mapped, "copy": stats.bytes_copied}
        assert sent.pop(transport) >= record_bytes and not any(sent.values()), stats
    benchmark.extra_info["record_MB"] = round(record_bytes / 1e6, 1)
    benchmark.extra_info["fetches"] = len(plan)
    benchmark.extra_info["MB_per_s"] = round(record_bytes * ROUNDS / 1e6 / sum(wall), 1)
    if not busy:  # with the spinner, CPU time mostly measures the spinning
        benchmark.extra_info["server_cpu_s_per_GB"] = round(cpu / (record_bytes * ROUNDS / 1e9), 3)
    print(f"\n{path} {'busy' if busy else 'idle'}: {benchmark.extra_info}")
