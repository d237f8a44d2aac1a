"""An in-process store: the reference implementation of the contract, and the users' test helper's."""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timezone

from frappe_eda.messaging.envelope import utcnow
from frappe_eda.messaging.routing import topic_matches
from frappe_eda.messaging.store import (
	Direction,
	ErrorRecord,
	MessageFilter,
	MessageRecord,
	MessageStore,
	Status,
)

FINISHED = (Status.PROCESSED, Status.PUBLISHED)


class MemoryStore(MessageStore):
	"""Levels of ``transaction()`` behave like savepoints by snapshotting the state.

	A transaction holds the store's lock until it ends: restoring a snapshot would otherwise also undo
	other threads' writes, so they wait instead, as they would for a row lock. The relay claim is a lock
	of its own, tried without waiting: the store lives in one process, so its threads are all the
	claimants there can be.
	"""

	relay_claim_exclusive = True

	def __init__(self) -> None:
		self._lock = threading.RLock()
		self._relay_lock = threading.Lock()
		self._messages: dict[tuple[str, Direction, str], MessageRecord] = {}
		self._errors: list[ErrorRecord] = []

	@contextmanager
	def transaction(self) -> Iterator[None]:
		with self._lock:
			snapshot = (dict(self._messages), list(self._errors))
			try:
				yield
			except BaseException:
				self._messages, self._errors = snapshot
				raise

	@contextmanager
	def relay_claim(self) -> Iterator[bool]:
		if not self._relay_lock.acquire(blocking=False):
			yield False
			return
		try:
			yield True
		finally:
			self._relay_lock.release()

	def save(self, records: Sequence[MessageRecord]) -> None:
		with self._lock:
			now = utcnow()
			for record in records:
				self._messages[record.key] = replace(
					copy.deepcopy(record), created_at=_utc(record.created_at), updated_at=now
				)

	def set_status(
		self,
		direction: Direction,
		message_ids: Sequence[str],
		status: Status,
		queue: str = "",
		last_error: str | None = None,
	) -> None:
		with self._lock:
			now = utcnow()
			for message_id in message_ids:
				key = (message_id, direction, queue)
				record = self._messages.get(key)
				if record is not None:
					self._messages[key] = replace(
						record,
						status=status,
						last_error=record.last_error if last_error is None else last_error,
						updated_at=now,
					)

	def resolve(self, direction: Direction, queue: str, message_ids: Sequence[str]) -> None:
		ids = set(message_ids)
		if not ids:
			return
		with self._lock:
			now = utcnow()
			for message_id in ids:
				key = (message_id, direction, queue)
				record = self._messages.get(key)
				if record is not None:
					self._messages[key] = replace(record, resolved=True, updated_at=now)
			self._errors = [
				replace(e, resolved=True)
				if e.message_id in ids and e.direction is direction and e.queue == queue
				else e
				for e in self._errors
			]

	def get(self, message_id: str, direction: Direction, queue: str = "") -> MessageRecord | None:
		with self._lock:
			record = self._messages.get((message_id, direction, queue))
			return copy.deepcopy(record) if record else None

	def find(self, query: MessageFilter) -> list[MessageRecord]:
		with self._lock:
			found = [r for r in self._messages.values() if _matches(r, query)]
		found.sort(key=lambda r: r.created_at)
		return [copy.deepcopy(r) for r in found[: query.limit]]

	def processed_ids(self, queue: str, message_ids: Iterable[str]) -> set[str]:
		return self._inbox_ids(queue, message_ids, Status.PROCESSED)

	def dead_ids(self, queue: str, message_ids: Iterable[str]) -> set[str]:
		return self._inbox_ids(queue, message_ids, Status.DEAD)

	def _inbox_ids(self, queue: str, message_ids: Iterable[str], status: Status) -> set[str]:
		with self._lock:
			return {
				i
				for i in message_ids
				if (r := self._messages.get((i, Direction.INCOMING, queue))) is not None
				and r.status is status
			}

	def add_error(self, error: ErrorRecord) -> None:
		with self._lock:
			self._errors.append(replace(copy.deepcopy(error), occurred_at=_utc(error.occurred_at)))

	def errors(self, message_id: str, queue: str | None = None) -> list[ErrorRecord]:
		with self._lock:
			found = [
				e for e in self._errors if e.message_id == message_id and (queue is None or e.queue == queue)
			]
		return sorted((copy.deepcopy(e) for e in found), key=lambda e: e.occurred_at)

	def counts(self) -> dict[tuple[Direction, Status], int]:
		counts: dict[tuple[Direction, Status], int] = {}
		with self._lock:
			for record in self._messages.values():
				counts[(record.direction, record.status)] = (
					counts.get((record.direction, record.status), 0) + 1
				)
		return counts

	def delete_finished(self, before: datetime) -> int:
		with self._lock:
			before = _utc(before)
			doomed = {k for k, r in self._messages.items() if r.status in FINISHED and r.updated_at < before}
			for key in doomed:
				del self._messages[key]
			self._errors = [e for e in self._errors if (e.message_id, e.direction, e.queue) not in doomed]
			return len(doomed)


def _utc(value: datetime) -> datetime:
	"""The SQL and DocType stores hand back aware UTC whatever they were given; so must the reference."""
	return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _matches(record: MessageRecord, query: MessageFilter) -> bool:
	if query.direction is not None and record.direction is not query.direction:
		return False
	if query.statuses and record.status not in query.statuses:
		return False
	if query.queue is not None and record.queue != query.queue:
		return False
	if query.message_ids and record.message_id not in query.message_ids:
		return False
	if query.since is not None and record.created_at < _utc(query.since):
		return False
	if query.until is not None and record.created_at > _utc(query.until):
		return False
	if query.routing_key is not None:
		pattern = query.routing_key
		if "*" in pattern or "#" in pattern:
			return topic_matches(pattern, record.routing_key)
		return record.routing_key == pattern
	return True
