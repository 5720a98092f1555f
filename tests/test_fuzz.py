"""Fuzzing (hypothesis): message parsing, and the query parameters through a real server.

The parsers may only ever return a value or raise their documented error;
the server may only ever answer an upgrade with a session or with 4400.
"""

from __future__ import annotations

import json
import string
import struct
from datetime import datetime

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from handlers.frames import text_frame
from tests.support.helpers import ServerProcess
from tests.support.rawws import CLOSE, TEXT, parse_frame, query, sync_upgrade
from tracking.protocol import (
    MAX_JSON_DEPTH,
    MAX_MESSAGE_CHARS,
    Heartbeat,
    ProtocolError,
    heartbeat_ok,
    parse_client_message,
    parse_ids,
    parse_json_message,
    parse_timestamp,
)

ID_CHARS = set(string.ascii_letters + string.digits + "_.:@-")


def is_valid_id(value: str | None) -> bool:
    """The documented id rule, written independently of the regex under test."""
    return value is not None and 1 <= len(value) <= 128 and all(c in ID_CHARS for c in value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=12,
)
ids = st.none() | st.text() | st.text(alphabet="".join(sorted(ID_CHARS)), max_size=140)
timestamps = st.one_of(
    json_values,
    st.datetimes().map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat() + "Z"),
    st.text(alphabet="0123456789-:T.Z+ ", max_size=70),
)


@settings(deadline=None)  # no timing luck on a loaded machine
@given(st.one_of(st.text(), st.binary(), json_values.map(json.dumps)))
def test_any_frame_parses_or_raises_protocol_error(frame):
    try:
        result = parse_client_message(frame)
    except ProtocolError as exc:
        assert exc.code in {"invalid_json", "unknown_type", "binary_not_supported", "invalid_timestamp"}
        assert len(exc.message) < 200  # what is echoed back stays short
    else:
        assert isinstance(result, Heartbeat)


@settings(deadline=None)  # no timing luck on a loaded machine
@given(timestamps)
def test_any_heartbeat_parses_or_raises_protocol_error(timestamp):
    message = json.dumps({"type": "heartbeat", "timestamp": timestamp})
    try:
        result = parse_client_message(message)
    except ProtocolError as exc:
        assert exc.code == "invalid_timestamp"
    else:
        assert isinstance(result.timestamp, datetime)


@settings(deadline=None)
@given(st.lists(st.sampled_from(["[]", "{}"]), max_size=3000), st.text(alphabet='[]{}"\\ x', max_size=50))
# The bound exactly (random lists rarely reach it): 32 levels pass even with
# more than 32 brackets in the text (two inside a string), 33 do not, in
# arrays or in objects alone.
@example(["[]"] * (MAX_JSON_DEPTH - 1), "[[")
@example(["[]"] * MAX_JSON_DEPTH, "")
@example(["{}"] * MAX_JSON_DEPTH, "")
def test_nesting_is_bounded_before_parsing(brackets, noise):
    # Nested arrays and objects (the key "k" for objects) inside a heartbeat,
    # with brackets, quotes and escapes inside a string that must not count.
    value = "0"
    for pair in brackets:
        value = f"[{value}]" if pair == "[]" else f'{{"k":{value}}}'
    message = json.dumps({"type": "heartbeat", "timestamp": "2026-01-01T00:00:00Z", "s": noise})
    message = message[:-1] + f',"v":{value}}}'
    depth = 1 + len(brackets)  # the heartbeat object itself is one level
    try:
        result = parse_client_message(message)
    except ProtocolError as exc:  # never RecursionError
        assert (exc.code, depth > MAX_JSON_DEPTH) == ("invalid_json", True), exc.message
    else:
        assert depth <= MAX_JSON_DEPTH and isinstance(result, Heartbeat)


def heartbeat_with(value: str) -> str:
    return f'{{"type":"heartbeat","timestamp":"2026-01-01T00:00:00Z","v":{value}}}'


def test_only_open_arrays_and_objects_count_towards_the_nesting_bound():
    # Forty closed siblings before a nested value: the depth is 1 (the
    # heartbeat) + 1 (the list) + the nested value's levels.
    siblings = ",".join(["[]", "{}"] * 20)
    deepest = MAX_JSON_DEPTH - 2
    assert isinstance(
        parse_client_message(heartbeat_with(f"[{siblings},{'[' * deepest}{']' * deepest}]")), Heartbeat
    )
    deeper = deepest + 1
    with pytest.raises(ProtocolError) as refused:
        parse_client_message(heartbeat_with(f"[{siblings},{'[' * deeper}{']' * deeper}]"))
    assert refused.value.code == "invalid_json"
    assert str(MAX_JSON_DEPTH) in refused.value.message  # the client is told the bound


def test_a_message_of_up_to_1_mib_is_parsed_and_a_longer_one_refused_unread():
    heartbeat = '{"type":"heartbeat","timestamp":"2026-01-01T00:00:00Z"}'
    padding = " " * (MAX_MESSAGE_CHARS - len(heartbeat))  # JSON whitespace, on the decoder's shortcut
    assert parse_client_message(heartbeat + padding) == Heartbeat(
        datetime.fromisoformat("2026-01-01T00:00:00Z")
    )
    with pytest.raises(ProtocolError) as refused:
        parse_client_message(heartbeat + padding + " ")
    assert refused.value.code == "invalid_json"
    assert str(MAX_MESSAGE_CHARS) in refused.value.message


def outcome(parse, text):
    try:
        return parse(text)
    except ProtocolError as exc:
        return (exc.code, exc.message)


#: JSON whitespace, and characters it is not (json.loads refuses them between tokens).
_blank = st.text(alphabet=" \t\n\r\x0b\x0c\xa0\u2028", max_size=2)


@settings(deadline=None, max_examples=1000)  # no timing luck on a loaded machine
@given(
    st.lists(
        st.tuples(_blank, st.sampled_from(['{"type"', ":", '"heartbeat"', ",", '"timestamp"', "}"])),
        max_size=8,
    ),
    _blank,
    timestamps.map(json.dumps),
    _blank,
)
@example([], "", '"2026-11-25T10:00:00Z"', "")
def test_the_heartbeat_read_without_the_decoder_is_what_the_decoder_reads(tokens, before, stamp, after):
    """Heartbeats of every near-canonical shape: the shortcut must agree with ``json.loads``."""
    head = "".join(blank + token for blank, token in tokens)
    for text in (
        head,
        f'{before}{{"type":"heartbeat","timestamp":{stamp}}}{after}',
        head + stamp + after,
        f'{{ "type" : "heartbeat" ,{before}"timestamp":{after}{stamp} }}',
    ):
        assert outcome(parse_client_message, text) == outcome(parse_json_message, text)


@given(st.integers(min_value=0, max_value=2**63))
def test_heartbeat_reply_is_the_text_the_json_encoder_gives(study_time):
    # heartbeat_ok formats its text by hand (the hot path); it must stay JSON.
    expected = {"type": "heartbeat_response", "status": "success", "studyTime": study_time}
    assert heartbeat_ok(study_time) == json.dumps(expected, separators=(",", ":"))


@given(st.text(max_size=300))
@example("x" * 125)
@example("x" * 126)
@example("é" * 63)  # 126 bytes from 63 characters: the length is in bytes
@example("x" * 0xFFFF)
@example("x" * 0x10000)
def test_reply_frames_are_single_unmasked_text_frames(message):
    data = text_frame(message)
    assert data[0] == 0x81  # FIN, no RSV bits (no compression), opcode text
    assert not data[1] & 0x80  # a server never masks
    assert parse_frame(data) == (TEXT, message.encode(), b"")


@settings(deadline=None)  # no timing luck on a loaded machine
@given(json_values)
def test_parse_timestamp_accepts_only_strings(value):
    try:
        result = parse_timestamp(value)
    except ProtocolError:
        return
    assert isinstance(value, str) and isinstance(result, datetime)


@settings(deadline=None)  # no timing luck on a loaded machine
@given(ids, ids)
def test_parse_ids_never_accepts_an_invalid_id(user, course):
    try:
        result = parse_ids(user, course)
    except ValueError as exc:
        assert not (is_valid_id(user) and is_valid_id(course))
        assert "userId" in str(exc) or "courseId" in str(exc)
    else:
        assert result == (user, course)
        assert is_valid_id(user) and is_valid_id(course)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    store = f"sqlite:///{tmp_path_factory.mktemp('fuzz')}/study_time.db"
    with ServerProcess(f"--store={store}", "--flood-rate=0") as process:
        yield process
        assert process.proc.poll() is None, "the server died:\n" + process.log
    assert " ERROR " not in process.log and "Traceback" not in process.log, process.log


id_bytes = st.one_of(
    st.none(),
    st.binary(max_size=140),
    st.text(max_size=140).map(str.encode),
    st.text(alphabet="".join(sorted(ID_CHARS)), min_size=1, max_size=130).map(str.encode),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(id_bytes, id_bytes)
# Found by this test: Tornado trims ids and turns control characters into
# spaces, so these were credited to "u1" and "c1".
@example(b" u1", b"c1")
@example(b"u1", b"\x00c1")
@example(b"u1\x80", b"c1")
def test_any_query_gets_a_session_or_4400(server, user, course):
    status, frames = sync_upgrade(server.port, f"/api/study-time?{query(user, course)}")
    assert status == 101
    expected_valid = all(
        value is not None and _utf8(value) is not None and is_valid_id(_utf8(value))
        for value in (user, course)
    )
    assert frames, "the server dropped the connection without an answer"
    opcode, payload = frames[0]
    assert opcode == TEXT
    first = json.loads(payload)
    if expected_valid:
        assert first["type"] == "connected"
    else:
        assert first == {**first, "type": "error", "code": "invalid_params"}
        assert frames[-1][0] == CLOSE and struct.unpack("!H", frames[-1][1][:2])[0] == 4400


def _utf8(value: bytes) -> str | None:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None
