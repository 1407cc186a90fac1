"""Micro-benchmark: CPU time of ``protocol.parse_client_frame`` on a realistic ``send`` frame.

    python -m tools.bench.parse_speed [--number 20000] [--repeat 5]

The frame is built as the load generator builds it (``loadgen.send_text``) around one envelope
sealed with the real end-to-end crypto (2048-bit RSA, the load's message text): about 1.2 KiB.
It prints the best of ``--repeat`` timeit runs in microseconds per parse, next to a plain
``json.loads`` of the same text as a floor: what any parser must pay. Single-threaded and short
(a few seconds), so it can run while a full benchmark holds the other core.
"""

from __future__ import annotations

import argparse
import json
import timeit
import uuid
from collections.abc import Callable

from securechat import e2e
from securechat.chat.protocol import Send, parse_client_frame
from securechat.config import Config
from tools.bench.accounts import TEXT
from tools.bench.loadgen import send_text

MAX_ENVELOPE = Config.envelope_max_bytes  # the server's default limit


def realistic_send_frame() -> str:
    """A ``send`` frame carrying a real envelope, as the load generator sends it."""
    identity = e2e.Identity.generate(2048)
    message_id = str(uuid.uuid4())
    envelope = e2e.encrypt_message(
        message_id=message_id,
        sender="bench-sender",
        recipient="bench-recipient",
        text=TEXT,
        written_ms=1_700_000_000_000,
        sender_identity=identity,
        recipient_enc_spki=identity.enc_public_spki,
    )
    envelope_json = json.dumps(envelope, separators=(",", ":"), sort_keys=True)
    return send_text(message_id, "bench-recipient", envelope_json)


def best_us(func: Callable[[], object], number: int, repeat: int) -> float:
    """The best of ``repeat`` runs of ``number`` calls, in microseconds per call."""
    runs = timeit.repeat(func, number=number, repeat=repeat)
    return min(runs) / number * 1e6


def main() -> None:
    # __doc__ is None under python -OO.
    parser = argparse.ArgumentParser(description=(__doc__ or "\n").splitlines()[0])
    parser.add_argument("--number", type=int, default=20_000, help="calls per timed run")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs; the best is kept")
    args = parser.parse_args()

    text = realistic_send_frame()
    frame = parse_client_frame(text, max_envelope_bytes=MAX_ENVELOPE)
    assert isinstance(frame, Send)  # the frame is valid: the common case is what is timed

    def parse() -> object:
        return parse_client_frame(text, max_envelope_bytes=MAX_ENVELOPE)

    def floor() -> object:
        return json.loads(text)

    print(f"frame: {len(text)} characters, envelope {len(frame.envelope_json)}")
    print(f"parse_client_frame: {best_us(parse, args.number, args.repeat):6.2f} us per parse")
    print(f"json.loads (floor): {best_us(floor, args.number, args.repeat):6.2f} us per parse")


if __name__ == "__main__":
    main()
