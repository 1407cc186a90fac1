"""The message service: store sends and marks in grouped commits, then acknowledge and fan out.

Every ``send``, ``delivered`` and ``read`` from every connection goes into one list. A single
committer task takes what is waiting (up to ``commit_batch_max``) and stores it as ONE write job
(securechat/store/sqlite/messages.py: a handful of statements whatever the batch size),
so a burst of sends costs one transaction and one fsync. Only when that job has committed does
the committer acknowledge each send, push the message to the recipient's and the sender's other
connections through the broker, and push receipts to senders, in sequence order. Nothing here
awaits a client: fan-out is ``put_nowait`` into bounded queues (securechat/chat/hub.py).

Backlog: what a sender may leave stored for recipients who have not received it is bounded
(``undelivered_per_pair_max``, ``undelivered_bytes_per_sender_max``). The store counts it inside
each commit, under the lock that orders every commit (securechat/store/batch.py), so the bounds
hold across processes and nodes; a send past one comes back ``queue_full`` and takes no seq.

Positions: messages and receipts draw from one sequence, so ``sync(after=N)`` replays both with
one cursor, and a sender who was offline learns of receipts made long after the message's seq.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Final, Protocol

from securechat.chat.hub import Broker, Connection
from securechat.chat.protocol import (
    KeyedRateLimiter,
    Send,
    ack_frame,
    deleted_frame,
    error_frame,
    group_entry_frame,
    group_keys_frame,
    group_message_frame,
    message_frame,
    receipt_frame,
)
from securechat.config import Config
from securechat.errors import FrameCode
from securechat.runtime import WALL_CLOCK, Clock, cancel_and_wait
from securechat.store import (
    DELETE_EXPIRED,
    QUEUE_FULL,
    UNKNOWN_MESSAGE,
    UNKNOWN_RECIPIENT,
    BacklogBounds,
    Change,
    ContactStore,
    Deleted,
    MarkOutcome,
    MarkStatus,
    MessageStore,
    NewMark,
    NewMessage,
    Receipt,
    SendOutcome,
    Stored,
)

log = logging.getLogger(__name__)

# The unknown_message error's text for a delete (its own names a seq addressed to me).
_NO_SUCH_MESSAGE: Final = "You have no stored message with this id (it may be deleted already)."

# The error frame answering each refusal the store reports.
_STORE_REFUSALS: Final[dict[str, FrameCode]] = {
    UNKNOWN_RECIPIENT: FrameCode.UNKNOWN_RECIPIENT,
    QUEUE_FULL: FrameCode.QUEUE_FULL,
    UNKNOWN_MESSAGE: FrameCode.UNKNOWN_MESSAGE,
}


class SharedRate(Protocol):
    """Sends per account counted where every node sees them (cluster/limits.SharedSendRate),
    a token bucket like ``KeyedRateLimiter``'s."""

    async def allow(self, user_id: int) -> bool | None:
        """Take one token from the account's bucket; None when it cannot be reached."""
        ...


class Sequenced(str):
    """A frame's text that holds a position in the sequence (``message``, ``receipt``).

    The connection's sender uses ``seq`` to keep what it sends in order and free of repeats
    around a sync, without parsing the text: one at or below the position the connection has
    reached was already sent by a sync, and is dropped. ``prev`` is the position before it in
    the stream of the user it is published to (store ``Stored.prev_*``, ``Receipt.prev``;
    None: not known): a connection that has not reached it lacks a frame that another node
    published and that has not come yet, or never will (chat/session.forward).
    """

    seq: int
    prev: int | None

    def __new__(cls, text: str, seq: int, prev: int | None = None) -> Sequenced:
        self = super().__new__(cls, text)
        self.seq = seq
        self.prev = prev
        return self


class Acked(Sequenced):
    """The ack of a message its connection sent, at the message's position in the sender's
    stream: never dropped (the client waits for each ack), and it moves the connection's
    position when nothing lies between, as the message itself would have."""


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated user of a connection: the sender of everything it sends."""

    user_id: int
    name: str


@dataclass
class ChatStats:
    """Counters for /admin/health now and Prometheus later; plain ints, bumped in place."""

    connections_opened: int = 0
    frames_in: int = 0
    frames_out: int = 0
    messages_in: int = 0
    messages_stored: int = 0
    messages_duplicate: int = 0
    messages_withheld: int = 0  # acknowledged to a blocked sender, stored for no one
    messages_out: int = 0
    acks: int = 0
    receipts: int = 0
    deleted: int = 0  # messages deleted for everyone by their sender
    typing_relayed: int = 0
    typing_dropped: int = 0
    presence_events: int = 0
    commit_batches: int = 0
    commit_items: int = 0
    commit_largest_batch: int = 0
    commit_failures: int = 0
    # Frames that came before one published ahead of them (another node's, on its way or
    # lost): the connection caught up from the database instead (chat/session.forward).
    gap_catch_ups: int = 0
    # Refused frames and handshakes by reason (an error code, "flood", "foreign_origin", ...).
    rejected: Counter[str] = field(default_factory=Counter)
    # Sockets closed by the server, by close code.
    closes: Counter[int] = field(default_factory=Counter)

    def record_batch(self, size: int) -> None:
        """One grouped commit of ``size`` sends and marks."""
        self.commit_batches += 1
        self.commit_items += size
        self.commit_largest_batch = max(self.commit_largest_batch, size)


@dataclass(slots=True)
class _PendingSend:
    conn: Connection
    author: Principal
    frame: Send


@dataclass(slots=True)
class _PendingMark:
    conn: Connection
    author: Principal
    seq: int
    status: MarkStatus


# Work of its own (a group post or mark: securechat/groups/service.py) that must come after
# everything its connection submitted before it, and before what it submits next.
Job = Callable[[], Awaitable[None]]


@dataclass(slots=True)
class _PendingJob:
    conn: Connection
    run: Job


_Pending = _PendingSend | _PendingMark | _PendingJob


class Delivery:
    """The committer and everything that follows a commit; also the sync reader."""

    def __init__(
        self,
        store: MessageStore,
        broker: Broker,
        config: Config,
        stats: ChatStats,
        clock: Clock = WALL_CLOCK,
        shared_rate: SharedRate | None = None,
        contacts: ContactStore | None = None,
    ) -> None:
        self.store = store
        # Who shares typing with whom (chat/contacts.py); None: everyone (tests of the core).
        self.contacts = contacts
        self.broker = broker
        self.stats = stats
        self.clock = clock  # stamps each commit's messages and receipts
        # The last position this process saw handed out; the store draws positions itself
        # (on PostgreSQL, other nodes draw from the same row too).
        self.last_seq = 0
        self._batch_max = config.commit_batch_max
        self._gather_interval = config.commit_gather_interval
        self._last_commit_end = float("-inf")
        self._sync_batch = config.sync_batch
        self._sync_bytes = config.sync_batch_bytes
        self._delete_window_ms = round(config.delete_window * 1000)
        # Submissions taken but not yet committed, at most ``commit_pending_max`` (a counter
        # and an event: cheaper per frame than an asyncio.Semaphore, which this was).
        self._pending_max = config.commit_pending_max
        self._in_flight = 0
        self._room = asyncio.Event()
        # Sends per account, all its connections together: bounds what one account can make
        # the server store for others, however many sockets it opens.
        self._send_rate = KeyedRateLimiter(
            config.sends_per_user_per_s, config.sends_per_user_burst, config.send_limiter_table_max
        )
        # In a cluster, counted over every node (this process's buckets serve while it cannot
        # be reached).
        self._shared_rate = shared_rate
        # And what it can leave stored for recipients who never come online (checked by the
        # store in each commit).
        self.bounds = BacklogBounds(
            config.undelivered_per_pair_max, config.undelivered_bytes_per_sender_max
        )
        # Sends and marks in the order they came: a batch is always a prefix of this list, so
        # an ack on a connection implies every earlier frame of that connection is committed.
        self._pending: list[_Pending] = []
        # Per connection, what it submitted that is not yet answered (waiting or committing).
        self._owed: Counter[Connection] = Counter()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Read where the sequence stands; start the committer."""
        self.last_seq = await self.store.last_seq()
        self._task = asyncio.create_task(self._run(), name="chat-committer")

    async def stop(self) -> None:
        """Commit what is waiting, then stop the committer."""
        if self._task is None:
            return
        await self.flush()
        await cancel_and_wait(self._task)
        self._task = None

    async def flush(self) -> None:
        """Return once everything submitted so far is committed, acknowledged and fanned out."""
        await self._idle.wait()

    def pending(self) -> int:
        """Sends and marks waiting for the committer (a queue depth for the metrics)."""
        return len(self._pending)

    # Submissions (from the connections' receive tasks) ------------------------------------

    async def admit(self, conn: Connection, author: Principal, frame_id: str, now: float) -> bool:
        """Whether ``author`` may send (or delete) now; if not, ``conn`` gets a
        ``rate_limited`` error naming the frame's id, and nothing is stored or removed (the
        client tries again later). Sends and deletes draw on the same per-user budget."""
        if await self.allow_send(author.user_id, now):
            return True
        self._refuse(conn, FrameCode.RATE_LIMITED, frame_id)
        return False

    async def allow_send(self, user_id: int, now: float) -> bool:
        """Take one send from the account's budget (over the cluster when it answers); False
        when it is spent. Group messages, key distributions and entries draw on it too."""
        allowed = None
        if self._shared_rate is not None:
            allowed = await self._shared_rate.allow(user_id)
        if allowed is None:
            allowed = self._send_rate.allow(user_id, now)
        return allowed

    async def send(self, conn: Connection, author: Principal, frame: Send) -> None:
        """Queue a send; it is acknowledged on ``conn`` after its commit.

        Waits only when ``commit_pending_max`` submissions are already waiting: that is the
        backpressure that stops this connection being read while the database catches up.
        """
        await self._submit(_PendingSend(conn, author, frame))
        self.stats.messages_in += 1

    async def mark(self, conn: Connection, author: Principal, seq: int, status: MarkStatus) -> None:
        """Queue a delivered/read mark by the message's recipient."""
        await self._submit(_PendingMark(conn, author, seq, status))

    async def run_in_order(self, conn: Connection, job: Job) -> None:
        """Run ``job`` once everything ``conn`` submitted before it is committed and answered,
        and before anything it submits after: so its answers on ``conn`` keep the order of the
        frames (an ack never overtakes an earlier send's). ``job`` answers its own errors.

        With nothing of ``conn``'s waiting, the job runs at once in the caller's task (the
        socket's receive task, which reads no further frame meanwhile): jobs of different
        sockets then run side by side, and the store's writer gathers their writes into
        shared transactions. Otherwise it waits its turn in the committer's list.
        """
        if self._owed[conn]:
            await self._submit(_PendingJob(conn, job))
            return
        with _logged("a job run in order"):  # as in the committer: one failure costs one job
            await job()

    async def _submit(self, item: _Pending) -> None:
        while self._in_flight >= self._pending_max:
            self._room.clear()
            await self._room.wait()
        self._in_flight += 1
        self._owed[item.conn] += 1
        self._pending.append(item)
        self._idle.clear()
        self._wakeup.set()

    async def delete(self, conn: Connection, author: Principal, client_id: str) -> None:
        """Remove ``author``'s stored message ``client_id`` from the server, if it is still
        within the delete window; answered on ``conn`` with ``deleted`` or an error.

        Its own write, not the committer's: a message not yet acknowledged is not stored yet
        and answers ``unknown_message`` (the page offers delete only once the ack came). What
        the other devices see is the sender's encrypted tombstone, an ordinary message.
        """
        since = self.clock.now_ms() - self._delete_window_ms
        try:
            outcome = await self.store.delete_message(author.user_id, client_id, since)
        except Exception:
            log.exception("deleting a message failed")
            self._refuse(conn, FrameCode.UNAVAILABLE, client_id)
            return
        if isinstance(outcome, Deleted):
            self.stats.deleted += 1
            conn.deliver(deleted_frame(client_id))
        elif outcome == DELETE_EXPIRED:
            self._refuse(conn, FrameCode.DELETE_EXPIRED, client_id)
        else:
            self.stats.rejected[FrameCode.UNKNOWN_MESSAGE.code] += 1
            conn.deliver(error_frame(FrameCode.UNKNOWN_MESSAGE, _NO_SUCH_MESSAGE, client_id))

    async def shares_with(self, user: str, peer: str) -> bool:
        """Whether ``user`` may tell ``peer`` they are typing: each accepted the other."""
        return self.contacts is None or await self.contacts.sharing(user, peer)

    # Sync -------------------------------------------------------------------------------

    async def changes(self, user: Principal, after: int) -> tuple[list[Sequenced], bool]:
        """The next batch of a sync: frames with positions above ``after``, and whether more
        may follow."""
        rows, more = await self.store.changes_after(
            user.user_id, after, self._sync_batch, self._sync_bytes
        )
        return [_change_frame(row, user.name) for row in rows], more

    # The committer ----------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                await self._let_batch_grow()
                batch = self._next_batch()
                try:
                    await self._commit_or_run(batch)
                except Exception:
                    # The committer must outlive any one batch, or every later send would hang.
                    log.exception("chat committer: a batch failed after its commit")
                finally:
                    self._answered(batch)
                    self._in_flight -= len(batch)
                    self._room.set()
                    self._last_commit_end = asyncio.get_running_loop().time()
            self._idle.set()

    def _answered(self, batch: list[_Pending]) -> None:
        for item in batch:
            self._owed[item.conn] -= 1
            if not self._owed[item.conn]:
                del self._owed[item.conn]

    def _next_batch(self) -> list[_Pending]:
        """Take what commits next: a job alone, or the sends and marks before the next job."""
        end = 1
        if not isinstance(self._pending[0], _PendingJob):
            limit = min(len(self._pending), self._batch_max)
            while end < limit and not isinstance(self._pending[end], _PendingJob):
                end += 1
        batch = self._pending[:end]
        del self._pending[:end]
        return batch

    async def _commit_or_run(self, batch: list[_Pending]) -> None:
        if isinstance(batch[0], _PendingJob):
            await batch[0].run()
            return
        await self._commit(
            [item for item in batch if isinstance(item, _PendingSend)],
            [item for item in batch if isinstance(item, _PendingMark)],
        )

    async def _let_batch_grow(self) -> None:
        """Under load, start a commit no sooner than ``commit_gather_interval`` after the last
        one ended, so that more sends join it.

        Every transaction writes the index pages it touches whole, so the writer's cost per
        message falls steeply with the batch (measured in docs/performance.md). A send that
        comes when the writer has been idle for that long is committed at once.
        """
        wait = self._last_commit_end + self._gather_interval - asyncio.get_running_loop().time()
        if wait > 0 and len(self._pending) < self._batch_max:
            await asyncio.sleep(wait)

    async def _commit(self, sends: list[_PendingSend], marks: list[_PendingMark]) -> None:
        try:
            result = await self.store.commit(
                [
                    NewMessage(s.author.user_id, s.frame.id, s.frame.to, s.frame.envelope_json)
                    for s in sends
                ],
                [NewMark(m.author.user_id, m.seq, m.status) for m in marks],
                self.clock.now_ms(),
                self.bounds,
            )
        except Exception:
            # Nothing of the batch was committed: say so, and the clients send again.
            log.exception("chat commit of %d sends and %d marks failed", len(sends), len(marks))
            self.stats.commit_failures += 1
            for item in sends:
                self._refuse(item.conn, FrameCode.UNAVAILABLE, item.frame.id)
            for mark in marks:
                self._refuse(mark.conn, FrameCode.UNAVAILABLE, None)
            return
        self.last_seq = result.last_seq
        self.stats.record_batch(len(sends) + len(marks))
        # In the batch's order, so a connection's answers keep the order of its frames. One
        # answer that fails (a fan-out error) costs that one only: the client asks again.
        for item, outcome in zip(sends, result.sends, strict=True):
            with _logged("answering a send after its commit"):
                await self._settle_send(item, outcome)
        for mark, mark_outcome in zip(marks, result.marks, strict=True):
            with _logged("answering a mark after its commit"):
                await self._settle_mark(mark, mark_outcome)

    async def _settle_send(self, item: _PendingSend, outcome: SendOutcome) -> None:
        frame = item.frame
        if not isinstance(outcome, Stored):
            self._refuse(item.conn, _STORE_REFUSALS[outcome], frame.id)
            return
        # Acks are never dropped as repeats: the client waits for each. The sending connection
        # gets no copy of its own message; the ack (in position order on the queue) stands in.
        ack = ack_frame(frame.id, outcome.seq, outcome.ts)
        self.stats.acks += 1
        if outcome.withheld:
            # The recipient blocked the sender: the same ack as a stored message, after the
            # commit that decided it, and nothing for anyone else (docs/security.md).
            item.conn.deliver(ack)
            self.stats.messages_withheld += 1
            return
        if not outcome.created:
            item.conn.deliver(ack)
            self.stats.messages_duplicate += 1  # fanned out when first stored, not again
            return
        item.conn.deliver(Acked(ack, outcome.seq, outcome.prev_sender))
        self.stats.messages_stored += 1
        text = message_frame(
            outcome.seq, frame.id, item.author.name, frame.to, outcome.ts, frame.envelope_json
        )
        # One text, two streams: each copy carries the position before it in its own.
        await self.broker.publish(frame.to, Sequenced(text, outcome.seq, outcome.prev_recipient))
        await self.broker.publish(
            item.author.name,
            Sequenced(text, outcome.seq, outcome.prev_sender),
            except_conn=item.conn,
        )
        self.stats.messages_out += 1

    async def _settle_mark(self, mark: _PendingMark, outcome: MarkOutcome) -> None:
        if isinstance(outcome, Receipt):
            text = Sequenced(
                receipt_frame(
                    outcome.seq, outcome.client_id, outcome.status, mark.author.name, outcome.ts
                ),
                outcome.seq,
                outcome.prev,
            )
            await self.broker.publish(outcome.sender, text)
            self.stats.receipts += 1
        elif outcome is not None:
            self._refuse(mark.conn, _STORE_REFUSALS[outcome], None, seq=mark.seq)

    def _refuse(
        self, conn: Connection, error: FrameCode, frame_id: str | None, *, seq: int = 0
    ) -> None:
        refuse(self.stats, conn, error, frame_id, seq=seq)


def refuse(
    stats: ChatStats, conn: Connection, error: FrameCode, frame_id: str | None, *, seq: int = 0
) -> None:
    """Answer a frame on ``conn`` with an ``error`` (``seq`` fills a message that names one)
    and count the refusal."""
    stats.rejected[error.code] += 1
    conn.deliver(error_frame(error, error.message.format(seq=seq), frame_id))


@contextlib.contextmanager
def _logged(what: str) -> Iterator[None]:
    """Log an error in ``what`` and carry on with the next."""
    try:
        yield
    except Exception:
        log.exception("chat committer: %s failed", what)


def _change_frame(change: Change, reader: str) -> Sequenced:
    """A sync row as the frame a live client (of ``reader``) would have received."""
    if change.kind == "message":
        assert change.envelope is not None
        text = message_frame(
            change.seq,
            change.client_id,
            change.sender,
            change.recipient,
            change.ts,
            change.envelope,
        )
    elif change.kind == "delivered" or change.kind == "read":
        text = receipt_frame(change.pos, change.client_id, change.kind, change.recipient, change.ts)
    else:
        text = _group_change_text(change, reader)
    return Sequenced(text, change.pos)


def _group_change_text(change: Change, reader: str) -> str:
    """A group item of a sync: a message, a key distribution (the sender's own copy names
    its recipient, as live), a membership entry."""
    envelope = change.envelope or ""
    if change.kind == "group_entry":
        return group_entry_frame(change.pos, change.group, change.index, envelope, change.ts)
    if change.kind == "group_keys":
        to = change.recipient if change.sender == reader else None
        return group_keys_frame(
            change.pos,
            change.client_id,
            change.group,
            change.sender,
            change.head,
            change.ts,
            envelope,
            to,
        )
    return group_message_frame(
        change.pos, change.client_id, change.group, change.sender, change.head, change.ts, envelope
    )


__all__ = [
    "Acked",
    "ChatStats",
    "Delivery",
    "Job",
    "Principal",
    "Sequenced",
    "SharedRate",
    "refuse",
]
