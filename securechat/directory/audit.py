"""An independent auditor of a SecureChat key directory.

    python -m securechat.audit <base-url> [--state FILE] [--watch USERNAME]...

Each run pins the directory key (first use, or ``--expect-fingerprint``), fetches the latest
signed tree head, checks its signature, checks it against every head seen before (two different
heads of one size, or a head that does not extend the last one, is equivocation), downloads the
new entries and recomputes the Merkle root from them, so every entry is proved included in the
head. Its view (the verified leaf hashes, every head seen, watched users' entries, evidence) is
kept in the state file between runs. ``--watch`` lists every key a username has ever had.

Exit status: 0 when all is well; 1 when the log misbehaved (the evidence stays in the state file
and is reported on every later run); 2 when the audit could not be completed.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# securechat.client first: without the client extra, its error says how to install httpx.
from securechat.client import DirectoryEntry, KeyDirectoryError

# isort: split
import httpx

from securechat import datadir, e2e
from securechat.chat.protocol import normalize_username
from securechat.directory import merkle
from securechat.directory.transparency import (
    TOMBSTONE_FINGERPRINT,
    SignedTreeHead,
    user_hash,
    verify_tree_head,
)

DEFAULT_STATE = Path("securechat-audit.json")
OK, MISBEHAVED, INCOMPLETE = 0, 1, 2


class AuditIncomplete(Exception):
    """The audit could not be completed (network, HTTP error, unusable answer)."""


class Misbehaviour(Exception):
    """The directory did something an honest log never does."""


@dataclass
class AuditState:
    """What the auditor has verified so far; kept as JSON between runs."""

    directory_key: bytes | None = None
    leaves: list[bytes] = field(default_factory=list)
    head: SignedTreeHead | None = None
    heads: dict[int, SignedTreeHead] = field(default_factory=dict)
    watched: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    evidence: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> AuditState:
        """The state in ``path``, or a fresh one if there is no such file."""
        if not path.exists():
            return cls()
        try:
            data = json.loads(path.read_text("utf-8"))
            packed = base64.b64decode(data["leaves"], validate=True)
            key, head = data["directory_key"], data["head"]
            return cls(
                directory_key=e2e.b64decode(key) if key else None,
                leaves=[packed[i : i + 32] for i in range(0, len(packed), 32)],
                head=SignedTreeHead.from_json(head) if head else None,
                heads={int(k): SignedTreeHead.from_json(v) for k, v in data["heads"].items()},
                watched=dict(data["watched"]),
                evidence=list(data["evidence"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path} is not a usable audit state file: {error}") from None

    def save(self, path: Path) -> None:
        """Write the state atomically (mode 0600)."""
        data = {
            "v": 1,
            "directory_key": e2e.b64encode(self.directory_key) if self.directory_key else None,
            "leaves": base64.b64encode(b"".join(self.leaves)).decode("ascii"),
            "head": self.head.to_json() if self.head else None,
            "heads": {str(k): v.to_json() for k, v in sorted(self.heads.items())},
            "watched": self.watched,
            "evidence": self.evidence,
        }
        datadir.replace_private_file(path, json.dumps(data, indent=1).encode("utf-8"))


class Auditor:
    """One audit run against one server."""

    def __init__(self, http: httpx.Client, state: AuditState, page: int = 1000) -> None:
        self.http = http
        self.state = state
        self.page = page
        self.notes: list[str] = []

    def get(self, path: str, **params: int) -> Any:
        """GET a JSON body; AuditIncomplete on any failure to get one."""
        try:
            response = self.http.get(path, params=params)
            response.raise_for_status()
            return response.json()
        except (httpx.HTTPError, ValueError) as error:
            raise AuditIncomplete(f"GET {path}: {error}") from None

    def audit(self, watch: Sequence[str], expect: str | None, accept: str | None) -> None:
        """Run every check; raise Misbehaviour or AuditIncomplete when one fails."""
        key = self.pin_directory_key(expect, accept)
        head = self.fetch_head(key)
        self.check_against_seen(head)
        # A name watched for the first time needs the whole log read again for its history.
        rescan = any(n not in self.state.watched for n in watch)
        verified = len(self.state.leaves)
        if head.tree_size >= verified:
            self.check_consistency(head)
            self.check_time(head)
            self.verify_entries(0 if rescan else verified, head, watch)
            self.state.head = head
        else:
            self.check_prefix(head)
            if rescan and self.state.head is not None:
                self.verify_entries(0, self.state.head, watch)
        self.state.heads.setdefault(head.tree_size, head)
        self.notes.append(
            f"OK: the log of size {len(self.state.leaves)} is verified;"
            f" the server's head has size {head.tree_size}, root {head.root_hash.hex()}"
        )

    def pin_directory_key(self, expect: str | None, accept: str | None) -> bytes:
        """The server's directory key, checked against the pin (first use pins it)."""
        try:
            spki = e2e.b64decode(self.get("/api/v1/directory")["public_key"])
        except (KeyError, TypeError, ValueError) as error:
            raise AuditIncomplete(f"no directory key: {error}") from None
        fingerprint = e2e.fingerprint(spki)
        pinned = self.state.directory_key
        if expect is not None and fingerprint != expect.lower():
            raise Misbehaviour(f"the directory key is {fingerprint}, not the expected {expect}")
        if pinned is None or (pinned != spki and accept is not None and accept == fingerprint):
            self.state.directory_key = spki
            self.notes.append(f"pinned the directory key {fingerprint}")
        elif pinned != spki:
            raise Misbehaviour(
                f"the directory key changed from {e2e.fingerprint(pinned)} to {fingerprint};"
                f" if the operator announced this rotation, re-run with"
                f" --accept-directory-key {fingerprint}"
            )
        return spki

    def fetch_head(self, key: bytes) -> SignedTreeHead:
        """The latest head, with a valid signature."""
        try:
            head = SignedTreeHead.from_json(self.get("/api/v1/directory/head"))
        except ValueError as error:
            raise AuditIncomplete(f"malformed tree head: {error}") from None
        if not verify_tree_head(key, head):
            raise Misbehaviour("the tree head's signature does not verify")
        return head

    def check_against_seen(self, head: SignedTreeHead) -> None:
        """Equivocation: a different signed head for a size already seen."""
        seen = self.state.heads.get(head.tree_size)
        if seen is not None and seen != head:
            self.evidence(
                "equivocation", f"two different heads of size {head.tree_size}", seen, head
            )

    def check_time(self, head: SignedTreeHead) -> None:
        """Entry times never go back, so neither do the times of growing heads."""
        last = self.state.head
        if last and head.tree_size > last.tree_size and head.timestamp_ms < last.timestamp_ms:
            self.evidence("time_reversed", "a larger head has an earlier timestamp", last, head)

    def check_consistency(self, head: SignedTreeHead) -> None:
        """The server's consistency proof from the last verified head to this one."""
        last = self.state.head
        if last is None or last.tree_size in (0, head.tree_size):
            return
        body = self.get(
            "/api/v1/directory/consistency", **{"from": last.tree_size, "to": head.tree_size}
        )
        try:
            proof = [e2e.b64decode(p) for p in body["proof"]]
        except (KeyError, TypeError, ValueError) as error:
            raise AuditIncomplete(f"malformed consistency proof: {error}") from None
        if not merkle.verify_consistency(
            last.tree_size, head.tree_size, last.root_hash, head.root_hash, proof
        ):
            self.evidence(
                "fork",
                f"the head of size {head.tree_size} is not an extension of the head of size"
                f" {last.tree_size}",
                last,
                head,
            )

    def check_prefix(self, head: SignedTreeHead) -> None:
        """A smaller head than the verified log must be the root of a prefix of it."""
        if merkle.MerkleTree(self.state.leaves[: head.tree_size]).root() != head.root_hash:
            assert self.state.head is not None
            self.evidence(
                "fork",
                f"the head of size {head.tree_size} is not a prefix of the verified log",
                head,
                self.state.head,
            )

    def verify_entries(self, start: int, head: SignedTreeHead, watch: Sequence[str]) -> None:
        """Download entries from ``start`` up to the head; recompute the root from all leaves.

        Also collects the entries of every name ever watched; the state changes only if the
        entries hash to the signed head.
        """
        names = set(self.state.watched) | set(watch)
        found = {n: [] if start == 0 else list(self.state.watched.get(n, [])) for n in names}
        by_hash = {user_hash(n): n for n in names}
        leaves = self.state.leaves[:start]
        previous_time = 0
        for entry in self.entries(start, head.tree_size):
            if entry.timestamp_ms < previous_time:
                raise Misbehaviour(f"entry {entry.index} is older than the one before")
            previous_time = entry.timestamp_ms
            leaf = entry.leaf_hash()
            if entry.index < len(self.state.leaves) and self.state.leaves[entry.index] != leaf:
                raise Misbehaviour(f"entry {entry.index} differs from the one verified before")
            leaves.append(leaf)
            if entry.user_hash in by_hash:
                found[by_hash[entry.user_hash]].append(_watched_json(entry))
        if merkle.MerkleTree(leaves).root() != head.root_hash:
            raise Misbehaviour(
                f"the entries do not hash to the signed head of size {head.tree_size}"
            )
        self.state.leaves = leaves
        self.state.watched = found

    def entries(self, start: int, end: int) -> Iterator[DirectoryEntry]:
        """Yield the entries start..end-1, page by page, checking their indices."""
        while start < end:
            body = self.get("/api/v1/directory/entries", start=start, end=end)
            try:
                page = [DirectoryEntry.from_json(e) for e in body["entries"]]
            except (KeyError, TypeError, KeyDirectoryError) as error:
                raise AuditIncomplete(f"malformed entries: {error}") from None
            if not page:
                raise AuditIncomplete(f"the server returned no entries from {start}")
            for entry in page[: end - start]:
                if entry.index != start:
                    raise Misbehaviour(f"expected entry {start}, got {entry.index}")
                start += 1
                yield entry

    def evidence(self, kind: str, message: str, *heads: SignedTreeHead) -> None:
        """Record signed evidence of misbehaviour, kept in the state file for good."""
        self.state.evidence.append(
            {"kind": kind, "message": message, "heads": [h.to_json() for h in heads]}
        )
        raise Misbehaviour(f"{kind}: {message}")


def _watched_json(entry: DirectoryEntry) -> dict[str, Any]:
    return {
        "index": entry.index,
        "timestamp": entry.timestamp_ms,
        "enc_fingerprint": entry.enc_fingerprint.hex(),
        "sign_fingerprint": entry.sign_fingerprint.hex(),
    }


def _keys(entry: dict[str, Any]) -> str:
    """What a watched entry published: its keys, or none (a tombstone)."""
    if entry["enc_fingerprint"] == entry["sign_fingerprint"] == TOMBSTONE_FINGERPRINT.hex():
        return "tombstone: no keys (the account was deleted, or its keys withdrawn)"
    return f"enc {entry['enc_fingerprint']} sign {entry['sign_fingerprint']}"


def watch_report(state: AuditState, names: Sequence[str]) -> list[str]:
    """Every key each watched username has had, oldest first, tombstones included."""
    lines = []
    for name in names:
        entries = sorted(state.watched.get(name, []), key=lambda e: e["index"])
        lines.append(f"{name}: {len(entries)} key publication(s) in the log")
        for number, e in enumerate(entries):
            when = datetime.datetime.fromtimestamp(e["timestamp"] / 1000, datetime.UTC)
            current = " (current)" if number == len(entries) - 1 else ""
            lines.append(
                f"  entry {e['index']} at {when:%Y-%m-%d %H:%M:%S} UTC{current}: {_keys(e)}"
            )
    return lines


def run(
    base_url: str,
    state_path: Path,
    watch: Sequence[str] = (),
    *,
    expect: str | None = None,
    accept: str | None = None,
) -> tuple[int, list[str]]:
    """Audit ``base_url`` once; return the exit status and the lines to print."""
    state = AuditState.load(state_path)
    names = [normalize_username(n) for n in watch]
    with httpx.Client(base_url=base_url.rstrip("/"), timeout=30.0) as http:
        auditor = Auditor(http, state)
        try:
            auditor.audit(names, expect, accept)
            status = OK
        except Misbehaviour as error:
            auditor.notes.append(f"MISBEHAVIOUR: {error}")
            status = MISBEHAVED
        except AuditIncomplete as error:
            auditor.notes.append(f"INCOMPLETE: {error}")
            status = INCOMPLETE
    state.save(state_path)
    for item in state.evidence:
        auditor.notes.append(f"EVIDENCE ({item['kind']}): {item['message']}")
    if state.evidence:
        status = MISBEHAVED
    return status, auditor.notes + watch_report(state, names)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: ``python -m securechat.audit``."""
    parser = argparse.ArgumentParser(prog="python -m securechat.audit", description=__doc__)
    parser.add_argument("base_url", help="the server, e.g. https://chat.example.org")
    parser.add_argument("--state", type=Path, default=DEFAULT_STATE, help="the auditor's view")
    parser.add_argument("--watch", action="append", default=[], metavar="USERNAME")
    parser.add_argument("--expect-fingerprint", help="the directory key fingerprint published")
    parser.add_argument("--accept-directory-key", metavar="FINGERPRINT", help="after a rotation")
    args = parser.parse_args(argv)
    try:
        status, lines = run(
            args.base_url,
            args.state,
            args.watch,
            expect=args.expect_fingerprint,
            accept=args.accept_directory_key,
        )
    except ValueError as error:  # a bad username to watch, or a damaged state file
        print(f"securechat.audit: {error}", file=sys.stderr)
        return INCOMPLETE
    for line in lines:
        print(line)
    return status


if __name__ == "__main__":
    sys.exit(main())
