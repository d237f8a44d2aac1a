"""What the core persists, and the one interface every store implements.

The core never talks to a database directly: it hands ``MessageRecord`` and ``ErrorRecord`` values to a
``MessageStore``. The SQL store (plain services) and the Frappe store (DocTypes) implement it, and both
must pass the contract suite in ``frappe_eda.testing.store_contract``.

A stored message is keyed by (message_id, direction, queue): an outgoing message has queue "" and one
record; an incoming message has one record per queue that consumed it, because each queue has its own
handler and its own outcome. The inbox is simply "a PROCESSED incoming record exists for this key".
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, ClassVar

from frappe_eda.messaging.envelope import utcnow


class Direction(str, enum.Enum):
	OUTGOING = "out"
	INCOMING = "in"


class Status(str, enum.Enum):
	# outgoing
	PENDING = "pending"
	PUBLISHED = "published"
	# both: outgoing = the broker refused it; incoming = the handler failed and a retry is scheduled
	FAILED = "failed"
	# incoming
	RECEIVED = "received"
	PROCESSED = "processed"
	DEAD = "dead"


OUTGOING_STATUSES = (Status.PENDING, Status.PUBLISHED, Status.FAILED)
INCOMING_STATUSES = (Status.RECEIVED, Status.PROCESSED, Status.FAILED, Status.DEAD)


@dataclass
class MessageRecord:
	"""A produced or consumed message as stored. ``body`` is the exact envelope text that was sent."""

	message_id: str
	direction: Direction
	status: Status
	routing_key: str
	body: str
	exchange: str = ""
	queue: str = ""
	handler: str = ""
	message_type: str = ""
	headers: dict[str, Any] = field(default_factory=dict)
	attempts: int = 0
	last_error: str = ""
	replay_count: int = 0
	replay_of: str = ""
	resolved: bool = False
	# What the message is about, e.g. ("Sales Order", "SO-0001"); free text outside Frappe.
	reference_doctype: str = ""
	reference_name: str = ""
	created_at: datetime = field(default_factory=utcnow)
	updated_at: datetime = field(default_factory=utcnow)

	@property
	def key(self) -> tuple[str, Direction, str]:
		return (self.message_id, self.direction, self.queue)


@dataclass
class ErrorRecord:
	"""One failure of one attempt. ``fingerprint`` groups identical failures across messages."""

	message_id: str
	direction: Direction
	exception_type: str
	error: str
	fingerprint: str
	attempt: int = 1
	queue: str = ""
	handler: str = ""
	traceback: str = ""
	occurred_at: datetime = field(default_factory=utcnow)
	resolved: bool = False


@dataclass(frozen=True)
class MessageFilter:
	"""Which stored messages a query or a replay selects. Empty fields select everything."""

	direction: Direction | None = None
	statuses: tuple[Status, ...] = ()
	routing_key: str | None = None
	queue: str | None = None
	since: datetime | None = None
	until: datetime | None = None
	message_ids: tuple[str, ...] = ()
	limit: int = 1000


MIN_TIME = datetime.min.replace(tzinfo=timezone.utc)
MAX_TIME = datetime.max.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class StoreLimits:
	"""What a store can hold, declared so the core can check a delivery before its handler runs.

	``key_chars``: identifier fields of ``MessageRecord``/``ErrorRecord`` (message_id, queue, routing_key,
	exchange, handler, message_type, replay_of, reference_doctype, reference_name, exception_type,
	fingerprint) -> the most the store holds, in units of its ``stored_length``; a longer value makes the
	message unstorable. ``text_chars``: display-only fields (last_error, error, traceback, and the
	serialized ``headers``) -> the same; a longer value is truncated with a visible marker, never
	refused. ``min_time``/``max_time``: the instants (aware UTC) the store's timestamps hold;
	``max_int``: the largest integer its counters (attempts, replay_count) hold. Absent means unbounded:
	every store also refuses what none can hold (text that is not UTF-8, NUL in identifiers, times
	that cannot be converted to UTC); see ``frappe_eda.messaging.storable``.
	"""

	key_chars: Mapping[str, int] = field(default_factory=dict)
	text_chars: Mapping[str, int] = field(default_factory=dict)
	min_time: datetime = MIN_TIME
	max_time: datetime = MAX_TIME
	max_int: int | None = None


class MessageStore(ABC):
	"""Durable home of every message and error. Writes inside ``transaction()`` commit together."""

	# What the store can hold; a store with narrower columns declares them (class or instance attribute).
	limits: StoreLimits = StoreLimits()

	def stored_length(self, field: str, value: str) -> int:
		"""How long ``value`` is as this store writes ``field``, in the units of ``limits`` (a store that
		escapes text on write, or counts bytes, measures that)."""
		return len(value)

	@abstractmethod
	def transaction(self) -> AbstractContextManager[Any]:
		"""Group writes atomically; nested calls are savepoints, so one message can roll back alone."""

	@abstractmethod
	def save(self, records: Sequence[MessageRecord]) -> None:
		"""Insert or replace records by key (message_id, direction, queue); ``updated_at`` is refreshed."""

	@abstractmethod
	def set_status(
		self,
		direction: Direction,
		message_ids: Sequence[str],
		status: Status,
		queue: str = "",
		last_error: str | None = None,
	) -> None:
		"""Move existing records to ``status`` in one write (e.g. a batch of confirms)."""

	@abstractmethod
	def get(self, message_id: str, direction: Direction, queue: str = "") -> MessageRecord | None: ...

	@abstractmethod
	def find(self, query: MessageFilter) -> list[MessageRecord]:
		"""Matching records, oldest first (the order an outbox must be relayed in)."""

	@abstractmethod
	def processed_ids(self, queue: str, message_ids: Iterable[str]) -> set[str]:
		"""The inbox: which of ``message_ids`` were already PROCESSED by ``queue``'s handler."""

	def is_transient(self, error: BaseException) -> bool:
		"""Whether ``error`` (raised by this store's database) goes away when the same work is tried again:
		a deadlock or a lock wait timeout between competing workers. The worker then tries the delivery
		again, and at worst returns it to the queue, instead of dead-lettering it as refused."""
		return False

	def claim_inbox(self, queue: str, message_ids: Iterable[str]) -> None:  # noqa: B027 - optional hook
		"""Hold ``queue``'s inbox entries of ``message_ids`` until the open transaction ends.

		Competing workers on one queue can hold two copies of one id at once (a producer resent it after
		a lost confirm; a worker whose node died is still finishing a batch the broker already gave to
		another worker). Both would read "not processed" and run the handler twice. The processor claims
		a batch's ids first: a second worker claiming one of them waits until the first one's
		transaction ends, and then reads the inbox as it left it. The default does nothing, for stores
		whose transactions already run one at a time (the memory store; SQLite's ``BEGIN IMMEDIATE``).
		"""

	def dead_ids(self, queue: str, message_ids: Iterable[str]) -> set[str]:
		"""Which of ``message_ids`` ``queue``'s handler already settled as DEAD. The worker asks for a
		redelivered batch, and for a batch it runs again one by one: a dead message is not run again
		unless a replay reopens it (to RECEIVED) first, so a handler that committed before it failed
		never applies its effect twice. Stores may answer faster than this ``find``."""
		ids = tuple(dict.fromkeys(message_ids))
		if not ids:
			return set()
		query = MessageFilter(
			direction=Direction.INCOMING,
			statuses=(Status.DEAD,),
			queue=queue,
			message_ids=ids,
			limit=len(ids),
		)
		return {record.message_id for record in self.find(query)}

	def failed_with(
		self, exception_type: str, *, updated_before: datetime, limit: int = 500
	) -> list[MessageRecord]:
		"""Unresolved outgoing records FAILED with ``exception_type`` (the qualified class name that starts
		``last_error``, as the publisher writes it: ``"frappe_eda.messaging.errors.StillNacked: ..."``)
		and last updated before ``updated_before``, oldest first, at most ``limit``. ``OutboxRelay`` sends
		the messages a broker refused only for now (``StillNacked``) again this way.

		The default pages through the FAILED outgoing records with ``find`` and filters them here; a store
		that can filter on ``last_error`` itself answers with one query (the SQL store does)."""
		prefix = f"{exception_type}: "
		found: list[MessageRecord] = []
		seen: set[str] = set()
		since: datetime | None = None
		while len(found) < limit:
			page = self.find(
				MessageFilter(
					direction=Direction.OUTGOING, statuses=(Status.FAILED,), since=since, limit=1000
				)
			)
			fresh = [r for r in page if r.message_id not in seen]
			if not fresh:
				break
			for record in fresh:
				seen.add(record.message_id)
				if (
					record.last_error.startswith(prefix)
					and not record.resolved
					and record.updated_at < updated_before
				):
					found.append(record)
			since = page[-1].created_at
		return found[:limit]

	@abstractmethod
	def resolve(self, direction: Direction, queue: str, message_ids: Sequence[str]) -> None:
		"""Mark the records of ``message_ids`` (that direction and queue; "" for outgoing) resolved, and
		their own errors with them (same id, direction and queue): they leave the failure lists. Another
		queue's copy of the same message, and its errors, stay as they are. Unknown ids are ignored."""

	@abstractmethod
	def add_error(self, error: ErrorRecord) -> None: ...

	@abstractmethod
	def errors(self, message_id: str, queue: str | None = None) -> list[ErrorRecord]:
		"""Errors of a message, oldest first; ``queue=None`` returns those of every queue."""

	@abstractmethod
	def counts(self) -> dict[tuple[Direction, Status], int]: ...

	@abstractmethod
	def delete_finished(self, before: datetime) -> int:
		"""Retention: delete PROCESSED and PUBLISHED records (and their errors) last updated before
		``before``; FAILED and DEAD stay until resolved. Returns how many messages were deleted."""

	def checkpoint(self) -> None:  # noqa: B027 - optional hook
		"""Make what the open outermost transaction holds durable now, and go on in a new one.

		For when a handler already committed part of a batch (``HandlerCommitted``): the processor records
		what that commit made durable and checkpoints, so a later failure in the batch cannot roll those
		records back while their effects stay. A store whose transactions a handler cannot end, or that
		does not own the transaction (a web request's), does nothing."""

	def close(self) -> None:  # noqa: B027 - optional hook
		"""Release connections; a store without any needs nothing here."""

	# --- relaying the outbox ----------------------------------------------------------------------

	#: Whether ``relay_claim`` excludes every other claimant on the same data: other threads, processes
	#: and hosts. A store that says False hands the claim to everyone: relays running at once may then
	#: send a message twice (consumers' inboxes drop the copy) and interleave their batches (order holds
	#: within each relay only). The contract suite checks exclusion where this is True.
	relay_claim_exclusive: ClassVar[bool] = False

	def relay_claim(self) -> AbstractContextManager[bool]:
		"""The right to relay this store's PENDING outgoing messages, held for the ``with`` block.

		Yields True to one holder at a time and False, at once and without waiting, to anyone else, who
		must then send nothing (the holder sends what is pending). ``OutboxRelay`` takes it for each batch:
		read the oldest PENDING, send, record the outcomes, release; so any number of relays send every
		message once and in the order it was written. A holder that dies frees it (a session lock, not a
		lease that must expire); one whose database connection drops loses it, and a second relay may
		then send the batch again (consumers drop the copy). Not re-entrant: don't nest claims.

		The default suits a store that cannot exclude (see ``relay_claim_exclusive``): always True.
		"""
		return nullcontext(True)
