"""Sending stored messages again: one by id, a batch of records (``replay_many``), or every one that
matches a filter.

A replay re-sends the original body with its original message id, so consumers see the same message,
plus headers saying who replayed it, when, and the how-many-th replay it is. An incoming message goes
straight back to the queue that failed it (through the default exchange), so other subscribers of the
same routing key do not receive it a second time. A message its handler already processed is refused
unless forced; a forced replay first reopens the inbox entry, or the consumer would skip it.

Broker and records stay consistent. Once an incoming replay is confirmed sent, the message's parked copy
is removed from ``<queue>.dead`` (``deadletters``; one scan of the dead queue per queue replayed, and
only copies parked before this replay: one parked because the replay failed again stays). A cleaning that
fails does not fail the replay, which was sent: it is logged and said in the result's ``detail``. The
worker resolves the message and its errors when the replay is processed; an outgoing replay is resolved
when the broker confirms it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

from frappe_eda.messaging.deadletters import DeadCopiesRemoved, remove_dead_copies
from frappe_eda.messaging.envelope import Message, decode, encode, utcnow
from frappe_eda.messaging.errors import (
	BrokerUnavailable,
	DeadLetterCleanupError,
	InvalidMessage,
	MessageNotFound,
	ReplayRefused,
)
from frappe_eda.messaging.processing import (
	ATTEMPT,
	ORIGINAL_EXCHANGE,
	ORIGINAL_ROUTING_KEY,
	REPLAY_COUNT,
	REPLAY_OF,
	REPLAYED_AT,
	REPLAYED_BY,
)
from frappe_eda.messaging.publisher import Envelope, Publisher, SendReport
from frappe_eda.messaging.store import Direction, MessageFilter, MessageRecord, MessageStore, Status
from frappe_eda.messaging.topology import dead_letter_queue
from frappe_eda.messaging.trust import SENDER, SIGNATURE

log = logging.getLogger(__name__)

DONE_STATUSES = (Status.PROCESSED, Status.PUBLISHED)


@dataclass(frozen=True)
class ReplayResult:
	message_id: str
	queue: str
	direction: Direction
	previous_status: Status
	sent: bool
	detail: str = ""
	# The replay number sent (``x-eda-replay-count``); 0 when nothing was sent.
	replay_count: int = 0
	# Whether a parked copy of the message was removed from ``<queue>.dead`` after the replay.
	dead_copy_removed: bool = False


class Replayer:
	"""Replays through ``publisher`` (and cleans dead-letter queues on its connection).

	``cleaning_timeout``: how long a cleaning waits for another process's cleaning of the same dead
	queue before it gives up (the replay stands; the copy stays until the next cleaning).
	"""

	def __init__(
		self,
		publisher: Publisher,
		store: MessageStore,
		actor: str = "frappe_eda",
		*,
		cleaning_timeout: float = 30.0,
		relay_wait: float = 30.0,
	) -> None:
		self.publisher = publisher
		self.store = store
		self.actor = actor
		self.cleaning_timeout = cleaning_timeout
		self.relay_wait = relay_wait
		self._holding_relay = False

	@contextmanager
	def holding_relay(self, needed: bool = True) -> Iterator[None]:
		"""The store's relay claim, for as long as outgoing replays are Pending: they are reopened to
		Pending, and a relay that read them before this replay marked them Published would send them a
		second time. Waits for a relay's batch in progress (up to ``relay_wait`` seconds), then refuses
		with ``ReplayRefused``. Nested uses hold it once (a caller may hold it across several batches);
		``needed=False`` (nothing outgoing) holds nothing."""
		if self._holding_relay or not needed:
			yield
			return
		deadline = time.monotonic() + self.relay_wait
		while True:
			with self.store.relay_claim() as mine:
				if mine:
					self._holding_relay = True
					try:
						yield
					finally:
						self._holding_relay = False
					return
			if time.monotonic() >= deadline:
				raise ReplayRefused(
					f"the outbox relay kept the outbox for over {self.relay_wait:g} s; nothing of this "
					"replay was sent: replay it again"
				)
			time.sleep(0.1)

	def replay(
		self,
		message_id: str,
		queue: str | None = None,
		*,
		direction: Direction | None = None,
		force: bool = False,
		dry_run: bool = False,
	) -> ReplayResult:
		"""Replay the stored message ``message_id`` (of ``queue`` when it reached several queues); an
		incoming one's parked copy then leaves ``<queue>.dead``."""
		record = self._find_one(message_id, queue, direction)
		with self.holding_relay(record.direction is Direction.OUTGOING):
			result = self._replay_record(record, force, dry_run)
		return self.remove_dead_copies([result])[0]

	def edit_and_replay(
		self, message_id: str, payload: Any, queue: str | None = None, *, direction: Direction | None = None
	) -> MessageRecord:
		"""Send a corrected copy: a new message id, the edited payload, ``replay_of`` the original.

		The original stays as it was, marked resolved with its errors, so the history shows what failed
		and what replaced it. An incoming copy goes straight to the original's queue, and once it is
		sent the original's parked copy leaves ``<queue>.dead`` (a failure to clean is logged: the copy
		was sent); an outgoing copy is published to the original's exchange and routing key.
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
		with self.holding_relay(record.direction is Direction.OUTGOING):
			with self.store.transaction():
				self.store.save([record, replace(original, resolved=True)])
				self.store.resolve(original.direction, original.queue, [original.message_id])
			report = self.publisher.send([self._envelope(record, 1)])
			if report.failed:
				report.raise_first()
			if record.direction is Direction.OUTGOING:
				with self.store.transaction():
					self.store.set_status(Direction.OUTGOING, [record.message_id], Status.PUBLISHED)
		if record.direction is Direction.INCOMING and original.status is Status.DEAD:
			# only a dead message has a parked copy to remove
			try:
				self._clean(original.queue, [original.message_id], {})
			except (DeadLetterCleanupError, BrokerUnavailable) as e:
				log.warning("edited copy of %s sent, but %s", original.message_id, e)
		return record

	def replay_matching(
		self, query: MessageFilter, *, force: bool = False, dry_run: bool = False
	) -> list[ReplayResult]:
		"""Replay every match; a refused one is reported in its result, the others still go. The parked
		copies of what was sent leave the dead-letter queues afterwards, one scan per queue."""
		return self.replay_many(self.store.find(query), force=force, dry_run=dry_run)

	def replay_many(
		self,
		records: Iterable[MessageRecord],
		*,
		force: bool = False,
		dry_run: bool = False,
		clean: bool = True,
	) -> list[ReplayResult]:
		"""Replay these records (as read from the store), in order, a result each: a refused one says why,
		the others still go. Batched, because a desk selection is thousands of messages: the reopened
		records are written in one transaction, sent in one confirmed burst (a round per distinct message
		id: the report knows a message by its id), and what failed is put back in one more. Should the
		broker go away mid-burst, what it did not confirm is put back as it was before the error is raised.

		``clean=False`` leaves ``<queue>.dead`` alone, so a caller replaying chunk by chunk cleans once at
		the end, one scan per queue, with ``remove_dead_copies(all_results)``.
		"""
		records = list(records)
		results: dict[int, ReplayResult] = {}
		todo: list[tuple[int, MessageRecord]] = []
		for i, record in enumerate(records):
			if record.status in DONE_STATUSES and not force:
				results[i] = ReplayResult(
					record.message_id, record.queue, record.direction, record.status, False, _refusal(record)
				)
			elif dry_run:
				results[i] = ReplayResult(
					record.message_id, record.queue, record.direction, record.status, False, "dry run"
				)
			else:
				todo.append((i, record))
		for batch in _rounds(todo):
			results.update(self._replay_batch(batch))
		ordered = [results[i] for i in range(len(records))]
		return self.remove_dead_copies(ordered) if clean else ordered

	def _replay_batch(self, batch: list[tuple[int, MessageRecord]]) -> dict[int, ReplayResult]:
		outgoing = any(record.direction is Direction.OUTGOING for _, record in batch)
		with self.holding_relay(outgoing):
			settled = self._settled_meanwhile(batch)
			results = self._replay_batch_held([item for item in batch if item[0] not in settled])
		return {**results, **settled}

	def _settled_meanwhile(self, batch: list[tuple[int, MessageRecord]]) -> dict[int, ReplayResult]:
		"""Records that became Processed or Published since they were read (a Failed message's retry
		ran meanwhile): reopening them from the old copy would undo that and run the handler again."""
		ids = tuple(dict.fromkeys(record.message_id for _, record in batch))
		if not ids:
			return {}
		query = MessageFilter(message_ids=ids, limit=len(ids) * 64)
		now = {record.key: record for record in self.store.find(query)}
		settled = {}
		for i, record in batch:
			current = now.get(record.key)
			if current and current.status in DONE_STATUSES and record.status not in DONE_STATUSES:
				settled[i] = ReplayResult(
					record.message_id,
					record.queue,
					record.direction,
					record.status,
					False,
					f"{current.status.value} while the replay was starting: not sent again",
				)
		return settled

	def _replay_batch_held(self, batch: list[tuple[int, MessageRecord]]) -> dict[int, ReplayResult]:
		counts = {i: record.replay_count + 1 for i, record in batch}
		envelopes = [self._envelope(record, counts[i]) for i, record in batch]
		with self.store.transaction():
			self.store.save(
				[
					replace(
						record,
						status=Status.RECEIVED if record.direction is Direction.INCOMING else Status.PENDING,
						replay_count=counts[i],
						resolved=False,
					)
					for i, record in batch
				]
			)
		report = SendReport()
		try:
			self.publisher.send(envelopes, into=report)
		except BaseException:
			confirmed = set(report.confirmed)
			try:
				with self.store.transaction():
					self.store.save([r for _, r in batch if r.message_id not in confirmed])
					self._published([r for _, r in batch if r.message_id in confirmed])
			except Exception:
				log.exception("could not put back the records of an interrupted replay")
			raise
		failed = {i: report.failed[r.message_id] for i, r in batch if r.message_id in report.failed}
		with self.store.transaction():
			if failed:
				self.store.save(
					[replace(r, last_error=f"replay failed: {failed[i]}") for i, r in batch if i in failed]
				)
			self._published([r for i, r in batch if i not in failed])
		return {
			i: ReplayResult(r.message_id, r.queue, r.direction, r.status, False, str(failed[i]))
			if i in failed
			else ReplayResult(
				r.message_id,
				r.queue,
				r.direction,
				r.status,
				True,
				f"replay #{counts[i]}",
				replay_count=counts[i],
			)
			for i, r in batch
		}

	def _published(self, records: list[MessageRecord]) -> None:
		"""Outgoing replays the broker confirmed: their failure is over."""
		ids = [r.message_id for r in records if r.direction is Direction.OUTGOING]
		if ids:
			self.store.set_status(Direction.OUTGOING, ids, Status.PUBLISHED)
			self.store.resolve(Direction.OUTGOING, "", ids)

	def remove_dead_copies(self, results: list[ReplayResult]) -> list[ReplayResult]:
		"""Clean ``<queue>.dead`` of the incoming messages sent, once per queue; a failed cleaning is
		logged and said in the detail of the results it concerns, which stay sent."""
		replayed: dict[str, dict[str, int]] = {}
		for r in results:
			# Only a message that was Dead has a parked copy: looking for another's would read (and
			# rewrite) the whole dead queue for nothing.
			if r.sent and r.direction is Direction.INCOMING and r.previous_status is Status.DEAD:
				replayed.setdefault(r.queue, {})[r.message_id] = r.replay_count
		cleaned: dict[tuple[str, str], str] = {}
		for queue, counts in replayed.items():
			try:
				outcome = self._clean(queue, list(counts), counts)
			except (DeadLetterCleanupError, BrokerUnavailable) as e:  # the replays were sent: they stand
				log.warning("replayed %d messages of %s, but %s", len(counts), queue, e)
				for message_id in counts:
					cleaned[(queue, message_id)] = (
						f"its copy in {dead_letter_queue(queue)} was not removed: {e}"
					)
				continue
			for message_id in outcome.removed:
				cleaned[(queue, message_id)] = ""
		return [
			r
			if (r.queue, r.message_id) not in cleaned
			else _with_cleaning(r, cleaned[(r.queue, r.message_id)])
			for r in results
		]

	def _clean(
		self, queue: str, message_ids: Iterable[str], replayed: Mapping[str, int]
	) -> DeadCopiesRemoved:
		return remove_dead_copies(
			self.publisher.connection,
			queue,
			message_ids,
			replayed=replayed,
			lock_timeout=self.cleaning_timeout,
		)

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
			raise ReplayRefused(_refusal(record))
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
			# Confirmed by the broker: an outgoing message's failure is over.
			with self.store.transaction():
				self.store.set_status(Direction.OUTGOING, [record.message_id], Status.PUBLISHED)
				self.store.resolve(Direction.OUTGOING, "", [record.message_id])
		return ReplayResult(
			record.message_id,
			record.queue,
			record.direction,
			record.status,
			True,
			f"replay #{count}",
			replay_count=count,
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
	if name in (SENDER, SIGNATURE):
		return False  # who first sent it, and its signature: a replay is checked as the original was
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


def _with_cleaning(result: ReplayResult, problem: str) -> ReplayResult:
	"""The result with what the dead-letter cleaning did: the copy removed, or why it stays."""
	if problem:
		return replace(result, detail=f"{result.detail}; {problem}")
	return replace(result, dead_copy_removed=True)


def _refusal(record: MessageRecord) -> str:
	return (
		f"message {record.message_id}{_in(record)} is already {record.status.value}; "
		"replaying would run its handler again: replay it with force (--force on the command line) "
		"to do it anyway"
	)


def _rounds(todo: list[tuple[int, MessageRecord]]) -> list[list[tuple[int, MessageRecord]]]:
	"""``todo`` split so that no round holds one message id twice (one id reached several queues)."""
	rounds: list[list[tuple[int, MessageRecord]]] = []
	seen: list[set[str]] = []
	for item in todo:
		n = 0
		while n < len(rounds) and item[1].message_id in seen[n]:
			n += 1
		if n == len(rounds):
			rounds.append([])
			seen.append(set())
		rounds[n].append(item)
		seen[n].add(item[1].message_id)
	return rounds


def _in(record: MessageRecord) -> str:
	return f" in queue {record.queue!r}" if record.queue else ""
