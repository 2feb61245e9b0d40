"""``logstore serve``: serve a data directory over the Kafka protocol until Ctrl-C or SIGTERM.

Hooked into the main CLI with ``add_parser(subparsers)`` (which sets ``func=run``); also runnable
alone as ``python -m logstore.server.cli [options]``.

Shutdown order on SIGINT/SIGTERM: stop accepting and close connections (in-flight requests
finish), then close the store, which fsyncs every partition and writes the clean-shutdown
markers, so the next start skips recovery.

Exit status (the main CLI's convention): 0 after a clean stop (Ctrl-C is how ``serve`` is meant
to stop, so it is not 130 here); 1 if the address cannot be bound; 2 if the data directory cannot
be opened (locked by another process, invalid topics file...).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from logstore.errors import LogStoreError

__all__ = ["add_parser", "build_parser", "main", "run"]

#: ``protocol.DEFAULT_MAX_FRAME_BYTES``, repeated so building the parser does not load the codec
DEFAULT_MAX_FRAME_BYTES = 100 * 1024 * 1024


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default="./data", help="data directory (default: ./data)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9092, help="port to bind (default: 9092; 0: any free port)")
    parser.add_argument(
        "--advertised-host", help="host clients must dial, sent in Metadata (default: the bound host)"
    )
    parser.add_argument("--advertised-port", type=int, help="port sent in Metadata (default: the bound port)")
    parser.add_argument(
        "--partitions", type=int, default=1, help="partitions of auto-created topics (Kafka's num.partitions; default 1)"
    )
    parser.add_argument(
        "--no-auto-create-topics",
        dest="auto_create_topics",
        action="store_false",
        help="answer UNKNOWN_TOPIC_OR_PARTITION instead of creating topics named in Metadata requests",
    )
    parser.add_argument("--max-connections", type=int, default=1000, help="further connections are closed (default 1000)")
    parser.add_argument(
        "--idle-timeout-ms", type=int, default=600_000, help="close connections idle this long (default 600000)"
    )
    parser.add_argument(
        "--max-frame-bytes",
        type=int,
        default=DEFAULT_MAX_FRAME_BYTES,
        help=f"largest request accepted; larger ones close the connection (default {DEFAULT_MAX_FRAME_BYTES})",
    )
    parser.add_argument(
        "--transport",
        choices=("auto", "sendfile", "mapped", "copy"),
        default="auto",
        help="how record bytes are sent: sendfile, mapped (copied by the kernel from a memory map: "
        "faster over loopback), copy (pread + sendall); auto = mapped for loopback peers, sendfile "
        "for the others (default auto)",
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING... (default INFO)")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``serve`` subcommand to an ``argparse`` subparsers object; sets ``func=run``."""
    parser = subparsers.add_parser(
        "serve",
        help="serve a data directory over the Kafka protocol",
        description="Serve a logstore data directory as a single Kafka node (node id 0).",
    )
    _add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="logstore serve", description="Serve a logstore data directory as a single Kafka node (node id 0)."
    )
    _add_arguments(parser)
    return parser


def _raise_open_file_limit() -> None:
    """A server keeps one fd per segment it has read plus one per connection: lift the soft
    limit on open files to the hard limit (as Kafka's docs ask of operators); never fails."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        if soft != resource.RLIM_INFINITY and soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ImportError, ValueError, OSError):
        pass


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; returns the exit status (0 on a clean stop)."""
    from logstore.server.server import Server
    from logstore.store import LogStore

    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=getattr(logging, str(args.log_level).upper(), logging.INFO),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    _raise_open_file_limit()
    try:
        store = LogStore(args.data, default_partitions=args.partitions)
    except (LogStoreError, OSError) as e:
        print(f"logstore serve: error: cannot open {args.data}: {e}", file=sys.stderr)
        return 2
    try:
        server = Server(
            store,
            host=args.host,
            port=args.port,
            advertised_host=args.advertised_host,
            advertised_port=args.advertised_port,
            auto_create_topics=args.auto_create_topics,
            max_connections=args.max_connections,
            idle_timeout_s=args.idle_timeout_ms / 1000,
            max_frame_bytes=args.max_frame_bytes,
            transport=args.transport,
        )
        try:
            server.start()
        except OSError as e:
            print(f"logstore serve: error: cannot listen on {args.host}:{args.port}: {e}", file=sys.stderr)
            return 1
        stop = threading.Event()
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                previous[signum] = signal.signal(signum, lambda *_: stop.set())
        print(f"logstore serve: {store.data_dir} on {server.bootstrap_servers}", flush=True)
        try:
            while not stop.wait(1.0):
                pass
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            server.close()
    finally:
        store.close()
    print("logstore serve: stopped cleanly", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
