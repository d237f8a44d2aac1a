"""Sending stored messages again: one by id, or every one that matches a filter.

A replay re-sends the original body with its original message id, so consumers see the same message,
plus headers saying who replayed it, when, and the how-many-th replay it is. An incoming message goes
straight back to the queue that failed it (through the default exchange), so other subscribers of the
same routing key do not receive it a second time. A message its handler already processed is refused
unless forced; a forced replay first reopens the inbox entry, or the consumer would skip it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

from frappe_eda.messaging.envelope import Message, decode, encode, utcnow
from frappe_eda.messaging.errors import InvalidMessage, MessageNotFound, ReplayRefused
from frappe_eda.messaging.processing import (
	ATTEMPT,
	ORIGINAL_EXCHANGE,
	ORIGINAL_ROUTING_KEY,
	REPLAY_COUNT,
	REPLAY_OF,
	REPLAYED_AT,
	REPLAYED_BY,
)
from frappe_eda.messaging.publisher import Envelope, Publisher
from frappe_eda.messaging.store import Direction, MessageFilter, MessageRecord, MessageStore, Status

DONE_STATUSES = (Status.PROCESSED, Status.PUBLISHED)


@dataclass(frozen=True)
class ReplayResult:
	message_id: str
	queue: str
	direction: Direction
	previous_status: Status
	sent: bool
	detail: str = ""


class Replayer:
	def __init__(self, publisher: Publisher, store: MessageStore, actor: str = "frappe_eda") -> None:
		self.publisher = publisher
		self.store = store
		self.actor = actor

	def replay(
		self,
		message_id: str,
		queue: str | None = None,
		*,
		direction: Direction | None = None,
		force: bool = False,
		dry_run: bool = False,
	) -> ReplayResult:
		"""Replay the stored message ``message_id`` (of ``queue`` when it reached several queues)."""
		return self._replay_record(self._find_one(message_id, queue, direction), force, dry_run)

	def edit_and_replay(
		self, message_id: str, payload: Any, queue: str | None = None, *, direction: Direction | None = None
	) -> MessageRecord:
		"""Send a corrected copy: a new message id, the edited payload, ``replay_of`` the original.

		The original stays as it was, marked resolved, so the history shows what failed and what
		replaced it. An incoming copy goes straight to the original's queue; an outgoing copy is
		published to the original's exchange and routing key.
		"""
		original = self._find_one(message_id, queue, direction)
		try:
			source = decode(original.body.encode("utf-8"), max_bytes=2**31, max_depth=10_000)
		except InvalidMessage:
			source = Message(type=original.message_type or original.routing_key)
		copy = Message(
			type=source.type,
			payload=payload,
			source=source.source,
			correlation_id=source.correlation_id or source.id,
			causation_id=source.id,
			schema_version=source.schema_version,
			headers=source.headers,
		)
		record = replace(
			original,
			message_id=copy.id,
			status=Status.RECEIVED if original.direction is Direction.INCOMING else Status.PENDING,
			body=encode(copy).decode("utf-8"),
			message_type=copy.type,
			attempts=0,
			last_error="",
			replay_count=0,
			replay_of=original.message_id,
			resolved=False,
			created_at=utcnow(),
		)
		with self.store.transaction():
			self.store.save([record, replace(original, resolved=True)])
		report = self.publisher.send([self._envelope(record, 1)])
		if report.failed:
			report.raise_first()
		if record.direction is Direction.OUTGOING:
			with self.store.transaction():
				self.store.set_status(Direction.OUTGOING, [record.message_id], Status.PUBLISHED)
		return record

	def replay_matching(
		self, query: MessageFilter, *, force: bool = False, dry_run: bool = False
	) -> list[ReplayResult]:
		"""Replay every match; a refused one is reported in its result, the others still go."""
		results = []
		for record in self.store.find(query):
			try:
				results.append(self._replay_record(record, force, dry_run))
			except ReplayRefused as e:
				results.append(
					ReplayResult(
						record.message_id, record.queue, record.direction, record.status, False, str(e)
					)
				)
		return results

	def _find_one(
		self, message_id: str, queue: str | None, direction: Direction | None = None
	) -> MessageRecord:
		if direction is not None:
			record = self.store.get(message_id, direction, queue or "")
			if record is None:
				raise MessageNotFound(
					f"no {direction.name.lower()} message {message_id}{' in ' + queue if queue else ''}"
				)
			return record
		if queue is not None:
			record = self.store.get(message_id, Direction.INCOMING, queue)
			if record is None:
				raise MessageNotFound(f"no message {message_id} consumed from queue {queue!r}")
			return record
		matches = self.store.find(MessageFilter(message_ids=(message_id,)))
		incoming = [r for r in matches if r.direction is Direction.INCOMING]
		if len(incoming) > 1:
			queues = ", ".join(r.queue for r in incoming)
			raise MessageNotFound(
				f"message {message_id} reached several queues ({queues}); name the queue to replay"
			)
		if incoming:
			return incoming[0]
		if matches:
			return matches[0]
		raise MessageNotFound(f"no stored message has id {message_id}")

	def _replay_record(self, record: MessageRecord, force: bool, dry_run: bool) -> ReplayResult:
		if record.status in DONE_STATUSES and not force:
			raise ReplayRefused(
				f"message {record.message_id}{_in(record)} is already {record.status.value}; "
				"replaying would run its handler again: replay it with force (--force on the command line) "
				"to do it anyway"
			)
		if dry_run:
			return ReplayResult(
				record.message_id, record.queue, record.direction, record.status, False, "dry run"
			)
		count = record.replay_count + 1
		envelope = self._envelope(record, count)
		reopened = replace(
			record,
			status=Status.RECEIVED if record.direction is Direction.INCOMING else Status.PENDING,
			replay_count=count,
			resolved=False,
		)
		with self.store.transaction():
			self.store.save([reopened])
		report = self.publisher.send([envelope])
		if report.failed:
			error = report.failed[record.message_id]
			with self.store.transaction():
				self.store.save([replace(record, last_error=f"replay failed: {error}")])
			return ReplayResult(
				record.message_id, record.queue, record.direction, record.status, False, str(error)
			)
		if record.direction is Direction.OUTGOING:
			with self.store.transaction():
				self.store.set_status(Direction.OUTGOING, [record.message_id], Status.PUBLISHED)
		return ReplayResult(
			record.message_id, record.queue, record.direction, record.status, True, f"replay #{count}"
		)

	def _envelope(self, record: MessageRecord, count: int) -> Envelope:
		headers: dict[str, Any] = {k: v for k, v in record.headers.items() if not _is_delivery_header(k)}
		headers.update(
			{
				REPLAYED_BY: self.actor,
				REPLAYED_AT: datetime.now(timezone.utc).isoformat(),
				REPLAY_COUNT: count,
				ATTEMPT: 1,
			}
		)
		if record.replay_of:
			headers[REPLAY_OF] = record.replay_of
		if record.direction is Direction.INCOMING:
			headers[ORIGINAL_ROUTING_KEY] = record.routing_key
			headers[ORIGINAL_EXCHANGE] = record.exchange
			exchange, routing_key = "", record.queue
		else:
			exchange, routing_key = record.exchange, record.routing_key
		return Envelope(
			message_id=record.message_id,
			exchange=exchange,
			routing_key=routing_key,
			body=record.body.encode("utf-8"),
			message_type=record.message_type,
			headers=headers,
		)


def _is_delivery_header(name: str) -> bool:
	"""Headers that described an earlier delivery (attempts, errors, the broker's x-death)."""
	return name.startswith("x-eda-") or name in (
		"x-death",
		"x-first-death-exchange",
		"x-first-death-queue",
		"x-first-death-reason",
		"x-last-death-exchange",
		"x-last-death-queue",
		"x-last-death-reason",
		"x-delivery-count",
	)


def _in(record: MessageRecord) -> str:
	return f" in queue {record.queue!r}" if record.queue else ""
