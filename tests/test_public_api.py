"""The public surface is small and explicit: this test pins it (trio's test_exports idea)."""

import importlib
import subprocess
import sys

import logstore

EXPECTED = {
    "LogStore", "TopicDescription", "PartitionAppend", "GroupConsumer", "OffsetAndMetadata",
    "Log", "LogConfig", "AppendInfo", "OffsetAndTimestamp", "Record", "Compression", "FileSlice",
    "LATEST", "EARLIEST", "MAX_TIMESTAMP", "LogStoreError", "CorruptionError", "CorruptBatchError",
    "CorruptIndexError", "OffsetOutOfRangeError", "RecordTooLargeError", "InvalidRecordError", "LogClosedError",
    "LogLockedError", "ConfigError", "TopicError", "ProtocolError",
}


def test_all_is_pinned():
    assert set(logstore.__all__) == EXPECTED
    for name in logstore.__all__:
        assert getattr(logstore, name) is not None


def test_errors_form_one_hierarchy():
    for name in EXPECTED:
        obj = getattr(logstore, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, logstore.LogStoreError), name
    assert issubclass(logstore.CorruptBatchError, logstore.CorruptionError)
    assert issubclass(logstore.CorruptIndexError, logstore.CorruptionError)
    assert issubclass(logstore.ConfigError, ValueError)


def test_errors_pickle_with_their_attributes():
    import pickle

    error = pickle.loads(pickle.dumps(logstore.CorruptBatchError("bad crc", path="/x.log", position=42)))
    assert (error.path, error.position) == ("/x.log", 42) and "bad crc" in str(error)
    error = pickle.loads(pickle.dumps(logstore.OffsetOutOfRangeError(9, 1, 5)))
    assert (error.offset, error.log_start_offset, error.log_end_offset) == (9, 1, 5)


def test_core_never_imports_the_server_or_threads_module():
    code = (
        "import sys, logstore, logstore.log, logstore.store, logstore.dump, logstore.verify\n"
        "bad = [m for m in sys.modules if m.startswith('logstore.server')]\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_subpackages_are_not_top_level():
    for name in ("index", "server"):
        assert importlib.util.find_spec(f"logstore.{name}") is not None
        assert importlib.util.find_spec(name) is None or not importlib.util.find_spec(name).origin.startswith(
            logstore.__path__[0]
        )
