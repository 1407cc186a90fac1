"""Both dialects of the schema expose the same data model (issue 11, item 1): schema.sql on a
fresh SQLite file (through the store's own open, migrations and all) and
securechat/store/postgres/schema.sql on a throwaway PostgreSQL database, read back from each
engine's catalogue. And the PostgreSQL key log is append-only, as SQLite's is."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from securechat.config import PROJECT_ROOT
from securechat.store.postgres import SCHEMA_PATH as POSTGRES_SCHEMA
from securechat.store.postgres import SCHEMA_VERSION
from securechat.store.sqlite import SQLiteStore
from securechat.store.sqlite.migrations import UPGRADES
from tests.engines import PostgresEngine

# SQLite's declared types and the PostgreSQL types that stand for them.
TYPES = {"INTEGER": "bigint", "TEXT": "text", "BLOB": "bytea"}
# PostgreSQL's names for SQLite's scalar min() and max() of two values.
FUNCTIONS = {"least": "min", "greatest": "max"}
# pg_constraint's letters for the referential actions, in SQLite's words.
ACTIONS = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    not_null: bool
    default: str | None


@dataclass(frozen=True)
class Index:
    table: str
    unique: bool
    keys: tuple[str, ...]
    where: str | None


@dataclass(frozen=True)
class ForeignKey:
    table: str
    columns: tuple[str, ...]
    references: str
    referenced: tuple[str, ...]
    on_delete: str
    on_update: str


@dataclass
class Catalogue:
    """One engine's view of the schema, in terms both engines share."""

    columns: dict[str, tuple[Column, ...]]
    primary_keys: dict[str, tuple[str, ...]]
    uniques: set[tuple[str, tuple[str, ...]]]
    indexes: dict[str, Index]
    foreign_keys: set[ForeignKey]
    checks: set[tuple[str, str]]


def normal(expression: str) -> str:
    """An SQL expression in a form both dialects reach: lower case, PostgreSQL's function names
    as SQLite's, no casts, no spaces, no parentheses (so nesting and quoting cannot differ),
    no double quotes (PostgreSQL quotes a column named like a keyword: "position")."""
    text = re.sub(r"::[a-z ]+", "", expression.lower())
    for postgres, sqlite in FUNCTIONS.items():
        text = re.sub(rf"\b{postgres}\b", sqlite, text)
    text = re.sub(r'[\s()"]', "", text)
    # PostgreSQL writes "x IN (a, b)" back as "x = ANY (ARRAY[a, b])".
    return re.sub(r"=anyarray\[([^\]]*)\]", r"in\1", text)


def _without_comments(sql: str) -> str:
    return re.sub(r"--[^\n]*", "", sql)


def _parenthesised(sql: str, start: int) -> str:
    """The text inside the parentheses that open at ``sql[start]``."""
    depth = 0
    for end in range(start, len(sql)):
        depth += {"(": 1, ")": -1}.get(sql[end], 0)
        if depth == 0:
            return sql[start + 1 : end]
    raise ValueError(f"unbalanced parentheses in {sql!r}")


def _split_top_level(text: str) -> list[str]:
    """``text`` cut at the commas outside any parentheses."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


def sqlite_catalogue(path: Path) -> Catalogue:
    """The catalogue of the SQLite file at ``path`` (pragma table-valued functions)."""
    with sqlite3.connect(path) as db:
        tables = dict(
            db.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'table'"
                " AND name NOT LIKE 'sqlite_%'"
            ).fetchall()
        )
        catalogue = Catalogue({}, {}, set(), {}, set(), set())
        for table, sql in tables.items():
            _read_sqlite_table(db, table, _without_comments(sql), catalogue)
    return catalogue


def _read_sqlite_table(db: sqlite3.Connection, table: str, sql: str, into: Catalogue) -> None:
    info = db.execute(
        'SELECT name, type, "notnull", dflt_value, pk FROM pragma_table_info(?) ORDER BY cid',
        (table,),
    ).fetchall()
    # A primary key column is never NULL, though SQLite's pragma says notnull = 0 for it.
    into.columns[table] = tuple(Column(n, TYPES[t], bool(nn or pk), d) for n, t, nn, d, pk in info)
    into.primary_keys[table] = tuple(n for n, *_, pk in sorted(info, key=lambda c: c[4]) if pk)
    for name, unique, origin, partial in db.execute(
        'SELECT name, "unique", origin, partial FROM pragma_index_list(?)', (table,)
    ):
        columns = tuple(
            c
            for (c,) in db.execute("SELECT name FROM pragma_index_info(?) ORDER BY seqno", (name,))
        )
        if origin == "u":
            into.uniques.add((table, columns))
        elif origin == "c":
            into.indexes[name] = _sqlite_index(db, table, name, bool(unique), bool(partial))
    keys: dict[int, list[Any]] = {}
    for id_, _, references, column, referenced, on_update, on_delete, _ in db.execute(
        "SELECT * FROM pragma_foreign_key_list(?)", (table,)
    ):
        keys.setdefault(id_, [references, [], [], on_delete, on_update])
        keys[id_][1].append(column)
        keys[id_][2].append(referenced)
    for references, columns, referenced, on_delete, on_update in keys.values():
        into.foreign_keys.add(
            ForeignKey(table, tuple(columns), references, tuple(referenced), on_delete, on_update)
        )
    for match in re.finditer(r"\bCHECK\s*\(", sql, re.IGNORECASE):
        into.checks.add((table, normal(_parenthesised(sql, match.end() - 1))))


def _sqlite_index(
    db: sqlite3.Connection, table: str, name: str, unique: bool, partial: bool
) -> Index:
    """An index read from its CREATE INDEX text: pragma_index_info names no expression."""
    (sql,) = db.execute("SELECT sql FROM sqlite_master WHERE name = ?", (name,)).fetchone()
    sql = _without_comments(sql)
    opening = re.search(rf"\bON\s+{table}\s*\(", sql, re.IGNORECASE)
    assert opening is not None, sql
    keys = _parenthesised(sql, opening.end() - 1)
    where = re.split(r"\s+WHERE\s+", sql, maxsplit=1, flags=re.IGNORECASE)[1] if partial else None
    return Index(
        table,
        unique,
        tuple(normal(key) for key in _split_top_level(keys)),
        normal(where) if where else None,
    )


# Constraints with their columns by name, in key order (conkey and confkey are attnum arrays).
POSTGRES_CONSTRAINTS = """
SELECT c.contype::text AS kind, c.conrelid::regclass::text AS table,
       c.confrelid::regclass::text AS references,
       array(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(num, i)
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.num ORDER BY k.i)
           AS columns,
       array(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(num, i)
             JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.num ORDER BY k.i)
           AS referenced,
       c.confdeltype::text AS on_delete, c.confupdtype::text AS on_update,
       pg_get_constraintdef(c.oid) AS definition
FROM pg_constraint c WHERE c.connamespace = 'public'::regnamespace
"""
# The indexes made by CREATE INDEX, not those behind a PRIMARY KEY or UNIQUE constraint.
POSTGRES_INDEXES = """
SELECT i.relname::text AS name, t.relname::text AS table, x.indisunique AS unique,
       array(SELECT pg_get_indexdef(x.indexrelid, n, true)
             FROM generate_series(1, x.indnkeyatts) n ORDER BY n) AS keys,
       pg_get_expr(x.indpred, x.indrelid, true) AS where
FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
WHERE t.relnamespace = 'public'::regnamespace
  AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)
"""


async def postgres_catalogue(connection: Any) -> Catalogue:
    """The catalogue of the database ``connection`` is on (information_schema, pg_catalog)."""
    catalogue = Catalogue({}, {}, set(), {}, set(), set())
    for row in await connection.fetch(
        "SELECT table_name::text, column_name::text, data_type::text, is_nullable::text,"
        " column_default::text FROM information_schema.columns WHERE table_schema = 'public'"
        " ORDER BY table_name, ordinal_position"
    ):
        table, name, type_, nullable, default = row
        # '' and 0 as SQLite keeps them: the cast PostgreSQL adds is no part of the value.
        default = re.sub(r"::[a-z ]+$", "", default) if default else None
        column = Column(name, type_, nullable == "NO", default)
        catalogue.columns[table] = (*catalogue.columns.get(table, ()), column)
    for row in await connection.fetch(POSTGRES_CONSTRAINTS):
        _read_postgres_constraint(row, catalogue)
    for row in await connection.fetch(POSTGRES_INDEXES):
        catalogue.indexes[row["name"]] = Index(
            row["table"],
            row["unique"],
            tuple(normal(key) for key in row["keys"]),
            normal(row["where"]) if row["where"] else None,
        )
    return catalogue


def _read_postgres_constraint(row: Any, into: Catalogue) -> None:
    table, columns = row["table"], tuple(row["columns"])
    if row["kind"] == "p":
        into.primary_keys[table] = columns
    elif row["kind"] == "u":
        into.uniques.add((table, columns))
    elif row["kind"] == "f":
        into.foreign_keys.add(
            ForeignKey(
                table,
                columns,
                row["references"],
                tuple(row["referenced"]),
                ACTIONS[row["on_delete"]],
                ACTIONS[row["on_update"]],
            )
        )
    elif row["kind"] == "c":
        into.checks.add((table, normal(row["definition"].removeprefix("CHECK "))))


async def apply_postgres_schema(connection: Any) -> None:
    """Run securechat/store/postgres/schema.sql (one multi-statement script)."""
    await connection.execute(POSTGRES_SCHEMA.read_text(encoding="utf-8"))


@pytest.fixture(name="sqlite", scope="module")
async def _sqlite(tmp_path_factory: pytest.TempPathFactory) -> Catalogue:
    """schema.sql as the SQLite store's open applies it (migrations and all), read back."""
    path = tmp_path_factory.mktemp("schemas") / "securechat.db"
    store = SQLiteStore.for_file(path, PROJECT_ROOT / "schema.sql")
    await store.open()
    await store.close()
    return sqlite_catalogue(path)


@pytest.fixture(name="postgres", scope="module")
async def _postgres(postgres_engine: PostgresEngine) -> AsyncIterator[Catalogue]:
    """securechat/store/postgres/schema.sql on a database of its own, read back."""
    async with postgres_engine.fresh_database() as name:
        connection = await postgres_engine.connect(name)
        try:
            # Twice: every statement of the schema may run again.
            await apply_postgres_schema(connection)
            await apply_postgres_schema(connection)
            yield await postgres_catalogue(connection)
        finally:
            await connection.close()


@pytest.fixture(name="key_log_database", scope="module")
async def _key_log_database(postgres_engine: PostgresEngine) -> AsyncIterator[Any]:
    """A connection to a database of its own with the schema applied, for the key log tests."""
    async with postgres_engine.fresh_database() as name:
        connection = await postgres_engine.connect(name)
        try:
            await apply_postgres_schema(connection)
            yield connection
        finally:
            await connection.close()


@pytest.fixture(name="key_log")
async def _key_log(key_log_database: Any) -> AsyncIterator[Any]:
    """The key log holding entry 0 at t=5, in a transaction rolled back after the test."""
    transaction = key_log_database.transaction()
    await transaction.start()
    try:
        await _append(key_log_database, 0, 5)
        yield key_log_database
    finally:
        await transaction.rollback()


async def _append(connection: Any, idx: int, timestamp_ms: int) -> None:
    await connection.execute(
        "INSERT INTO key_log VALUES ($1, $2, $3, $3, $3)", idx, timestamp_ms, bytes(32)
    )


async def test_same_tables_and_columns(sqlite: Catalogue, postgres: Catalogue) -> None:
    """Same tables; same columns in order, with mapped types, nullability and defaults."""
    assert sqlite.columns.keys() == postgres.columns.keys()
    for table, columns in sqlite.columns.items():
        assert columns == postgres.columns[table], table


async def test_same_primary_keys_and_unique_constraints(
    sqlite: Catalogue, postgres: Catalogue
) -> None:
    """Same primary key on each table, same UNIQUE constraints."""
    assert sqlite.primary_keys == postgres.primary_keys
    assert sqlite.uniques == postgres.uniques


async def test_same_indexes(sqlite: Catalogue, postgres: Catalogue) -> None:
    """Same named indexes: table, uniqueness, keys (expressions too) and partial predicate."""
    assert sqlite.indexes == postgres.indexes


async def test_same_foreign_keys(sqlite: Catalogue, postgres: Catalogue) -> None:
    """Same foreign keys, with the same actions on delete and update."""
    assert sqlite.foreign_keys == postgres.foreign_keys


async def test_same_checks(sqlite: Catalogue, postgres: Catalogue) -> None:
    """Same CHECK constraints on the same tables."""
    assert sqlite.checks == postgres.checks


async def test_catalogues_are_not_empty(sqlite: Catalogue) -> None:
    """The comparison has something to compare (a reader that found nothing would pass)."""
    assert {"users", "sessions", "key_log", "messages", "conversations"} <= sqlite.columns.keys()
    assert sqlite.indexes and sqlite.uniques and sqlite.foreign_keys and sqlite.checks


async def test_chat_sequence_row_is_seeded_once(
    postgres_engine: PostgresEngine, postgres_database: str
) -> None:
    """The one position row exists after the schema, once however often it runs."""
    connection = await postgres_engine.connect(postgres_database)
    try:
        await apply_postgres_schema(connection)
        await apply_postgres_schema(connection)
        assert await connection.fetch("SELECT id, last FROM chat_sequence") == [(1, 0)]
    finally:
        await connection.close()


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE key_log SET timestamp_ms = 6",
        "UPDATE key_log SET timestamp_ms = 6 WHERE idx = 99",
        "DELETE FROM key_log",
        "DELETE FROM key_log WHERE idx = 99",
        "TRUNCATE key_log",
    ],
)
async def test_key_log_refuses_change(key_log: Any, statement: str) -> None:
    """UPDATE, DELETE and TRUNCATE are refused, even when they match no row."""
    with pytest.raises(asyncpg.IntegrityConstraintViolationError, match="append-only"):
        async with key_log.transaction():  # a savepoint: the test's transaction goes on
            await key_log.execute(statement)
    assert await key_log.fetchval("SELECT count(*) FROM key_log") == 1


@pytest.mark.parametrize(
    ("idx", "timestamp_ms"),
    [(0, 5), (2, 5), (1, 4), (-1, 5)],
    ids=["index-again", "index-skipped", "time-back", "index-before"],
)
async def test_key_log_refuses_out_of_order_insert(
    key_log: Any, idx: int, timestamp_ms: int
) -> None:
    """An insert that is not the next index, or that goes back in time, is refused."""
    with pytest.raises(asyncpg.IntegrityConstraintViolationError, match="append-only"):
        await _append(key_log, idx, timestamp_ms)


async def test_key_log_takes_the_next_entry(key_log: Any) -> None:
    """The next index at the same or a later time is appended."""
    await _append(key_log, 1, 5)
    await _append(key_log, 2, 9)
    assert [r["idx"] for r in await key_log.fetch("SELECT idx FROM key_log ORDER BY idx")] == [
        0,
        1,
        2,
    ]


async def test_key_log_starts_at_zero(key_log_database: Any) -> None:
    """The first entry of an empty log must be index 0."""
    with pytest.raises(asyncpg.IntegrityConstraintViolationError, match="append-only"):
        async with key_log_database.transaction():
            await _append(key_log_database, 1, 5)


async def test_both_dialects_count_versions_alike(tmp_path: Path) -> None:
    """A new SQLite file is at the last upgrade step's user_version, and that number is the
    one a PostgreSQL node records in schema_version (one numbering for both dialects)."""
    path = tmp_path / "version.db"
    store = SQLiteStore.for_file(path, PROJECT_ROOT / "schema.sql")
    await store.open()
    await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == max(UPGRADES) == SCHEMA_VERSION
