"""Network scenarios: fetch through the server into a raw-socket client, and Kafka clients.

*fetch*: one partition (batches of about 512 KiB of 1000-byte records) is streamed to a client
process that sends requests one after another, as a consumer does, and drains each response into a
reused buffer without parsing it. The same byte ranges are served five ways, in alternation:
logstore's server with its default transport (for a loopback client: ``sendall`` from a memory
map of the segment, see ``logstore.server.server``), with ``os.sendfile`` and with its copy path
(``pread`` + ``sendall``), a bare ``os.sendfile`` loop behind a 12-byte request (corked like the
server and nginx), and nginx serving the segment file with ``sendfile on``, ``tcp_nopush on``
and HTTP Range requests (when installed). The client is a separate process so that the CPU time of this process is the
server's alone; nginx's is its worker's, both read from the same scheduler clock (nanoseconds).

Fairness on loopback. The receiving side's TCP work (queueing, ACKs, wake-ups) runs in the
context of whichever side's softirq delivers the packet, so it is charged to the sender or to the
client depending on timing, and the scheduler sometimes stacks server and client on one CPU and
sometimes not: from one pass to the next, for any subject, MB/s and the server's CPU per GB moved
by 2x. So after the warm-up every server (this process's threads, nginx's worker) is pinned to one
CPU and every client to another, as with a consumer on another machine (``_pin``;
``LOGSTORE_BENCH_FETCH_PIN=0`` turns it off), and besides the server's CPU per GB (figures
``...cpu``) the scenario reports server plus client CPU per GB (``...cpu+client``), which does not
depend on who was charged: the client is the same code for every subject. Even pinned, a pass now
and then (more often nginx's) falls into a state where the client never waits for data: the
sender then does no receive-side work, and that pass shows about 2.5x the MB/s and an eighth of
the server's CPU per GB. One such pass would decide a best-of-rounds figure, so this scenario's
figures are medians over the passes (MB/s, and CPU per GB pass by pass); every pass is in
``samples``, the best MB/s in ``best``.

*clients*: confluent-kafka (librdkafka) producing to and consuming from the server, beside
logstore's embedded ``Log.append`` / ``read_columns`` of the same records: the ratio is what the
Kafka protocol and the client library cost over the embedded API.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time

from ..batch import HEADER_SIZE, unpack_header
from . import baselines as base
from .runner import MiB, Run, alternate, scenario
from .scenarios import logstore_append, logstore_read, make_batches, payload_bytes, records_per_batch

_CLIENT = r"""
import json, re, socket, struct, sys, time
port, mode = int(sys.argv[1]), sys.argv[2]
frames = [bytes.fromhex(f) for f in json.loads(sys.stdin.readline())]
buffer = bytearray(16 << 20)
view = memoryview(buffer)
sock = socket.create_connection(("127.0.0.1", port))
sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
LENGTH = re.compile(rb"content-length:\s*(\d+)", re.I)

def drain(remaining):
    while remaining:
        n = sock.recv_into(view[: min(remaining, len(buffer))])
        if not n:
            raise SystemExit("server closed the connection")
        remaining -= n

def framed():  # a 4-byte big-endian length, then the response (Kafka, and the bare sendfile server)
    got = 0
    while got < 4:
        n = sock.recv_into(view[got:4])
        if not n:
            raise SystemExit("server closed the connection")
        got += n
    (size,) = struct.unpack_from(">i", buffer)
    drain(size)
    return size

def http():  # headers up to a blank line, then Content-Length bytes
    got = 0
    while True:
        n = sock.recv_into(view[got : got + 65536])
        if not n:
            raise SystemExit("server closed the connection")
        got += n
        end = buffer.find(b"\r\n\r\n", 0, got)
        if end >= 0:
            break
    head = bytes(buffer[:end])
    if not head.startswith((b"HTTP/1.1 206", b"HTTP/1.1 200")):
        raise SystemExit("unexpected response: " + head[:80].decode(errors="replace"))
    size = int(LENGTH.search(head).group(1))
    drain(size - (got - end - 4))
    return size

receive = http if mode == "http" else framed
for line in sys.stdin:
    count = int(line)
    start, received = time.perf_counter(), 0
    for frame in frames[:count]:
        sock.sendall(frame)
        received += receive()
    print(json.dumps([time.perf_counter() - start, received]), flush=True)
"""


_FETCH_PASSES_PER_ROUND = 3  # (fetch figures are medians over rounds x this many passes)


class Client:
    """The client process: ``run(n)`` sends the first ``n`` requests, returns (seconds, bytes)."""

    def __init__(self, port: int, mode: str, frames: list[bytes]):
        self.process = subprocess.Popen([sys.executable, "-c", _CLIENT, str(port), mode],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.process.stdin.write(json.dumps([f.hex() for f in frames]) + "\n")
        self.count = len(frames)

    def run(self) -> tuple[float, int]:
        self.process.stdin.write(f"{self.count}\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the client process died")
        seconds, received = json.loads(line)
        return seconds, received

    def cpu_s(self) -> float | None:
        """CPU seconds the client process has used (all threads, from /proc), or None."""
        try:
            return base.Nginx.process_cpu_ns(self.process.pid) / 1e9
        except (OSError, ValueError, IndexError):
            return None

    def close(self) -> None:
        try:
            self.process.stdin.close()
            self.process.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()


def fetch_v4_frame(topic: str, offset: int, partition_max_bytes: int, correlation_id: int) -> bytes:
    """A framed Fetch v4 request for partition 0 of ``topic`` (non-flexible: plain struct)."""
    client_id, name = b"bench", topic.encode()
    header = struct.pack(">hhih", 1, 4, correlation_id, len(client_id)) + client_id
    body = struct.pack(">iiiib", -1, 0, 1, 64 << 20, 0)  # replica, max_wait_ms, min_bytes, max_bytes, isolation
    body += struct.pack(">ih", 1, len(name)) + name + struct.pack(">iiqi", 1, 0, offset, partition_max_bytes)
    message = header + body
    return struct.pack(">i", len(message)) + message


def fetch_plan(log, request_bytes: int) -> list[tuple[int, int, int]]:
    """``[(fetch_offset, position, size)]``: the regions successive fetches return."""
    steps, offset = [], log.log_start_offset
    while offset < log.log_end_offset:
        region = log.read_slice(offset, max_bytes=request_bytes)
        position, end = region.position, region.position + region.size
        while True:  # walk to the last batch of the region
            header = unpack_header(os.pread(region.fd, HEADER_SIZE, position))
            if position + header.size >= end:
                break
            position += header.size
        steps.append((offset, region.position, region.size))
        offset = header.next_offset
    return steps


class BareSendfileServer:
    """The limit: a 12-byte request ``(position int64, size int32)``, answered by a 4-byte length
    and ``os.sendfile`` of that region of one file. One connection at a time, in a thread."""

    def __init__(self, path: str):
        self.fd = os.open(path, os.O_RDONLY)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True, name="bench-bare-sendfile")
        self.thread.start()

    def _serve(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except OSError:
            return
        request = struct.Struct(">qi")
        with sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as the server does
            cork = getattr(socket, "TCP_CORK", None)  # as the server does: only full segments until uncorked
            while True:
                data = b""
                while len(data) < request.size:
                    chunk = sock.recv(request.size - len(data))
                    if not chunk:
                        return
                    data += chunk
                position, size = request.unpack(data)
                if cork is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, cork, 1)
                sock.sendall(struct.pack(">i", size))
                while size:
                    sent = os.sendfile(sock.fileno(), self.fd, position, min(size, 1 << 30))
                    position += sent
                    size -= sent
                if cork is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, cork, 0)

    def close(self) -> None:
        self.listener.close()
        self.thread.join(5)
        os.close(self.fd)


@scenario("fetch", "fetch through the server (default, sendfile, copy path) vs a bare sendfile loop, nginx",
          steps=lambda p: p.rounds * _FETCH_PASSES_PER_ROUND * 5)
def fetch_scenario(run: Run) -> None:
    from ..server import serve
    from ..store import LogStore

    params = run.params
    store = LogStore(run.path("store"), background=False)
    clients: dict[str, Client] = {}
    closers = [store.close]
    try:
        store.create_topic("fetch", 1, {"durability": "none", "segment_bytes": min(2**31 - 1, params.fetch_bytes * 2 + MiB)})
        batches = make_batches(1000, max(1, params.fetch_bytes // 1000))
        for values in batches:
            store.append("fetch", values, partition=0, timestamps_ms=1)
        log = store.log("fetch", 0)
        if len(log.segments) != 1:
            raise AssertionError(f"expected one segment, got {len(log.segments)}")
        segment_path = log.segments[0].log_path
        plan = fetch_plan(log, params.fetch_request_bytes)
        record_bytes = sum(size for _o, _p, size in plan)
        kafka = [fetch_v4_frame("fetch", offset, params.fetch_request_bytes, i) for i, (offset, _p, _s) in enumerate(plan)]
        servers = {}
        for name, transport in (("logstore", "auto"), ("logstore_sendfile", "sendfile"), ("logstore_copy", "copy")):
            server = serve(store, port=0, transport=transport)
            closers.insert(0, server.close)
            servers[name] = server
            clients[name] = Client(server.port, "kafka", kafka)
        bare = BareSendfileServer(segment_path)
        closers.insert(0, bare.close)
        clients["raw_sendfile"] = Client(bare.port, "kafka", [struct.pack(">qi", p, s) for _o, p, s in plan])
        nginx = _start_nginx(run, os.path.dirname(segment_path))
        if nginx is not None:
            closers.insert(0, lambda: nginx.__exit__(None, None, None))
            name = os.path.basename(segment_path)
            clients["nginx"] = Client(nginx.port, "http", [
                f"GET /{name} HTTP/1.1\r\nHost: bench\r\nRange: bytes={p}-{p + s - 1}\r\n\r\n".encode()
                for _o, p, s in plan])
        for client in clients.values():
            client.run()  # warm up: page cache, connections (the servers' threads now exist)
        pinned = _pin(list(clients.values()), nginx)
        if pinned is not None:
            closers.insert(0, pinned.pop("restore"))
        cpu: dict[str, list[float]] = {name: [] for name in clients}  # per pass, server
        client_cpu: dict[str, list[float]] = {name: [] for name in clients}  # per pass, client

        def measure(name):
            def once():
                client = clients[name]
                before = nginx.worker_cpu_s() if name == "nginx" else time.process_time()
                client_before = client.cpu_s()
                seconds, _received = client.run()
                after = nginx.worker_cpu_s() if name == "nginx" else time.process_time()
                client_after = client.cpu_s()
                if before is not None and after is not None and client_before is not None and client_after is not None:
                    cpu[name].append(after - before)
                    client_cpu[name].append(client_after - client_before)
                return record_bytes, seconds
            return once

        # medians need more passes than best-of figures: several per round (each pass is short)
        rates = alternate(run, {name: measure(name) for name in clients}, rounds=params.rounds * _FETCH_PASSES_PER_ROUND)
        stats = {name: server.stats for name, server in servers.items()}
        took = {name: {"sendfile": s.bytes_sendfile, "mapped": s.bytes_mapped, "copy": s.bytes_copied}
                for name, s in stats.items()}
        expected = {"logstore": "mapped", "logstore_sendfile": "sendfile", "logstore_copy": "copy"}
        if any(sum(v for k, v in took[name].items() if k != path) for name, path in expected.items()):
            raise AssertionError(f"a server did not take the path asked for: {took}")
    finally:
        for client in clients.values():
            client.close()
        for close in closers:
            close()
    labels = {"logstore": ("logstore server (default: mapped send on loopback)", "logstore"),
              "logstore_sendfile": ("logstore server, os.sendfile", "variant"),
              "logstore_copy": ("logstore server, pread+sendall", "variant"),
              "raw_sendfile": ("bare os.sendfile loop (limit)", "limit"),
              "nginx": ("nginx sendfile on, Range GET", "peer")}
    ids, cpu_ids, total_ids = {}, {}, {}
    for name, samples in rates.items():
        label, kind = labels[name]
        scaled = [r / 1e6 for r in samples]
        ids[name] = run.figure(name, statistics.median(scaled), "MB/s", label=label, kind=kind, samples=scaled,
                               best=max(scaled), partition_bytes=record_bytes, requests=len(plan),
                               request_bytes=params.fetch_request_bytes, pinned=pinned)
        server_s, client_s = cpu[name], client_cpu[name]
        if server_s and all(t > 0 for t in server_s):
            extra = dict(server_cpu_s=[round(t, 4) for t in server_s], client_cpu_s=[round(t, 4) for t in client_s],
                         GB_per_pass=record_bytes / 1e9, pinned=pinned)
            per_pass = [record_bytes / 1e9 / t for t in server_s]
            cpu_ids[name] = run.figure(name, statistics.median(per_pass), "GB/cpu-s", label=label, kind=kind,
                                       metric="cpu", samples=per_pass, **extra)
            per_pass = [record_bytes / 1e9 / (t + c) for t, c in zip(server_s, client_s, strict=True)]
            total_ids[name] = run.figure(name, statistics.median(per_pass), "GB/cpu-s", label=label, kind=kind,
                                         metric="cpu+client", samples=per_pass, **extra)
    for name in ("logstore", "logstore_sendfile", "logstore_copy"):
        for other in ("raw_sendfile", "nginx", "logstore_sendfile"):
            if other != name:
                run.compare(ids.get(name, ""), ids.get(other, ""))
                run.compare(cpu_ids.get(name, ""), cpu_ids.get(other, ""))
                run.compare(total_ids.get(name, ""), total_ids.get(other, ""))


def _pin(clients: list[Client], nginx) -> dict | None:
    """Pin every server (this process's threads, nginx) to one CPU and every client to another.

    On loopback the receiving side's TCP work runs on whichever CPU delivers the packet and is
    charged to whoever holds the socket at that moment, and the scheduler sometimes stacks server
    and client on one CPU, sometimes not, changing both MB/s and CPU per GB by 2x from one pass to
    the next regardless of the subject. Pinned, every subject runs in the same arrangement: the
    one of a consumer on another machine, its work never on the server's CPU.
    ``LOGSTORE_BENCH_FETCH_PIN=0`` turns this off. Returns the CPUs used and a ``restore`` callable
    (this process's threads get their affinity back), or None when not pinned.
    """
    if os.environ.get("LOGSTORE_BENCH_FETCH_PIN", "1") == "0" or not hasattr(os, "sched_setaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    server_cpu, client_cpu = cpus[0], cpus[1]
    own = {}
    for task in os.listdir("/proc/self/task"):
        try:
            own[int(task)] = os.sched_getaffinity(int(task))
            os.sched_setaffinity(int(task), {server_cpu})
        except OSError:  # the thread ended meanwhile
            pass
    others = [(pid, server_cpu) for pid in (nginx.worker_pids() if nginx is not None else [])]
    others += [(client.process.pid, client_cpu) for client in clients]
    for pid, cpu in others:
        try:
            os.sched_setaffinity(pid, {cpu})
        except OSError:
            pass

    def restore():
        for task, affinity in own.items():
            try:
                os.sched_setaffinity(task, affinity)
            except OSError:
                pass

    return {"server_cpu": server_cpu, "client_cpu": client_cpu, "restore": restore}


def _start_nginx(run: Run, root: str):
    if base.nginx_binary() is None:
        run.skip("nginx", "nginx is not installed (apt-get install nginx)")
        return None
    try:
        return base.Nginx(root).__enter__()
    except (RuntimeError, OSError) as error:
        run.skip("nginx", str(error))
        return None


@scenario("clients", "produce and consume with confluent-kafka through the server vs the embedded API",
          steps=lambda p: len(p.record_bytes) * p.rounds * 4)
def clients_scenario(run: Run) -> None:
    ck = run.optional_module("confluent_kafka", "confluent_kafka", "confluent-kafka")
    if ck is None:
        run.skip("*", "confluent-kafka is not installed (pip install 'logstore[bench]')")
        return
    from ..server import serve
    from ..store import LogStore

    params = run.params
    store = LogStore(run.path("store"), background=False)
    try:
        with serve(store, port=0, fetch_poll_s=0.01) as server:
            bootstrap = f"127.0.0.1:{server.port}"
            for size in params.record_bytes:
                _clients_for_size(run, ck, store, bootstrap, size)
    finally:
        store.close()


def _clients_for_size(run: Run, ck, store, bootstrap: str, size: int) -> None:
    params = run.params
    topic = f"clients-{size}"
    store.create_topic(topic, 1, {"durability": "none"})
    batches = make_batches(size, params.records_for(size, params.client_bytes))
    values = [v for batch in batches for v in batch][: params.client_max_records]
    count = len(values)
    producer = ck.Producer({"bootstrap.servers": bootstrap, "acks": "1", "linger.ms": 5, "compression.type": "none",
                            "queue.buffering.max.messages": 2_000_000, "queue.buffering.max.kbytes": 2_000_000,
                            "message.max.bytes": 2_000_000})
    producer.produce(topic, b"warm-up", partition=0)
    if producer.flush(30) != 0:
        raise RuntimeError("confluent-kafka could not deliver a warm-up record")
    start_offsets: list[int] = []

    def produce():
        start_offsets.append(store.log(topic, 0).log_end_offset)
        start = time.perf_counter()
        for value in values:
            while True:
                try:
                    producer.produce(topic, value, partition=0)
                    break
                except BufferError:
                    producer.poll(0.005)
        if producer.flush(60) != 0:
            raise RuntimeError("confluent-kafka left records undelivered")
        return count * size, time.perf_counter() - start

    embedded = [values[i : i + records_per_batch(size)] for i in range(0, count, records_per_batch(size))]
    rates = alternate(run, {"logstore_produce": produce,
                            "logstore_embedded": lambda: logstore_append(run.path("embedded"), embedded)},
                      detail=f"produce {size} B")
    # fetch.queue.backoff.ms: librdkafka stops fetching once queued.min.messages (100k) wait in its
    # queue and by default looks again only after 1000 ms, however fast the application drains
    # it: with more than 100k records that stalls any broker for a second. A fresh consumer per
    # pass: an old one's long-poll at the end of the log would hold the next pass's first fetch.
    config = {"bootstrap.servers": bootstrap, "group.id": "bench", "enable.auto.commit": False,
              "fetch.max.bytes": 64 << 20, "max.partition.fetch.bytes": 8 << 20, "fetch.queue.backoff.ms": 10}

    def consume():
        consumer = ck.Consumer(config)
        try:
            consumer.list_topics(topic, timeout=10)  # connect and fetch metadata before timing
            consumer.assign([ck.TopicPartition(topic, 0, start_offsets[0])])
            got, start = 0, time.perf_counter()
            deadline = time.monotonic() + 60
            while got < count:
                # consume() waits until it has num_messages or the timeout: never ask for more than remain
                for message in consumer.consume(num_messages=min(10_000, count - got), timeout=1.0):
                    if message.error() is None:
                        got += 1
                if time.monotonic() > deadline:
                    raise RuntimeError(f"consumed {got} of {count} records in 60 s")
            seconds = time.perf_counter() - start
        finally:
            consumer.close()
        return count * size, seconds

    rates |= alternate(run, {"logstore_consume": consume,
                             "logstore_embedded_read": lambda: logstore_read(run.path("embedded"), columns=True)},
                       detail=f"consume {size} B")
    labels = {"logstore_produce": ("confluent Producer -> server", "logstore"),
              "logstore_embedded": ("embedded Log.append", "variant"),
              "logstore_consume": ("confluent Consumer <- server", "logstore"),
              "logstore_embedded_read": ("embedded read_columns", "variant")}
    ids = {}
    for name, samples in rates.items():
        label, kind = labels[name]
        scaled = [r / 1e6 for r in samples]
        ids[name] = run.figure(name, max(scaled), "MB/s", label=label, kind=kind, record_bytes=size, samples=scaled,
                               records=count, records_per_s=max(samples) / size)
    run.compare(ids["logstore_produce"], ids["logstore_embedded"])
    run.compare(ids["logstore_consume"], ids["logstore_embedded_read"])
    assert payload_bytes(embedded) == count * size
