"""LogConfig: defaults, validation with clear messages, round trip through dicts."""

import pytest

from logstore import ConfigError, LogConfig
from logstore.files import parse_segment_name, segment_path, segment_prefix


def test_defaults_follow_kafka_except_durability():
    config = LogConfig()
    assert config.segment_bytes == 1 << 30
    assert config.segment_ms == 7 * 24 * 3600 * 1000
    assert config.index_interval_bytes == 4096
    assert config.segment_index_bytes == 10 * 1024 * 1024
    assert config.max_batch_bytes == 1_048_588
    assert config.durability == "interval" and config.flush_ms == 1000


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"segment_bytes": 2**31}, "segment_bytes must be between"),
        ({"segment_bytes": 10}, "segment_bytes must be between"),
        ({"segment_bytes": "1"}, "segment_bytes must be an int"),
        ({"segment_bytes": True}, "segment_bytes must be an int"),
        ({"index_interval_bytes": -1}, "index_interval_bytes"),
        ({"segment_index_bytes": 8}, "segment_index_bytes"),
        ({"durability": "always"}, "durability must be one of"),
        ({"flush_ms": 0}, "flush_ms"),
        ({"cleanup_policy": "keep"}, "cleanup_policy"),
        ({"compression": "brotli"}, "compression"),
    ],
)
def test_bad_values_are_refused_with_the_setting_named(changes, message):
    with pytest.raises(ConfigError, match=message):
        LogConfig(**changes)
    with pytest.raises(ValueError):  # ConfigError is also a ValueError
        LogConfig(**changes)


def test_round_trip_and_unknown_keys():
    config = LogConfig(segment_bytes=12345, durability="append", retention_bytes=10)
    assert LogConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="unknown log config keys: nope"):
        LogConfig.from_dict({"nope": 1})
    assert config.replace(segment_bytes=99999).segment_bytes == 99999
    with pytest.raises(ConfigError):
        config.replace(segment_bytes=1)


def test_segment_names():
    assert segment_prefix(42) == "00000000000000000042"
    assert segment_path("/d", 7, ".log") == "/d/00000000000000000007.log"
    assert parse_segment_name("00000000000000000042.timeindex") == (42, ".timeindex", "")
    assert parse_segment_name("00000000000000000042.log.swap") == (42, ".log", ".swap")
    assert parse_segment_name("42.log") is None
    assert parse_segment_name("00000000000000000042.log.bak") is None
    with pytest.raises(ValueError):
        segment_prefix(-1)
