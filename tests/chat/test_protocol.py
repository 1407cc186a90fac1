"""Tests for securechat.chat.protocol: parsing client frames, building server frames, flood control."""

from __future__ import annotations

import base64
import binascii
import contextlib
import itertools
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from securechat.chat.protocol import (
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
    strict_json_loads,
    synced_frame,
    typing_frame,
)
from securechat.chat.protocol import _is_base64 as is_base64  # the fast check, held to the old one
from securechat.errors import FrameCode

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
    assert (frame.id, frame.to, json.loads(frame.envelope_json)) == (FRAME_ID, "bob", envelope)


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
    exc = ProtocolError(FrameCode.BAD_FIELD, "field 'to' is wrong", FRAME_ID)
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


# --- the fast paths agree with the plain ones ----------------------------------------------


def reference_is_base64(text: str, low: int, high: int | None) -> bool:
    """The plain check the fast one replaced: decode strictly, then re-encode."""
    if len(text) < 4 * ((low + 2) // 3) or (high is not None and len(text) > 4 * ((high + 2) // 3)):
        return False
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return False
    return low <= len(raw) <= (high or len(raw)) and base64.b64encode(raw).decode() == text


def reference_json_loads(text: str) -> Any:
    """The plain strict parse the cached decoder replaced."""

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        if len(dict(pairs)) != len(pairs):
            raise ValueError("duplicate key")
        return dict(pairs)

    def no_constant(name: str) -> Any:
        raise ValueError(name)

    return json.loads(text, object_pairs_hook=unique, parse_constant=no_constant)


# Digits standing for every case of the last digit's unused bits: A and Q have their low 4 bits
# clear, E only its low 2, B and + neither; then padding, and characters base64 does not allow
# (a lone surrogate cannot even be encoded).
SOME_CHARS = "AQEB+/=-\n\u00e9\ud800"
ALL_CHARS = B64_ALPHABET + '=-_ .\n"\\\u00e9\ud800'
# Decoded sizes up to 6 bytes: each bound, none, and the real fields' bounds.
BOUNDS = [(0, None), (1, 1), (2, 2), (3, None), (1, 5), (4, 6), (6, 6), (12, 12), (16, None)]


def assert_same_base64_verdicts(texts: Any, bounds: list[tuple[int, int | None]]) -> None:
    accepted = 0
    for text in texts:
        for low, high in bounds:
            verdict = is_base64(text, low, high)
            assert verdict == reference_is_base64(text, low, high), (text, low, high)
            accepted += verdict
    assert accepted  # the inputs reach acceptance, not only early refusals


def test_base64_check_matches_decoding_up_to_4_characters() -> None:
    """Every string of up to 4 of SOME_CHARS gets the decode-and-re-encode verdict."""
    texts = ("".join(chars) for n in range(5) for chars in itertools.product(SOME_CHARS, repeat=n))
    assert_same_base64_verdicts(texts, BOUNDS)


def test_base64_check_matches_decoding_for_every_last_digit() -> None:
    """Any character in the last two places of a 4-character group gets the same verdict."""
    prefixes = ["AA", "QU", "A=", "=A", "-A"]
    texts = (p + a + b for p in prefixes for a in ALL_CHARS for b in ALL_CHARS)
    assert_same_base64_verdicts(texts, BOUNDS)


def test_base64_check_matches_decoding_over_8_characters() -> None:
    """Strings of 8 (a valid group before or after any 4 of SOME_CHARS) get the same verdict."""
    groups = ["".join(chars) for chars in itertools.product(SOME_CHARS, repeat=4)]
    texts = itertools.chain(("QUJD" + g for g in groups), (g + "QUJD" for g in groups))
    assert_same_base64_verdicts(texts, [(0, None), (4, 6), (5, 5), (6, 6)])


@settings(database=None, max_examples=500)
@given(st.binary(max_size=600), st.integers(min_value=0), st.sampled_from(ALL_CHARS + "!"))
def test_base64_check_matches_decoding_for_fields(data: bytes, where: int, char: str) -> None:
    """Real-sized base64, as is and with one character changed, gets the same verdict."""
    text = base64.b64encode(data).decode()
    where %= len(text) + 1
    changed = text[:where] + char + text[where + 1 :]
    bounds = [(12, 12), (16, None), (256, 512), (64, 64), (0, None)]
    assert_same_base64_verdicts([text, changed, text + char], bounds)


@settings(database=None, max_examples=100)
@given(
    st.binary(min_size=12, max_size=12),
    st.binary(min_size=16, max_size=2000),
    st.binary(min_size=256, max_size=512),
    st.binary(min_size=256, max_size=512),
    st.binary(min_size=64, max_size=64),
)
def test_envelope_json_is_the_encoders(
    iv: bytes, ct: bytes, rk: bytes, sk: bytes, sig: bytes
) -> None:
    """A valid envelope's spliced canonical text is what json.dumps writes for it."""
    fields = {"iv": iv, "ct": ct, "rk": rk, "sk": sk, "sig": sig}
    envelope = {"v": 1} | {name: base64.b64encode(raw).decode() for name, raw in fields.items()}
    frame = parse(send_text(envelope))
    assert frame.envelope_json == json.dumps(envelope, separators=(",", ":"), sort_keys=True)


def test_envelope_too_large_counts_escapes(envelope: dict[str, Any]) -> None:
    """A bad field's JSON escapes count toward the size, and too large is reported first."""
    envelope["ct"] = "\u00e9" * 100  # 100 characters, 600 as canonical JSON ("\u00e9")
    size = len(json.dumps(envelope, separators=(",", ":"), sort_keys=True))
    assert error_of(send_text(envelope), max_envelope_bytes=size).code == "bad_field"
    assert error_of(send_text(envelope), max_envelope_bytes=size - 1).code == "envelope_too_large"


@pytest.mark.parametrize(
    ("key", "rule"),
    [
        ("iv", "12..12"),
        ("ct", "16..any"),
        ("rk", "256..512"),
        ("sk", "256..512"),
        ("sig", "64..64"),
    ],
)
def test_envelope_bad_base64_message(envelope: dict[str, Any], key: str, rule: str) -> None:
    """A bad binary field's error message names the field and its size bounds."""
    envelope[key] = "!!!!"
    exc = error_of(send_text(envelope))
    assert exc.message == f"field 'envelope.{key}' must be canonical base64 of {rule} bytes"


def test_first_bad_envelope_field_is_reported(envelope: dict[str, Any]) -> None:
    """With several bad binary fields, the first of iv, ct, rk, sk, sig is named."""
    envelope["sig"] = envelope["rk"] = "!!!!"
    assert "'envelope.rk'" in error_of(send_text(envelope)).message


@pytest.mark.parametrize(
    "text",
    [
        '{"type":"ping","type":"ping"}',
        '{"type":"ping","x":{"a":1,"a":1}}',
        '{"type":"ping","x":[1,{"a":{"b":2,"b":3}}]}',
        '{"type":"sync","after":1,"x":{"":1,"":2}}',
        '{"type":"typing","to":"bob","t\\u006f":"eve"}',
    ],
    ids=["top", "nested", "deep-in-array", "empty-key", "escaped-key"],
)
def test_duplicate_keys_at_any_depth_are_bad_json(text: str) -> None:
    """A key given twice in any object, however spelled, is refused with bad_json."""
    assert error_of(text).message == "a frame must be valid JSON"
    assert error_of(text).code == "bad_json"


def test_duplicate_key_in_the_envelope_is_bad_json(envelope: dict[str, Any]) -> None:
    """A key given twice inside the envelope is refused with bad_json, naming the frame."""
    text = send_text(envelope).replace('"v": 1', '"v": 1, "v": 1')
    assert error_of(text).code == "bad_json"


@pytest.mark.parametrize(
    "text",
    [
        '{"a":1}',
        '{"a":1,"a":2}',
        '[{"a":{"b":[1,{"b":2,"b":2}]}}]',
        '{"a":NaN}',
        '{"a":-Infinity}',
        '\ufeff{"a":1}',
        ' {"a":1} ',
        '{"a":1} x',
        '{"a":"\\ud800"}',
        '{"a":1e400}',
        "",
    ],
)
def test_strict_json_loads_matches_json_loads(text: str) -> None:
    """The cached strict decoder accepts and refuses what json.loads with the same hooks does."""
    try:
        expected = reference_json_loads(text)
    except ValueError:
        with pytest.raises(ValueError):
            strict_json_loads(text)
    else:
        assert strict_json_loads(text) == expected


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
    text = error_frame(FrameCode.BAD_JSON, "nope")
    assert json.loads(text) == {"type": "error", "code": "bad_json", "message": "nope"}


def test_builders_escape_strings() -> None:
    """Strings with quotes, backslashes and control characters still yield valid JSON."""
    odd = 'a"b\\c\n\u2028'
    assert json.loads(ack_frame(odd, 1, 2))["id"] == odd
    assert json.loads(message_frame(1, odd, odd, odd, 2, "{}"))["from"] == odd
    assert json.loads(receipt_frame(1, odd, "read", odd, 2))["by"] == odd
    assert json.loads(error_frame(FrameCode.BAD_FIELD, odd, odd))["message"] == odd


# --- close codes ------------------------------------------------------------------------------


def test_close_codes_match_rfc6455() -> None:
    """The close codes have their RFC 6455 / IANA registry values."""
    assert [int(code) for code in CloseCode] == [1000, 1001, 1008, 1009, 1011, 1013]


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
