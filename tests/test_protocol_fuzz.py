"""Fuzzing the request codec.

Invariant: whatever bytes a client sends, ``FrameDecoder`` and ``decode_request`` either parse
them or raise ``ProtocolError``, never any other exception, whole or one byte at a time.
"""

import struct

from hypothesis import given
from hypothesis import strategies as st
from test_protocol import CASES, KAFKA_PYTHON, request_frame, sample

from logstore.errors import ProtocolError
from logstore.server.protocol import FrameDecoder, Request, decode_fetch_response, decode_request

VALID_FRAMES = [request_frame(sample(KAFKA_PYTHON[key][0], version)) for key, version in CASES]


def decode_or_protocol_error(payload):
    try:
        assert isinstance(decode_request(payload), Request)
    except ProtocolError:
        pass


def drain(decoder):
    """Decode every complete frame; return False once the decoder has rejected the stream."""
    while True:
        try:
            frame = decoder.next_frame()
        except ProtocolError:
            return False
        if frame is None:
            return True
        decode_or_protocol_error(frame)


def feed_all(stream, chunk_size):
    decoder = FrameDecoder(max_frame_bytes=4096)
    for start in range(0, len(stream), chunk_size):
        decoder.feed(stream[start : start + chunk_size])
        if not drain(decoder):
            return


@given(st.binary(max_size=512))
def test_decode_request_any_bytes(payload):
    decode_or_protocol_error(payload)


@given(st.binary(max_size=512), st.sampled_from([1, 3, 512]))
def test_frame_decoder_any_bytes(stream, chunk_size):
    feed_all(stream, chunk_size)


@given(st.sampled_from(CASES), st.integers(-(2**31), 2**31 - 1), st.binary(max_size=256))
def test_decode_request_valid_prefix_random_rest(case, correlation_id, rest):
    # Random bytes rarely form a known (api_key, version); this reaches the header and body readers.
    decode_or_protocol_error(struct.pack(">hhi", *case, correlation_id) + rest)


@given(st.sampled_from(VALID_FRAMES), st.data())
def test_mutated_valid_requests(frame, data):
    payload = bytearray(frame[4:])
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(payload) - 1))
        payload[position] = data.draw(st.integers(0, 255))
    end = data.draw(st.integers(0, len(payload)))
    decode_or_protocol_error(bytes(payload[:end]))
    # The same mutated request framed and sent one byte at a time.
    feed_all(struct.pack(">i", end) + bytes(payload[:end]), 1)


@given(st.binary(max_size=256), st.integers(4, 11))
def test_decode_fetch_response_any_bytes(payload, version):
    try:
        decode_fetch_response(struct.pack(">i", len(payload)) + payload, version)
    except ProtocolError:
        pass
