"""The sans-IO protocol codec against kafka-python 3.x's client-side classes as the oracle.

Requests are built and encoded by kafka-python as a client would, then decoded by our codec
(kio underneath); responses we encode are decoded by kafka-python. Sample messages are filled
generically from kafka-python's schemas, so every field of every version in ``API_TABLE`` is
exercised with a distinct value.
"""

import datetime
import itertools
import os
import pickle
import struct
import types
import uuid

import pytest
from kafka.protocol.admin.topics import CreateTopicsRequest, CreateTopicsResponse
from kafka.protocol.consumer.fetch import FetchRequest, FetchResponse
from kafka.protocol.consumer.group import (
    HeartbeatRequest,
    HeartbeatResponse,
    JoinGroupRequest,
    JoinGroupResponse,
    LeaveGroupRequest,
    LeaveGroupResponse,
    OffsetCommitRequest,
    OffsetCommitResponse,
    OffsetFetchRequest,
    OffsetFetchResponse,
    SyncGroupRequest,
    SyncGroupResponse,
)
from kafka.protocol.consumer.offsets import ListOffsetsRequest, ListOffsetsResponse
from kafka.protocol.metadata.api_versions import ApiVersionsRequest, ApiVersionsResponse
from kafka.protocol.metadata.find_coordinator import FindCoordinatorRequest, FindCoordinatorResponse
from kafka.protocol.metadata.metadata import MetadataRequest, MetadataResponse
from kafka.protocol.producer import (
    InitProducerIdRequest,
    InitProducerIdResponse,
    ProduceRequest,
    ProduceResponse,
)
from kafka.protocol.schemas.fields.codecs.types import BitField
from kafka.record.memory_records import MemoryRecords, MemoryRecordsBuilder
from kio.serial import entity_reader

from logstore.errors import ProtocolError
from logstore.server.protocol import (
    API_TABLE,
    UNSUPPORTED_VERSION,
    ApiKey,
    FetchPartition,
    FileRegion,
    FrameDecoder,
    FrameSizeError,
    MalformedRequestError,
    RequestError,
    UnknownApiKeyError,
    UnsupportedVersionError,
    advertised_api_versions,
    api_versions_response,
    decode_fetch_response,
    decode_request,
    encode_fetch_response_parts,
    encode_response,
    read_parts,
    response_class,
)

KAFKA_PYTHON = {
    ApiKey.PRODUCE: (ProduceRequest, ProduceResponse),
    ApiKey.FETCH: (FetchRequest, FetchResponse),
    ApiKey.LIST_OFFSETS: (ListOffsetsRequest, ListOffsetsResponse),
    ApiKey.METADATA: (MetadataRequest, MetadataResponse),
    ApiKey.OFFSET_COMMIT: (OffsetCommitRequest, OffsetCommitResponse),
    ApiKey.OFFSET_FETCH: (OffsetFetchRequest, OffsetFetchResponse),
    ApiKey.FIND_COORDINATOR: (FindCoordinatorRequest, FindCoordinatorResponse),
    ApiKey.JOIN_GROUP: (JoinGroupRequest, JoinGroupResponse),
    ApiKey.HEARTBEAT: (HeartbeatRequest, HeartbeatResponse),
    ApiKey.LEAVE_GROUP: (LeaveGroupRequest, LeaveGroupResponse),
    ApiKey.SYNC_GROUP: (SyncGroupRequest, SyncGroupResponse),
    ApiKey.API_VERSIONS: (ApiVersionsRequest, ApiVersionsResponse),
    ApiKey.CREATE_TOPICS: (CreateTopicsRequest, CreateTopicsResponse),
    ApiKey.INIT_PRODUCER_ID: (InitProducerIdRequest, InitProducerIdResponse),
}

CASES = [
    (spec.api_key, version)
    for spec in API_TABLE.values()
    for version in range(spec.min_decodable, spec.max_version + 1)
]


def case_id(case):
    return f"{case[0].name}-v{case[1]}"


# --- Sample messages, filled from kafka-python's schema -----------------------------------------


def sample(message_class, version):
    """A kafka-python message of ``version`` with every in-version field set to a distinct value."""
    counter = itertools.count(1)
    return message_class[version](**_fill(message_class, version, counter))


def _fill(container_class, version, counter):
    return {
        field.name: _value(container_class, field, version, counter)
        for field in container_class._struct._fields
        if field.for_version_q(version)
    }


def _value(parent_class, field, version, counter):
    if field.is_struct() or field.is_struct_array():
        data_class = field.data_class or getattr(parent_class, field.type_str)
        if field.is_struct():
            return data_class(version=version, **_fill(data_class, version, counter))
        return [data_class(version=version, **_fill(data_class, version, counter)) for _ in range(2)]
    if field.is_array():
        return [_simple(field.array_of._type_str, field.name, counter) for _ in range(2)]
    return _simple(field._type_str, field.name, counter)


def _simple(type_name, name, counter):
    n = next(counter)
    if name.endswith("error_code"):
        return 3  # kio maps error codes to its ErrorCode enum, so use a real one
    return {
        "int8": n % 100,
        "int16": n,
        "uint16": n,
        "int32": 100_000 + n,
        "int64": 10**12 + n,
        "bool": n % 2 == 0,
        "string": f"s{n}",
        "bytes": b"b%d" % n,
        "records": b"r%d" % n,
        "uuid": uuid.UUID(int=n),
        "float64": n + 0.5,
        "bitfield": {1, n % 30},
    }[type_name]


def request_frame(message, correlation_id=42, client_id="client-1"):
    """The size-prefixed bytes kafka-python would put on the wire."""
    message.with_header(correlation_id=correlation_id, client_id=client_id)
    return bytes(message.encode(header=True, framed=True))


# kafka-python's field names where kio keeps Kafka's (besides kio's "_ms" suffix rule).
KAFKA_PYTHON_RENAMES = {
    "authorized_operations": ("topic_authorized_operations", "cluster_authorized_operations"),
}


def assert_same_fields(kp, ours, version):
    """Every in-version field of a kafka-python message equals the kio field of the same name.

    kio names ``*_ms`` durations without the suffix and types them as ``timedelta``, and some
    timestamps as ``datetime``.
    """
    for field in kp._struct._fields:
        if not field.for_version_q(version):
            continue
        candidates = (field.name, field.name.removesuffix("_ms"), *KAFKA_PYTHON_RENAMES.get(field.name, ()))
        name = next(n for n in candidates if hasattr(ours, n))
        expected, actual = getattr(kp, field.name), getattr(ours, name)
        if field.is_struct():
            assert_same_fields(expected, actual, version)
        elif field.is_struct_array():
            assert (expected is None) == (actual is None), name
            assert len(expected or ()) == len(actual or ()), name
            for kp_item, our_item in zip(expected or (), actual or (), strict=True):
                assert_same_fields(kp_item, our_item, version)
        elif isinstance(actual, datetime.timedelta):
            assert actual // datetime.timedelta(milliseconds=1) == expected, name
        elif isinstance(actual, datetime.datetime):  # kio's timestamps, e.g. log_append_time
            assert actual == datetime.datetime.fromtimestamp(expected / 1000, datetime.UTC), name
        elif field._type_str == "bitfield":
            assert actual & 0xFFFFFFFF == BitField.to_32_bit_field(expected if expected is not None else {31})
        elif isinstance(actual, tuple):
            assert list(actual) == list(expected), name
        else:
            assert actual == expected, name


# --- Framing (h11-style: whole, one byte at a time, with trailing bytes) ------------------------


def chunkings(frame):
    """(chunks, trailing) pairs: the frame whole, byte by byte, and followed by part of another."""
    trailing = frame[:5]
    yield [frame], b""
    yield [frame[i : i + 1] for i in range(len(frame))], b""
    yield [frame + trailing], trailing


def frames_from(chunks, decoder=None):
    decoder = decoder or FrameDecoder()
    frames = []
    for chunk in chunks:
        decoder.feed(chunk)
        while (frame := decoder.next_frame()) is not None:
            frames.append(frame)
    return frames, decoder


def test_frame_decoder_every_chunking():
    frame = request_frame(sample(MetadataRequest, 8))
    for chunks, trailing in chunkings(frame):
        frames, decoder = frames_from(chunks)
        assert frames == [frame[4:]]
        assert decoder.buffered_bytes == len(trailing)


def test_frame_decoder_many_frames_in_one_feed():
    frames = [request_frame(sample(HeartbeatRequest, 3), correlation_id=i) for i in range(50)]
    decoded, decoder = frames_from([b"".join(frames)])
    assert [decode_request(f).correlation_id for f in decoded] == list(range(50))
    assert decoder.buffered_bytes == 0


def test_frame_decoder_empty_frame_and_exact_limit():
    decoded, _ = frames_from([struct.pack(">i", 0), struct.pack(">i", 3) + b"abc"], FrameDecoder(3))
    assert decoded == [b"", b"abc"]


@pytest.mark.parametrize("size", [-1, -(2**31), 1025])
def test_frame_decoder_rejects_size_before_the_body_arrives(size):
    decoder = FrameDecoder(max_frame_bytes=1024)
    decoder.feed(struct.pack(">i", size))
    with pytest.raises(FrameSizeError) as info:
        decoder.next_frame()
    assert (info.value.size, info.value.max_frame_bytes) == (size, 1024)
    assert isinstance(info.value, ProtocolError)
    decoder.feed(b"x" * 2000)
    with pytest.raises(FrameSizeError):  # the stream cannot be resynchronised
        decoder.next_frame()


def test_frame_decoder_default_limit_is_100_mib():
    decoder = FrameDecoder()
    decoder.feed(struct.pack(">i", 100 * 1024 * 1024 + 1))
    with pytest.raises(FrameSizeError):
        decoder.next_frame()


# --- Requests -----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_request_round_trip(case):
    api_key, version = case
    message = sample(KAFKA_PYTHON[api_key][0], version)
    frame = request_frame(message, correlation_id=1234567, client_id="kp-client")
    for chunks, _ in chunkings(frame):
        [payload], _ = frames_from(chunks)
        request = decode_request(payload)
        assert (request.api_key, request.api_version) == (api_key, version)
        assert (request.correlation_id, request.client_id) == (1234567, "kp-client")
        assert type(request.body).__version__ == version
        assert_same_fields(message, request.body, version)


def test_null_client_id():
    message = ApiVersionsRequest[3](client_software_name="a", client_software_version="b")
    assert decode_request(request_frame(message, client_id=None)[4:]).client_id is None


def record_batch(*values, compression=0, offset=0):
    builder = MemoryRecordsBuilder(magic=2, compression_type=compression, batch_size=1 << 20, offset=offset)
    for i, value in enumerate(values):
        builder.append(timestamp=1_700_000_000_000 + i, key=b"k%d" % i, value=value, headers=[])
    builder.close()
    return bytes(builder.buffer())


@pytest.mark.parametrize("version", range(3, 9))
def test_produce_records_come_out_as_sent(version):
    batches = [record_batch(b"one", b"two"), record_batch(b"x" * 300, compression=1) + record_batch(b"y")]
    Topic = ProduceRequest.TopicProduceData
    Partition = Topic.PartitionProduceData
    message = ProduceRequest[version](
        transactional_id=None,
        acks=-1,
        timeout_ms=1500,
        topic_data=[
            Topic(name="t", partition_data=[Partition(index=i, records=b) for i, b in enumerate(batches)])
        ],
    )
    request = decode_request(request_frame(message)[4:])
    partitions = request.body.topic_data[0].partition_data
    assert [p.records for p in partitions] == batches
    assert all(type(p.records) is bytes for p in partitions)
    assert request.expects_response


def test_produce_acks_zero_expects_no_response():
    message = ProduceRequest[8](transactional_id=None, acks=0, timeout_ms=1, topic_data=[])
    assert not decode_request(request_frame(message)[4:]).expects_response


def test_every_strict_prefix_of_a_request_is_malformed():
    for message in (sample(ProduceRequest, 8), sample(ApiVersionsRequest, 3), sample(FetchRequest, 11)):
        payload = request_frame(message, correlation_id=9)[4:]
        for end in range(len(payload)):
            with pytest.raises(MalformedRequestError) as info:
                decode_request(payload[:end])
            if end >= 8:
                assert (info.value.api_key, info.value.correlation_id) == (message.API_KEY, 9)


@pytest.mark.parametrize(
    "payload, fields",
    [
        (b"", (None, None, None)),
        (b"\x00", (None, None, None)),
        (b"\x00\x03\x00", (3, None, None)),
        (b"\x00\x03\x00\x08\x00\x00\x00", (3, 8, None)),
    ],
)
def test_short_frames_carry_the_fields_they_hold(payload, fields):
    with pytest.raises(MalformedRequestError) as info:
        decode_request(payload)
    assert (info.value.api_key, info.value.api_version, info.value.correlation_id) == fields


def test_trailing_bytes_inside_a_frame_are_malformed():
    payload = request_frame(sample(MetadataRequest, 4), correlation_id=5)[4:]
    with pytest.raises(MalformedRequestError, match="trailing"):
        decode_request(payload + b"\x00")


@pytest.mark.parametrize("api_key", [4, 17, 99, -1, 32767])
def test_unknown_api_key(api_key):
    with pytest.raises(UnknownApiKeyError) as info:
        decode_request(struct.pack(">hhi", api_key, 0, 77) + b"\xff\xff")
    assert (info.value.api_key, info.value.api_version, info.value.correlation_id) == (api_key, 0, 77)


UNSUPPORTED = (
    [(spec.api_key, spec.max_version + 1) for spec in API_TABLE.values()]
    + [(spec.api_key, spec.min_decodable - 1) for spec in API_TABLE.values() if spec.min_decodable > 0]
    + [(ApiKey.PRODUCE, 0), (ApiKey.PRODUCE, 2), (ApiKey.METADATA, -1)]
)


@pytest.mark.parametrize("case", UNSUPPORTED, ids=case_id)
def test_unsupported_versions(case):
    api_key, version = case
    with pytest.raises(UnsupportedVersionError) as info:
        decode_request(struct.pack(">hhi", api_key, version, 31337) + b"\xff\xff")
    assert (info.value.api_key, info.value.api_version, info.value.correlation_id) == (
        api_key,
        version,
        31337,
    )


def test_request_errors_pickle_with_their_fields():
    for error in (UnsupportedVersionError("m", 18, 4, 7), FrameSizeError(-5, 10)):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and copy.__dict__ == error.__dict__ and str(copy) == str(error)


# --- Responses ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_response_round_trip(case):
    api_key, version = case
    response_type = KAFKA_PYTHON[api_key][1]
    expected = sample(response_type, version)
    if api_key == ApiKey.API_VERSIONS:
        expected.error_code = 0  # kafka-python reads any ApiVersions error reply as v0 (KIP-511)
    body, _ = entity_reader(response_class(api_key, version))(bytes(expected.encode()), 0)
    assert_same_fields(expected, body, version)
    request = decode_request(request_frame(sample(KAFKA_PYTHON[api_key][0], version), correlation_id=808)[4:])

    frame = encode_response(request, body)

    decoded = response_type[version].decode(frame, header=True, framed=True)
    assert decoded.header.correlation_id == 808
    assert decoded == expected


def test_api_versions_response_header_is_v0_even_when_flexible():
    request = decode_request(request_frame(sample(ApiVersionsRequest, 3), correlation_id=1)[4:])
    frame = encode_response(request, api_versions_response(3))
    # correlation_id, then straight to the body (error_code int16, compact api_keys array): no
    # tagged-field byte in between, which a v1 response header would add.
    assert frame[4:8] == struct.pack(">i", 1)
    assert frame[8:10] == b"\x00\x00" and frame[10] == len(advertised_api_versions()) + 1


@pytest.mark.parametrize("version", range(4))
def test_api_versions_response_lists_the_table(version):
    request = decode_request(request_frame(sample(ApiVersionsRequest, version))[4:])
    decoded = ApiVersionsResponse[version].decode(
        encode_response(request, api_versions_response(version)), header=True, framed=True
    )
    assert decoded.error_code == 0
    assert [(a.api_key, a.min_version, a.max_version) for a in decoded.api_keys] == list(
        advertised_api_versions()
    )


def test_advertised_table():
    assert advertised_api_versions() == (
        (0, 0, 8),
        (1, 4, 11),
        (2, 1, 5),
        (3, 0, 8),
        (8, 2, 7),
        (9, 1, 5),
        (10, 0, 2),
        (11, 0, 5),
        (12, 0, 3),
        (13, 0, 3),
        (14, 0, 3),
        (18, 0, 3),
        (19, 2, 4),
        (22, 0, 1),
    )


def test_too_new_api_versions_gets_a_v0_error_listing_the_ranges():
    # kafka-python opens with ApiVersions v4, decodes any error reply as v0 and retries.
    frame = request_frame(ApiVersionsRequest[4](client_software_name="kp", client_software_version="3"), 55)
    with pytest.raises(UnsupportedVersionError) as info:
        decode_request(frame[4:])
    reply = encode_response(info.value, api_versions_response(0, error_code=UNSUPPORTED_VERSION))
    decoded = ApiVersionsResponse[0].decode(reply, header=True, framed=True)
    assert decoded.header.correlation_id == 55
    assert decoded.error_code == UNSUPPORTED_VERSION
    assert (18, 0, 3) in [(a.api_key, a.min_version, a.max_version) for a in decoded.api_keys]


def test_encode_response_rejects_a_body_that_does_not_answer_the_request():
    request = decode_request(request_frame(sample(MetadataRequest, 5))[4:])
    with pytest.raises(ValueError, match="version 4"):
        encode_response(
            request,
            response_class(ApiKey.METADATA, 4)(
                throttle_time=datetime.timedelta(0), brokers=(), cluster_id=None, controller_id=0, topics=()
            ),
        )
    with pytest.raises(ValueError, match="api_key"):
        encode_response(request, api_versions_response(0, error_code=UNSUPPORTED_VERSION))
    with pytest.raises(ValueError):
        encode_response(request, object())
    with pytest.raises(ValueError, match="api_key"):  # a request class is not a response
        encode_response(request, decode_request(request_frame(sample(MetadataRequest, 5))[4:]).body)
    metadata = response_class(ApiKey.METADATA, 5)
    fields = dict(
        throttle_time=datetime.timedelta(0), brokers=(), cluster_id=None, controller_id=0, topics=()
    )
    with pytest.raises(ValueError, match="cannot encode"):
        encode_response(request, metadata(**{**fields, "controller_id": 2**31}))
    with pytest.raises(TypeError, match="cannot encode"):
        encode_response(request, metadata(**{**fields, "cluster_id": 5}))
    with pytest.raises(ValueError, match="unknown"):
        encode_response(MalformedRequestError("short", 3), api_versions_response(0))


# --- Fetch response (hand-encoded) --------------------------------------------------------------


def fetch_topics(records_a, records_b):
    return [
        (
            "topic-a",
            [
                FetchPartition(
                    0,
                    error_code=0,
                    high_watermark=10,
                    last_stable_offset=10,
                    log_start_offset=2,
                    records=records_a,
                    aborted_transactions=[(7, 3), (8, 4)],
                ),
                FetchPartition(
                    1, error_code=1, high_watermark=0, last_stable_offset=0, log_start_offset=0, records=b""
                ),
            ],
        ),
        (
            "t\u00e9",
            [
                FetchPartition(
                    5,
                    high_watermark=3,
                    last_stable_offset=3,
                    log_start_offset=0,
                    records=records_b,
                    aborted_transactions=[],
                )
            ],
        ),
        ("empty", []),
    ]


@pytest.mark.parametrize("version", range(4, 12))
def test_fetch_response_decodes_with_kafka_python(version):
    batch_a = record_batch(b"v0", b"v1", offset=2) + record_batch(b"zz" * 100, compression=1, offset=4)
    batch_b = record_batch(b"only", offset=0)
    parts = encode_fetch_response_parts(99, version, 12, 0, 0, fetch_topics(batch_a, batch_b))
    assert all(isinstance(part, bytes) for part in parts)  # bytes regions are inlined
    frame = read_parts(parts)

    decoded = FetchResponse[version].decode(frame, header=True, framed=True)

    assert decoded.header.correlation_id == 99
    assert decoded.throttle_time_ms == 12
    topic_a, topic_b, empty = decoded.responses
    assert (topic_a.topic, topic_b.topic, empty.topic, empty.partitions) == (
        "topic-a",
        "t\u00e9",
        "empty",
        [],
    )
    p0, p1 = topic_a.partitions
    assert (p0.partition_index, p0.error_code, p0.high_watermark, p0.last_stable_offset) == (0, 0, 10, 10)
    assert [(a.producer_id, a.first_offset) for a in p0.aborted_transactions] == [(7, 3), (8, 4)]
    assert p0.records == batch_a and topic_b.partitions[0].records == batch_b
    assert [r.value for r in _records(p0.records)] == [b"v0", b"v1", b"zz" * 100]
    assert [r.offset for r in _records(p0.records)] == [2, 3, 4]
    assert (p1.error_code, p1.records) == (1, b"")  # empty, not null
    assert topic_b.partitions[0].aborted_transactions == []
    if version >= 5:
        assert p0.log_start_offset == 2
    if version >= 11:
        assert p0.preferred_read_replica == -1


def _records(data):
    return [record for batch in MemoryRecords(data) for record in batch]


@pytest.mark.parametrize("version", [4, 7, 11])
def test_fetch_response_session_fields_and_null_aborted(version):
    parts = encode_fetch_response_parts(1, version, 0, 0, 0, [("t", [FetchPartition(0)])])
    correlation_id, body = decode_fetch_response(read_parts(parts), version)
    assert correlation_id == 1
    assert body.responses[0].partitions[0].aborted_transactions is None
    assert body.responses[0].partitions[0].records == b""
    if version >= 7:
        parts = encode_fetch_response_parts(1, version, 0, 3, 77, [])
        _, body = decode_fetch_response(read_parts(parts), version)
        assert (body.error_code, body.session_id) == (3, 77)


def test_fetch_response_file_regions_are_sized_not_read(tmp_path):
    batch_a, batch_b = record_batch(b"a" * 50), record_batch(b"b", b"c")
    path = tmp_path / "00000000000000000000.log"
    path.write_bytes(b"junk" + batch_a + b"more junk" + batch_b)
    with_bytes = read_parts(encode_fetch_response_parts(7, 11, 0, 0, 0, fetch_topics(batch_a, batch_b)))
    fd = os.open(path, os.O_RDONLY)
    try:
        regions = fetch_topics(
            FileRegion(fd, 4, len(batch_a)), FileRegion(fd, 4 + len(batch_a) + 9, len(batch_b))
        )
        parts = encode_fetch_response_parts(7, 11, 0, 0, 0, regions)
        assert [type(p) for p in parts] == [bytes, FileRegion, bytes, FileRegion, bytes]
        assert read_parts(parts) == with_bytes
        # Any object with fd/position/size is a region (e.g. logstore's FileSlice).
        duck = types.SimpleNamespace(fd=fd, position=4, size=len(batch_a))
        parts = encode_fetch_response_parts(7, 11, 0, 0, 0, fetch_topics(duck, batch_b))
        assert parts[1] is duck and read_parts(parts) == with_bytes
    finally:
        os.close(fd)
    # An invalid fd shows the codec never touches the file: the size comes from the region.
    parts = encode_fetch_response_parts(
        7, 11, 0, 0, 0, [("t", [FetchPartition(0, records=FileRegion(-1, 0, 10**6))])]
    )
    frame_size = struct.unpack(">i", parts[0][:4])[0]
    assert frame_size == sum(len(p) for p in parts if isinstance(p, bytes)) + 10**6 - 4
    # Size 0 means empty records: no region part at all.
    parts = encode_fetch_response_parts(
        7, 11, 0, 0, 0, [("t", [FetchPartition(0, records=FileRegion(-1, 0, 0))])]
    )
    assert (
        len(parts) == 1 and decode_fetch_response(parts[0], 11)[1].responses[0].partitions[0].records == b""
    )


def test_fetch_response_argument_errors():
    with pytest.raises(ValueError):
        encode_fetch_response_parts(1, 12, 0, 0, 0, [])
    with pytest.raises(ValueError):
        encode_fetch_response_parts(1, 3, 0, 0, 0, [])
    with pytest.raises(ValueError):
        FileRegion(3, -1, 5)
    with pytest.raises(ValueError, match="cannot encode"):
        encode_fetch_response_parts(1, 11, 0, 0, 0, [("t", [FetchPartition(2**31)])])
    with pytest.raises(TypeError):
        encode_fetch_response_parts(1, 11, 0, 0, 0, [("t", [FetchPartition(0, records="text")])])
    with pytest.raises(ValueError, match="int32"):
        huge = [FetchPartition(i, records=FileRegion(-1, 0, 2**30)) for i in range(2)]
        encode_fetch_response_parts(1, 11, 0, 0, 0, [("t", huge)])


def test_decode_fetch_response_rejects_bad_frames():
    frame = read_parts(encode_fetch_response_parts(1, 11, 0, 0, 0, fetch_topics(b"", b"")))
    for bad in (
        frame[:-1],
        frame + b"\x00",
        frame[:6],
        struct.pack(">i", len(frame) - 3) + frame[4:] + b"\x00",
    ):
        with pytest.raises(ProtocolError):
            decode_fetch_response(bad, 11)


def test_all_request_errors_are_protocol_errors():
    for error_type in (MalformedRequestError, UnknownApiKeyError, UnsupportedVersionError):
        assert issubclass(error_type, RequestError) and issubclass(error_type, ProtocolError)
    assert issubclass(FrameSizeError, ProtocolError)
