"""Tests for securechat.protocol: parsing client frames, building server frames, flood control."""

from __future__ import annotations

import base64
import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from securechat.protocol import (
    SEQ_LIMIT,
    USERNAME_RE,
    CloseCode,
    Delivered,
    Ping,
    ProtocolError,
    RateLimiter,
    Read,
    Send,
    Sync,
    Typing,
    ack_frame,
    error_frame,
    message_frame,
    normalize_username,
    parse_client_frame,
    pong_frame,
    presence_frame,
    receipt_frame,
    synced_frame,
    typing_frame,
)

MAX = 56 * 1024
FRAME_ID = "0f8fad5b-d9cb-469f-a165-70867728950e"
B64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def b64(size: int, fill: int = 7) -> str:
    return base64.b64encode(bytes([fill]) * size).decode()


def unused_bits_set(text: str) -> str:
    """The same bytes, spelled with the last character's unused low bits set."""
    data = text.rstrip("=")
    last = B64_ALPHABET.index(data[-1]) + 1
    return data[:-1] + B64_ALPHABET[last] + text[len(data) :]


@pytest.fixture(name="envelope")
def _envelope() -> dict[str, Any]:
    return {"v": 1, "iv": b64(12), "ct": b64(48), "rk": b64(384), "sk": b64(384), "sig": b64(64)}


def send_text(envelope: Any, **changes: Any) -> str:
    frame = {"type": "send", "id": FRAME_ID, "to": "bob", "envelope": envelope, **changes}
    return json.dumps(frame)


def parse(text: str | bytes, max_envelope_bytes: int = MAX) -> Any:
    return parse_client_frame(text, max_envelope_bytes=max_envelope_bytes)


def error_of(text: str | bytes, max_envelope_bytes: int = MAX) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse(text, max_envelope_bytes)
    return info.value


# --- every frame type -------------------------------------------------------------------------


def test_parse_send(envelope: dict[str, Any]) -> None:
    """A valid send frame becomes Send with the id, recipient and envelope."""
    frame = parse(send_text(envelope))
    assert isinstance(frame, Send)
    assert (frame.id, frame.to, frame.envelope) == (FRAME_ID, "bob", envelope)


def test_send_carries_canonical_envelope_json(envelope: dict[str, Any]) -> None:
    """Send.envelope_json is the compact, key-sorted JSON of the envelope."""
    frame = parse(send_text(envelope))
    assert frame.envelope_json == json.dumps(envelope, separators=(",", ":"), sort_keys=True)


def test_parse_sync() -> None:
    """A sync frame becomes Sync(after)."""
    assert parse('{"type":"sync","after":0}') == Sync(after=0)


def test_parse_delivered() -> None:
    """A delivered frame becomes Delivered(seq)."""
    assert parse('{"type":"delivered","seq":12}') == Delivered(seq=12)


def test_parse_read() -> None:
    """A read frame becomes Read(seq)."""
    assert parse('{"type":"read","seq":12}') == Read(seq=12)


def test_parse_typing() -> None:
    """A typing frame becomes Typing(to)."""
    assert parse('{"type":"typing","to":"carol.b"}') == Typing(to="carol.b")


def test_parse_ping() -> None:
    """A ping frame becomes Ping()."""
    assert parse('{"type":"ping"}') == Ping()


def test_client_from_is_ignored(envelope: dict[str, Any]) -> None:
    """A "from" sent by the client is dropped, never carried into the frame."""
    frame = parse(send_text(envelope, **{"from": "mallory"}))
    assert not hasattr(frame, "from_") and "mallory" not in repr(frame)


def test_largest_seq_accepted() -> None:
    """2**63 - 1 is still a sequence number."""
    assert parse(json.dumps({"type": "sync", "after": SEQ_LIMIT - 1})) == Sync(SEQ_LIMIT - 1)


def test_envelope_at_the_limit_accepted(envelope: dict[str, Any]) -> None:
    """An envelope whose canonical JSON is exactly the limit is accepted."""
    size = len(json.dumps(envelope, separators=(",", ":")))
    assert isinstance(parse(send_text(envelope), max_envelope_bytes=size), Send)


# --- malformed frames -------------------------------------------------------------------------


def test_binary_frame() -> None:
    """Bytes are refused with binary_frame, even if they hold valid JSON."""
    assert error_of(b'{"type":"ping"}').code == "binary_frame"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{",
        "{'type': 'ping'}",
        '{"type":"ping"} x',
        '{"a":NaN}',
        '{"a":Infinity}',
        "[" * 100_000,
    ],
    ids=["empty", "truncated", "single-quotes", "trailing", "nan", "infinity", "deep"],
)
def test_bad_json(text: str) -> None:
    """Text that is not strict JSON is refused with bad_json."""
    assert error_of(text).code == "bad_json"


def test_duplicate_keys_are_bad_json() -> None:
    """A key given twice is ambiguous, so it is refused with bad_json."""
    assert error_of('{"type":"typing","to":"bob","to":"eve"}').code == "bad_json"


def test_absurdly_long_number_is_bad_json() -> None:
    """A number beyond Python's int-parsing digit limit is refused with bad_json."""
    assert error_of('{"type":"sync","after":' + "9" * 5000 + "}").code == "bad_json"


@pytest.mark.parametrize("text", ["[]", '[{"type":"ping"}]', '"ping"', "1", "null", "true"])
def test_not_an_object(text: str) -> None:
    """Valid JSON that is not an object is refused with not_an_object."""
    assert error_of(text).code == "not_an_object"


def test_unknown_type() -> None:
    """An unknown type is refused with unknown_type."""
    assert error_of('{"type":"shout"}').code == "unknown_type"


@pytest.mark.parametrize("text", ["{}", '{"type":1}', '{"type":null}'])
def test_missing_or_non_string_type(text: str) -> None:
    """A frame without a string type is refused with bad_field naming "type"."""
    exc = error_of(text)
    assert (exc.code, "'type'" in exc.message) == ("bad_field", True)


@pytest.mark.parametrize(
    ("frame", "field"),
    [
        ({"type": "send", "to": "bob"}, "id"),
        ({"type": "send", "id": FRAME_ID}, "to"),
        ({"type": "send", "id": FRAME_ID, "to": "bob"}, "envelope"),
        ({"type": "sync"}, "after"),
        ({"type": "delivered"}, "seq"),
        ({"type": "read"}, "seq"),
        ({"type": "typing"}, "to"),
    ],
)
def test_missing_field(frame: dict[str, Any], field: str) -> None:
    """A missing field is refused with bad_field, and the message names it."""
    exc = error_of(json.dumps(frame))
    assert exc.code == "bad_field"
    assert f"'{field}'" in exc.message


@pytest.mark.parametrize(
    "value",
    [True, False, -1, SEQ_LIMIT, 2**64, 1.0, "1", None, [1]],
    ids=["true", "false", "negative", "2**63", "2**64", "float", "string", "null", "array"],
)
@pytest.mark.parametrize("kind", ["delivered", "read"])
def test_bad_seq(kind: str, value: Any) -> None:
    """A seq that is not an int in [0, 2**63) (bool included) is refused with bad_field."""
    exc = error_of(json.dumps({"type": kind, "seq": value}))
    assert (exc.code, "'seq'" in exc.message) == ("bad_field", True)


@pytest.mark.parametrize("value", [True, -1, SEQ_LIMIT, 0.5], ids=["true", "neg", "huge", "float"])
def test_bad_sync_after(value: Any) -> None:
    """Sync's after follows the same rule as seq."""
    assert error_of(json.dumps({"type": "sync", "after": value})).code == "bad_field"


@pytest.mark.parametrize(
    "value",
    [
        "not-a-uuid",
        FRAME_ID.upper(),
        FRAME_ID.replace("-", ""),
        "{" + FRAME_ID + "}",
        FRAME_ID + "\n",
        42,
    ],
    ids=["garbage", "upper-case", "no-dashes", "braces", "newline", "number"],
)
def test_bad_send_id(envelope: dict[str, Any], value: Any) -> None:
    """A send id that is not a lower-case canonical UUID is refused with bad_field "id"."""
    exc = error_of(send_text(envelope, id=value))
    assert (exc.code, "'id'" in exc.message, exc.frame_id) == ("bad_field", True, None)


@pytest.mark.parametrize(
    "value",
    ["Bob", "bo", "b" * 33, "bob!", "bob\n", "\uff42\uff4f\uff42", "böb", "", 7, None],
    ids=[
        "upper",
        "short",
        "long",
        "bang",
        "newline",
        "fullwidth",
        "umlaut",
        "empty",
        "int",
        "null",
    ],
)
@pytest.mark.parametrize("kind", ["send", "typing"])
def test_bad_username(envelope: dict[str, Any], kind: str, value: Any) -> None:
    """A recipient that is not a canonical username is refused with bad_field "to"."""
    text = (
        send_text(envelope, to=value) if kind == "send" else json.dumps({"type": kind, "to": value})
    )
    exc = error_of(text)
    assert (exc.code, "'to'" in exc.message) == ("bad_field", True)


@pytest.mark.parametrize("value", [None, [], "{}", 1], ids=["null", "array", "string", "number"])
def test_envelope_not_an_object(value: Any) -> None:
    """An envelope that is not an object is refused with bad_field "envelope"."""
    exc = error_of(send_text(value))
    assert (exc.code, "'envelope'" in exc.message) == ("bad_field", True)


@pytest.mark.parametrize("key", ["v", "iv", "ct", "rk", "sk", "sig"])
def test_envelope_missing_key(envelope: dict[str, Any], key: str) -> None:
    """An envelope without one of its six keys is refused with bad_field."""
    del envelope[key]
    assert error_of(send_text(envelope)).code == "bad_field"


def test_envelope_extra_key(envelope: dict[str, Any]) -> None:
    """An envelope with a seventh key is refused with bad_field."""
    envelope["note"] = "hi"
    assert error_of(send_text(envelope)).code == "bad_field"


@pytest.mark.parametrize("value", [2, 0, True, "1", 1.0], ids=["2", "0", "true", "string", "float"])
def test_envelope_bad_version(envelope: dict[str, Any], value: Any) -> None:
    """An envelope whose v is not the integer 1 is refused with bad_field "envelope.v"."""
    envelope["v"] = value
    exc = error_of(send_text(envelope))
    assert (exc.code, "'envelope.v'" in exc.message) == ("bad_field", True)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ct", unused_bits_set(b64(47))),  # decodes to 47 bytes, but not as the encoder writes
        ("sig", unused_bits_set(b64(64))),
        ("ct", b64(48) + "=="),  # padding where none is due
        ("ct", b64(47).rstrip("=")),  # padding stripped
        ("ct", b64(48).replace("B", "-")),  # URL-safe alphabet
        ("ct", b64(48)[:8] + "\n" + b64(48)[8:]),  # line break
        ("ct", " " + b64(48)),  # leading space
        ("rk", "\u00e9" * 512),  # not ASCII
        ("sk", 12345),  # not a string
    ],
    ids=["ct-unused-bits", "sig-unused-bits", "extra-padding", "no-padding", "urlsafe", "newline",
         "space", "non-ascii", "number"],
)  # fmt: skip
def test_envelope_bad_base64(envelope: dict[str, Any], key: str, value: Any) -> None:
    """Anything but canonical standard padded base64 is refused with bad_field naming the key."""
    envelope[key] = value
    exc = error_of(send_text(envelope))
    assert (exc.code, f"'envelope.{key}'" in exc.message) == ("bad_field", True)


@pytest.mark.parametrize(
    ("key", "size"),
    [("iv", 11), ("iv", 13), ("ct", 15), ("rk", 255), ("rk", 513), ("sk", 128), ("sig", 63),
     ("sig", 65)],
)  # fmt: skip
def test_envelope_wrong_length(envelope: dict[str, Any], key: str, size: int) -> None:
    """A binary field of the wrong decoded length is refused with bad_field naming the key."""
    envelope[key] = b64(size)
    exc = error_of(send_text(envelope))
    assert (exc.code, f"'envelope.{key}'" in exc.message) == ("bad_field", True)


@pytest.mark.parametrize("size", [256, 384, 512], ids=["rsa2048", "rsa3072", "rsa4096"])
def test_envelope_rsa_sizes_accepted(envelope: dict[str, Any], size: int) -> None:
    """RSA ciphertexts of 2048 to 4096-bit keys are accepted."""
    envelope["rk"] = envelope["sk"] = b64(size)
    assert isinstance(parse(send_text(envelope)), Send)


def test_envelope_too_large(envelope: dict[str, Any]) -> None:
    """An envelope over the limit is refused with envelope_too_large."""
    envelope["ct"] = b64(MAX)
    assert error_of(send_text(envelope)).code == "envelope_too_large"


def test_envelope_one_byte_over_the_limit(envelope: dict[str, Any]) -> None:
    """The limit applies to the canonical JSON length, not to the client's spelling."""
    size = len(json.dumps(envelope, separators=(",", ":")))
    spaced = json.dumps(
        {"type": "send", "id": FRAME_ID, "to": "bob", "envelope": envelope}, indent=8
    )
    assert isinstance(parse(spaced, max_envelope_bytes=size), Send)
    assert error_of(spaced, max_envelope_bytes=size - 1).code == "envelope_too_large"


# --- errors name the frame --------------------------------------------------------------------


def test_error_keeps_frame_id(envelope: dict[str, Any]) -> None:
    """An error in a frame with a valid id carries that id."""
    envelope["iv"] = b64(11)
    assert error_of(send_text(envelope)).frame_id == FRAME_ID


def test_error_keeps_frame_id_for_unknown_type() -> None:
    """Even an unknown frame type's error carries the frame's id."""
    exc = error_of(json.dumps({"type": "shout", "id": FRAME_ID}))
    assert (exc.code, exc.frame_id) == ("unknown_type", FRAME_ID)


def test_error_to_frame() -> None:
    """ProtocolError.to_frame() is the matching error frame."""
    exc = ProtocolError("bad_field", "field 'to' is wrong", FRAME_ID)
    expected = {"type": "error", "code": "bad_field", "message": "field 'to' is wrong"}
    assert json.loads(exc.to_frame()) == {**expected, "id": FRAME_ID}


@settings(database=None, max_examples=300)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=20,
    ),
    st.sampled_from(["send", "sync", "delivered", "read", "typing", "ping", "x"]),
)
def test_parser_only_raises_protocol_error(body: Any, kind: str) -> None:
    """Arbitrary JSON under any frame type yields a frame or a ProtocolError, never a crash."""
    frame = {"type": kind, "id": body, "to": body, "seq": body, "after": body, "envelope": body}
    with contextlib.suppress(ProtocolError):
        parse(json.dumps(frame))


# --- usernames --------------------------------------------------------------------------------


def test_normalize_username_folds_case_and_width() -> None:
    """NFKC and lower-casing turn full-width capitals into the plain name."""
    assert normalize_username("\uff21\uff2c\uff29\uff23\uff25_1") == "alice_1"


@pytest.mark.parametrize("name", ["al", "a" * 33, "al ice", "al@ice", "alice\n", "x" * 1000])
def test_normalize_username_rejects(name: str) -> None:
    """Names outside 3-32 of a-z 0-9 . _ - raise ValueError."""
    with pytest.raises(ValueError, match="username"):
        normalize_username(name)


def test_username_re_is_anchored() -> None:
    """USERNAME_RE.match() cannot accept a prefix or a trailing newline."""
    assert USERNAME_RE.match("bob") and not USERNAME_RE.match("bob\n")
    assert not USERNAME_RE.match("bob!")


# --- server frames ----------------------------------------------------------------------------


def test_ack_frame() -> None:
    """ack_frame is the compact ack object."""
    text = ack_frame(FRAME_ID, 5, 1_700_000_000_000)
    assert json.loads(text) == {"type": "ack", "id": FRAME_ID, "seq": 5, "ts": 1_700_000_000_000}
    assert " " not in text


def test_message_frame_splices_envelope(envelope: dict[str, Any]) -> None:
    """message_frame embeds the stored envelope JSON as the envelope object."""
    frame = parse(send_text(envelope))
    text = message_frame(9, frame.id, "alice", "bob", 1234, frame.envelope_json)
    assert json.loads(text) == {
        "type": "message",
        "seq": 9,
        "id": FRAME_ID,
        "from": "alice",
        "to": "bob",
        "ts": 1234,
        "envelope": envelope,
    }
    assert " " not in text


def test_synced_frame() -> None:
    """synced_frame is the compact synced object."""
    assert synced_frame(77) == '{"type":"synced","seq":77}'


@pytest.mark.parametrize("status", ["delivered", "read"])
def test_receipt_frame(status: Any) -> None:
    """receipt_frame carries seq, id, status, by and ts."""
    text = receipt_frame(3, FRAME_ID, status, "bob", 99)
    expected = {"type": "receipt", "seq": 3, "id": FRAME_ID, "status": status, "by": "bob"}
    assert json.loads(text) == {**expected, "ts": 99}


@pytest.mark.parametrize("status", ["online", "offline"])
def test_presence_frame(status: Any) -> None:
    """presence_frame carries the user and the status."""
    text = presence_frame("carol", status)
    assert json.loads(text) == {"type": "presence", "user": "carol", "status": status}


def test_typing_frame() -> None:
    """typing_frame names the typist as "from"."""
    assert json.loads(typing_frame("carol")) == {"type": "typing", "from": "carol"}


def test_pong_frame() -> None:
    """pong_frame is the pong object."""
    assert json.loads(pong_frame()) == {"type": "pong"}


def test_error_frame_without_id() -> None:
    """error_frame leaves out id when there is none."""
    text = error_frame("bad_json", "nope")
    assert json.loads(text) == {"type": "error", "code": "bad_json", "message": "nope"}


def test_builders_escape_strings() -> None:
    """Strings with quotes, backslashes and control characters still yield valid JSON."""
    odd = 'a"b\\c\n\u2028'
    assert json.loads(ack_frame(odd, 1, 2))["id"] == odd
    assert json.loads(message_frame(1, odd, odd, odd, 2, "{}"))["from"] == odd
    assert json.loads(receipt_frame(1, odd, "read", odd, 2))["by"] == odd
    assert json.loads(error_frame("bad_field", odd, odd))["message"] == odd


# --- close codes ------------------------------------------------------------------------------


def test_close_codes_match_rfc6455() -> None:
    """The close codes have their RFC 6455 / IANA registry values."""
    assert [int(code) for code in CloseCode] == [1000, 1001, 1008, 1009, 1013]


# --- rate limiter -----------------------------------------------------------------------------


def test_rate_limiter_allows_burst_then_refuses() -> None:
    """A full bucket allows burst frames at once, then refuses."""
    limiter = RateLimiter(rate_per_s=10, burst=3)
    assert [limiter.allow(100.0) for _ in range(4)] == [True, True, True, False]


def test_rate_limiter_refills_at_rate() -> None:
    """After 1/rate seconds, one more frame is allowed."""
    limiter = RateLimiter(rate_per_s=10, burst=1)
    assert limiter.allow(0.0)
    assert not limiter.allow(0.05)
    assert limiter.allow(0.1)


def test_rate_limiter_caps_at_burst() -> None:
    """A long idle period refills the bucket to burst, no further."""
    limiter = RateLimiter(rate_per_s=10, burst=2)
    limiter.allow(0.0)
    assert [limiter.allow(3600.0) for _ in range(3)] == [True, True, False]


def test_rate_limiter_ignores_clock_going_back() -> None:
    """A clock that steps backwards does not refill the bucket."""
    limiter = RateLimiter(rate_per_s=1, burst=1)
    assert limiter.allow(50.0)
    assert not limiter.allow(10.0)
    assert not limiter.allow(50.5)
    assert limiter.allow(51.0)


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (1, 0)])
def test_rate_limiter_rejects_bad_parameters(rate: float, burst: int) -> None:
    """A non-positive rate or a burst below one is a ValueError."""
    with pytest.raises(ValueError, match="rate_per_s"):
        RateLimiter(rate, burst)
