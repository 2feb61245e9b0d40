"""The five record-batch codecs, with the stream framings Kafka's Java client writes and reads.

A compressed v2 batch stores bytes 61..end as *one* compressed stream of the concatenated records
(see :mod:`logstore.batch`). This module turns that stream into bytes and back; it knows nothing
about records.

Framings (Kafka ``clients/.../common/compress/*``):

``none`` (0)
    The bytes as they are.
``gzip`` (1)
    A standard GZIP stream (RFC 1952), as ``java.util.zip.GZIPOutputStream`` writes it. Several
    concatenated members are read as one stream, as ``GZIPInputStream`` does. Default level 6 (the
    ``Deflater`` default), allowed 1..9.
``snappy`` (2)
    The xerial snappy-java *stream* framing (``SnappyOutputStream``), not the official snappy
    framing format: a 16-byte header (``0x82 'SNAPPY' 0x00``, then int32 version 1 and int32
    compatible-version 1, big-endian), then chunks of (int32 big-endian length, raw snappy block),
    each block holding at most 32 KiB of input. A stream without the header is read as one raw
    snappy block, as snappy-java's reader does. No levels.
``lz4`` (3)
    The standard LZ4 *frame* format (magic ``0x184D2204``) as Kafka (magic v1+) writes it: 64 KiB
    blocks, independent blocks, no block or content checksum, no content size. Levels: ``None`` or
    9 (Kafka's default) use the fast compressor, as Kafka does; any other level goes to LZ4 HC.
``zstd`` (4)
    One or more zstd frames. Kafka's writer (zstd-jni ``ZstdOutputStreamNoFinalizer``) streams, so
    its frame header has no content size; we therefore always decompress in streaming mode
    (``decompressobj``), never with the one-shot API that needs the size. Default level 3.

Thread safety: zstd compression/decompression contexts must not be shared between threads
(python-zstandard ``docs/api_usage.rst``, "Thread and Object Reuse Safety"), so each thread gets
its own, kept in a ``threading.local``. zlib, lz4 and cramjam calls are stateless here.

Errors: a stream that does not decompress, is truncated, or has bytes after its end raises
:class:`~logstore.errors.CorruptBatchError`. Misused arguments raise ``ValueError``/``TypeError``.
"""

from __future__ import annotations

import enum
import struct
import threading
import zlib

import cramjam
import lz4.frame
import zstandard

from .errors import CorruptBatchError

__all__ = ["Compression", "compress", "decompress", "DEFAULT_LEVELS"]


class Compression(enum.IntEnum):
    """Codec id as stored in bits 0..2 of the batch attributes."""

    NONE = 0
    GZIP = 1
    SNAPPY = 2
    LZ4 = 3
    ZSTD = 4

    @classmethod
    def from_name(cls, name: str) -> Compression:
        """``"zstd"`` -> ``Compression.ZSTD`` (case-insensitive; ``"uncompressed"`` is ``NONE``)."""
        key = name.strip().upper()
        if key == "UNCOMPRESSED":
            key = "NONE"
        try:
            return cls[key]
        except KeyError:
            raise ValueError(
                f"unknown compression {name!r}; expected one of none, gzip, snappy, lz4, zstd"
            ) from None


#: Level used when ``level`` is None, as Kafka's ``CompressionType`` defaults (snappy has none).
DEFAULT_LEVELS = {Compression.GZIP: 6, Compression.LZ4: 9, Compression.ZSTD: 3}
_LEVEL_RANGES = {Compression.GZIP: (1, 9), Compression.LZ4: (1, 17), Compression.ZSTD: (-131072, 22)}

# --- snappy: xerial snappy-java stream framing --------------------------------------------------

_XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER = _XERIAL_MAGIC + struct.pack(">ii", 1, 1)  # version 1, compatible version 1
_XERIAL_BLOCK_BYTES = 32 * 1024  # snappy-java's default block size (input bytes per chunk)
_INT32 = struct.Struct(">i")

# --- per-thread zstd contexts --------------------------------------------------------------------

_local = threading.local()


def _zstd_compressor(level: int) -> zstandard.ZstdCompressor:
    cache = getattr(_local, "zstd_compressors", None)
    if cache is None:
        cache = _local.zstd_compressors = {}
    compressor = cache.get(level)
    if compressor is None:
        compressor = cache[level] = zstandard.ZstdCompressor(level=level)
    return compressor


def _zstd_decompressor() -> zstandard.ZstdDecompressor:
    decompressor = getattr(_local, "zstd_decompressor", None)
    if decompressor is None:
        decompressor = _local.zstd_decompressor = zstandard.ZstdDecompressor()
    return decompressor


# --- compress ----------------------------------------------------------------------------------


def _check_level(codec: Compression, level: int | None) -> int | None:
    if level is None:
        return DEFAULT_LEVELS.get(codec)
    if codec in (Compression.NONE, Compression.SNAPPY):
        raise ValueError(f"{codec.name.lower()} has no compression levels (got {level})")
    if type(level) is not int:
        raise TypeError(f"compression level must be an int, not {type(level).__name__}")
    low, high = _LEVEL_RANGES[codec]
    if not low <= level <= high:
        raise ValueError(f"{codec.name.lower()} level {level} is outside {low}..{high}")
    return level


def compress(codec: Compression | int, data, level: int | None = None) -> bytes:
    """Compress ``data`` (any bytes-like object) into ``codec``'s stream framing."""
    codec = Compression(codec)
    level = _check_level(codec, level)
    if codec is Compression.NONE:
        return bytes(data)
    if codec is Compression.GZIP:
        # wbits 31 = deflate inside a gzip header and trailer (what GZIPOutputStream writes).
        compressor = zlib.compressobj(level, zlib.DEFLATED, 31)
        return compressor.compress(data) + compressor.flush()
    if codec is Compression.SNAPPY:
        view = memoryview(data).cast("B")
        parts = [_XERIAL_HEADER]
        for start in range(0, len(view), _XERIAL_BLOCK_BYTES):
            block = cramjam.snappy.compress_raw(view[start : start + _XERIAL_BLOCK_BYTES])
            parts.append(_INT32.pack(len(block)))
            parts.append(block)
        return b"".join(parts)
    if codec is Compression.LZ4:
        # Kafka: level 9 (its default) means lz4-java's fast compressor; lz4 frame level 0 is that.
        return lz4.frame.compress(
            data,
            compression_level=0 if level == 9 else level,
            block_size=lz4.frame.BLOCKSIZE_MAX64KB,
            block_linked=False,
            content_checksum=False,
            block_checksum=False,
            store_size=False,
        )
    return _zstd_compressor(level).compress(data)


# --- decompress --------------------------------------------------------------------------------


def decompress(
    codec: Compression | int, data, *, path: str | None = None, position: int | None = None
) -> bytes:
    """Decompress one codec stream; damage raises :class:`CorruptBatchError` naming path/position."""
    try:
        codec = Compression(codec)
    except ValueError:
        raise CorruptBatchError(
            f"unknown compression codec id {codec}", path=path, position=position
        ) from None
    try:
        if codec is Compression.NONE:
            return bytes(data)
        if codec is Compression.GZIP:
            return _gunzip(data)
        if codec is Compression.SNAPPY:
            return _unsnappy(data)
        if codec is Compression.LZ4:
            return _unlz4(data)
        return _unzstd(data)
    except _StreamError as error:
        raise CorruptBatchError(
            f"{codec.name.lower()} stream: {error}", path=path, position=position
        ) from None
    except (
        zlib.error,
        RuntimeError,
        zstandard.ZstdError,
        cramjam.DecompressionError,
        ValueError,
        struct.error,
        MemoryError,
    ) as error:
        # lz4 raises RuntimeError, cramjam DecompressionError, zstandard ZstdError: all mean the
        # stream is damaged. MemoryError: a damaged length asked for an impossible allocation.
        raise CorruptBatchError(
            f"{codec.name.lower()} stream does not decompress: {error}", path=path, position=position
        ) from error


class _StreamError(Exception):
    """Internal: a framing problem found by our own checks (turned into CorruptBatchError)."""


def _gunzip(data) -> bytes:
    out = []
    rest = data
    while True:
        decompressor = zlib.decompressobj(31)
        out.append(decompressor.decompress(rest))
        if not decompressor.eof:
            raise _StreamError("truncated (no end of gzip member)")
        rest = decompressor.unused_data
        if not rest:
            return b"".join(out) if len(out) > 1 else out[0]


def _unsnappy(data) -> bytes:
    view = memoryview(data).cast("B")
    if len(view) < 16 or view[:8] != _XERIAL_MAGIC:
        return bytes(cramjam.snappy.decompress_raw(view))
    # Version/compatible-version ints are not checked: some producers write them little-endian
    # (kafka-python issue 2414) and there is only one xerial block format.
    parts = []
    pos, end = 16, len(view)
    while pos < end:
        if end - pos < 4:
            raise _StreamError(f"torn chunk length at byte {pos}")
        (length,) = _INT32.unpack_from(view, pos)
        pos += 4
        if length <= 0 or length > end - pos:
            raise _StreamError(f"chunk length {length} at byte {pos - 4} does not fit the stream")
        parts.append(cramjam.snappy.decompress_raw(view[pos : pos + length]))
        pos += length
    return b"".join(parts)


def _unlz4(data) -> bytes:
    view = memoryview(data).cast("B")
    out = []
    pos, end = 0, len(view)
    while True:
        chunk, used = lz4.frame.decompress(view[pos:], return_bytes_read=True)
        out.append(chunk)
        pos += used
        if used <= 0 or pos >= end:
            break
    if pos != end:
        raise _StreamError(f"{end - pos} bytes after the end of the frame")
    return out[0] if len(out) == 1 else b"".join(out)


def _unzstd(data) -> bytes:
    decompressor = _zstd_decompressor()
    out = []
    rest = data
    while True:
        stream = decompressor.decompressobj()
        out.append(stream.decompress(rest))
        if not stream.eof:
            raise _StreamError("truncated (no end of zstd frame)")
        rest = stream.unused_data
        if not rest:
            return out[0] if len(out) == 1 else b"".join(out)
