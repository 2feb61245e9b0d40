"""The socket server: accept loop, one thread per connection, and the record-sending loops.

Theory of operation. One thread accepts; each accepted connection gets its own thread with a
blocking-style socket (Python socket timeouts). A connection is served strictly in order, as
Kafka does: read one request frame, let ``Broker.handle`` compute the response, write it, read
the next. Why threads: ``os.sendfile`` and ``fsync`` release the GIL, so a connection streaming
a large Fetch from the page cache or waiting for the disk never stalls the others, and a long-poll
Fetch is simply a bounded wait in its own thread. All protocol logic lives in ``handlers`` and
the sans-IO codec; this module only moves bytes.

Fetch responses arrive as parts: ``bytes`` (headers, written with ``sendall``, flagged
``MSG_MORE`` when more parts follow) and file regions (``FileSlice``), written with
``os.sendfile`` straight from the segment file: the record bytes never enter Python. The loop is
modelled on CPython's ``socket._sendfile_zerocopy``: explicit offsets (the file position, shared
with the appender, is never moved), partial sends advance the offset, and only a first call
failing with "unsupported" falls back to ``pread`` + ``sendall`` for that connection.

Transports (``Server(transport=...)``, ``logstore serve --transport``). How the record bytes of
a region reach the socket; Python reads none of them in the first two:

* ``sendfile``: ``os.sendfile`` from the segment file. The kernel hands TCP references to the
  page-cache pages, 4 KiB each (16 fragments per 64 KiB segment); over a network card that
  reads them by DMA, nothing is copied at all. The path for remote peers.
* ``mapped``: ``sendall`` from a read-only shared memory map of the segment file
  (``SegmentFile.view``): the kernel copies the bytes from the page cache into socket buffers
  of large compound pages. Over loopback the receiver copies every byte out again whatever the
  sender did, so zero copy saves nothing there and the fragment handling is what costs:
  measured side by side on this 2-CPU VM with 8 MiB fetches, a bare mapped-send loop moved
  3.4 GB/s against 2.4 GB/s for a bare ``os.sendfile`` loop and 2.35 GB/s for nginx's
  ``sendfile``, at 3.7 against 2.4-2.5 GB per server CPU-second. A truncation racing with a
  send makes it fail with EFAULT (the kernel, not Python, touches the map; a Python read of a
  lost page would be SIGBUS, which is why nothing here reads through a view): the connection
  is closed as when ``os.sendfile`` finds the file shorter. Regions under 256 KiB go by
  ``os.sendfile`` (a map of the growing active segment would be remade for each small read).
* ``copy``: ``pread`` into Python, then ``sendall``; for comparison (and what TLS would need).

``auto`` (the default) picks ``mapped`` for loopback peers and ``sendfile`` for the others.

Corking. A response that has regions is written with ``TCP_CORK`` set, cleared after its last
part (Linux; what nginx's ``tcp_nopush`` does). ``os.sendfile`` hands data to TCP in 64 KiB
pieces (its internal pipe) and with ``TCP_NODELAY`` (set on every connection, as Kafka does, so
small responses are never delayed) a piece that does not fill a segment is pushed at once: on
loopback (MSS 65483) every 64 KiB went out as a full segment plus a 53-byte one, 45 segments per
MiB instead of 22 (nginx's count), twice the packets, ACKs and wake-ups per byte. Corked, only
full segments leave; clearing the cork sends the tail at once (left set, it would wait 200 ms).
Measured side by side on a 2-CPU VM, 8 MiB fetches over loopback: 4-13% more MB/s and 7-13%
fewer server CPU seconds per GB than uncorked (the copy path, whose 1 MiB ``sendall`` calls
already fill segments, does not change). Tried and not kept, all within noise of this:
``os.splice`` through a 1 MiB pipe (the pages still reach TCP one per pipe buffer), ``os.sendfile``
in 64 KiB or 2 MiB chunks instead of whole regions, ``SO_SNDBUF`` of 256 KiB to 4 MiB, and
non-blocking sends in 2 MiB chunks as nginx does.

Blocking sends. While it sends, the socket is blocking with ``SO_SNDTIMEO`` = ``send_timeout_s``,
so one ``os.sendfile`` call moves a whole region and waits for buffer space in the kernel, without
the GIL, instead of returning at every full socket buffer (EAGAIN) for a poll round trip through
Python, which with another thread running Python code waits up to a GIL switch interval each time
(``bench/test_bench_fetch.py``, ``busy-python-thread``). Where ``SO_SNDTIMEO`` is unavailable the
socket stays non-blocking and EAGAIN waits for writability with a bounded ``select``, exactly as
CPython does. Either way a client that reads nothing for ``send_timeout_s`` is disconnected.
Receives are blocking too, bounded by ``SO_RCVTIMEO`` (a tick of at most 1 s at which an idle
connection checks its deadline), so the socket never switches between blocking and timeout
modes: a request costs one ``recv`` instead of two mode switches (``ioctl``), a ``poll`` and the
``recv``. (Per Fetch the server spends about 70 us of Python before the first byte goes out --
decode, index lookup, encode -- against about 10 us for nginx: invisible with 8 MiB fetches, a
fifth of the throughput with 1 MiB ones; see README "Numbers".)

A region's ``owner`` keeps the segment file open, so retention unlinking the segment meanwhile does
not pull the bytes away; a file that ends before the region does (the segment was truncated)
aborts the connection, since a frame whose size was announced can no longer be completed
(Kafka's ``FileRecords.writeTo`` fails the same way).

Safety: bad input (an oversize or negative frame size, garbage, an unknown API or version, a
frame cut short by a disconnect) is answered where the protocol allows (a too-new ApiVersions)
and otherwise closes that connection, logging one line for it; nothing is written to the store
and other connections are unaffected. Idle connections are closed after ``idle_timeout_s``, a
request whose bytes trickle in for longer than that too; a client that stops reading is cut off
after ``send_timeout_s`` without progress; connections beyond ``max_connections`` are closed as
soon as they are accepted.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

from logstore.server.handlers import Broker, CloseConnection
from logstore.server.protocol import (
    DEFAULT_MAX_FRAME_BYTES,
    FrameDecoder,
    FrameSizeError,
    RequestError,
    decode_request,
)

__all__ = ["Server", "ServerStats", "serve"]

logger = logging.getLogger("logstore.server")

_RECV_BYTES = 256 * 1024
_RECV_TICK_S = 1.0  # an idle connection's recv wakes this often to check its deadline
_MAX_SENDFILE_CHUNK = 1 << 30  # as CPython (bpo-38319): some kernels misbehave above 2 GiB
_COPY_CHUNK = 1024 * 1024
_MSG_MORE = getattr(socket, "MSG_MORE", 0)
_HAS_SENDFILE = hasattr(os, "sendfile")
AUTO, SENDFILE, MAPPED, COPY = "auto", "sendfile", "mapped", "copy"
TRANSPORTS = (AUTO, SENDFILE, MAPPED, COPY)
_MAPPED_MIN_BYTES = 256 * 1024  # smaller regions go by sendfile: a map of a growing segment is remade per read
_TCP_CORK = getattr(socket, "TCP_CORK", None)  # Linux
_BUFFERS = (bytes, bytearray, memoryview)
# errnos of a first os.sendfile call that mean "not supported here" rather than "connection
# broken": only these switch a connection to the copying path
_SENDFILE_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.ENOTSOCK, errno.EOPNOTSUPP, errno.ENOTSUP}
_DISCONNECTS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


class RegionShrunkError(OSError):
    """A segment file ended (or was closed) before the region being sent from it did."""


@dataclass
class ServerStats:
    """Counters for tests and benchmarks (updated under the server's lock)."""

    connections_accepted: int = 0
    connections_refused: int = 0
    requests: int = 0
    bytes_sendfile: int = 0
    """Record bytes written by ``os.sendfile`` (never seen by Python)."""
    bytes_copied: int = 0
    """Record bytes read into Python and written with ``sendall`` (the ``copy`` transport)."""
    bytes_mapped: int = 0
    """Record bytes the kernel copied into the socket from a memory map of the segment (the
    ``mapped`` transport; never read by Python)."""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str, amount: int = 1) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + amount)


class Server:
    """Serve ``store`` over the Kafka protocol as one node; see the module docstring.

    ``host``/``port`` is the address to bind (port 0: any free port, read ``server.port`` after
    ``start``). ``advertised_host``/``advertised_port`` is what Metadata tells clients to dial
    (default: the bound address). ``auto_create_topics`` and ``default_partitions`` behave as
    Kafka's ``auto.create.topics.enable`` and ``num.partitions`` (default: the store's).
    ``transport`` is how record bytes leave (see "Transports" in the module docstring):
    ``"auto"`` (the default: ``mapped`` for loopback peers, ``sendfile`` for the others),
    ``"sendfile"``, ``"mapped"`` or ``"copy"`` (``pread`` + ``sendall``; for comparison, and what
    TLS would need). ``group_config`` configures the consumer
    group coordinator (``logstore.server.groups.GroupConfig``: session timeout bounds, initial
    rebalance delay); ``server.broker.groups`` is the coordinator, for inspection.

    Bounds: ``max_frame_bytes`` (largest request; Kafka's ``socket.request.max.bytes``),
    ``max_connections`` (further ones are closed at once), ``idle_timeout_s`` (Kafka's
    ``connections.max.idle.ms``; also the time a request may take to arrive),
    ``send_timeout_s`` (a client reading nothing that long is dropped), ``max_fetch_wait_s`` (cap
    on a Fetch's ``max_wait``), ``fetch_poll_s`` (how soon a long poll notices appends made on
    the store directly rather than through Produce; call ``notify_appended()`` to wake it now).

    The server never closes ``store``: whoever opened it does, after ``close()``.
    """

    def __init__(
        self,
        store,
        *,
        host: str = "127.0.0.1",
        port: int = 9092,
        advertised_host: str | None = None,
        advertised_port: int | None = None,
        auto_create_topics: bool = True,
        default_partitions: int | None = None,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        max_connections: int = 1000,
        idle_timeout_s: float = 600.0,
        send_timeout_s: float = 30.0,
        fetch_poll_s: float = 0.1,
        max_fetch_wait_s: float = 30.0,
        transport: str = "auto",
        backlog: int = 128,
        group_config=None,
    ):
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}, got {transport!r}")
        for name, value in (("idle_timeout_s", idle_timeout_s), ("send_timeout_s", send_timeout_s)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        self.store = store
        self.host = host
        self.port = port
        self._advertised_host = advertised_host
        self._advertised_port = advertised_port
        self._broker_options = dict(
            auto_create_topics=auto_create_topics,
            default_partitions=default_partitions,
            fetch_poll_s=fetch_poll_s,
            max_fetch_wait_s=max_fetch_wait_s,
            group_config=group_config,
        )
        self.max_frame_bytes = max_frame_bytes
        self.max_connections = max_connections
        self.idle_timeout_s = idle_timeout_s
        self.send_timeout_s = send_timeout_s
        self.transport = transport
        self.backlog = backlog
        self.stats = ServerStats()
        self.broker: Broker | None = None
        self._listener: socket.socket | None = None
        self._wakeup_r: socket.socket | None = None
        self._wakeup_w: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._stopping = threading.Event()
        self._closed = threading.Event()

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Server:
        """Bind, listen and start accepting; returns self. Raises ``OSError`` if the bind fails."""
        if self._listener is not None:
            raise RuntimeError("server already started")
        listener = socket.create_server((self.host, self.port), backlog=self.backlog, reuse_port=False)
        self._listener = listener
        self.host, self.port = listener.getsockname()[:2]
        advertised_host = self._advertised_host or self.host
        if advertised_host in ("0.0.0.0", "::", ""):
            advertised_host = socket.gethostname()
            logger.warning(
                "bound to a wildcard address; advertising %r (set advertised_host to what clients dial)",
                advertised_host,
            )
        self.advertised_host = advertised_host
        self.advertised_port = self._advertised_port or self.port
        self.broker = Broker(
            self.store, advertised_host=advertised_host, advertised_port=self.advertised_port, **self._broker_options
        )
        self._wakeup_r, self._wakeup_w = socket.socketpair()
        self._accept_thread = threading.Thread(target=self._accept_loop, name="logstore-accept", daemon=True)
        self._accept_thread.start()
        logger.info("serving %s on %s:%d (advertised %s:%d)", self.store.data_dir, self.host, self.port,
                    advertised_host, self.advertised_port)
        return self

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop accepting, wake long polls, close every connection and join the threads.

        In-flight requests finish (an append under way completes); idempotent.
        """
        if self._stopping.is_set():
            self._closed.wait(timeout_s)
            return
        self._stopping.set()
        try:
            if self._wakeup_w is not None:
                try:
                    self._wakeup_w.send(b"x")
                except OSError:
                    pass
            if self.broker is not None:
                self.broker.close()
            if self._accept_thread is not None:
                self._accept_thread.join(timeout_s)
            with self._lock:
                connections = list(self._connections.items())
            for sock, _thread in connections:
                try:
                    sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked recv or send
                except OSError:
                    pass
            deadline = time.monotonic() + timeout_s
            for _sock, thread in connections:
                thread.join(max(0.0, deadline - time.monotonic()))
            for sock in (self._listener, self._wakeup_r, self._wakeup_w):
                if sock is not None:
                    sock.close()
            logger.info("server on %s:%d stopped", self.host, self.port)
        finally:
            self._closed.set()

    def serve_forever(self) -> None:
        """Block until ``close()`` is called from another thread (or a signal handler)."""
        while not self._stopping.wait(1.0):
            pass

    def __enter__(self) -> Server:
        if self._listener is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def bootstrap_servers(self) -> str:
        """``"host:port"`` as clients should be configured."""
        return f"{self.advertised_host}:{self.advertised_port}"

    def notify_appended(self) -> None:
        """Wake long-polling fetches now, after appending to the store directly (otherwise they
        notice at the next ``fetch_poll_s`` tick)."""
        if self.broker is not None:
            self.broker.notify_appended()

    @property
    def connection_count(self) -> int:
        with self._lock:
            return len(self._connections)

    # --- accepting ----------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(self._wakeup_r, selectors.EVENT_READ)
            while not self._stopping.is_set():
                ready = [key.fileobj for key, _ in selector.select()]
                if self._wakeup_r in ready or self._stopping.is_set():
                    return
                try:
                    sock, peer = self._listener.accept()
                except OSError as e:  # e.g. EMFILE: keep serving the connections we have
                    logger.warning("accept failed: %s", e)
                    time.sleep(0.05)
                    continue
                self._admit(sock, peer)

    def _admit(self, sock: socket.socket, peer) -> None:
        with self._lock:
            if len(self._connections) >= self.max_connections:
                refused = True
            else:
                refused = False
                thread = threading.Thread(
                    target=self._serve_connection, args=(sock, peer), name=f"logstore-conn-{peer}", daemon=True
                )
                self._connections[sock] = thread
        if refused:
            self.stats.add("connections_refused")
            logger.warning("refusing connection from %s: %d connections open (max_connections)", peer,
                           self.max_connections)
            sock.close()
            return
        self.stats.add("connections_accepted")
        thread.start()

    # --- one connection -----------------------------------------------------------------------

    def _serve_connection(self, sock: socket.socket, peer) -> None:
        connection = _Connection(sock, peer, _transport_for(self.transport, peer))
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection.kernel_send_timeout = _set_kernel_timeout(sock, "SO_SNDTIMEO", self.send_timeout_s)
            # recv wakes at least every tick to check the idle deadline (the deadline itself is
            # exact to within a tick); with both kernel timeouts the socket stays blocking
            connection.recv_tick_s = min(self.idle_timeout_s, _RECV_TICK_S)
            connection.kernel_timeouts = connection.kernel_send_timeout and _set_kernel_timeout(
                sock, "SO_RCVTIMEO", connection.recv_tick_s)
            if connection.kernel_timeouts:
                sock.settimeout(None)
            self._request_loop(connection)
        except _DISCONNECTS:
            logger.debug("%s disconnected", peer)
        except RegionShrunkError as e:
            logger.warning("closing connection from %s: %s", peer, e)
        except (TimeoutError, BlockingIOError):  # BlockingIOError: SO_SNDTIMEO expired in a send
            logger.info("closing connection from %s: no progress for %s s", peer, self.send_timeout_s)
        except OSError as e:
            if not self._stopping.is_set():
                logger.info("closing connection from %s: %s", peer, e)
        except Exception:
            logger.exception("closing connection from %s after an internal error", peer)
        finally:
            with self._lock:
                self._connections.pop(sock, None)
            sock.close()

    def _request_loop(self, connection: _Connection) -> None:
        sock, peer = connection.sock, connection.peer
        decoder = FrameDecoder(self.max_frame_bytes)
        broker = self.broker
        deadline = time.monotonic() + self.idle_timeout_s
        while not self._stopping.is_set():
            try:
                frame = decoder.next_frame()
            except FrameSizeError as e:
                logger.warning("closing connection from %s: %s", peer, e)
                return
            if frame is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    logger.info("closing connection from %s: idle for %.0f s", peer, self.idle_timeout_s)
                    return
                if not connection.kernel_timeouts:
                    sock.settimeout(remaining)
                try:
                    data = sock.recv(_RECV_BYTES)
                except (TimeoutError, BlockingIOError):  # (BlockingIOError: SO_RCVTIMEO's tick)
                    continue  # the deadline check above decides
                if not data:
                    if decoder.buffered_bytes:
                        logger.warning("connection from %s closed in the middle of a %s-byte request frame",
                                       peer, decoder.buffered_bytes)
                    return
                if decoder.buffered_bytes == 0:  # a new frame starts: it must arrive in time
                    deadline = time.monotonic() + self.idle_timeout_s
                decoder.feed(data)
                continue
            try:
                request = decode_request(frame)
            except RequestError as e:
                parts = broker.answer_request_error(e)
                if parts is None:
                    logger.warning("closing connection from %s: %s", peer, e)
                    return
                logger.debug("answered %s from %s with an error: %s", _api_name(e), peer, e)
            else:
                self.stats.add("requests")
                try:
                    parts = broker.handle(request)
                except CloseConnection as e:
                    logger.warning("closing connection from %s: %s", peer, e)
                    return
            if parts:
                self._send_parts(connection, parts)
            deadline = time.monotonic() + self.idle_timeout_s

    # --- writing ------------------------------------------------------------------------------

    def _send_parts(self, connection: _Connection, parts: list) -> None:
        sock = connection.sock
        # Blocking while sending (bounded by SO_SNDTIMEO, see _serve_connection): os.sendfile then
        # moves a whole region per call, waiting for buffer space inside the kernel, instead of
        # returning at every full socket buffer for a poll round trip through Python.
        if not connection.kernel_timeouts:
            sock.settimeout(None if connection.kernel_send_timeout else self.send_timeout_s)
        # Corked while a response with record regions goes out: only full segments leave until
        # the last part is written (see the module docstring). A response of buffers alone needs
        # no cork: MSG_MORE on all but the last one holds them together.
        # (Mapped sends are not corked: their sendall calls fill segments, and corked they ran
        # 25-35% slower with 1 MiB fetches; MSG_MORE holds the parts of a response together.)
        corked = (
            connection.cork
            and connection.transport != MAPPED
            and not all(isinstance(part, _BUFFERS) for part in parts)
            and _cork(connection, 1)
        )
        last = len(parts) - 1
        for i, part in enumerate(parts):
            if isinstance(part, _BUFFERS):
                sock.sendall(part, _MSG_MORE if i < last else 0)
            elif connection.transport == MAPPED and part.size >= _MAPPED_MIN_BYTES and self._send_mapped(
                connection, part, _MSG_MORE if i < last else 0
            ):
                pass
            elif connection.transport != COPY and _HAS_SENDFILE:
                self._sendfile_region(connection, part)
            else:
                self._copy_region(sock, part, part.position, part.size)
        if corked:
            _cork(connection, 0)  # uncorking sends the last partial segment at once

    def _sendfile_region(self, connection: _Connection, region) -> None:
        """Send ``region`` with ``os.sendfile`` until all of it is sent (see module docstring)."""
        sock = connection.sock
        sockno = sock.fileno()
        fd, offset, remaining = region.fd, region.position, region.size
        owner = getattr(region, "owner", None)
        first = not connection.sendfile_proven
        selector = None
        try:
            while remaining:
                if owner is not None and getattr(owner, "fd", fd) != fd:
                    raise RegionShrunkError(f"segment file {getattr(region, 'path', fd)} was closed while being sent")
                try:
                    sent = os.sendfile(sockno, fd, offset, min(remaining, _MAX_SENDFILE_CHUNK))
                except BlockingIOError:
                    if connection.kernel_send_timeout:  # blocking socket: SO_SNDTIMEO expired
                        raise TimeoutError(f"no send progress for {self.send_timeout_s} s") from None
                    if selector is None:
                        selector = selectors.DefaultSelector()
                        selector.register(sockno, selectors.EVENT_WRITE)
                    if not selector.select(self.send_timeout_s):
                        raise TimeoutError(f"no send progress for {self.send_timeout_s} s") from None
                    continue
                except OSError as e:
                    if first and e.errno in _SENDFILE_UNSUPPORTED:
                        logger.info("os.sendfile unsupported here (%s); copying record bytes instead", e)
                        connection.transport = COPY
                        self._copy_region(sock, region, offset, remaining)
                        return
                    raise
                if sent == 0:
                    raise RegionShrunkError(
                        f"{getattr(region, 'path', fd)} ended at byte {offset}, {remaining} bytes short of the "
                        "region being sent (the segment was truncated)"
                    )
                first = False
                connection.sendfile_proven = True
                offset += sent
                remaining -= sent
                self.stats.add("bytes_sendfile", sent)
        finally:
            if selector is not None:
                selector.close()

    def _send_mapped(self, connection: _Connection, region, flags: int) -> bool:
        """Send ``region`` with ``sendall`` from a memory map of its segment file (the kernel
        copies from the page cache; Python never reads the bytes). False, having sent nothing,
        where the region's file cannot be mapped: the caller sends it another way (and so does
        this connection from now on)."""
        view_of = getattr(getattr(region, "owner", None), "view", None)
        try:
            view = view_of(region.position, region.size) if view_of is not None else None
        except (OSError, ValueError, OverflowError) as e:
            logger.info("cannot map %s (%s); sending with os.sendfile instead", getattr(region, "path", "?"), e)
            connection.transport = SENDFILE
            return False
        if view is None:
            if view_of is None:
                connection.transport = SENDFILE
                return False
            raise RegionShrunkError(f"{getattr(region, 'path', region.fd)} ends before the region being sent (truncated)")
        try:
            connection.sock.sendall(view, flags)
        except OSError as e:
            if e.errno == errno.EFAULT:  # a page of the map is gone: the file was truncated meanwhile
                raise RegionShrunkError(
                    f"{getattr(region, 'path', region.fd)} was truncated while a region of it was being sent"
                ) from None
            raise
        finally:
            view.release()
        self.stats.add("bytes_mapped", region.size)
        return True

    def _copy_region(self, sock: socket.socket, region, offset: int, remaining: int) -> None:
        """The fallback: ``pread`` the region into memory and ``sendall`` it."""
        while remaining:
            chunk = os.pread(region.fd, min(remaining, _COPY_CHUNK), offset)
            if not chunk:
                raise RegionShrunkError(f"{getattr(region, 'path', region.fd)} ended {remaining} bytes short")
            sock.sendall(chunk)
            offset += len(chunk)
            remaining -= len(chunk)
            self.stats.add("bytes_copied", len(chunk))


class _Connection:
    __slots__ = ("sock", "peer", "transport", "cork", "sendfile_proven", "kernel_send_timeout", "kernel_timeouts",
                 "recv_tick_s")

    def __init__(self, sock: socket.socket, peer, transport: str):
        self.sock = sock
        self.peer = peer
        self.transport = transport  # SENDFILE, MAPPED or COPY (resolved from the server's setting)
        self.cork = _TCP_CORK is not None  # cleared if setting TCP_CORK fails (not a TCP socket)
        self.sendfile_proven = False  # a sendfile call succeeded: later failures are not "unsupported"
        self.kernel_send_timeout = False  # SO_SNDTIMEO is set: sends may block in the kernel
        # SO_RCVTIMEO too: the socket stays blocking, recv wakes every recv_tick_s when idle
        # (no switching between blocking and timeout modes, no poll before each recv)
        self.kernel_timeouts = False
        self.recv_tick_s = 0.0


def _transport_for(setting: str, peer) -> str:
    """The transport of a connection from ``peer``: ``auto`` is ``mapped`` for a loopback peer
    and ``sendfile`` otherwise (see "Transports" in the module docstring)."""
    if setting != AUTO:
        return setting
    try:
        address = ipaddress.ip_address(peer[0])
    except (TypeError, ValueError, IndexError):  # (not an IP socket)
        return SENDFILE
    mapped = getattr(address, "ipv4_mapped", None)  # (::ffff:127.0.0.1)
    return MAPPED if address.is_loopback or (mapped is not None and mapped.is_loopback) else SENDFILE


def _cork(connection: _Connection, on: int) -> bool:
    """Set or clear ``TCP_CORK`` on the connection's socket; False (and never again) if it has none."""
    try:
        connection.sock.setsockopt(socket.IPPROTO_TCP, _TCP_CORK, on)
    except OSError:
        connection.cork = False
        return False
    return True


def _set_kernel_timeout(sock: socket.socket, option: str, seconds: float) -> bool:
    """Bound every blocking send (``SO_SNDTIMEO``) or receive (``SO_RCVTIMEO``) on ``sock`` by
    ``seconds`` without progress; an expired one fails with EAGAIN (``BlockingIOError``).
    Returns False where the option is unavailable (then Python timeouts poll instead)."""
    whole = int(seconds)
    try:
        sock.setsockopt(socket.SOL_SOCKET, getattr(socket, option),
                        struct.pack("ll", whole, max(int((seconds - whole) * 1e6), 0 if whole else 1000)))
    except (OSError, AttributeError, struct.error):
        return False
    return True


def _api_name(error: RequestError) -> str:
    from logstore.server.messages import ApiKey

    try:
        return f"{ApiKey(error.api_key).name} v{error.api_version}"
    except ValueError:
        return f"api_key {error.api_key}"


def serve(store, *, host: str = "127.0.0.1", port: int = 9092, **options) -> Server:
    """Start serving ``store`` in background threads; returns the started ``Server``.

    Use as ``with serve(store, port=0) as server: ... server.port ...``; leaving the block closes
    the server (not the store). Options are those of :class:`Server`.
    """
    return Server(store, host=host, port=port, **options).start()
