"""The ``logstore`` command line: exit codes, one-line errors, verify, topics round trip."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from logstore import ConfigError, LogConfig
from logstore.cli import main, parse_config_pair
from logstore.store import LogStore

SMALL = {"segment_bytes": 800, "index_interval_bytes": 100, "durability": "none"}


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err.splitlines()


def fill_store(data_dir, topic="orders", partitions=2, batches=30):
    with LogStore(data_dir, background=False) as store:
        store.create_topic(topic, partitions, dict(SMALL))
        for i in range(batches):
            store.append(topic, [b"value-%d" % i] * 5, partition=i % partitions, timestamps_ms=1_000 + i)


def snapshot(directory):
    """Every file's name, size and mtime: what a read-only command must leave alone."""
    found = {}
    for root, _dirs, files in os.walk(directory):
        for name in files:
            st = os.stat(os.path.join(root, name))
            found[os.path.join(root, name)] = (st.st_size, st.st_mtime_ns)
    return found


def sealed_log(data_dir, topic="orders", partition=0):
    directory = os.path.join(data_dir, f"{topic}-{partition}")
    logs = sorted(n for n in os.listdir(directory) if n.endswith(".log"))
    assert len(logs) >= 2, "the test needs a sealed segment"
    return os.path.join(directory, logs[0])


# --- usage and errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [[], ["dump"], ["nope"], ["dump", "--max-bytes", "-1", "x.log"], ["verify"], ["topics", "d"], ["topics", "d", "create"]],
)
def test_usage_errors_exit_2(capsys, argv):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == [] and any("error:" in line for line in err)


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["dump", "--help"],
        ["verify", "--help"],
        ["topics", "--help"],
        ["topics", "d", "list", "--help"],
        ["topics", "d", "create", "--help"],
        ["topics", "d", "describe", "--help"],
        ["topics", "d", "delete", "--help"],
    ],
)
def test_help_on_every_command(capsys, argv):
    code, out, _ = run(capsys, *argv)
    assert code == 0 and out[0].startswith("usage: logstore")


def test_verify_help_warns_about_a_live_store(capsys):
    _, out, _ = run(capsys, "verify", "--help")
    text = " ".join(" ".join(out).split())
    assert "lock" in text and "exactness" in text


def test_python_dash_m_runs_the_cli(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "logstore", "dump", str(tmp_path / "missing.log")], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"logstore: error: No such file or directory: {tmp_path / 'missing.log'}"]
    assert result.stdout.splitlines() == [f"Dumping {tmp_path / 'missing.log'}"]


def test_dump_through_main(capsys, tmp_path):
    fill_store(tmp_path / "data")
    path = sealed_log(tmp_path / "data")
    code, out, err = run(capsys, "dump", path, "--deep-iteration")
    assert code == 0 and err == []
    assert out[:2] == [f"Dumping {path}", "Log starting offset: 0"]
    assert out[2].startswith("baseOffset: 0 lastOffset: 4 count: 5 ") and out[2].endswith("isvalid: true")
    assert out[3].startswith("| offset: 0 CreateTime: 1000 keySize: -1 valueSize: 7 ")


# --- verify -------------------------------------------------------------------------------------


def test_verify_clean_store_exits_0_and_writes_nothing(capsys, tmp_path):
    data = tmp_path / "data"
    fill_store(data)
    before = snapshot(data)
    code, out, err = run(capsys, "verify", data)
    assert code == 0 and err == []
    assert out[-1].startswith("verify: no problems (") and "2 partitions" in out[-1]
    assert snapshot(data) == before


def test_verify_finds_a_flipped_byte_in_a_sealed_segment(capsys, tmp_path):
    data = tmp_path / "data"
    fill_store(data)
    path = sealed_log(data)
    with open(path, "r+b") as f:
        second = 12 + int.from_bytes(f.read(12)[8:], "big")  # where the second batch starts
        f.seek(second + 80)  # inside its records, which the CRC covers
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x10]))
    code, out, _ = run(capsys, "verify", data)
    assert code == 1
    problems = [line for line in out if not line.startswith("verify:") and ": note: " not in line]
    assert len(problems) == 1
    assert problems[0].startswith(f"{path}: position {second}: batch (offsets 5..9): ") and "CRC-32C mismatch" in problems[0]
    assert out[-1].startswith("verify: 1 problem in 1 segment (")


def test_verify_finds_a_torn_tail_and_a_bad_index_entry(capsys, tmp_path):
    data = tmp_path / "data"
    fill_store(data)
    path = sealed_log(data)
    size = os.path.getsize(path)
    with open(path, "ab") as f:
        f.write(b"\xff" * 40)
    index = path[: -len(".log")] + ".index"
    with open(index, "r+b") as f:
        f.seek(4)
        f.write((7).to_bytes(4, "big"))  # entry 0 now points into the middle of a batch
    code, out, _ = run(capsys, "verify", data)
    assert code == 1
    assert any(line.startswith(f"{path}: position {size}: 40 invalid bytes after the last valid batch") for line in out)
    assert any(
        line.startswith(f"{index}: position 0: entry 0 (offset ") and "no batch starts at .log position 7" in line
        for line in out
    )


def test_verify_beside_an_open_store_without_the_lock(capsys, tmp_path):
    data = tmp_path / "data"
    fill_store(data)
    with LogStore(data, background=False) as store:
        store.append("orders", [b"x"] * 3, partition=0)
        code, out, _ = run(capsys, "verify", data, "--topic", "orders")
    assert code == 0, out  # the active segment's untrimmed index is a note, not a problem
    assert any(": note: " in line and "zero entries" in line for line in out)


def test_verify_topic_filter_and_input_errors(capsys, tmp_path):
    data = tmp_path / "data"
    fill_store(data)
    code, out, _ = run(capsys, "verify", data, "--topic", "orders")
    assert code == 0 and "2 partitions" in out[-1]
    code, out, err = run(capsys, "verify", data, "--topic", "other")
    assert code == 2 and err == [f"logstore: error: no partitions of topic 'other' in {data}"]
    code, out, err = run(capsys, "verify", tmp_path / "missing")
    assert code == 2 and err == [f"logstore: error: No such file or directory: {tmp_path / 'missing'}"]


def test_verify_progress_bar_goes_to_stderr(capsys, tmp_path):
    data = tmp_path / "data"
    fill_store(data, partitions=1, batches=3)
    code, out, err = run(capsys, "verify", data, "--progress")
    assert code == 0 and "verify [" in "".join(err) and not any("verify [" in line for line in out)


# --- topics -------------------------------------------------------------------------------------


def test_topics_round_trip(capsys, tmp_path):
    data = tmp_path / "data"
    configs = ["--config", "segment.bytes=4096", "--config", "retention_ms=-1", "--config", "durability=none"]
    code, out, _ = run(capsys, "topics", data, "create", "orders", "--partitions", 3, *configs)
    assert code == 0 and out == ["Created topic orders with 3 partitions."]
    assert run(capsys, "topics", data, "create", "audit")[0] == 0
    assert run(capsys, "topics", data, "list") == (0, ["audit", "orders"], [])

    code, out, _ = run(capsys, "topics", data, "describe", "orders")
    assert code == 0
    assert out[0] == "Topic: orders\tPartitionCount: 3\tConfigs: segment_bytes=4096,durability=none,retention_ms=-1"
    assert out[1:] == [
        f"\tTopic: orders\tPartition: {p}\tLogStartOffset: 0\tLogEndOffset: 0\tSizeBytes: 0" for p in range(3)
    ]
    with LogStore(data, background=False) as store:
        config = store.describe_topic("orders").config
        assert (config.segment_bytes, config.retention_ms, config.durability) == (4096, None, "none")

    assert run(capsys, "topics", data, "delete", "orders") == (0, ["Deleted topic orders."], [])
    assert run(capsys, "topics", data, "list") == (0, ["audit"], [])
    assert not os.path.exists(data / "orders-0")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["create", "bad name"], "logstore: error: invalid topic name 'bad name'"),
        (["create", "audit"], "logstore: error: topic 'audit' already exists"),
        (["create", "t2", "--config", "segment_bytes=abc"], "logstore: error: segment_bytes='abc' is not an integer"),
        (["describe", "nope"], "logstore: error: topic 'nope' does not exist"),
        (["delete", "nope"], "logstore: error: topic 'nope' does not exist"),
    ],
)
def test_topics_errors_are_one_line_exit_2(capsys, tmp_path, argv, message):
    data = tmp_path / "data"
    run(capsys, "topics", data, "create", "audit")
    code, out, err = run(capsys, "topics", data, *argv)
    assert code == 2 and out == []
    assert len(err) == 1 and err[0].startswith(message)


def test_topics_on_a_locked_directory_names_the_holder(capsys, tmp_path):
    data = tmp_path / "data"
    with LogStore(data, background=False):
        code, out, err = run(capsys, "topics", data, "list")
    assert code == 2 and out == []
    assert len(err) == 1 and err[0].startswith("logstore: error: ") and f"process {os.getpid()}" in err[0]


def test_topics_on_a_missing_directory(capsys, tmp_path):
    code, _, err = run(capsys, "topics", tmp_path / "nope", "list")
    assert code == 2 and err == [f"logstore: error: data directory {tmp_path / 'nope'} does not exist"]
    assert not (tmp_path / "nope").exists()


def test_unknown_config_key_is_a_usage_error(capsys, tmp_path):
    code, _, err = run(capsys, "topics", tmp_path, "create", "t", "--config", "segment.bites=1")
    assert code == 2 and "unknown config key 'segment.bites'" in err[-1]


def test_parse_config_pair():
    from logstore.config import kafka_config_changes

    assert parse_config_pair("segment.bytes=1048576") == ("segment.bytes", "1048576")
    pairs = [parse_config_pair(t) for t in ("segment.bytes=1048576", "max.message.bytes=2000",
                                             "compression.type=zstd", "retention.bytes=-1")]
    assert kafka_config_changes(pairs) == {
        "segment_bytes": 1048576, "max_batch_bytes": 2000, "compression": "zstd", "retention_bytes": None
    }
    with pytest.raises(ConfigError):  # segment_ms cannot be unset: LogConfig refuses -1
        kafka_config_changes([parse_config_pair("segment_ms=-1")])
    assert {parse_config_pair(f"{k}=1")[0] for k in LogConfig().to_dict()} == set(LogConfig().to_dict())
