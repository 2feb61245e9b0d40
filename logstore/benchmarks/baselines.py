"""Baselines: the machine's limits and logstore's peers, written the way their users write them.

Every measuring function takes what it needs already built (outside the timing) and returns
``(payload_bytes, seconds)`` for the timed part only. *Payload* is the bytes of record values
(what the user handed over), so the MB/s of every subject of a scenario are directly comparable.

* raw sequential write / read of the same bytes, in the same write sizes: the limit;
* a naive log: a 4-byte length before each record, one ``os.write`` per batch;
* LMDB (py-lmdb): ``putmulti(append=True)`` per batch, 8-byte big-endian offsets as keys;
* SQLite in WAL mode (stdlib), ``synchronous=OFF``: one ``executemany`` + commit per batch;
* nginx serving a file with ``sendfile on`` (:class:`Nginx`), for the fetch scenario.

Nothing here fsyncs: logstore runs with ``durability="none"`` in the benchmarks, so every subject
writes into the page cache and the comparison is of the code path, not of the disk's flush.
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import struct
import subprocess
import tempfile
import time

MiB = 1024 * 1024
_LENGTH = struct.Struct(">I")
_KEY = struct.Struct(">Q")


def fresh(path: str) -> str:
    """Remove ``path`` and create it again, empty."""
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


# --- the limit: raw sequential write and read -------------------------------------------------


def raw_write(directory: str, chunks: list[bytes]) -> tuple[int, float]:
    """Write ``chunks`` one ``os.write`` each to a new file ``directory/raw``."""
    path = os.path.join(fresh(directory), "raw")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    total = 0
    try:
        start = time.perf_counter()
        for chunk in chunks:
            total += os.write(fd, chunk)
        seconds = time.perf_counter() - start
    finally:
        os.close(fd)
    return total, seconds


def raw_read(path: str, block_bytes: int = MiB) -> tuple[int, float]:
    """Read the file at ``path`` sequentially, ``block_bytes`` per ``readinto``."""
    buffer = bytearray(block_bytes)
    total = 0
    with open(path, "rb", buffering=0) as f:
        start = time.perf_counter()
        while n := f.readinto(buffer):
            total += n
        seconds = time.perf_counter() - start
    return total, seconds


# --- a naive length-prefixed file --------------------------------------------------------------


def naive_append(directory: str, batches: list[list[bytes]]) -> tuple[int, float]:
    """A 4-byte length before each value, one ``os.write`` per batch: the simplest log."""
    path = os.path.join(fresh(directory), "naive")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    pack = _LENGTH.pack
    total = 0
    try:
        start = time.perf_counter()
        for values in batches:
            os.write(fd, b"".join([pack(len(v)) + v for v in values]))
        seconds = time.perf_counter() - start
    finally:
        os.close(fd)
    for values in batches:
        total += sum(map(len, values))
    return total, seconds


def naive_read(directory: str) -> tuple[int, float]:
    """Read the naive file back into a list of values (one slice per record)."""
    unpack = _LENGTH.unpack_from
    total = 0
    start = time.perf_counter()
    with open(os.path.join(directory, "naive"), "rb") as f:
        data = f.read()
    position, end = 0, len(data)
    while position < end:
        (size,) = unpack(data, position)
        value = data[position + 4 : position + 4 + size]
        total += len(value)
        position += 4 + size
    return total, time.perf_counter() - start


# --- LMDB (py-lmdb) ----------------------------------------------------------------------------


def lmdb_open(directory: str, *, create: bool):
    """An LMDB environment tuned for bulk appends without fsync (``import lmdb`` happens here)."""
    import lmdb

    if create:
        fresh(directory)
    return lmdb.open(directory, map_size=64 << 30, sync=False, metasync=False, writemap=True, map_async=True)


def lmdb_append(directory: str, batches: list[list[bytes]]) -> tuple[int, float]:
    """``putmulti(append=True)`` of each batch under 8-byte big-endian offset keys."""
    env = lmdb_open(directory, create=True)
    pack = _KEY.pack
    offset = total = 0
    try:
        start = time.perf_counter()
        for values in batches:
            items = [(pack(offset + i), v) for i, v in enumerate(values)]
            offset += len(values)
            with env.begin(write=True) as txn:
                txn.cursor().putmulti(items, append=True)
        seconds = time.perf_counter() - start
    finally:
        env.close()
    for values in batches:
        total += sum(map(len, values))
    return total, seconds


def lmdb_read(directory: str) -> tuple[int, float]:
    """Iterate every value in key order (each returned as ``bytes``, as users get them)."""
    env = lmdb_open(directory, create=False)
    total = 0
    try:
        start = time.perf_counter()
        with env.begin() as txn:
            for value in txn.cursor().iternext(keys=False, values=True):
                total += len(value)
        seconds = time.perf_counter() - start
    finally:
        env.close()
    return total, seconds


def lmdb_gets(directory: str, offsets: list[int]) -> tuple[int, float]:
    """Point reads by offset key in one read transaction; returns ``(lookups, seconds)``."""
    env = lmdb_open(directory, create=False)
    pack = _KEY.pack
    try:
        with env.begin() as txn:
            get = txn.get
            start = time.perf_counter()
            for offset in offsets:
                get(pack(offset))
            seconds = time.perf_counter() - start
    finally:
        env.close()
    return len(offsets), seconds


# --- SQLite, WAL mode (stdlib) ------------------------------------------------------------------


def sqlite_append(directory: str, batches: list[list[bytes]], timestamps_ms: list[int] | None = None):
    """One ``executemany`` + commit per batch into ``log(offset INTEGER PRIMARY KEY, ts, value)``.

    ``timestamps_ms`` (one per batch, optional) fills ``ts``, indexed after the load for the
    lookup scenario. Returns ``(payload_bytes, seconds)``.
    """
    path = os.path.join(fresh(directory), "db.sqlite")
    db = sqlite3.connect(path)
    total = offset = 0
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=OFF")
        db.execute("CREATE TABLE log (offset INTEGER PRIMARY KEY, ts INTEGER, value BLOB)")
        start = time.perf_counter()
        for b, values in enumerate(batches):
            ts = timestamps_ms[b] if timestamps_ms else 0
            db.executemany(
                "INSERT INTO log (offset, ts, value) VALUES (?, ?, ?)",
                [(offset + i, ts, v) for i, v in enumerate(values)],
            )
            db.commit()
            offset += len(values)
        seconds = time.perf_counter() - start
        if timestamps_ms:
            db.execute("CREATE INDEX log_ts ON log (ts)")
            db.commit()
    finally:
        db.close()
    for values in batches:
        total += sum(map(len, values))
    return total, seconds


def sqlite_read(directory: str) -> tuple[int, float]:
    """``SELECT value ... ORDER BY offset``, every row fetched."""
    db = sqlite3.connect(os.path.join(directory, "db.sqlite"))
    total = 0
    try:
        start = time.perf_counter()
        for (value,) in db.execute("SELECT value FROM log ORDER BY offset"):
            total += len(value)
        seconds = time.perf_counter() - start
    finally:
        db.close()
    return total, seconds


def sqlite_lookups(directory: str, sql: str, keys: list[int]) -> tuple[int, float]:
    """Run the one-parameter query ``sql`` once per key; returns ``(lookups, seconds)``."""
    db = sqlite3.connect(os.path.join(directory, "db.sqlite"))
    try:
        execute = db.execute
        start = time.perf_counter()
        for key in keys:
            execute(sql, (key,)).fetchone()
        seconds = time.perf_counter() - start
    finally:
        db.close()
    return len(keys), seconds


# --- nginx with sendfile -----------------------------------------------------------------------

_NGINX_CONF = """\
{user}worker_processes 1;
daemon off;
master_process on;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 16; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{ }}
    }}
}}
"""


def nginx_binary() -> str | None:
    """The nginx executable on PATH (or in /usr/sbin), or None."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


class Nginx:
    """nginx serving the files of ``root`` on a loopback port, ``sendfile on``, one worker.

    A context manager: the config and pid file live in a temp dir; leaving the block stops nginx
    (SIGTERM, then SIGKILL after ``stop_timeout_s``) and removes the temp dir. ``start`` raises
    ``RuntimeError`` with nginx's error log if it does not listen within ``start_timeout_s``.
    """

    def __init__(self, root: str, *, binary: str | None = None, start_timeout_s: float = 5.0, stop_timeout_s: float = 5.0):
        self.root = os.path.abspath(root)
        self.binary = binary or nginx_binary()
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.port = 0
        self.process: subprocess.Popen | None = None
        self._tmp: str | None = None

    def __enter__(self) -> Nginx:
        if self.binary is None:
            raise RuntimeError("nginx is not installed")
        self._tmp = tempfile.mkdtemp(prefix="logstore-bench-nginx-")
        with socket.socket() as probe:  # a free port; nginx binds it right after
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        # as root the worker would run as "nobody", which may not traverse a private data dir
        user = "user root;\n" if os.geteuid() == 0 else ""
        conf = os.path.join(self._tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(_NGINX_CONF.format(user=user, tmp=self._tmp, port=self.port, root=self.root))
        self.process = subprocess.Popen(
            [self.binary, "-p", self._tmp, "-c", conf, "-e", os.path.join(self._tmp, "error.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = self._error_log()
                self.__exit__(None, None, None)
                raise RuntimeError(f"nginx did not start: {log.strip() or 'no error log'}")
            time.sleep(0.05)

    def _error_log(self) -> str:
        try:
            with open(os.path.join(self._tmp, "error.log")) as f:
                return f.read()[-500:]
        except OSError:
            return ""

    def worker_pids(self) -> list[int]:
        """The pids of nginx's worker processes (children of the master), or ``[]``."""
        if self.process is None:
            return []
        try:
            with open(f"/proc/{self.process.pid}/task/{self.process.pid}/children") as f:
                return [int(pid) for pid in f.read().split()]
        except (OSError, ValueError):
            return []

    @staticmethod
    def process_cpu_ns(pid: int) -> int:
        """CPU time of all threads of process ``pid`` in nanoseconds (``/proc/<pid>/task/*/schedstat``)."""
        total = 0
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        return total

    def worker_cpu_s(self) -> float | None:
        """User + system CPU seconds of nginx's worker processes (from /proc), or None.

        Read from ``/proc/<pid>/task/*/schedstat`` (nanoseconds, the clock behind
        ``CLOCK_PROCESS_CPUTIME_ID``, which ``time.process_time`` reads for logstore's side), else
        from ``/proc/<pid>/stat`` in clock ticks (10 ms: too coarse for runs of a tenth of a second).
        """
        pids = self.worker_pids()
        if not pids:
            return None
        try:
            return sum(self.process_cpu_ns(pid) for pid in pids) / 1e9
        except (OSError, ValueError, IndexError):
            pass
        try:
            total = 0
            for pid in pids:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
            return total / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None and self.process.stderr:
            self.process.stderr.close()
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
