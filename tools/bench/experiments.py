"""What-if patches, applied inside a server process only for an experiment, never by default.

Each proposal in docs/performance.md ("Proposed optimisations") that touches another
engineer's code is measured here first, by patching the running server instead of editing its
files. A server kind with ``+name`` suffixes (``ours-hypercorn+fastsend+onehop``) starts with
``tools/bench/whatif`` on ``PYTHONPATH``, whose ``sitecustomize`` calls :func:`apply` with the
names before the app is imported.

- ``fastsend``: send frames through the ASGI send Quart wraps, without Quart's per-frame
  ``await asyncio.sleep(0)`` and ``accept()`` (which builds a ``Headers`` every time).
- ``onehop``: run each grouped commit's statements on the writer thread in one round trip,
  instead of one round trip (and one GIL hand-over) per statement.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

PATCHES: dict[str, Callable[[], None]] = {}


def patch(name: str) -> Callable[[Callable[[], None]], Callable[[], None]]:
    def register(function: Callable[[], None]) -> Callable[[], None]:
        PATCHES[name] = function
        return function

    return register


def apply(names: str) -> None:
    """Apply the ``+``-separated patches named (unknown names are an error)."""
    for name in filter(None, names.split("+")):
        PATCHES[name]()


@patch("fastsend")
def _fast_send() -> None:
    from quart.wrappers import websocket as quart_websocket

    async def send(self: Any, data: str | bytes) -> None:
        if not getattr(self, "_bench_accepted", False):
            await self.accept()
            self._bench_accepted = True
        await self._send(data)

    quart_websocket.Websocket.send = send  # type: ignore[method-assign]


class _Cursor:
    """Enough of aiosqlite's cursor for the store's jobs, over a sqlite3 cursor."""

    def __init__(self, cursor: Any) -> None:
        self.cursor = cursor

    @property
    def rowcount(self) -> int:
        return int(self.cursor.rowcount)

    @property
    def lastrowid(self) -> int | None:
        return self.cursor.lastrowid  # type: ignore[no-any-return]

    async def fetchall(self) -> list[Any]:
        return list(self.cursor.fetchall())

    async def fetchone(self) -> Any:
        return self.cursor.fetchone()

    async def close(self) -> None:
        self.cursor.close()

    async def __aenter__(self) -> _Cursor:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.cursor.close()


class _Statement:
    """Awaitable, or usable with ``async with``, like aiosqlite's ``execute`` result."""

    def __init__(self, run: Callable[[], Any]) -> None:
        self.run = run
        self.cursor: _Cursor | None = None

    def __await__(self) -> Any:
        return self._cursor().__await__()

    async def _cursor(self) -> _Cursor:
        return _Cursor(self.run())

    async def __aenter__(self) -> _Cursor:
        self.cursor = _Cursor(self.run())
        return self.cursor

    async def __aexit__(self, *exc_info: object) -> None:
        if self.cursor is not None:
            self.cursor.cursor.close()


class _SyncConnection:
    """The aiosqlite calls the store's write jobs make, done at once on a sqlite3 connection."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    def execute(self, sql: str, params: Any = ()) -> _Statement:
        return _Statement(lambda: self.connection.execute(sql, params))

    def executemany(self, sql: str, rows: Any) -> _Statement:
        return _Statement(lambda: self.connection.executemany(sql, rows))

    async def execute_fetchall(self, sql: str, params: Any = ()) -> list[Any]:
        return list(self.connection.execute(sql, params).fetchall())


def _finish(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run a job whose awaits all complete at once; it must not really suspend."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return stop.value
    coroutine.close()
    raise RuntimeError("a write job suspended on the writer thread")


@patch("onehop")
def _one_hop() -> None:
    from securechat.store import database

    async def commit_batch(self: Any, batch: list[Any]) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        writer = self._writer

        def run_all() -> tuple[list[tuple[Any, Any, BaseException | None]], bool]:
            connection = writer._conn  # the sqlite3 connection, on its own thread
            proxy = _SyncConnection(connection)
            results: list[tuple[Any, Any, BaseException | None]] = []
            try:
                connection.execute("BEGIN IMMEDIATE")
                for pending in batch:
                    connection.execute("SAVEPOINT job")
                    try:
                        value = _finish(pending.job(proxy))
                    except Exception as error:
                        connection.execute("ROLLBACK TO job")
                        connection.execute("RELEASE job")
                        results.append((pending, None, error))
                        continue
                    connection.execute("RELEASE job")
                    results.append((pending, value, None))
                connection.execute("COMMIT")
            except Exception as error:
                with contextlib.suppress(Exception):
                    connection.execute("ROLLBACK")
                return [(pending, None, error) for pending in batch], False
            return results, True

        results, committed = await writer._execute(run_all)
        if committed:
            self._record(len(batch), loop.time() - started)
        for pending, value, error in results:
            database._settle(pending, value, error)

    database.Database._commit_batch = commit_batch  # type: ignore[method-assign]
