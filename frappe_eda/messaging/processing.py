"""What happens to one delivery, decided without touching the broker.

``DeliveryProcessor`` takes deliveries (bytes plus AMQP metadata) and, inside one store transaction,
decodes, checks the inbox, validates, runs the handler and records the outcome. It returns a
``Decision`` per delivery; the worker then carries the decisions out on the broker (republish to a
retry tier or the dead-letter queue, then ack) only after the transaction committed. The test helper
runs the same processor without a broker, so users' tests see the same decisions as production.

A message processed after failing (a retry, ``attempt > 1``) or when replayed (``x-eda-replay-count``)
is recorded resolved, and its errors are resolved in the same transaction: its failure is over.

Poison isolation. Screening checks the record each delivery would produce against the store's declared
limits (``storable``) before the inbox and the handler: one the store cannot hold is dead at once with
``UnstorableMessage``, recorded with the closest record that fits, and its handler never runs. Every
error text, traceback and header written here is cut to fit, never refused. When a batch still fails to
record, the worker asks ``store_takes_writes``: a store that is down is waited for (nothing acked, nothing
lost); otherwise it runs the batch's deliveries one at a time and a delivery that still fails alone is
``refused``: dead with ``StoreRefused``, its handler not run again. The good messages of that batch ran
their handler once in the failed batch (rolled back with it) and run it once more alone: a handler whose
effects live in the store's transaction still commits them once; one that calls other systems may make
that call twice (idempotency keys, as for any redelivery).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from frappe_eda.messaging.context import HandlerContext, handler_context
from frappe_eda.messaging.envelope import DEFAULT_MAX_BYTES, DEFAULT_MAX_DEPTH, Message, decode
from frappe_eda.messaging.errors import (
	HandlerCommitted,
	InvalidHeader,
	InvalidMessage,
	PermanentFailure,
	StoreRefused,
	TransactionLost,
	UnknownMessageType,
	UnstorableMessage,
	UntrustedSender,
)
from frappe_eda.messaging.failure import error_record
from frappe_eda.messaging.registry import HandlerRegistry, Subscription
from frappe_eda.messaging.retry import RetryPolicy
from frappe_eda.messaging.schema import SchemaRegistry
from frappe_eda.messaging.storable import check_key, check_message, fit_error, storable_record
from frappe_eda.messaging.store import Direction, ErrorRecord, MessageRecord, MessageStore, Status
from frappe_eda.messaging.trust.senders import SENDER, verified_sender

log = logging.getLogger(__name__)

# Headers the core writes on retried, dead-lettered and replayed deliveries.
ATTEMPT = "x-eda-attempt"
MAX_ATTEMPT = 1_000_000  # far above any retry policy, far below a 32-bit column
ORIGINAL_ROUTING_KEY = "x-eda-routing-key"
ORIGINAL_EXCHANGE = "x-eda-exchange"
REPLAYED_BY = "x-eda-replayed-by"
REPLAYED_AT = "x-eda-replayed-at"
REPLAY_COUNT = "x-eda-replay-count"
REPLAY_OF = "x-eda-replay-of"
# The id of a row written only to learn whether the store takes writes; always rolled back.
PROBE_ID = "frappe-eda-store-probe"


class Outcome(str, enum.Enum):
	PROCESSED = "processed"
	DUPLICATE = "duplicate"
	RETRY = "retry"
	DEAD = "dead"


@dataclass(frozen=True)
class Delivery:
	"""A message as it came off a queue."""

	queue: str
	routing_key: str
	body: bytes
	exchange: str = ""
	content_type: str | None = "application/json"
	headers: Mapping[str, Any] = field(default_factory=dict)
	redelivered: bool = False
	delivery_tag: int = 0
	# The AMQP user_id, which the broker checked against the publishing connection's user.
	user_id: str | None = None

	@property
	def original_routing_key(self) -> str:
		"""Retries and replays reach the queue through the default exchange; the header keeps the real key."""
		key = self.headers.get(ORIGINAL_ROUTING_KEY)
		return key if isinstance(key, str) and key else self.routing_key

	@property
	def original_exchange(self) -> str:
		exchange = self.headers.get(ORIGINAL_EXCHANGE)
		return exchange if isinstance(exchange, str) else self.exchange


@dataclass
class Decision:
	delivery: Delivery
	outcome: Outcome
	attempt: int
	message: Message | None = None
	error: ErrorRecord | None = None
	retry_delay: float | None = None
	handler: str = ""
	# Set by the worker when the broker refused the follow-up copy: reject so the queue dead-letters it.
	reject: bool = False
	# False when not even a minimal record could be stored: the dead-letter copy and the alert are all.
	recorded: bool = True

	@property
	def message_id(self) -> str:
		return self.message.id if self.message else ""


@dataclass(frozen=True)
class _Accepted:
	"""A delivery that passed every check that does not need the handler."""

	delivery: Delivery
	subscription: Subscription
	attempt: int
	message: Message
	# The PROCESSED record it will produce, already checked against the store's limits.
	record: MessageRecord


@dataclass(frozen=True)
class _Rejected:
	"""A delivery found to be bad input before the store or the handler was involved."""

	delivery: Delivery
	message: Message | None
	error: Exception
	attempt: int
	handler: str


# What ``screen`` makes of a delivery; ``process`` takes these or plain deliveries.
Screened = _Accepted | _Rejected


@dataclass(frozen=True)
class Limits:
	max_bytes: int = DEFAULT_MAX_BYTES
	max_depth: int = DEFAULT_MAX_DEPTH


def attempt_of(delivery: Delivery) -> int:
	"""The try number this delivery is; a header of the wrong type, or a number no retry policy reaches
	(and no store's integer column holds), is bad input, not attempt 1."""
	value = delivery.headers.get(ATTEMPT, 1)
	if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_ATTEMPT:
		raise InvalidHeader(ATTEMPT, value, f"a positive integer up to {MAX_ATTEMPT:,}")
	return value


class DeliveryProcessor:
	def __init__(
		self,
		registry: HandlerRegistry,
		store: MessageStore,
		retry: RetryPolicy | None = None,
		schemas: SchemaRegistry | None = None,
		limits: Limits | None = None,
		own_user: str | None = None,
	) -> None:
		self.registry = registry
		# The broker user of the consuming connection: its own republished copies carry the first
		# sender in a header (``trust.senders``).
		self.own_user = own_user
		self.store = store
		self.retry = retry or RetryPolicy()
		self.schemas = schemas or SchemaRegistry()
		self.limits = limits or Limits()

	def process(self, deliveries: Sequence[Delivery | Screened], *, again: bool = False) -> list[Decision]:
		"""Run a batch in one transaction; each delivery in a savepoint of its own.

		Decoding comes first for the whole batch so the inbox is asked once per queue, not per message.
		``again``: the worker runs deliveries of a batch that failed to record, so messages settled dead
		meanwhile (a handler that committed) are duplicates, as in a redelivered batch.
		"""
		with self.store.transaction():
			checked = [self.screen(item) if isinstance(item, Delivery) else item for item in deliveries]
			wanted: dict[str, list[str]] = {}
			for item in checked:
				message = item.message
				if message is not None and (isinstance(item, _Accepted) or self._can_look_up(message.id)):
					wanted.setdefault(item.delivery.queue, []).append(message.id)
			for queue, ids in wanted.items():
				# Before the inbox is read: another worker holding the same id finishes first.
				self.store.claim_inbox(queue, ids)
			done = {queue: self.store.processed_ids(queue, ids) for queue, ids in wanted.items()}
			if again or any(item.delivery.redelivered for item in checked):
				# A batch seen before (redelivered, or run again after it failed to record) may hold
				# messages already settled dead, whose handler must not run again.
				for queue, ids in wanted.items():
					done[queue] |= self.store.dead_ids(queue, ids)
			processed: list[MessageRecord] = []
			decisions = [
				self._run(item, done, processed) if isinstance(item, _Accepted) else self._reject(item, done)
				for item in checked
			]
			# In the same transaction as the handlers' own writes: one statement for the whole batch.
			self._save_processed(processed)
			return decisions

	def _save_processed(self, processed: list[MessageRecord]) -> None:
		"""Record the batch's PROCESSED messages; a success after failed attempts or a replay resolves
		the message's errors with it (and the record is saved resolved): nothing is left to act on."""
		self.store.save(processed)
		resolved: dict[str, list[str]] = {}
		for record in processed:
			if record.resolved:
				resolved.setdefault(record.queue, []).append(record.message_id)
		for queue, ids in resolved.items():
			self.store.resolve(Direction.INCOMING, queue, ids)

	def screen(self, delivery: Delivery) -> Screened:
		"""Everything that can be decided without the store or the handler: the attempt header, the
		body, the route. It touches nothing shared, so the worker runs it on its loop thread as
		deliveries arrive, while the handler thread waits on the database for the previous batch."""
		subscription = self.registry.for_queue(delivery.queue)
		handler = subscription.name if subscription else ""
		try:
			attempt = attempt_of(delivery)
		except InvalidHeader as e:
			return _Rejected(delivery, None, e, 1, handler)
		try:
			message = decode(
				delivery.body, delivery.content_type, self.limits.max_bytes, self.limits.max_depth
			)
		except InvalidMessage as e:
			return _Rejected(delivery, None, e, attempt, handler)
		if subscription is None or not subscription.accepts(delivery.original_routing_key):
			error = UnknownMessageType(delivery.original_routing_key, delivery.queue)
			return _Rejected(delivery, message, error, attempt, handler)
		if subscription.senders is not None:
			try:
				subscription.senders.check(
					self.sender_of(delivery), delivery.body, delivery.headers, claimed=message.source
				)
			except UntrustedSender as e:
				return _Rejected(delivery, message, e, attempt, handler)
		record = self._record(delivery, message, Status.PROCESSED, attempt, handler)
		# Processed after failing before (a retry) or when replayed: its failure is over once it records.
		record.resolved = attempt > 1 or record.replay_count > 0
		try:
			check_message(record, self.store)
		except UnstorableMessage as e:
			return _Rejected(delivery, message, e, attempt, handler)
		return _Accepted(delivery, subscription, attempt, message, record)

	def sender_of(self, delivery: Delivery) -> str:
		"""Who sent ``delivery`` first, as the broker proved it; ``""`` when nothing proves it."""
		return verified_sender(delivery.user_id, delivery.headers, self.own_user)

	def _reject(self, item: _Rejected, done: dict[str, set[str]]) -> Decision:
		"""Bad input is dead, recorded in the batch's transaction; unless its id was processed already:
		then it is a duplicate, and the processed record (the inbox) is not overwritten."""
		if item.message is not None and item.message.id in done.get(item.delivery.queue, ()):
			return Decision(
				item.delivery, Outcome.DUPLICATE, item.attempt, item.message, handler=item.handler
			)
		return self._dead(item.delivery, item.message, item.error, item.attempt, item.handler)

	def _can_look_up(self, message_id: str) -> bool:
		"""An id the store cannot hold cannot be in its inbox either (and may not even be sent to it)."""
		try:
			check_key("message_id", message_id, self.store)
		except UnstorableMessage:
			return False
		return True

	def _run(self, item: _Accepted, done: dict[str, set[str]], processed: list[MessageRecord]) -> Decision:
		delivery, subscription, attempt, message = (
			item.delivery,
			item.subscription,
			item.attempt,
			item.message,
		)
		handler = subscription.name
		seen = done.setdefault(delivery.queue, set())
		if message.id in seen:
			return Decision(delivery, Outcome.DUPLICATE, attempt, message, handler=handler)
		try:
			self.schemas.validate(message)
		except InvalidMessage as e:
			return self._dead(delivery, message, e, attempt, handler)
		context = HandlerContext(
			delivery.queue,
			delivery.original_routing_key,
			attempt,
			delivery.redelivered,
			self.store,
			sender=self.sender_of(delivery),
		)
		try:
			with self.store.transaction(), handler_context(context):
				subscription.handler(message)
		except HandlerCommitted as e:
			# The handler's commit made the effects of the batch so far durable without their records:
			# record them (and this message, dead) and make that durable too, before anything later in the
			# batch can roll it back and have those messages run again.
			decision = self._dead(delivery, message, e, attempt, handler)
			self._save_processed(processed)
			processed.clear()
			self.store.checkpoint()
			return decision
		except (PermanentFailure, InvalidMessage) as e:
			return self._dead(delivery, message, e, attempt, handler)
		except TransactionLost:
			raise  # the batch's transaction is gone: nothing of it can be recorded (the worker runs it again)
		except Exception as e:
			return self._failed(delivery, message, e, attempt, subscription)
		seen.add(message.id)
		processed.append(item.record)
		return Decision(delivery, Outcome.PROCESSED, attempt, message, handler=handler)

	def _failed(
		self, delivery: Delivery, message: Message, error: Exception, attempt: int, subscription: Subscription
	) -> Decision:
		policy = subscription.retry_policy(self.retry)
		if not policy.should_retry(attempt):
			return self._dead(delivery, message, error, attempt, subscription.name)
		record = error_record(
			error, message.id, Direction.INCOMING, attempt, delivery.queue, subscription.name
		)
		record = self._store_failure(delivery, message, Status.FAILED, attempt, subscription.name, record)
		return Decision(
			delivery,
			Outcome.RETRY,
			attempt,
			message,
			record,
			retry_delay=policy.delay_after(attempt),
			handler=subscription.name,
		)

	def _dead(
		self, delivery: Delivery, message: Message | None, error: Exception, attempt: int, handler: str
	) -> Decision:
		message_id = message.id if message else _fallback_id(delivery)
		record = error_record(error, message_id, Direction.INCOMING, attempt, delivery.queue, handler)
		record = self._store_failure(delivery, message, Status.DEAD, attempt, handler, record)
		return Decision(delivery, Outcome.DEAD, attempt, message, record, handler=handler)

	def _store_failure(
		self,
		delivery: Delivery,
		message: Message | None,
		status: Status,
		attempt: int,
		handler: str,
		error: ErrorRecord,
	) -> ErrorRecord:
		"""Record a failure with the closest record the store holds; returns the error as stored."""
		record = self._record(delivery, message, status, attempt, handler)
		record.message_id = error.message_id
		record.last_error = f"{error.exception_type}: {error.error}"
		record = storable_record(record, self.store, _fallback_id(delivery))
		error = fit_error(replace(error, message_id=record.message_id), self.store)
		self.store.save([record])
		self.store.add_error(error)
		return error

	def store_takes_writes(self, queue: str) -> bool:
		"""Whether the store is up: a write of a probe row, always rolled back. Tells a store that is down
		(wait, lose nothing) from one that refuses a particular message (dead-letter that one)."""
		probe = MessageRecord(PROBE_ID, Direction.INCOMING, Status.RECEIVED, "", "", queue=queue)
		try:
			with self.store.transaction():
				self.store.save([probe])
				raise _ProbeDone()
		except _ProbeDone:
			return True
		except Exception as e:
			log.warning("the store takes no writes (%s: %s)", type(e).__name__, e)
			return False

	def refused(self, item: Delivery | Screened, error: Exception) -> Decision:
		"""A delivery the store would not record although it takes writes: dead with ``StoreRefused``, its
		handler not run again. Recorded with the closest record the store takes, each try in a transaction
		of its own: the full dead record, then a minimal one (no body, headers or keys) under its id, then
		under the fallback id. If none is taken, the decision says so (``recorded=False``) and the worker's
		dead-letter copy and alert are all that is left of it."""
		delivery = item if isinstance(item, Delivery) else item.delivery
		message = item.message if not isinstance(item, Delivery) else None
		attempt = item.attempt if not isinstance(item, Delivery) else _attempt_or_first(delivery)
		subscription = self.registry.for_queue(delivery.queue)
		handler = subscription.name if subscription else ""
		fallback = _fallback_id(delivery)
		message_id = message.id if message else fallback
		failure = error_record(
			StoreRefused(message_id, error), message_id, Direction.INCOMING, attempt, delivery.queue, handler
		)
		last_error = f"{failure.exception_type}: {failure.error}"
		full = self._record(delivery, message, Status.DEAD, attempt, handler)
		full.last_error = last_error
		minimal = MessageRecord(
			message_id,
			Direction.INCOMING,
			Status.DEAD,
			routing_key="",
			body="",
			queue=delivery.queue,
			handler=handler,
			attempts=attempt,
			last_error=f"{last_error} (body, key and headers not stored: see {delivery.queue}.dead)",
		)
		problem: Exception = error
		for candidate in (full, minimal, replace(minimal, message_id=fallback)):
			try:
				record = storable_record(candidate, self.store, fallback)
				stored = fit_error(replace(failure, message_id=record.message_id), self.store)
				with self.store.transaction():
					self.store.save([record])
					self.store.add_error(stored)
			except Exception as e:
				problem = e
				continue
			return Decision(delivery, Outcome.DEAD, attempt, message, stored, handler=handler)
		log.error("not even a minimal record of %s could be stored", message_id, exc_info=problem)
		unrecorded = fit_error(
			replace(
				failure,
				error=f"{failure.error}; not even a minimal record could be stored "
				f"({type(problem).__name__}): the message and this error are only in {delivery.queue}.dead",
			),
			self.store,
		)
		return Decision(delivery, Outcome.DEAD, attempt, message, unrecorded, handler=handler, recorded=False)

	def _record(
		self, delivery: Delivery, message: Message | None, status: Status, attempt: int, handler: str
	) -> MessageRecord:
		record = MessageRecord(
			message_id=message.id if message else _fallback_id(delivery),
			direction=Direction.INCOMING,
			status=status,
			routing_key=delivery.original_routing_key,
			body=_body_text(delivery.body),
			exchange=delivery.original_exchange,
			queue=delivery.queue,
			handler=handler,
			message_type=message.type if message else "",
			headers=self._headers_to_record(delivery),
			attempts=attempt,
			replay_count=_replay_count(delivery.headers),
			replay_of=str(delivery.headers.get(REPLAY_OF) or ""),
		)
		if message is not None:
			record.created_at = message.created_at  # stable across attempts: when it was sent
		return record

	def _headers_to_record(self, delivery: Delivery) -> dict[str, Any]:
		"""The delivery's headers, with the verified sender in place of whatever ``x-eda-sender`` said."""
		headers = _plain_headers(delivery.headers)
		headers.pop(SENDER, None)
		sender = self.sender_of(delivery)
		if sender:
			headers[SENDER] = sender
		return headers


class _ProbeDone(Exception):
	"""Raised inside the probe's transaction to roll it back."""


def _attempt_or_first(delivery: Delivery) -> int:
	try:
		return attempt_of(delivery)
	except InvalidHeader:
		return 1


def _fallback_id(delivery: Delivery) -> str:
	"""Bad input may have no usable id; derive a stable one so a redelivery updates the same record."""
	import hashlib

	names = (delivery.queue + delivery.routing_key).encode("utf-8", "backslashreplace")
	digest = hashlib.sha1(delivery.body + names).hexdigest()
	return f"invalid-{digest[:24]}"


def _body_text(body: bytes) -> str:
	"""Stored as text; bytes that are not UTF-8 are kept visible via escapes, and so is NUL, which
	PostgreSQL text cannot hold (a raw NUL is never valid JSON, so no valid body changes)."""
	text = body.decode("utf-8", errors="backslashreplace")
	return text.replace("\x00", "\\x00") if "\x00" in text else text


def _plain_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
	plain: dict[str, Any] = {}
	for key, value in headers.items():
		if isinstance(value, bytes):
			value = value.decode("utf-8", errors="backslashreplace")
		elif not isinstance(value, str | int | float | bool | type(None) | list | dict):
			value = str(value)
		plain[str(key)] = value
	return plain


def _replay_count(headers: Mapping[str, Any]) -> int:
	value = headers.get(REPLAY_COUNT, 0)
	return value if isinstance(value, int) and not isinstance(value, bool) else 0
