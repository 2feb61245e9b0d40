"""The ``logstore`` command line (also ``python -m logstore``).

Commands::

    logstore dump FILE... [--print-data-log] [--deep-iteration] [--verify-index-only]
                          [--index-sanity-check] [--max-bytes N] [--json]
    logstore verify DATA_DIR [--topic T] [--progress | --no-progress]
    logstore topics DATA_DIR list
    logstore topics DATA_DIR create TOPIC [--partitions N] [--config KEY=VALUE ...]
    logstore topics DATA_DIR describe TOPIC
    logstore topics DATA_DIR delete TOPIC
    logstore serve [--data DIR] [--host 127.0.0.1] [--port 9092] [...]   (see logstore serve --help)
    logstore bench [--quick] [--scenario NAME...] [--record-bytes 100,1024,10240] [--data DIR]

``serve`` runs the Kafka-protocol server (:mod:`logstore.server`) until Ctrl-C or SIGTERM.
``dump`` and ``verify`` read files offline and never write (see :mod:`logstore.dump` and
:mod:`logstore.verify`); ``topics`` opens the store and so takes its lock.

Exit status (every command)::

    0   success; for verify and the dump checks: nothing wrong found
    1   problems found (verify; dump --verify-index-only / --index-sanity-check), or the output
        pipe closed early
    2   usage or input error: a bad argument, a missing file or directory, an invalid topic
        name or config, a data directory locked by another process
    130 interrupted (Ctrl-C)

Errors that logstore expects (:class:`~logstore.errors.LogStoreError` and ``OSError``) are printed
as one line, ``logstore: error: ...``, never as a traceback.

Adding a command: write a module with ``add_parser(subparsers) -> ArgumentParser`` whose parser
sets ``func=run`` (``run(args) -> int``), and list its ``add_parser`` in ``_COMMANDS`` (bbolt style:
one module per command; ``serve`` and ``bench`` are meant to arrive that way).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from . import __version__, dump, verify
from .benchmarks import cli as bench_cli
from .config import KAFKA_CONFIG_NAMES, LogConfig, kafka_config_changes
from .errors import LogStoreError
from .server import cli as serve_cli

__all__ = ["main", "build_parser", "parse_config_pair"]

_FIELDS = {f.name for f in dataclasses.fields(LogConfig)}


# --- topics -------------------------------------------------------------------------------------


def parse_config_pair(text: str) -> tuple[str, str]:
    """``"segment.bytes=1048576"`` -> ``("segment.bytes", "1048576")``, refusing unknown keys.

    Keys are LogConfig field names or Kafka's dotted names; values are parsed and validated by
    :func:`logstore.config.kafka_config_changes` (numbers become ints, -1 unsets a limit).
    """
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    if KAFKA_CONFIG_NAMES.get(key, key) not in _FIELDS:
        known = ", ".join(sorted(_FIELDS))
        raise argparse.ArgumentTypeError(f"unknown config key {key!r}; known keys: {known}")
    return key, value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _add_topics_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "topics",
        help="list, create, describe or delete topics of a data directory",
        description="Manage the topics of a data directory. Opens the store, so it takes the "
        "directory's lock: it fails (exit 2) while another process has the store open.",
    )
    parser.add_argument("data_dir", metavar="DATA_DIR", help="a logstore data directory")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="topic names, one per line", description="Print the topic names, one per line.")
    create = actions.add_parser(
        "create",
        help="create a topic",
        description="Create a topic (and DATA_DIR if missing). KEY is a LogConfig field "
        "(segment_bytes) or Kafka's name (segment.bytes); numbers become ints; -1 unsets the "
        "limits that may be unset (retention_ms, retention_bytes, flush_messages).",
    )
    create.add_argument("topic", metavar="TOPIC")
    create.add_argument("--partitions", type=_positive_int, default=1, metavar="N", help="partition count (default 1)")
    create.add_argument(
        "--config",
        type=parse_config_pair,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a topic setting; repeat for more",
    )
    describe = actions.add_parser(
        "describe",
        help="partition count, settings and offsets of a topic",
        description="Print the topic's partition count and settings that differ from the "
        "defaults, then one line per partition with its offsets and size.",
    )
    describe.add_argument("topic", metavar="TOPIC")
    delete = actions.add_parser("delete", help="delete a topic and its data", description="Delete a topic and its data.")
    delete.add_argument("topic", metavar="TOPIC")
    parser.set_defaults(func=_run_topics)
    return parser


def _run_topics(args: argparse.Namespace) -> int:
    from .store import LogStore  # not imported by dump/verify: they must work without it

    if args.action != "create" and not os.path.isdir(args.data_dir):
        print(f"logstore: error: data directory {args.data_dir} does not exist", file=sys.stderr)
        return 2
    with LogStore(args.data_dir, background=False) as store:
        if args.action == "list":
            for name in store.topics():
                print(name)
        elif args.action == "create":
            description = store.create_topic(args.topic, args.partitions, kafka_config_changes(args.config))
            print(f"Created topic {description.name} with {description.partitions} partitions.")
        elif args.action == "describe":
            _describe(store, args.topic)
        else:
            store.delete_topic(args.topic)
            print(f"Deleted topic {args.topic}.")
    return 0


def _describe(store, topic: str) -> None:
    description = store.describe_topic(topic)
    defaults = LogConfig().to_dict()
    overrides = {k: v for k, v in description.config.to_dict().items() if v != defaults[k]}
    configs = ",".join(f"{k}={'-1' if v is None else v}" for k, v in overrides.items())
    print(f"Topic: {description.name}\tPartitionCount: {description.partitions}\tConfigs: {configs}")
    for partition in range(description.partitions):
        log = store.log(topic, partition)
        print(
            f"\tTopic: {description.name}\tPartition: {partition}\tLogStartOffset: {log.log_start_offset}"
            f"\tLogEndOffset: {log.log_end_offset}\tSizeBytes: {log.size_bytes}"
        )


# --- entry point --------------------------------------------------------------------------------

_COMMANDS = (dump.add_parser, verify.add_parser, _add_topics_parser, serve_cli.add_parser, bench_cli.add_parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="logstore",
        description="Tools for logstore data directories: Apache Kafka's storage layer as a Python library.",
        epilog="exit status: 0 ok; 1 problems found or failure; 2 usage or input error",
    )
    parser.add_argument("--version", action="version", version=f"logstore {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add_parser in _COMMANDS:
        add_parser(subparsers)
    return parser


def _error_text(error: BaseException) -> str:
    if isinstance(error, OSError):
        return dump.os_error_text(error)
    return str(error)


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (usage errors return 2, ``--help`` 0)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit:  # argparse exits on --help, --version and usage errors
        return exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 2)
    try:
        return args.func(args)
    except BrokenPipeError:
        # the reader went away (`| head`): stay quiet, and keep Python from complaining at exit
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return 1
    except (LogStoreError, OSError) as error:
        print(f"logstore: error: {_error_text(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("logstore: interrupted", file=sys.stderr)
        return 130
