"""The worker: a single-threaded consumer loop that acks only what is durably recorded.

The loop thread owns the connection and never blocks on user code: handlers (and the store writes
that go with them) run on one dedicated handler thread, while the loop keeps servicing the
connection, so a handler that runs longer than the heartbeat interval does not cost the connection.
When a batch is done the handler thread wakes the loop with ``add_callback_threadsafe`` (the one pika
call that is safe from another thread).

Per batch: the ``DeliveryProcessor`` commits every outcome in one transaction; then retries and
dead letters are republished with confirms; then the batch is acked with one ``multiple`` ack. A
crash at any point before the ack redelivers the batch, and the inbox turns what was already
processed into duplicates that are acked without running the handler again.

A batch that fails to record is not simply returned to the queue: that would run every handler of it
again and again behind one message the store refuses, while the other queues wait out the back-off.
The worker first asks the store for a write (``DeliveryProcessor.store_takes_writes``, rolled back). A
store that is down gets the old treatment: the batch goes back unacked and the worker backs off
exponentially, losing nothing. A store that answers gets the batch again one delivery at a time, each in
a transaction of its own, and a delivery that fails alone is dead-lettered by itself (``StoreRefused``,
recorded as closely as the store allows, published to ``<queue>.dead`` and notified). So a good
message's handler runs at most once more because a neighbour was bad (its first run was rolled back with
the batch), and nothing is ever requeued for a refusal: a refused delivery is acked once its dead-letter
copy is confirmed, or rejected into the queue's own dead-letter route when the broker refuses the copy.
The worker remembers refused deliveries (queue and body hash): a redelivered copy of one (its ack was
lost) is dead-lettered again without running its handler.
"""

from __future__ import annotations

import hashlib
import logging
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import FrameType
from typing import Any, TypeVar

from frappe_eda.messaging.connection import CONNECTION_ERRORS, BrokerConnection
from frappe_eda.messaging.errors import ConfigurationError
from frappe_eda.messaging.heartbeat import (
	DEFAULT_HEARTBEAT_EVERY,
	DEFAULT_REPORT_EVERY,
	WorkerBeat,
	WorkerTicks,
)
from frappe_eda.messaging.notify import DEAD_LETTERED, FailureNotice, Notifier
from frappe_eda.messaging.processing import (
	ATTEMPT,
	ORIGINAL_EXCHANGE,
	ORIGINAL_ROUTING_KEY,
	Decision,
	Delivery,
	DeliveryProcessor,
	Limits,
	Outcome,
	Screened,
)
from frappe_eda.messaging.publisher import Envelope, Publisher
from frappe_eda.messaging.registry import HandlerRegistry, Subscription
from frappe_eda.messaging.retry import RetryPolicy
from frappe_eda.messaging.schema import SchemaRegistry
from frappe_eda.messaging.storable import printable
from frappe_eda.messaging.store import MessageStore
from frappe_eda.messaging.topology import (
	DEFAULT_DELIVERY_LIMIT,
	TopologyDeclarer,
	dead_letter_queue,
	retry_queue,
	topology_for,
)
from frappe_eda.messaging.trust.senders import with_sender

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_ERROR_HEADER = 1000
# AMQP short strings (the message-id property) hold 255 bytes.
MAX_SHORT_STRING = 255
# Refused deliveries remembered per worker, so a redelivered one goes straight to its dead letter.
REMEMBERED_REFUSALS = 10_000
# Tries of one delivery alone when the store's error is transient (a deadlock with a competing worker).
TRANSIENT_TRIES = 3


@dataclass
class WorkerStats:
	processed: int = 0
	duplicates: int = 0
	retried: int = 0
	dead: int = 0
	reconnects: int = 0
	store_failures: int = 0
	# Deliveries the store refused while it took others: dead-lettered alone.
	refused: int = 0
	started_at: float = field(default_factory=time.monotonic)

	@property
	def handled(self) -> int:
		return self.processed + self.duplicates + self.retried + self.dead


@dataclass(frozen=True)
class WorkerOptions:
	# Unacked deliveries the broker may send ahead. Acks wait for the batch's commit, so this is kept at
	# a few batches: the next ones arrive while the handler thread works on the current one.
	prefetch: int = 300
	# Deliveries per store transaction; 1 gives each message a transaction of its own (Frappe sites).
	max_batch: int = 100
	poll_seconds: float = 1.0
	default_queue_type: str = "classic"
	delivery_limit: int = DEFAULT_DELIVERY_LIMIT
	limits: Limits = field(default_factory=Limits)


class Worker:
	"""Consumes the queues of ``registry``'s handlers (or only ``queues``) until stopped.

	While busy it logs a throughput line at most every ``report_every`` seconds (``None``: never), and it
	hands a ``WorkerBeat`` to ``on_heartbeat`` at start, every ``heartbeat_every`` seconds and at stop,
	both from its own loop thread (see ``frappe_eda.messaging.heartbeat``)."""

	def __init__(
		self,
		connection: BrokerConnection,
		registry: HandlerRegistry,
		store: MessageStore,
		*,
		queues: Iterable[str] | None = None,
		retry: RetryPolicy | None = None,
		schemas: SchemaRegistry | None = None,
		notifier: Notifier | None = None,
		options: WorkerOptions | None = None,
		handler_thread_initializer: Callable[[], None] | None = None,
		before_batch: Callable[[], None] | None = None,
		report_every: float | None = DEFAULT_REPORT_EVERY,
		on_heartbeat: Callable[[WorkerBeat], None] | None = None,
		heartbeat_every: float = DEFAULT_HEARTBEAT_EVERY,
	) -> None:
		self.connection = connection
		self.registry = registry
		self.store = store
		self.options = options or WorkerOptions()
		self.retry = retry or RetryPolicy()
		self.notifier = notifier
		self.subscriptions: list[Subscription] = registry.select(queues)
		self.processor = DeliveryProcessor(
			registry, store, self.retry, schemas, self.options.limits, own_user=connection.settings.user
		)
		self.publisher = Publisher(connection)
		self.stats = WorkerStats()
		self.ticks = WorkerTicks(
			self.stats,
			[s.queue for s in self.subscriptions],
			report_every=report_every,
			on_heartbeat=on_heartbeat,
			heartbeat_every=heartbeat_every,
		)
		self._executor = ThreadPoolExecutor(
			max_workers=1, thread_name_prefix="eda-handler", initializer=handler_thread_initializer
		)
		self._before_batch = before_batch
		self._store_failures = 0
		self._refusals: OrderedDict[tuple[str, str], int] = OrderedDict()
		# Called on the loop thread after each turn of the loop (the Frappe worker relays its outbox here).
		self.between_batches: Callable[[], None] | None = None
		self._buffer: list[Delivery | Screened] = []
		self._channel: Any = None
		self._stopping = threading.Event()

	# --- life cycle -------------------------------------------------------------------------------

	def declare(self) -> None:
		"""Create exchanges, work queues, delay tiers and dead-letter queues (idempotent)."""
		declarer = TopologyDeclarer(self.connection)
		try:
			declarer.declare(
				topology_for(
					self.subscriptions,
					self.retry,
					self.options.default_queue_type,
					self.options.delivery_limit,
				)
			)
		finally:
			declarer.close()

	def run(
		self,
		*,
		max_messages: int | None = None,
		idle_timeout: float | None = None,
		until: Callable[[WorkerStats], bool] | None = None,
	) -> WorkerStats:
		"""Consume until ``stop()``, a signal, ``max_messages`` handled, ``idle_timeout`` seconds idle,
		or ``until(stats)`` is true (demos and tests wait for an outcome this way)."""
		if not self.subscriptions:
			raise ConfigurationError(
				"no handlers to run: register handlers with @subscribe (or list their modules) first"
			)
		self._start()
		self.ticks.start()
		last_activity = time.monotonic()
		try:
			while not self._stopping.is_set():
				try:
					if self._channel is None or not self._channel.is_open:
						# Someone (our own publisher, after a drop) reconnected under us: consume again.
						self._buffer.clear()
						self._start()
					self.connection.process_events(self.ticks.wait_limit(self.options.poll_seconds))
					while self._buffer and not self._stopping.is_set():
						self._handle(self._take_batch())
						last_activity = time.monotonic()
						self.ticks.tick()  # under load the buffer never empties: tick between batches
					if self.between_batches is not None:
						self.between_batches()
					self.ticks.tick()
				except CONNECTION_ERRORS as e:
					self._recover(e)
					last_activity = time.monotonic()
					continue
				if max_messages is not None and self.stats.handled >= max_messages:
					break
				if until is not None and until(self.stats):
					break
				if idle_timeout is not None and time.monotonic() - last_activity >= idle_timeout:
					break
		finally:
			self._finish()
			self.ticks.stop()
		return self.stats

	def stop(self) -> None:
		"""Ask the loop to stop after the batch in hand; safe from signal handlers and other threads."""
		self._stopping.set()

	def install_signal_handlers(self, on_signal: Callable[[], None] | None = None) -> None:
		"""SIGTERM/SIGINT finish the batch in hand, ack it and stop; nothing is lost. ``on_signal`` is
		called too (the Frappe worker stops its reload loop with it)."""

		def handle(signum: int, _frame: FrameType | None) -> None:
			log.info("received %s; finishing the batch in hand, then stopping", signal.Signals(signum).name)
			if on_signal is not None:
				on_signal()
			self.stop()

		signal.signal(signal.SIGTERM, handle)
		signal.signal(signal.SIGINT, handle)

	def close(self) -> None:
		self._executor.shutdown(wait=True)

	# --- the loop ---------------------------------------------------------------------------------

	def _start(self) -> None:
		self.declare()
		self._channel = self.connection.channel()
		self._channel.basic_qos(prefetch_count=self.options.prefetch)
		for subscription in self.subscriptions:
			self._channel.basic_consume(
				subscription.queue,
				on_message_callback=lambda _ch, method, props, body, q=subscription.queue: self._receive(
					Delivery(
						queue=q,
						routing_key=method.routing_key,
						body=body,
						exchange=method.exchange,
						content_type=props.content_type,
						headers=props.headers or {},
						redelivered=method.redelivered,
						delivery_tag=method.delivery_tag,
						user_id=props.user_id,
					)
				),
			)
		log.info("consuming %s", ", ".join(s.queue for s in self.subscriptions))

	def _receive(self, delivery: Delivery) -> None:
		"""Decode as deliveries arrive: the loop thread has the time while the handler thread waits on the
		database. Should screening itself break, the handler thread screens the delivery again and the
		batch's usual failure handling applies."""
		try:
			self._buffer.append(self.processor.screen(delivery))
		except Exception:
			log.exception("could not screen delivery %s of %s", delivery.delivery_tag, delivery.queue)
			self._buffer.append(delivery)

	def _take_batch(self) -> list[Delivery | Screened]:
		size = max(1, self.options.max_batch)
		batch, self._buffer = self._buffer[:size], self._buffer[size:]
		return batch

	def _handle(self, batch: Sequence[Delivery | Screened]) -> None:
		try:
			decisions = self._run_on_handler_thread(self._process, batch)
		except CONNECTION_ERRORS:
			raise
		except Exception as e:
			self._isolate(batch, e)
			return
		self._store_failures = 0
		self._settle(decisions)

	def _settle(self, decisions: Sequence[Decision]) -> None:
		"""Deliveries are settled in the order they arrived (a failed batch one by one, in order), so the
		``multiple`` ack of the last one never acks a delivery not yet decided."""
		self._notify_dead(decisions)
		self._republish(decisions)
		self._ack(decisions)
		for decision in decisions:
			self._count(decision.outcome)
			self.ticks.handled(decision.delivery.queue)

	def _isolate(self, batch: Sequence[Delivery | Screened], error: Exception) -> None:
		"""The batch did not record. A store that takes no writes is down: back off. Otherwise one of the
		batch's deliveries is refused: run them one at a time, and dead-letter alone the one that fails."""
		if not self._store_takes_writes(_delivery_of(batch[0]).queue):
			self._return_unrecorded(batch, error)
			return
		log.warning(
			"could not record a batch of %d (%s) while the store takes writes; recording it one by one",
			len(batch),
			type(error).__name__,
		)
		self._store_failures = 0
		for index, item in enumerate(batch):
			delivery = _delivery_of(item)
			identity = _identity(delivery)
			failure = error
			# The broker's copy of a delivery this worker refused before (its ack was lost) is not run again.
			if not (delivery.redelivered and identity in self._refusals):
				alone = self._record_alone(item)
				if alone is None:
					continue
				failure = alone
				if self._transient(failure) or not self._store_takes_writes(delivery.queue):
					# A deadlock that outlived the tries alone is contention, not a refusal: back off.
					self._return_unrecorded(batch[index:], failure)
					return
			try:
				decision = self._run_on_handler_thread(self.processor.refused, item, failure)
			except CONNECTION_ERRORS:
				raise
			except Exception as e:  # not even the refusal could be decided: keep it, as for an outage
				self._return_unrecorded(batch[index:], e)
				return
			self._refuse(decision, identity, failure)

	def _record_alone(self, item: Delivery | Screened) -> Exception | None:
		"""Run and record one delivery in a transaction of its own; ``None`` once it is settled, else the
		error. A transient error (a deadlock with a competing worker) is tried ``TRANSIENT_TRIES`` times."""
		failure: Exception | None = None
		for attempt in range(TRANSIENT_TRIES):
			if attempt:
				self.connection.sleep(0.05 * 2**attempt)
			try:
				self._settle(self._run_on_handler_thread(self._process, [item], True))
				return None
			except CONNECTION_ERRORS:
				raise
			except Exception as e:
				failure = e
				if not self._transient(e):
					return e
				log.warning("transient store error (%s), trying the delivery again", type(e).__name__)
		return failure

	def _transient(self, error: BaseException) -> bool:
		"""The error, or one it was raised from, is one the store says goes away when tried again."""
		seen: BaseException | None = error
		for _ in range(6):
			if seen is None:
				return False
			try:
				if self.store.is_transient(seen):
					return True
			except Exception:
				return False
			seen = seen.__cause__ or seen.__context__
		return False

	def _refuse(self, decision: Decision, identity: tuple[str, str], error: Exception) -> None:
		self._refusals[identity] = self._refusals.get(identity, 0) + 1
		self._refusals.move_to_end(identity)
		while len(self._refusals) > REMEMBERED_REFUSALS:
			self._refusals.popitem(last=False)
		self.stats.refused += 1
		log.error(
			"the store refused delivery %s of %s; dead-lettered alone (%s)",
			decision.delivery.delivery_tag,
			decision.delivery.queue,
			decision.error.error if decision.error else error,
		)
		self._settle([decision])

	def _store_takes_writes(self, queue: str) -> bool:
		try:
			return bool(self._run_on_handler_thread(self._probe, queue))
		except CONNECTION_ERRORS:
			raise
		except Exception:
			log.exception("could not prepare the handler thread to probe the store")
			return False

	def _probe(self, queue: str) -> bool:
		if self._before_batch is not None:
			self._before_batch()
		return self.processor.store_takes_writes(queue)

	def _return_unrecorded(self, batch: Sequence[Delivery | Screened], error: Exception) -> None:
		"""The store is down: nothing of the batch is acked. It goes back to the queue, and the worker
		backs off before trying again."""
		self._store_failures += 1
		self.stats.store_failures += 1
		wait = min(30.0, 0.5 * 2 ** (self._store_failures - 1))
		log.error(
			"could not record a batch of %d (%s: %s); returned to the queue, retrying in %.1fs",
			len(batch),
			type(error).__name__,
			error,
			wait,
			exc_info=error,
		)
		# Everything before the batch, and what of it was recorded one by one, is acked already.
		last = max(_delivery_of(item).delivery_tag for item in batch)
		self._channel.basic_nack(last, multiple=True, requeue=True)
		self.connection.sleep(wait)

	def _run_on_handler_thread(self, work: Callable[..., T], *args: Any) -> T:
		"""Keep servicing the connection (heartbeats) while the handler thread works."""
		raw = self.connection.blocking
		future: Future[T] = self._executor.submit(work, *args)
		future.add_done_callback(lambda _f: _wake(raw))
		while not future.done():
			raw.process_data_events(time_limit=self.options.poll_seconds)
		return future.result()

	def _process(self, batch: Sequence[Delivery | Screened], again: bool = False) -> list[Decision]:
		if self._before_batch is not None:
			self._before_batch()
		return self.processor.process(batch, again=again)

	def _republish(self, decisions: Sequence[Decision]) -> None:
		envelopes = {}
		for decision in decisions:
			envelope = self._follow_up(decision)
			if envelope is not None:
				envelopes[decision.delivery.delivery_tag] = envelope
		if not envelopes:
			return
		report = self.publisher.send(list(envelopes.values()))
		refused = set(report.failed)
		for decision in decisions:
			envelope = envelopes.get(decision.delivery.delivery_tag)
			if envelope is not None and envelope.message_id in refused:
				# The broker refused the copy (e.g. a delay queue was deleted): let the work queue's own
				# dead-letter route park the original instead of losing or looping it.
				log.error(
					"could not republish %s: %s", envelope.message_id, report.failed[envelope.message_id]
				)
				decision.outcome = Outcome.DEAD
				decision.reject = True

	def _follow_up(self, decision: Decision) -> Envelope | None:
		delivery = decision.delivery
		# The copy goes out under this worker's user: the first sender travels in a header.
		headers = with_sender(delivery.headers, self.processor.sender_of(delivery))
		headers[ORIGINAL_ROUTING_KEY] = delivery.original_routing_key
		headers[ORIGINAL_EXCHANGE] = delivery.original_exchange
		if decision.outcome is Outcome.RETRY:
			assert decision.retry_delay is not None
			headers[ATTEMPT] = decision.attempt + 1
			target = retry_queue(delivery.queue, decision.retry_delay)
		elif decision.outcome is Outcome.DEAD:
			error = decision.error
			headers[ATTEMPT] = decision.attempt
			headers["x-eda-dead-at"] = datetime.now(timezone.utc).isoformat()
			if error is not None:
				headers["x-eda-error-type"] = error.exception_type
				headers["x-eda-error"] = printable(error.error[:MAX_ERROR_HEADER])
				headers["x-eda-fingerprint"] = error.fingerprint
			if not decision.recorded:
				headers["x-eda-unrecorded"] = True
			target = dead_letter_queue(delivery.queue)
		else:
			return None
		# The id as recorded (an unstorable one was replaced), and short enough for the AMQP property.
		message_id = decision.error.message_id if decision.error else decision.message_id
		return Envelope(
			message_id=_short_string(message_id),
			exchange="",
			routing_key=target,
			body=delivery.body,
			headers=headers,
			content_type=delivery.content_type,
		)

	def _ack(self, decisions: Sequence[Decision]) -> None:
		nacked = [d.delivery.delivery_tag for d in decisions if d.reject]
		for tag in nacked:
			self._channel.basic_nack(tag, requeue=False)
		if not nacked:
			self._channel.basic_ack(max(d.delivery.delivery_tag for d in decisions), multiple=True)
			return
		for decision in decisions:
			if decision.delivery.delivery_tag not in nacked:
				self._channel.basic_ack(decision.delivery.delivery_tag)

	def _notify_dead(self, decisions: Sequence[Decision]) -> None:
		if self.notifier is None:
			return
		for decision in decisions:
			if decision.outcome is Outcome.DEAD and decision.error is not None:
				error = decision.error
				self.notifier.notify(
					FailureNotice(
						kind=DEAD_LETTERED,
						message_id=error.message_id,
						routing_key=decision.delivery.original_routing_key,
						exception_type=error.exception_type,
						error=error.error,
						fingerprint=error.fingerprint,
						queue=decision.delivery.queue,
						handler=decision.handler,
						attempt=decision.attempt,
					)
				)

	def _count(self, outcome: Outcome) -> None:
		if outcome is Outcome.PROCESSED:
			self.stats.processed += 1
		elif outcome is Outcome.DUPLICATE:
			self.stats.duplicates += 1
		elif outcome is Outcome.RETRY:
			self.stats.retried += 1
		else:
			self.stats.dead += 1

	def _recover(self, error: BaseException) -> None:
		"""The connection or channel died: whatever was not acked comes back; connect and consume again.

		On a cluster the first node reached may still be electing the queue's new leader, or be the next
		one to go: declaring or consuming can fail right after connecting, so that is retried (each time
		on a new connection, which goes to the next node) as many times as the connection itself would
		be, instead of ending the worker."""
		tries = max(1, self.connection.settings.reconnect_attempts)
		for attempt in range(1, tries + 1):
			log.warning("lost the broker (%s: %s); reconnecting", type(error).__name__, error)
			self._buffer.clear()
			self.stats.reconnects += 1
			self.publisher.close()
			self.connection.reconnect()
			try:
				self._start()
				return
			except CONNECTION_ERRORS as e:
				if attempt == tries:
					raise
				error = e
				time.sleep(min(0.2 * 2**attempt, self.connection.settings.reconnect_max_wait))

	def _finish(self) -> None:
		"""Stop consuming; prefetched deliveries not yet handled go back to the queue unacked."""
		self._buffer.clear()
		channel, self._channel = self._channel, None
		if channel is not None and channel.is_open:
			try:
				channel.close()
			except CONNECTION_ERRORS:
				pass
		self.publisher.close()


def _delivery_of(item: Delivery | Screened) -> Delivery:
	return item if isinstance(item, Delivery) else item.delivery


def _identity(delivery: Delivery) -> tuple[str, str]:
	"""A delivery as the worker remembers a refusal: its queue and its body (ids may be what is wrong)."""
	return delivery.queue, hashlib.sha1(delivery.body).hexdigest()


def _short_string(value: str) -> str:
	"""Ids are stored up to the store's limit, but the message-id property holds 255 bytes."""
	if len(value.encode("utf-8", "backslashreplace")) <= MAX_SHORT_STRING:
		return value
	return "sha1-" + hashlib.sha1(value.encode("utf-8", "backslashreplace")).hexdigest()


def _wake(connection: Any) -> None:
	"""Wake the loop thread from the handler thread; a connection that died meanwhile needs no waking."""
	try:
		connection.add_callback_threadsafe(lambda: None)
	except CONNECTION_ERRORS:
		pass
