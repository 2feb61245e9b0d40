"""Codec framings (logstore.compression): round trips, Kafka's exact framings, damage detection."""

from __future__ import annotations

import os
import random
import struct
import threading
import zlib

import cramjam
import lz4.frame
import pytest
import zstandard

from logstore.compression import DEFAULT_LEVELS, Compression, compress, decompress
from logstore.errors import CorruptBatchError

CODECS = list(Compression)
STREAM_CODECS = [c for c in Compression if c is not Compression.NONE]


def sample(size: int, seed: int = 0) -> bytes:
    """Compressible but not trivial: random words repeated with variations."""
    rng = random.Random(seed)
    words = [rng.randbytes(rng.randrange(1, 12)) for _ in range(64)]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words)
    return bytes(out[:size])


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name.lower())
@pytest.mark.parametrize("size", [0, 1, 100, 65_535, 65_537, 300_000, 1_300_000])
def test_round_trip(codec, size):
    data = sample(size, seed=size)
    packed = compress(codec, data)
    assert decompress(codec, packed) == data
    # bytes-like inputs of every kind
    assert decompress(codec, memoryview(bytearray(packed))) == data
    assert decompress(codec, compress(codec, bytearray(data))) == data


def test_incompressible_data_round_trips():
    data = os.urandom(200_000)
    for codec in CODECS:
        assert decompress(codec, compress(codec, data)) == data


# --- exact framings --------------------------------------------------------------------------


def test_snappy_uses_xerial_framing_with_32k_blocks():
    data = sample(100_000)
    packed = compress(Compression.SNAPPY, data)
    assert packed[:8] == b"\x82SNAPPY\x00"
    assert struct.unpack(">ii", packed[8:16]) == (1, 1)
    pos, pieces = 16, []
    while pos < len(packed):
        (length,) = struct.unpack_from(">i", packed, pos)
        pieces.append(bytes(cramjam.snappy.decompress_raw(packed[pos + 4 : pos + 4 + length])))
        pos += 4 + length
    assert pos == len(packed)
    assert [len(p) for p in pieces] == [32768, 32768, 32768, 100_000 - 3 * 32768]
    assert b"".join(pieces) == data


def test_snappy_reads_raw_block_without_xerial_header():
    data = sample(50_000)
    assert decompress(Compression.SNAPPY, bytes(cramjam.snappy.compress_raw(data))) == data


def test_snappy_ignores_xerial_version_fields():
    # Some producers write the version ints little-endian; the block format is the same.
    data = sample(5_000)
    packed = bytearray(compress(Compression.SNAPPY, data))
    packed[8:16] = struct.pack("<ii", 1, 1)
    assert decompress(Compression.SNAPPY, packed) == data


def test_lz4_frame_flags_match_kafka_writer():
    packed = compress(Compression.LZ4, sample(200_000))
    assert packed[:4] == b"\x04\x22\x4d\x18"  # magic 0x184D2204, little-endian
    flg, bd = packed[4], packed[5]
    assert flg >> 6 == 1  # version 01
    assert flg & 0x20  # independent blocks
    assert not flg & 0x10  # no block checksum
    assert not flg & 0x08  # no content size
    assert not flg & 0x04  # no content checksum
    assert bd == 0x40  # 64 KiB maximum block size
    # several blocks were written (64 KiB each)
    info = lz4.frame.get_frame_info(packed)
    assert info["block_size"] == 65536 and not info["block_linked"]


def test_lz4_levels():
    data = sample(100_000)
    assert compress(Compression.LZ4, data, 9) == compress(Compression.LZ4, data)  # Kafka: 9 = fast
    high = compress(Compression.LZ4, data, 12)
    assert decompress(Compression.LZ4, high) == data


def test_gzip_is_a_standard_gzip_stream():
    data = sample(10_000)
    packed = compress(Compression.GZIP, data)
    assert packed[:2] == b"\x1f\x8b"
    assert zlib.decompress(packed, 31) == data
    assert decompress(Compression.GZIP, compress(Compression.GZIP, data, 1)) == data


def test_gzip_reads_concatenated_members():
    assert decompress(Compression.GZIP, compress(1, b"abc") + compress(1, b"def")) == b"abcdef"


@pytest.mark.parametrize("size", [0, 10, 200_000, 2_000_000])
def test_zstd_reads_frames_without_content_size(size):
    data = sample(size)
    no_size = zstandard.ZstdCompressor(write_content_size=False).compress(data)
    assert zstandard.get_frame_parameters(no_size).content_size == zstandard.CONTENTSIZE_UNKNOWN
    assert decompress(Compression.ZSTD, no_size) == data
    streamed = zstandard.ZstdCompressor().compressobj()
    frame = streamed.compress(data) + streamed.flush()
    assert decompress(Compression.ZSTD, frame) == data


def test_zstd_reads_chunked_stream_writer_output():
    import io

    data = sample(300_000)
    sink = io.BytesIO()
    with zstandard.ZstdCompressor(level=3).stream_writer(sink, closefd=False) as writer:
        for i in range(0, len(data), 16_384):  # zstd-jni buffers 16 KiB at a time
            writer.write(data[i : i + 16_384])
    assert decompress(Compression.ZSTD, sink.getvalue()) == data


def test_zstd_and_lz4_read_concatenated_frames():
    for codec in (Compression.ZSTD, Compression.LZ4):
        assert decompress(codec, compress(codec, b"abc") + compress(codec, b"def")) == b"abcdef"


def test_zstd_contexts_are_per_thread():
    data = [sample(150_000, seed=i) for i in range(4)]
    errors = []

    def work(i):
        try:
            for _ in range(5):
                assert decompress(Compression.ZSTD, compress(Compression.ZSTD, data[i], 1 + i)) == data[i]
        except BaseException as error:  # noqa: BLE001 - surfaced in the main thread
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


# --- damage -------------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", STREAM_CODECS, ids=lambda c: c.name.lower())
def test_damaged_streams_raise_corrupt_batch_error(codec):
    packed = compress(codec, sample(100_000))
    damaged: list[bytes] = [
        b"",
        packed[: len(packed) // 2],
        packed[:-1],
        packed + b"\x00junk",
        b"garbage that is no stream" * 3,
    ]
    flipped = bytearray(packed)
    flipped[len(flipped) // 2] ^= 0xFF
    damaged.append(bytes(flipped))
    for bad in damaged:
        try:
            result = decompress(codec, bad, path="x.log", position=7)
        except CorruptBatchError as error:
            assert error.path == "x.log" and error.position == 7
        else:
            # A flipped byte inside a literal run can decompress to different bytes without any
            # codec error (Kafka writes no content checksums); the batch CRC catches that.
            assert bad is damaged[-1]
            assert result != sample(100_000)


def test_unknown_codec_id_is_corruption():
    with pytest.raises(CorruptBatchError, match="codec"):
        decompress(5, b"abc")


# --- arguments ----------------------------------------------------------------------------------


def test_from_name():
    assert Compression.from_name("zstd") is Compression.ZSTD
    assert Compression.from_name("LZ4") is Compression.LZ4
    assert Compression.from_name("uncompressed") is Compression.NONE
    with pytest.raises(ValueError):
        Compression.from_name("brotli")


def test_bad_levels():
    with pytest.raises(ValueError):
        compress(Compression.GZIP, b"x", 10)
    with pytest.raises(ValueError):
        compress(Compression.SNAPPY, b"x", 1)
    with pytest.raises(ValueError):
        compress(Compression.ZSTD, b"x", 23)
    with pytest.raises(TypeError):
        compress(Compression.ZSTD, b"x", 3.0)
    with pytest.raises(ValueError):
        compress(9, b"x")
    assert DEFAULT_LEVELS[Compression.ZSTD] == 3
