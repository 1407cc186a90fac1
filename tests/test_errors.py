"""The error catalogue: docs/protocol.md lists exactly its codes, and no module spells one."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

import securechat
from securechat.chat.protocol import error_frame
from securechat.errors import Close, FrameCode, HttpCode, NotFound, Throttled

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL_MD = ROOT / "docs" / "protocol.md"
PACKAGE = Path(securechat.__file__).resolve().parent

# The header row of each table in docs/protocol.md that lists a part of the catalogue.
HTTP_TABLE = "| code | status | meaning |"
FRAME_TABLE = "| code | cause |"
CLOSE_TABLE = "| code | reason text | meaning | what the client does |"

# The store reports its refusals with values of its own, which chat/delivery.py maps to
# FrameCode entries (_STORE_REFUSALS): those are the only spellings allowed outside errors.py.
# The store's own refusal outcomes (records.py), which delivery maps to catalogue entries.
ALLOWED = {
    ("store/records.py", "unknown_recipient"),
    ("store/records.py", "unknown_message"),
    ("store/records.py", "queue_full"),
    ("store/records.py", "delete_expired"),
    # Groups (issue 13): the store's refusals, which groups/service.py maps to entries.
    ("store/records.py", "unknown_group"),
    ("store/records.py", "stale_head"),
    ("store/records.py", "group_exists"),
    ("store/records.py", "too_many_groups"),
    ("store/records.py", "not_a_member"),
}
# Codes a body and a frame share because they mean the same refusal over HTTP and the socket
# (a group entry and a group send alike: docs/protocol.md "Groups").
SHARED = {"unknown_group", "stale_head", "rate_limited"}


def table_rows(header: str) -> list[list[str]]:
    """The cells of each row of the one table of docs/protocol.md under ``header``."""
    lines = PROTOCOL_MD.read_text(encoding="utf-8").splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == header]
    assert len(starts) == 1, f"docs/protocol.md needs exactly one table {header!r}"
    rows = []
    for line in lines[starts[0] + 2 :]:  # after the header and the --- row
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def unquote(cell: str) -> str:
    """A table cell's `code` without its backticks ('' for an empty cell)."""
    return cell.strip("`")


def test_every_http_code_is_documented_with_its_status() -> None:
    """The HTTP error table lists each HttpCode once, with its status, and nothing else."""
    documented = [(unquote(row[0]), int(row[1])) for row in table_rows(HTTP_TABLE)]
    assert sorted(documented) == sorted((entry.code, entry.status) for entry in HttpCode)


def test_every_frame_code_is_documented() -> None:
    """The error frame table lists each FrameCode once, and nothing else."""
    documented = [unquote(row[0]) for row in table_rows(FRAME_TABLE)]
    assert sorted(documented) == sorted(entry.code for entry in FrameCode)


def test_every_close_is_documented_with_its_code_and_reason() -> None:
    """The close code table lists each Close once, code and reason text, and nothing else."""
    documented = [(int(row[0]), unquote(row[1])) for row in table_rows(CLOSE_TABLE)]
    assert sorted(documented) == sorted((int(entry.code), entry.reason) for entry in Close)


def test_codes_are_unique_across_http_and_frames() -> None:
    """No code means one thing in a body and another in a frame (but the shared ones)."""
    http = {entry.code for entry in HttpCode}
    assert http & {entry.code for entry in FrameCode} == SHARED


def spellings(path: Path, spelt: set[str]) -> list[str]:
    """Where ``path`` writes a catalogue code or close reason, or any code of an error body,
    as a string literal."""
    name = path.relative_to(PACKAGE).as_posix()
    literals: list[ast.Constant] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in spelt:
            literals.append(node)
        elif isinstance(node, ast.Dict):
            literals += [
                value
                for key, value in zip(node.keys, node.values, strict=True)
                if isinstance(key, ast.Constant) and key.value == "error"
                if isinstance(value, ast.Constant) and value.value not in spelt  # found above
            ]
    return [
        f"{name}:{literal.lineno}: {literal.value!r}"
        for literal in literals
        if (name, literal.value) not in ALLOWED
    ]


def test_no_module_but_errors_spells_a_code() -> None:
    """Outside errors.py, codes and close reasons are named by their entry, never written out."""
    spelt = {entry.code for entry in HttpCode} | {entry.code for entry in FrameCode}
    spelt |= {entry.reason for entry in Close if entry.reason}
    found = [
        hit
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != PACKAGE / "errors.py"
        for hit in spellings(path, spelt)
    ]
    assert found == []


def test_an_error_body_is_its_entry() -> None:
    """A raised error answers with its entry's code and status, and its message by default."""
    error = NotFound()
    assert (error.status, error.to_json()) == (404, {"error": "not_found", "message": "Not found."})
    throttled = Throttled(3)
    assert throttled.to_json()["error"] == HttpCode.THROTTLED.code
    assert throttled.headers() == {"Retry-After": "3"}


@pytest.mark.parametrize("entry", list(FrameCode))
def test_an_error_frame_carries_its_entry(entry: FrameCode) -> None:
    """error_frame writes the entry's code, and its message unless given another."""
    assert json.loads(error_frame(entry)) == {
        "type": "error",
        "code": entry.code,
        "message": entry.message,
    }
