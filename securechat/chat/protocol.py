"""The chat's WebSocket protocol, Sans-I/O: text in, typed frames out; values in, text out.

Like python-websockets' ``protocol.py``, nothing here touches a socket or Quart, so every rule can
be tested with plain strings. ``chat/endpoint.py`` owns the I/O: it feeds each received text frame to
:func:`parse_client_frame`, answers a :class:`ProtocolError` with ``exc.to_frame()`` (a mistake
in one frame never closes the socket), and sends the text the builders return.

Client -> server frames (JSON objects with a ``"type"``)::

    {"type": "send", "id": uuid, "to": username, "envelope": {...}}
    {"type": "sync", "after": seq}
    {"type": "delivered", "seq": seq}      {"type": "read", "seq": seq}
    {"type": "typing", "to": username}     {"type": "ping"}
    {"type": "delete", "id": uuid}         (delete my message for everyone)
    {"type": "send", "id": uuid, "group": hex, "head": b64, "envelope": {...}}   (a group's)
    {"type": "group_keys", "id": uuid, "group": hex, "head": b64, "keys": {name: {...}}}
    {"type": "delivered" or "read", "seq": seq, "group": hex}                      (a group's)

Unknown keys are ignored, so a client-sent ``"from"`` is never trusted: the server always takes
the sender from the authenticated session. The envelope format is in ``docs/CONTRACTS.md``.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _quote
from typing import Any, Final, Literal, TypeAlias

from securechat.errors import CloseCode, FrameCode

# --- Names and ids ------------------------------------------------------------------------------

# The account rule, shared with accounts/validation.py: after NFKC and lower-casing, 3-32 of a-z 0-9 . _ -.
# Anchored with \A...\Z so that .match() and .search() cannot accept a trailing newline.
USERNAME_RE: Final = re.compile(r"\A[a-z0-9._-]{3,32}\Z")
# A canonical UUID as the browser's crypto.randomUUID() writes it: lower-case 8-4-4-4-12 hex.
UUID_RE: Final = re.compile(r"\A[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
# NFKC never turns several characters into one ASCII character, so no longer input can yield a
# valid name; refusing it before normalizing bounds the work done on hostile input.
_USERNAME_INPUT_MAX: Final = 128
# Sequence numbers are SQLite INTEGERs (signed 64-bit).
SEQ_LIMIT: Final = 2**63


def normalize_username(name: str) -> str:
    """The canonical form of a username (NFKC, lower-case); ValueError if it breaks the rule."""
    if not isinstance(name, str) or len(name) > _USERNAME_INPUT_MAX:
        raise ValueError("a username is 3-32 characters of a-z 0-9 . _ -")
    canonical = unicodedata.normalize("NFKC", name).lower()
    if not USERNAME_RE.match(canonical):
        raise ValueError("a username is 3-32 characters of a-z 0-9 . _ -")
    return canonical


# --- Client frames ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Store the envelope for ``to``: ``envelope_json`` is its canonical JSON text, the only
    form the server keeps (it never looks inside an envelope)."""

    id: str
    to: str
    envelope_json: str


@dataclass(frozen=True, slots=True)
class Sync:
    """Send me every message with a sequence number above ``after``."""

    after: int


@dataclass(frozen=True, slots=True)
class Delivered:
    """My client has stored message ``seq`` (of ``group``, hex, when it is a group's)."""

    seq: int
    group: str | None = None


@dataclass(frozen=True, slots=True)
class Read:
    """I have seen message ``seq`` (of ``group``, hex, when it is a group's)."""

    seq: int
    group: str | None = None


@dataclass(frozen=True, slots=True)
class GroupSend:
    """Store a group message (docs/CONTRACTS.md "Group message") for ``group`` (hex),
    encrypted under membership ``head`` (b64); ``envelope_json`` is the wire object's
    canonical JSON text."""

    id: str
    group: str
    head: str
    envelope_json: str


@dataclass(frozen=True, slots=True)
class GroupKeys:
    """Hand my sender chain to some members of ``group``: ``keys`` maps each recipient to
    the canonical JSON of its pairwise envelope; ``keys_json`` is the whole map's."""

    id: str
    group: str
    head: str
    keys: dict[str, str]
    keys_json: str


@dataclass(frozen=True, slots=True)
class Typing:
    """I am typing to ``to``."""

    to: str


@dataclass(frozen=True, slots=True)
class Delete:
    """Remove my stored message ``id`` from the server (delete for everyone)."""

    id: str


@dataclass(frozen=True, slots=True)
class Ping:
    """Are you there? (An application-level keepalive the page can observe.)"""


ClientFrame: TypeAlias = (
    Send | GroupSend | GroupKeys | Sync | Delivered | Read | Typing | Ping | Delete
)

ProtocolErrorCode: TypeAlias = Literal[
    FrameCode.BAD_JSON,
    FrameCode.NOT_AN_OBJECT,
    FrameCode.UNKNOWN_TYPE,
    FrameCode.BAD_FIELD,
    FrameCode.ENVELOPE_TOO_LARGE,
    FrameCode.BINARY_FRAME,
]


class ProtocolError(Exception):
    """A client frame that breaks the protocol; answered with an error frame, not a close."""

    def __init__(
        self, error: ProtocolErrorCode, message: str | None = None, frame_id: str | None = None
    ) -> None:
        self.error = error
        self.message = message or error.message
        self.frame_id = frame_id
        super().__init__(self.message)

    @property
    def code(self) -> str:
        """The stable code the error frame carries."""
        return self.error.code

    def to_frame(self) -> str:
        """The ``error`` frame telling the client what was wrong with its frame."""
        return error_frame(self.error, self.message, self.frame_id)


def _bad_field(name: str, rule: str) -> ProtocolError:
    return ProtocolError(FrameCode.BAD_FIELD, f"field {name!r} {rule}")


# --- Parsing ------------------------------------------------------------------------------------


def parse_client_frame(data: str | bytes, *, max_envelope_bytes: int) -> ClientFrame:
    """Parse and validate one client frame; raise :class:`ProtocolError` if it is not valid."""
    if not isinstance(data, str):
        raise ProtocolError(FrameCode.BINARY_FRAME)
    obj = _load_json(data)
    if not isinstance(obj, dict):
        raise ProtocolError(FrameCode.NOT_AN_OBJECT)
    try:
        kind = obj.get("type")
        if not isinstance(kind, str):
            raise _bad_field("type", "must be a string")
        parser = _PARSERS.get(kind)
        if parser is None:
            raise ProtocolError(FrameCode.UNKNOWN_TYPE, f"unknown frame type {kind[:32]!r}")
        return parser(obj, max_envelope_bytes)
    except ProtocolError as exc:
        exc.frame_id = _frame_id(obj)
        raise


def strict_json_loads(data: str) -> Any:
    """json.loads, strict: no NaN/Infinity, no duplicate keys, no absurd nesting or numbers.

    Raises ValueError for anything that is not such JSON (RecursionError included).
    """
    try:
        return _STRICT_DECODER.decode(data)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc


def _load_json(data: str) -> Any:
    """strict_json_loads, failing as a ``bad_json`` protocol error."""
    try:
        return strict_json_loads(data)
    except ValueError as exc:
        # ValueError covers JSONDecodeError and ints beyond sys.get_int_max_str_digits().
        raise ProtocolError(FrameCode.BAD_JSON) from exc


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Duplicate keys are read differently by different parsers (RFC 8259 section 4): refuse them.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate key")
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# json.loads(text, **hooks) is JSONDecoder(**hooks).decode(text) after refusing a leading BOM,
# which decode() refuses as well (U+FEFF cannot start a JSON value). Given any hook, json.loads
# builds a new decoder and C scanner per call, which cost more than the hooks themselves (a send
# frame has two objects): so the decoder is built once.
_STRICT_DECODER: Final = json.JSONDecoder(
    object_pairs_hook=_unique_keys, parse_constant=_no_constant
)


def _frame_id(obj: dict[str, Any]) -> str | None:
    """The frame's id if it has a valid one, so an error can name the frame it answers."""
    value = obj.get("id")
    return value if isinstance(value, str) and UUID_RE.match(value) else None


def _seq(obj: dict[str, Any], name: str) -> int:
    value = obj.get(name)
    # bool is a subclass of int in Python, but true is not a sequence number.
    if type(value) is not int or not 0 <= value < SEQ_LIMIT:
        raise _bad_field(name, "must be an integer in [0, 2**63)")
    return value


def _username(obj: dict[str, Any], name: str) -> str:
    value = obj.get(name)
    # The canonical form is required, not merely accepted: the name is part of the envelope's AAD
    # and signature (CONTRACTS.md), so normalizing it here would make the message unverifiable.
    # An ASCII string matching USERNAME_RE is its own NFKC lower-case form, so the regex suffices.
    if isinstance(value, str) and USERNAME_RE.match(value):
        return value
    raise _bad_field(name, "must be a canonical username (lower-case, 3-32 of a-z 0-9 . _ -)")


def _uuid(obj: dict[str, Any], name: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not UUID_RE.match(value):
        raise _bad_field(name, "must be a lower-case canonical UUID")
    return value


def _parse_send(obj: dict[str, Any], max_envelope_bytes: int) -> Send | GroupSend:
    if "group" in obj:
        return _parse_group_send(obj, max_envelope_bytes)
    frame_id = _uuid(obj, "id")
    to = _username(obj, "to")
    return Send(
        id=frame_id, to=to, envelope_json=_envelope(obj.get("envelope"), max_envelope_bytes)
    )


def _parse_delete(obj: dict[str, Any], _max: int) -> Delete:
    return Delete(id=_uuid(obj, "id"))


def _parse_sync(obj: dict[str, Any], _max: int) -> Sync:
    return Sync(after=_seq(obj, "after"))


def _parse_delivered(obj: dict[str, Any], _max: int) -> Delivered:
    return Delivered(seq=_seq(obj, "seq"), group=_group_or_none(obj))


def _parse_read(obj: dict[str, Any], _max: int) -> Read:
    return Read(seq=_seq(obj, "seq"), group=_group_or_none(obj))


def _parse_typing(obj: dict[str, Any], _max: int) -> Typing:
    return Typing(to=_username(obj, "to"))


def _parse_ping(obj: dict[str, Any], _max: int) -> Ping:
    return _PING


# --- Group frames (issue 13; docs/protocol.md "Groups") -----------------------------------------

# A group id on the wire: the lower-case hex of 16 bytes.
GROUP_RE: Final = re.compile(r"\A[0-9a-f]{32}\Z")
_HEAD_BYTES: Final = 32
# The group wire object (CONTRACTS.md "Group message"): binary fields' decoded sizes (cid: the
# sender chain's id), and the sender chain's iteration, a u32.
_GROUP_ENVELOPE_BYTES: Final[dict[str, tuple[int, int | None]]] = {
    "cid": (16, 16),
    "iv": (12, 12),
    "ct": (16, None),
    "sig": (64, 64),
}
_GROUP_ENVELOPE_KEYS: Final = frozenset(_GROUP_ENVELOPE_BYTES) | {"v", "it"}
_ITERATION_LIMIT: Final = 2**32


def _group_id(obj: dict[str, Any]) -> str:
    value = obj.get("group")
    if isinstance(value, str) and GROUP_RE.match(value):
        return value
    raise _bad_field("group", "must be a group id: 32 lower-case hex digits")


def _group_or_none(obj: dict[str, Any]) -> str | None:
    return _group_id(obj) if "group" in obj else None


def _head(obj: dict[str, Any]) -> str:
    value = obj.get("head")
    if isinstance(value, str) and _is_base64(value, _HEAD_BYTES, _HEAD_BYTES):
        return value
    raise _bad_field("head", "must be canonical base64 of 32 bytes")


def _parse_group_send(obj: dict[str, Any], max_bytes: int) -> GroupSend:
    frame_id = _uuid(obj, "id")
    if "to" in obj:
        raise _bad_field("to", "must be absent from a group's send")
    group, head = _group_id(obj), _head(obj)
    return GroupSend(frame_id, group, head, _group_envelope(obj.get("envelope"), max_bytes))


def _group_envelope(value: Any, max_bytes: int) -> str:
    """Validate a group wire object; return its canonical JSON text."""
    if not isinstance(value, dict) or value.keys() != _GROUP_ENVELOPE_KEYS:
        raise _bad_field(
            "envelope", "must be an object with exactly the keys v, cid, it, iv, ct, sig"
        )
    if type(value["v"]) is not int or value["v"] != 1:
        raise _bad_field("envelope.v", "must be 1")
    if type(value["it"]) is not int or not 0 <= value["it"] < _ITERATION_LIMIT:
        raise _bad_field("envelope.it", "must be an integer in [0, 2**32)")
    bad = next(
        (
            name
            for name, (low, high) in _GROUP_ENVELOPE_BYTES.items()
            if not isinstance(value[name], str) or not _is_base64(value[name], low, high)
        ),
        None,
    )
    text = _CANONICAL.encode(value)
    if len(text) > max_bytes:
        raise ProtocolError(FrameCode.ENVELOPE_TOO_LARGE, f"the envelope exceeds {max_bytes} bytes")
    if bad is not None:
        low, high = _GROUP_ENVELOPE_BYTES[bad]
        raise _bad_field(
            f"envelope.{bad}", f"must be canonical base64 of {low}..{high or 'any'} bytes"
        )
    return text


def _parse_group_keys(obj: dict[str, Any], max_bytes: int) -> GroupKeys:
    frame_id = _uuid(obj, "id")
    group, head = _group_id(obj), _head(obj)
    value = obj.get("keys")
    if not isinstance(value, dict) or not value:
        raise _bad_field("keys", "must be an object naming at least one recipient")
    keys: dict[str, str] = {}
    for name in sorted(value):
        if not USERNAME_RE.match(name):
            raise _bad_field("keys", "must map canonical usernames to envelopes")
        keys[name] = _envelope(value[name], max_bytes)
    keys_json = "{" + ",".join(f"{_quote(name)}:{text}" for name, text in keys.items()) + "}"
    if len(keys_json) > max_bytes:
        raise ProtocolError(FrameCode.ENVELOPE_TOO_LARGE, f"the keys exceed {max_bytes} bytes")
    return GroupKeys(frame_id, group, head, keys, keys_json)


_PING: Final = Ping()
_PARSERS: Final[dict[str, Callable[[dict[str, Any], int], ClientFrame]]] = {
    "send": _parse_send,
    "sync": _parse_sync,
    "delivered": _parse_delivered,
    "read": _parse_read,
    "typing": _parse_typing,
    "ping": _parse_ping,
    "delete": _parse_delete,
    "group_keys": _parse_group_keys,
}

# --- The envelope -------------------------------------------------------------------------------

# Decoded byte lengths allowed per binary field (CONTRACTS.md, "Message envelope").
# ct: AES-GCM ciphertext || 16-byte tag; its upper bound is the envelope's size bound.
# rk, sk: RSA-OAEP ciphertexts are as long as the modulus: 2048..4096 bits.
_ENVELOPE_BYTES: Final[dict[str, tuple[int, int | None]]] = {
    "iv": (12, 12),
    "ct": (16, None),
    "rk": (256, 512),
    "sk": (256, 512),
    "sig": (64, 64),  # Ed25519 (RFC 8032 section 5.1.6)
}
_ENVELOPE_KEYS: Final = frozenset(_ENVELOPE_BYTES) | {"v"}
# The canonical JSON text: compact, keys sorted, ASCII only. Its length is the envelope's size.
_CANONICAL: Final = json.JSONEncoder(separators=(",", ":"), sort_keys=True)
# The base64 alphabet (RFC 4648 section 4): deleting it from base64 digits leaves nothing.
_BASE64_ALPHABET: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
# The base64 digits whose low 4 bits (the last before "==") or low 2 bits (before "=") are zero:
# every 16th, and every 4th, of A-Z a-z 0-9 + /.
_ZERO_LOW_BITS: Final = {2: "AQgw", 1: "AEIMQUYcgkosw048"}


def _envelope(value: Any, max_bytes: int) -> str:
    """Validate an envelope; return its canonical JSON text."""
    if not isinstance(value, dict):
        raise _bad_field("envelope", "must be an object")
    if value.keys() != _ENVELOPE_KEYS:
        raise _bad_field("envelope", "must have exactly the keys v, iv, ct, rk, sk, sig")
    if type(value["v"]) is not int or value["v"] != 1:
        raise _bad_field("envelope.v", "must be 1")
    for name in _ENVELOPE_BYTES:
        if not isinstance(value[name], str):
            raise _bad_field(f"envelope.{name}", "must be a base64 string")
    bad = _bad_base64_field(value)
    # Base64 is [A-Za-z0-9+/=] only, which JSON writes as is: a valid envelope's canonical text
    # can be spliced together. Any other envelope needs the encoder to get its size right.
    text = _canonical_text(value) if bad is None else _CANONICAL.encode(value)
    # Too large is reported before a bad field.
    if len(text) > max_bytes:
        raise ProtocolError(FrameCode.ENVELOPE_TOO_LARGE, f"the envelope exceeds {max_bytes} bytes")
    if bad is not None:
        low, high = _ENVELOPE_BYTES[bad]
        raise _bad_field(
            f"envelope.{bad}", f"must be canonical base64 of {low}..{high or 'any'} bytes"
        )
    return text


def _canonical_text(value: dict[str, Any]) -> str:
    """``_CANONICAL.encode(value)`` for an envelope with v = 1 and valid base64 fields."""
    return (
        f'{{"ct":"{value["ct"]}","iv":"{value["iv"]}","rk":"{value["rk"]}",'
        f'"sig":"{value["sig"]}","sk":"{value["sk"]}","v":1}}'
    )


def _bad_base64_field(value: dict[str, Any]) -> str | None:
    """The first binary field that is not canonical base64 of an allowed size, if any."""
    for name, (low, high) in _ENVELOPE_BYTES.items():
        if not _is_base64(value[name], low, high):
            return name
    return None


def _is_base64(text: str, low: int, high: int | None) -> bool:
    """Whether ``text`` is canonical padded base64 (RFC 4648 section 4) of low..high bytes.

    The same verdict as b64decode(text, validate=True) giving low..high bytes that b64encode
    spells as ``text`` (tests compare the two exhaustively), without decoding or encoding.
    """
    size = len(text)
    # Reject on length before matching anything: base64 of n bytes is 4 * ceil(n / 3) characters.
    if size < _b64_len(low) or (high is not None and size > _b64_len(high)):
        return False
    digits = text.rstrip("=")
    padding = size - len(digits)
    # b64encode writes whole 4-character groups of the alphabet, then at most two "=": the text
    # b64decode(validate=True) accepts (it matches [A-Za-z0-9+/]*={0,2}), in groups of 4. Checked
    # by deleting the alphabet (faster than that regex); isascii() first, as encode() refuses
    # a lone surrogate (JSON's "\ud800").
    if size % 4 or padding > 2 or not digits.isascii():
        return False
    if digits.encode().translate(None, _BASE64_ALPHABET):
        return False
    # b64decode ignores the unused low bits of the last digit (4 bits before "==", 2 before "="),
    # and b64encode writes them as zero: so each byte string has one accepted spelling.
    if padding and digits[-1] not in _ZERO_LOW_BITS[padding]:
        return False
    decoded = size // 4 * 3 - padding
    return low <= decoded and (high is None or decoded <= high)


def _b64_len(n: int) -> int:
    return 4 * ((n + 2) // 3)


# --- Server frames ------------------------------------------------------------------------------
# Compact JSON text, built once per frame and shared by every recipient's queue. The per-message
# builders format strings directly (about five times faster than json.dumps); every string value
# goes through json's own C escaper, so the output is always valid JSON.

ReceiptStatus: TypeAlias = Literal["delivered", "read"]
PresenceStatus: TypeAlias = Literal["online", "offline"]

_COMPACT: Final = json.JSONEncoder(separators=(",", ":"))


def ack_frame(id: str, seq: int, ts: int) -> str:
    """``{"type": "ack", "id", "seq", "ts"}``: the server stored the client's message."""
    return f'{{"type":"ack","id":{_quote(id)},"seq":{seq:d},"ts":{ts:d}}}'


def message_frame(
    seq: int, id: str, sender: str, recipient: str, ts: int, envelope_json: str
) -> str:
    """A stored message; ``envelope_json`` (canonical text, as in :class:`Send`) is spliced in."""
    return (
        f'{{"type":"message","seq":{seq:d},"id":{_quote(id)},"from":{_quote(sender)},'
        f'"to":{_quote(recipient)},"ts":{ts:d},"envelope":{envelope_json}}}'
    )


def deleted_frame(id: str) -> str:
    """``{"type": "deleted", "id"}``: my message ``id`` is no longer stored on the server."""
    return f'{{"type":"deleted","id":{_quote(id)}}}'


def synced_frame(seq: int) -> str:
    """``{"type": "synced", "seq"}``: the sync is complete up to ``seq``."""
    return f'{{"type":"synced","seq":{seq:d}}}'


def receipt_frame(seq: int, id: str, status: ReceiptStatus, by: str, ts: int) -> str:
    """Message ``seq`` was delivered to or read by ``by``."""
    return (
        f'{{"type":"receipt","seq":{seq:d},"id":{_quote(id)},"status":{_quote(status)},'
        f'"by":{_quote(by)},"ts":{ts:d}}}'
    )


def presence_frame(user: str, status: PresenceStatus) -> str:
    """``user`` came online or went offline."""
    return _COMPACT.encode({"type": "presence", "user": user, "status": status})


def typing_frame(sender: str) -> str:
    """``sender`` is typing to the receiving user."""
    return _COMPACT.encode({"type": "typing", "from": sender})


def group_message_frame(
    seq: int, id: str, group: str, sender: str, head: str, ts: int, envelope_json: str
) -> str:
    """A stored group message; ``envelope_json`` (canonical text) is spliced in."""
    return (
        f'{{"type":"group_message","seq":{seq:d},"id":{_quote(id)},"group":{_quote(group)},'
        f'"from":{_quote(sender)},"head":{_quote(head)},"ts":{ts:d},"envelope":{envelope_json}}}'
    )


def group_keys_frame(
    seq: int,
    id: str,
    group: str,
    sender: str,
    head: str,
    ts: int,
    envelope_json: str,
    to: str | None = None,
) -> str:
    """A key distribution: the reader's own pairwise envelope; for the sender's other devices,
    ``to`` names the recipient whose envelope it is."""
    recipient = "" if to is None else f'"to":{_quote(to)},'
    return (
        f'{{"type":"group_keys","seq":{seq:d},"id":{_quote(id)},"group":{_quote(group)},'
        f'"from":{_quote(sender)},{recipient}"head":{_quote(head)},"ts":{ts:d},'
        f'"envelope":{envelope_json}}}'
    )


def group_entry_frame(seq: int, group: str, index: int, entry: str, ts: int) -> str:
    """A membership change at chain ``index``; ``entry`` is b64 as posted."""
    return (
        f'{{"type":"group_entry","seq":{seq:d},"group":{_quote(group)},"index":{index:d},'
        f'"entry":{_quote(entry)},"ts":{ts:d}}}'
    )


def group_receipt_frame(group: str, id: str, delivered: int, read: int, members: int) -> str:
    """How many of the other members have received and read my group message ``id``."""
    return (
        f'{{"type":"group_receipt","group":{_quote(group)},"id":{_quote(id)},'
        f'"delivered":{delivered:d},"read":{read:d},"members":{members:d}}}'
    )


_PONG: Final = '{"type":"pong"}'


def pong_frame() -> str:
    """The answer to ``ping``."""
    return _PONG


def error_frame(error: FrameCode, message: str | None = None, frame_id: str | None = None) -> str:
    """``{"type": "error", "code", "message"}``, with the client's frame ``id`` when known;
    ``message`` is the entry's own unless given."""
    frame: dict[str, str] = {
        "type": "error",
        "code": error.code,
        "message": message or error.message,
    }
    if frame_id is not None:
        frame["id"] = frame_id
    return _COMPACT.encode(frame)


# --- Flood control ------------------------------------------------------------------------------


class RateLimiter:
    """A token bucket: ``burst`` frames at once, refilled at ``rate_per_s``; the caller owns time.

    One per connection. ``now`` is any monotonic clock in seconds (``loop.time()``), so tests
    drive it by hand.
    """

    __slots__ = ("_burst", "_last", "_rate", "_tokens")

    def __init__(self, rate_per_s: float, burst: int) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be > 0 and burst >= 1")
        self._rate = float(rate_per_s)
        self._burst = float(burst)
        self._tokens = float(burst)
        self._last: float | None = None

    def allow(self, now: float) -> bool:
        """Take one token if there is one; False means the frame exceeds the allowed rate."""
        if self._last is None:
            self._last = now
        elif now > self._last:  # a clock that steps back never refills the bucket
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
            self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def full(self, now: float) -> bool:
        """Whether the bucket has refilled to ``burst``: then it is no different from a new one."""
        if self._last is None:
            return True
        elapsed = max(0.0, now - self._last)
        return self._tokens + elapsed * self._rate >= self._burst


class KeyedRateLimiter:
    """One :class:`RateLimiter` per key (an account), shared by all of its connections.

    At most ``max_keys`` buckets are kept. When a new key finds the table full, the buckets
    that have refilled are forgotten first (losslessly: a full bucket is a new one); if that
    frees less than a quarter of the table, the oldest buckets go too, down to three quarters,
    so the sweep's cost is spread over many new keys.
    """

    __slots__ = ("_buckets", "_burst", "_max_keys", "_rate")

    def __init__(self, rate_per_s: float, burst: int, max_keys: int) -> None:
        RateLimiter(rate_per_s, burst)  # validates the parameters
        if max_keys < 1:
            raise ValueError("max_keys must be >= 1")
        self._rate = rate_per_s
        self._burst = burst
        self._max_keys = max_keys
        self._buckets: dict[object, RateLimiter] = {}

    def allow(self, key: object, now: float) -> bool:
        """Take one token from ``key``'s bucket; False means ``key`` is over its rate."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max_keys:
                self._sweep(now)
            bucket = self._buckets[key] = RateLimiter(self._rate, self._burst)
        return bucket.allow(now)

    def __len__(self) -> int:
        return len(self._buckets)

    def _sweep(self, now: float) -> None:
        for key in [key for key, bucket in self._buckets.items() if bucket.full(now)]:
            del self._buckets[key]
        target = self._max_keys * 3 // 4
        if len(self._buckets) > target:
            for key in list(self._buckets)[: len(self._buckets) - target]:
                del self._buckets[key]


__all__ = [
    "GROUP_RE",
    "SEQ_LIMIT",
    "USERNAME_RE",
    "UUID_RE",
    "ClientFrame",
    "CloseCode",
    "Delete",
    "Delivered",
    "GroupKeys",
    "GroupSend",
    "KeyedRateLimiter",
    "Ping",
    "PresenceStatus",
    "ProtocolError",
    "ProtocolErrorCode",
    "RateLimiter",
    "Read",
    "ReceiptStatus",
    "Send",
    "Sync",
    "Typing",
    "ack_frame",
    "deleted_frame",
    "error_frame",
    "group_entry_frame",
    "group_keys_frame",
    "group_message_frame",
    "group_receipt_frame",
    "message_frame",
    "normalize_username",
    "parse_client_frame",
    "pong_frame",
    "presence_frame",
    "receipt_frame",
    "synced_frame",
    "typing_frame",
]
