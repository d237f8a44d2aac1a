"""Confirmed, mandatory publishing with pipelined confirms.

A message is "sent" only when the broker confirmed it (Basic.Ack) and did not return it as
unroutable (Basic.Return). Waiting for each confirm in turn caps throughput at one round trip per
message, so ``Publisher`` keeps a window of messages in flight and matches confirms (including
``multiple`` acks) back to message ids as they arrive.

pika's ``BlockingChannel`` only offers confirms one message at a time, so ``_ConfirmWindow`` uses the
channel's underlying asynchronous ``Channel`` for ``confirm_delivery`` and ``basic_publish``; it and
``_coalesce`` (which joins pika's queued frames into one socket write) are the one place in the
project that touches pika internals (``_impl``, ``_flush_output``, the transport's ``_tx_buffers``).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pika
import pika.exceptions
import pika.spec
from pika.adapters.blocking_connection import BlockingChannel
from pika.adapters.utils.io_services_utils import _AsyncPlaintextTransport as _PLAINTEXT

from frappe_eda.messaging import refusals, wire
from frappe_eda.messaging.connection import CONNECTION_ERRORS, BrokerConnection
from frappe_eda.messaging.envelope import CONTENT_TYPE, DEFAULT_MAX_BYTES, Message, encode
from frappe_eda.messaging.errors import (
	BrokerUnavailable,
	PublishError,
	PublishNacked,
	PublishNotConfirmed,
	StillNacked,
	UnencodableField,
	UnroutableMessage,
)
from frappe_eda.messaging.failure import error_record
from frappe_eda.messaging.notify import PUBLISH_FAILED, FailureNotice, Notifier
from frappe_eda.messaging.schema import SchemaRegistry
from frappe_eda.messaging.store import Direction, MessageRecord, MessageStore, Status
from frappe_eda.messaging.trust.signing import SIGNATURE, SigningKey

log = logging.getLogger(__name__)

DEFAULT_EXCHANGE = "eda.events"
RESENDABLE: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, PublishNotConfirmed)


class _NackedForNow(Exception):
	"""Inside ``publish(wait=False)``: the broker nacked earlier messages, which the retry path resends."""


# What sends the messages of a ``publish(wait=False)`` call down the waiting path (``send``).
_SEND_AGAIN: tuple[type[BaseException], ...] = (*RESENDABLE, _NackedForNow)


@dataclass(frozen=True)
class Envelope:
	"""Bytes ready for the wire, with where they go."""

	message_id: str
	exchange: str
	routing_key: str
	body: bytes
	message_type: str = ""
	correlation_id: str | None = None
	source: str = ""
	headers: Mapping[str, Any] = field(default_factory=dict)
	mandatory: bool = True
	content_type: str | None = CONTENT_TYPE

	def properties(self, user_id: str | None = None) -> pika.BasicProperties:
		"""AMQP properties; ``user_id`` is the connection's user, which the broker validates, so a
		receiver knows who sent the message (``frappe_eda.messaging.trust``)."""
		return pika.BasicProperties(
			content_type=self.content_type,
			delivery_mode=pika.DeliveryMode.Persistent,
			message_id=self.message_id,
			type=self.message_type or None,
			correlation_id=self.correlation_id,
			app_id=self.source or None,
			timestamp=int(time.time()),
			headers=dict(self.headers) or None,
			user_id=user_id or None,
		)


@dataclass
class SendReport:
	"""What the broker said about each envelope: confirmed ids and the error of every failed one."""

	confirmed: list[str] = field(default_factory=list)
	failed: dict[str, PublishError] = field(default_factory=dict)

	def raise_first(self) -> None:
		if self.failed:
			raise next(iter(self.failed.values()))


class _ConfirmWindow:
	"""A channel in confirm mode that tracks many unconfirmed publishes at once.

	With ``keep_nacked`` a nacked message is not a failure yet: it waits in ``nacked`` for the publisher
	to send it again on a fresh channel (``refusals``); without, it fails with ``PublishNacked``."""

	def __init__(self, channel: BlockingChannel, keep_nacked: bool = False) -> None:
		self.channel = channel
		self._impl = channel._impl
		self._next_tag = 1
		self._outstanding: dict[int, Envelope] = {}
		self.keep_nacked = keep_nacked
		self.nacked: dict[int, Envelope] = {}
		self._returned: set[str] = set()
		self.report = SendReport()
		# Every publish says who sends it; RabbitMQ refuses a user_id that is not the connection's user.
		credentials = getattr(getattr(self._impl.connection, "params", None), "credentials", None)
		self.user_id: str | None = getattr(credentials, "username", None) or None
		selected: list[bool] = []
		self._impl.add_on_return_callback(self._on_return)
		self._impl.confirm_delivery(
			ack_nack_callback=self._on_confirm, callback=lambda _frame: selected.append(True)
		)
		channel._flush_output(lambda: bool(selected))

	@property
	def frame_max(self) -> int:
		"""The frame size the connection negotiated: properties and headers must fit in one frame."""
		params = getattr(self._impl.connection, "params", None)
		return int(getattr(params, "frame_max", 0) or wire.DEFAULT_FRAME_MAX)

	def publish(self, envelope: Envelope) -> None:
		try:
			self._impl.basic_publish(
				exchange=envelope.exchange,
				routing_key=envelope.routing_key,
				body=envelope.body,
				properties=envelope.properties(self.user_id),
				mandatory=envelope.mandatory,
			)
		except wire.ENCODING_ERRORS as e:
			# ``wire.check`` should have caught it; pika marshals every frame before queueing any, so nothing
			# went out and the broker's delivery tags did not move.
			self.report.failed[envelope.message_id] = UnencodableField(
				envelope.message_id, envelope.exchange, envelope.routing_key, "message", f"{type(e).__name__}"
			)
			return
		self._outstanding[self._next_tag] = envelope
		self._next_tag += 1

	def flush(self) -> None:
		"""Hand everything published so far to the socket, taking in whatever confirms have arrived."""
		_coalesce(self._impl.connection)
		_send_now(self._impl.connection)
		self.channel._flush_output(lambda: True)

	def take_in(self) -> None:
		"""Read whatever confirms have arrived, without waiting for more (a zero timer ends the poll)."""
		fired: list[bool] = []
		# The asynchronous connection's timer (the blocking one's only fires inside process_data_events).
		self._impl.connection._adapter_call_later(0, lambda: fired.append(True))
		self.channel._flush_output(lambda: bool(fired))

	def take_report(self) -> SendReport:
		"""The answers received so far; the window starts a fresh report."""
		report, self.report = self.report, SendReport()
		return report

	@property
	def in_flight(self) -> int:
		return len(self._outstanding)

	def unconfirmed(self) -> list[Envelope]:
		return list(self._outstanding.values())

	def take_resend(self) -> list[Envelope]:
		"""What must go out again, in the order it was sent: the nacked (kept) and the unconfirmed."""
		owed = sorted([*self.nacked.items(), *self._outstanding.items()], key=lambda item: item[0])
		self.nacked, self._outstanding = {}, {}
		return [envelope for _tag, envelope in owed]

	def wait(self, at_most: int, timeout: float) -> None:
		"""Flush and process confirms until no more than ``at_most`` remain unconfirmed."""
		deadline = time.monotonic() + timeout
		_coalesce(self._impl.connection)
		connection = self.channel.connection
		wake = connection.call_later(timeout, lambda: None)
		try:
			self.channel._flush_output(
				lambda: len(self._outstanding) <= at_most or time.monotonic() >= deadline
			)
		finally:
			connection.remove_timeout(wake)
		if len(self._outstanding) > at_most:
			raise PublishNotConfirmed(f"{len(self._outstanding)} messages unconfirmed after {timeout:.0f}s")

	def _on_return(self, _channel: Any, method: Any, properties: pika.BasicProperties, _body: bytes) -> None:
		if properties.message_id:
			self._returned.add(properties.message_id)

	def _on_confirm(self, frame: Any) -> None:
		method = frame.method
		acked = isinstance(method, pika.spec.Basic.Ack)
		tags = [method.delivery_tag]
		if method.multiple:
			tags = list(itertools.takewhile(lambda t: t <= method.delivery_tag, self._outstanding))
		for tag in tags:
			envelope = self._outstanding.pop(tag, None)
			if envelope is None:
				continue
			if not acked and self.keep_nacked:
				self.nacked[tag] = envelope
			elif not acked:
				self.report.failed[envelope.message_id] = PublishNacked(
					envelope.message_id, envelope.exchange, envelope.routing_key
				)
			elif envelope.message_id in self._returned:
				self._returned.discard(envelope.message_id)
				self.report.failed[envelope.message_id] = UnroutableMessage(
					envelope.message_id, envelope.exchange, envelope.routing_key
				)
			else:
				self.report.confirmed.append(envelope.message_id)


class Publisher:
	"""Publishes on its own channel of the shared connection; records every message when given a store.

	With a store, each message is saved PENDING before it is sent and marked PUBLISHED or FAILED from
	the broker's answer. A batch goes out in chunks of ``record_batch``: one transaction writes the next
	chunk's PENDING rows and the answers received so far while the broker stores the chunk just sent,
	so the database and the broker work at the same time. A message whose confirm never came
	(connection lost, then reconnect attempts exhausted) stays PENDING: ``OutboxRelay`` sends it again
	later, and consumers drop the possible duplicate through their inbox.

	``publish()`` writes PENDING, sends, and writes PUBLISHED once confirmed: two commits per call. With
	``status_behind=True`` it costs one: the PUBLISHED status of a message it returned is written by this
	publisher's next transaction (the next call's PENDING row), or by ``flush()`` or ``close()``.
	``publish(wait=False)`` also leaves the confirm behind: it returns once the PENDING row is durable and
	the message is on the socket, and a later call, ``flush()`` or ``close()`` takes the broker's answer
	in and records it. Until then the row says PENDING, never PUBLISHED; a crash in between leaves it
	PENDING for the relay, which sends it again (consumers' inboxes drop the copy). So does a relay
	running on the same store meanwhile, which is why the status is not left behind by default: a row
	left PENDING between two rare calls would be sent again by every relay pass.

	``max_bytes`` is the body size consumers accept (``envelope.DEFAULT_MAX_BYTES``, as ``Worker``):
	``publish()`` refuses a larger one with ``BodyTooLarge`` before it is stored, and a larger stored one
	is failed by the relay instead of being sent only to be dead-lettered. ``None`` turns the check off.

	``retry_refused_for`` is how long a message the broker refused for now (a nack; a channel closed with
	541) is sent again, on a fresh channel, after growing pauses, before it counts as refused (see
	``refusals``): a quorum queue changing leader then costs the caller a delay, not an error. By default
	``refusals.RETRY_REFUSED_FOR`` seconds when the connection lists several nodes (a cluster, where a nack
	usually means a queue between leaders), and 0 against a single broker, whose nack (a full queue with
	reject-publish) fails at once. A nack that outlasts the bound is recorded FAILED with ``StillNacked``,
	which ``OutboxRelay`` sends again on its own schedule.

	Every message carries the connection's broker user as ``user_id`` (the broker checks it); with a
	``signer`` each message published here is also signed (``trust.signing``).
	"""

	def __init__(
		self,
		connection: BrokerConnection,
		store: MessageStore | None = None,
		*,
		schemas: SchemaRegistry | None = None,
		notifier: Notifier | None = None,
		exchange: str = DEFAULT_EXCHANGE,
		source: str = "",
		window: int = 2048,
		record_batch: int = 500,
		confirm_timeout: float = 30.0,
		resend_attempts: int = 3,
		max_bytes: int | None = DEFAULT_MAX_BYTES,
		status_behind: bool = False,
		retry_refused_for: float | None = None,
		signer: SigningKey | None = None,
	) -> None:
		self.connection = connection
		self.signer = signer
		if retry_refused_for is None:
			clustered = len(connection.settings.addresses) > 1
			retry_refused_for = refusals.RETRY_REFUSED_FOR if clustered else 0.0
		self.retry_refused_for = max(0.0, retry_refused_for)
		self.status_behind = status_behind
		self.store = store
		self.schemas = schemas or SchemaRegistry()
		self.notifier = notifier
		self.exchange = exchange
		self.source = source
		self.window = max(1, window)
		self.record_batch = max(1, record_batch)
		self.confirm_timeout = confirm_timeout
		self.resend_attempts = resend_attempts
		self.max_bytes = max_bytes
		self._window: _ConfirmWindow | None = None
		# Answers received but not yet written to the store (PUBLISHED of a returned ``publish()``, the
		# confirms and failures of messages sent with ``wait=False``): the next transaction writes them.
		self._unwritten = SendReport()
		self._lost: list[Envelope] = []  # sent with ``wait=False`` on a channel that closed before confirming
		# The records of messages whose PENDING row ``publish(wait=False)`` or ``status_behind`` wrote and
		# whose answer is still to be written: a confirm then goes into the next call's INSERT as the row
		# PUBLISHED (one statement) instead of an UPDATE of its own.
		self._behind: dict[str, MessageRecord] = {}
		# When ``publish(wait=False)`` first left a confirm it took in for a later call to write.
		self._carried_since: float | None = None

	# --- the API ----------------------------------------------------------------------------------

	def publish(
		self,
		message: Message | str,
		payload: Any = None,
		*,
		exchange: str | None = None,
		routing_key: str | None = None,
		wait: bool = True,
	) -> Message:
		"""Publish one message and return it once confirmed; raise the ``PublishError`` otherwise.

		With a store, its PENDING row is durable before it goes out (one transaction, which also writes
		the statuses this publisher still holds), and its PUBLISHED status when the confirm came; with
		``status_behind`` that status is written by the next call, ``flush()`` or ``close()``. A failure
		is recorded FAILED before this raises.

		``wait=False`` returns once the PENDING row is durable and the message is on the socket, without
		waiting for the broker: a later call, ``flush()`` or ``close()`` takes the confirm in and records
		PUBLISHED, or FAILED with the error and an alert (nothing is raised for it then). Only what the
		wire cannot carry at all is raised here. A broken connection found by a later call is handled
		there: what was unconfirmed is sent again, or stays PENDING for the relay.
		"""
		if isinstance(message, str):
			message = Message(type=message, payload={} if payload is None else payload, source=self.source)
		envelope = self._checked([message], exchange, routing_key)[0]
		pending = {} if self.store is None else {envelope.message_id: _outgoing_record(envelope, message)}
		if not wait:
			self._publish_behind(envelope, pending)
			return message
		self._send_and_record([envelope], pending, defer=self.status_behind).raise_first()
		return message

	def publish_many(
		self,
		messages: Iterable[Message],
		*,
		exchange: str | None = None,
		routing_key: str | None = None,
	) -> SendReport:
		"""Validate all, record each as pending before it goes out, send with pipelined confirms, record
		the outcomes.

		A payload that breaks its schema, a body over ``max_bytes`` (what consumers accept) and a routing
		key, exchange, type or id over 255 characters (no store could record it) raise for the whole call
		before anything is stored or sent. Any other message the wire or the broker cannot take (a key of
		255 characters but over 255 bytes, a header over the frame size, a refusal) is recorded FAILED
		and reported in ``failed``; the others go out all the same.
		"""
		messages = list(messages)
		envelopes = self._checked(messages, exchange, routing_key)
		pending: dict[str, MessageRecord] = {}
		if self.store is not None:
			pending = {e.message_id: _outgoing_record(e, m) for e, m in zip(envelopes, messages, strict=True)}
		return self._send_and_record(envelopes, pending)

	def flush(self) -> SendReport:
		"""Take in the confirms of messages sent with ``publish(wait=False)`` (waiting up to
		``confirm_timeout``) and write every status this publisher still holds; returns those answers.

		What the connection lost meanwhile is sent again (and recorded) as ``publish_many`` does; raises
		``BrokerUnavailable`` when the broker stays away, the messages then left PENDING for the relay."""
		return self._send_and_record([], {}, only_requested=False)

	def _checked(
		self, messages: Sequence[Message], exchange: str | None, routing_key: str | None
	) -> list[Envelope]:
		"""The envelopes, once every message passed its schema, the size limit and the record's limits."""
		for message in messages:
			self.schemas.validate(message)
		target = self.exchange if exchange is None else exchange
		envelopes = [self._envelope(m, target, routing_key or m.type) for m in messages]
		for envelope in envelopes:
			refused = wire.body_too_large(envelope, self.max_bytes) or wire.too_long_to_record(envelope)
			if refused is not None:
				raise refused
		return envelopes

	def send_recorded(self, envelopes: Sequence[Envelope]) -> SendReport:
		"""Send envelopes whose PENDING records already exist (the outbox relay uses this). A body over
		``max_bytes`` fails (``BodyTooLarge``) instead of going to consumers that would dead-letter it."""
		return self._send_and_record(envelopes, {}, max_bytes=self.max_bytes)

	def _send_and_record(
		self,
		envelopes: Sequence[Envelope],
		pending: Mapping[str, MessageRecord],
		max_bytes: int | None = None,
		*,
		defer: bool = False,
		only_requested: bool = True,
	) -> SendReport:
		"""Send; with a store, write ``pending`` ahead of the wire and every answer behind it.

		The answers this publisher still held (and those of messages sent earlier with ``wait=False``,
		whose lost ones ``send`` sends again) are written with the first transaction. ``defer`` leaves
		the confirms that arrive after it to the next transaction. The report names only ``envelopes``
		unless ``only_requested`` is false."""
		if self.store is None:
			report = self.send(envelopes, max_bytes=max_bytes)
		else:
			recording = _Recording(self.store, pending, defer=defer, behind=self._behind, keep=defer)
			report = SendReport()
			try:
				self.send(
					envelopes,
					between=recording.write,
					step=self.record_batch,
					into=report,
					max_bytes=max_bytes,
				)
			except BrokerUnavailable:
				# What never went out is recorded PENDING all the same: the outbox relay sends it later. What
				# was confirmed before the broker went away is PUBLISHED, so the relay does not send it again.
				recording.write(envelopes, report, force=True)
				raise
			except BaseException:
				# The store failed: answers not written yet are kept for the next transaction (lost only with
				# the process, which leaves their rows PENDING for the relay).
				_merge(self._unwritten, recording.unwritten(report))
				raise
			# Envelopes failed without being sent (unsendable, exchange missing) get their record now.
			recording.write([e for e in envelopes if e.message_id in report.failed], report, force=not defer)
			_merge(self._unwritten, recording.unwritten(report))
		self._notify_failures(report)
		if only_requested:
			ids = {e.message_id for e in envelopes}
			if len(report.confirmed) + len(report.failed) > len(ids):
				report = SendReport(
					[i for i in report.confirmed if i in ids],
					{k: v for k, v in report.failed.items() if k in ids},
				)
		return report

	def _publish_behind(self, envelope: Envelope, pending: Mapping[str, MessageRecord]) -> None:
		"""``publish(wait=False)``: answers so far and this PENDING row in one transaction, then the wire."""
		self._forget_closed_window()
		if self._lost:
			# The connection went since the last call: this one waits, sending the lost ones again first.
			self._send_and_record([envelope], pending, only_requested=False)
			return
		answers = SendReport()
		window: _ConfirmWindow | None = None
		written = False
		try:
			window = self._open_window()
			# Every answer not yet written, with what the window held (``_open_window`` moved it there).
			answers, self._unwritten = self._unwritten, SendReport()
			_refuse_unsendable([envelope], window.frame_max, None, answers)
			window.take_in()
			if window.in_flight >= self.window:
				window.wait(self.window // 2, self.confirm_timeout)
			_merge(answers, window.take_report())
			if window.nacked:
				raise _NackedForNow  # before this call's row: it goes out after them, by the waiting path
			carry = self.store is not None and not answers.failed and self._statuses_can_wait(answers)
			if self.store is not None:
				_Recording(self.store, pending, behind=self._behind, keep=True).write(
					[envelope], SendReport() if carry else answers
				)
			written = True
			if carry:
				_merge(self._unwritten, answers)  # a later call writes them with its row
			self._notify_failures(answers)
			if envelope.message_id not in answers.failed:
				window.publish(envelope)
				window.flush()
		except _SEND_AGAIN as e:
			# The connection or the channel went, or the broker nacked earlier messages for now. Everything
			# unconfirmed goes through the waiting path, which reconnects (or opens a fresh channel), finds a
			# refused message, sends again in order and records.
			log.warning("publish interrupted (%s); sending the unconfirmed again", type(e).__name__)
			late = window.take_report() if window is not None else SendReport()
			lost = window.take_resend() if window is not None else []
			if isinstance(e, _NackedForNow):
				self._drop_channel()  # it may go on nacking: a fresh one, as in ``send``
			self._window = None
			refused = written and envelope.message_id in answers.failed
			if not written:
				# Nothing of this call reached the store: its message is checked and recorded again below.
				answers.failed.pop(envelope.message_id, None)
				late = _merge(answers, late)
			_merge(self._unwritten, late)
			if not refused and not any(e.message_id == envelope.message_id for e in lost):
				lost.append(envelope)
			self._send_and_record(lost, {} if written else pending, only_requested=False)
			return
		except BaseException:
			if not written:
				_merge(self._unwritten, answers)
			raise
		if envelope.message_id in answers.failed:
			raise answers.failed[envelope.message_id]

	def _statuses_can_wait(self, answers: SendReport) -> bool:
		"""Whether ``publish(wait=False)`` leaves the confirms it took in to a later call: its row alone is
		one short INSERT, while every confirm written with it is the update of a row and its indexes. They
		wait for ``STATUS_EVERY`` confirms or ``STATUS_AFTER`` seconds, whichever comes first (and for
		``flush()``/``close()``); a failure is written at once."""
		if not answers.confirmed:
			return True
		now = time.monotonic()
		if self._carried_since is None:
			self._carried_since = now
		if len(answers.confirmed) < STATUS_EVERY and now - self._carried_since < STATUS_AFTER:
			return True
		self._carried_since = None
		return False

	def send(
		self,
		envelopes: Sequence[Envelope],
		*,
		between: Callable[[Sequence[Envelope], SendReport], None] | None = None,
		step: int = 0,
		into: SendReport | None = None,
		max_bytes: int | None = None,
	) -> SendReport:
		"""Send with confirms, reconnecting and re-sending the unconfirmed after a dropped connection.

		``between(ahead, so_far)`` runs before the first envelope goes out and then after every ``step``
		envelopes, once their bytes are on the socket: the caller makes ``ahead`` (the next envelopes to
		go out) durable and records the answers ``so_far`` while the broker works on what was just sent,
		instead of after it. Raises ``BrokerUnavailable`` when the broker stays away; the unconfirmed are
		then in neither list of the report's (``into``, filled as answers arrive, keeps what was
		answered before), and the caller must treat them as not sent.

		One message never costs the others their send: one that cannot be encoded (or is over
		``max_bytes``, when given: the worker's retries and dead letters and replays pass none) fails before
		anything goes out (``Unsendable``); one whose exchange is missing fails
		with ``ExchangeNotFound``; when the broker closes the channel over a message (406, 403), the
		messages that were unconfirmed then are sent again one at a time, so the one it refuses is known
		and fails alone with ``PublishRefused``.
		"""
		total = SendReport() if into is None else into
		lost = self._take_behind(total)
		pending = [*lost, *envelopes]
		step = step if between is not None and step > 0 else max(1, len(pending))
		alone: set[str] = set()  # suspects of a refusal: each goes out with nothing else in flight
		patience = refusals.Patience(self.retry_refused_for)
		pause = 0.0  # before the next try, after a refusal for now
		attempt = 0
		while pending:
			window: _ConfirmWindow | None = None
			sent = 0
			try:
				# Inside the ``try``: a connection lost while pausing is handled like any other.
				_pause(self.connection, pause)
				pause = 0.0
				window = self._open_window()
				pending = _refuse_unsendable(pending, window.frame_max, max_bytes, total)
				if between is not None:
					between(pending[:step], _merge(_copy(total), window.report))
				for start in range(0, len(pending), step):
					for envelope in pending[start : start + step]:
						if window.nacked:
							break  # this channel refuses: the rest waits for a fresh one
						isolated = envelope.message_id in alone
						if isolated and window.in_flight:
							window.wait(0, self.confirm_timeout)
						elif window.in_flight >= self.window:
							window.wait(self.window // 2, self.confirm_timeout)
						window.publish(envelope)
						sent += 1
						if isolated:
							window.wait(0, self.confirm_timeout)
					if window.nacked:
						break
					if between is not None:
						# After the last chunk ``ahead`` is empty: the answers so far are recorded while the
						# broker confirms the rest.
						window.flush()
						between(pending[sent : sent + step], _merge(_copy(total), window.report))
				window.wait(0, self.confirm_timeout)
				_merge(total, window.take_report())
				if not window.nacked:
					return total
				nacked = window.take_resend()
				# ``pending`` holds every message still owed before anything else can fail.
				pending, sent, window = nacked + pending[sent:], 0, None
				self._drop_channel()
				pending, pause = self._after_nack(pending, len(nacked), patience, total)
			except RESENDABLE as e:
				close = refusals.refusal(e, window)
				if close is not None and refusals.is_transient(close):
					pending = self._take_back(window, pending, sent, total)
					self._drop_channel()
					later = patience.pause()
					if later is None and pending:
						raise BrokerUnavailable(
							f"{len(pending)} messages unconfirmed: the broker kept closing the channel for "
							f"{patience.spent:.1f}s ({close.reply_code} {close.reply_text})"
						) from e
					pause = later or 0.0
					log.warning(
						"broker closed the channel (%s %s); sending %d again on a fresh one in %.2fs",
						close.reply_code,
						close.reply_text,
						len(pending),
						pause,
					)
					continue
				in_flight = window.unconfirmed() if window is not None else []
				pending = self._take_back(window, pending, sent, total)
				if close is not None:
					pending = refusals.after_refusal(close, in_flight, pending, total, alone)
					# A refusal that names no exchange and comes with nothing in flight blames no message: it
					# counts as a try, so a channel the broker keeps closing ends in BrokerUnavailable.
					attempt += not in_flight and refusals.missing_exchange(close) is None
				else:
					attempt += 1
				if attempt > self.resend_attempts and pending:
					raise BrokerUnavailable(
						f"{len(pending)} messages unconfirmed after {attempt} tries: {type(e).__name__}: {e}"
					) from e
				if close is None and pending:
					log.warning(
						"publish interrupted (%s); reconnecting to resend %d", type(e).__name__, len(pending)
					)
					self._reconnect()
			except BaseException:
				# A failed ``between`` (the store) or an unexpected broker answer leaves messages in flight on
				# this channel; a later send must not inherit their confirms.
				if window is not None:
					_merge(total, window.take_report())
				self._drop_channel()
				raise
		return total

	@staticmethod
	def _after_nack(
		pending: list[Envelope], nacked: int, patience: refusals.Patience, total: SendReport
	) -> tuple[list[Envelope], float]:
		"""The channel (dropped) nacked the first ``nacked`` of ``pending``: they go out again, then the
		rest, on a fresh channel after the returned pause; once ``patience`` is spent they fail with
		``StillNacked`` instead and the rest goes on at once."""
		pause = patience.pause()
		if pause is None:
			for envelope in pending[:nacked]:
				total.failed[envelope.message_id] = StillNacked(
					envelope.message_id, envelope.exchange, envelope.routing_key, patience.spent
				)
			log.warning("broker kept nacking %d messages for %.1fs: failed", nacked, patience.spent)
			return pending[nacked:], 0.0
		log.warning(
			"broker nacked %d messages (a queue changing leader?); sending them again on a fresh channel "
			"in %.2fs",
			nacked,
			pause,
		)
		return pending, pause

	def _take_behind(self, into: SendReport) -> list[Envelope]:
		"""Wait for the confirms of messages sent with ``publish(wait=False)``, put every answer not yet
		written into ``into``, and return the messages to send again: those a broken connection left
		unconfirmed, and those the broker nacked for now (their channel is dropped: it may nack on)."""
		self._forget_closed_window()
		_merge(into, self._unwritten)
		self._unwritten = SendReport()
		lost, self._lost = self._lost, []
		window = self._window
		if window is None:
			return lost
		if window.in_flight:
			try:
				window.wait(0, self.confirm_timeout)
			except RESENDABLE:
				lost += window.take_resend()
				self._window = None
		_merge(into, window.take_report())
		if window.nacked:
			lost += window.take_resend()
			self._drop_channel()
		return lost

	def _forget_closed_window(self) -> None:
		"""A channel closed under messages still unconfirmed: keep its answers, and them to send again."""
		window = self._window
		if window is not None and not window.channel.is_open:
			self._lost += window.take_resend()
			_merge(self._unwritten, window.take_report())
			self._window = None

	def _take_back(
		self, window: _ConfirmWindow | None, pending: list[Envelope], sent: int, total: SendReport
	) -> list[Envelope]:
		"""After a broken window: keep its answers, drop the channel, return what still needs sending."""
		self._window = None
		if window is None:
			return pending[sent:]
		_merge(total, window.take_report())
		return window.take_resend() + pending[sent:]

	def close(self) -> None:
		"""Write what this publisher still holds (``flush``), then close its channel. When the broker or
		the store is away, those messages stay PENDING for the relay; nothing is raised."""
		try:
			if (
				self._unwritten.confirmed
				or self._unwritten.failed
				or self._lost
				or (self._window and (self._window.in_flight or self._window.nacked))
			):
				self.flush()
		except Exception as e:  # closing must not fail; the rows left PENDING are relayed
			log.warning("publisher closed with statuses unwritten (left PENDING for the relay): %s", e)
		self._drop_channel()

	def __enter__(self) -> Publisher:
		return self

	def __exit__(self, *_exc: object) -> None:
		self.close()

	def _drop_channel(self) -> None:
		window, self._window = self._window, None
		if window is not None and window.channel.is_open:
			try:
				window.channel.close()
			except CONNECTION_ERRORS:
				pass

	# --- internals --------------------------------------------------------------------------------

	def _open_window(self) -> _ConfirmWindow:
		"""Reuse the confirm channel while it is open; a fresh report per send."""
		self._forget_closed_window()
		if self._window is None:
			self._window = _ConfirmWindow(self.connection.channel(), keep_nacked=self.retry_refused_for > 0)
		_merge(self._unwritten, self._window.take_report())
		return self._window

	def _reconnect(self) -> None:
		try:
			self.connection.reconnect()
		except BrokerUnavailable:
			raise
		except Exception as e:  # a half-dead socket can fail in many ways; all mean "connect again"
			raise BrokerUnavailable(f"reconnect failed: {type(e).__name__}: {e}") from e

	def _envelope(self, message: Message, exchange: str, routing_key: str) -> Envelope:
		body = encode(message)
		return Envelope(
			message_id=message.id,
			exchange=exchange,
			routing_key=routing_key,
			body=body,
			message_type=message.type,
			correlation_id=message.correlation_id,
			source=message.source or self.source,
			# Stored with the record: a relay or replay sends the same signature with the same body.
			headers={SIGNATURE: self.signer.sign(body)} if self.signer is not None else {},
		)

	def _notify_failures(self, report: SendReport) -> None:
		if self.notifier is None or not report.failed:
			return
		for message_id, error in report.failed.items():
			record = error_record(error, message_id, Direction.OUTGOING)
			self.notifier.notify(
				FailureNotice(
					kind=PUBLISH_FAILED,
					message_id=message_id,
					routing_key=error.routing_key,
					exception_type=record.exception_type,
					error=record.error,
					fingerprint=record.fingerprint,
				)
			)


class _Recording:
	"""The store's side of one send: PENDING rows ahead of the wire, outcomes behind it.

	Each ``write`` saves the records of the envelopes about to go out (never twice, so a resend after a
	reconnect costs nothing) and the answers that arrived since the last one, in one transaction, or
	alone when it is one write (every store commits a write outside a transaction by itself; the SQL
	store on MariaDB and PostgreSQL then sends one statement, which commits as it runs). A confirm of a
	message whose record is in ``behind`` is saved as that record, PUBLISHED, with the new rows, instead
	of an UPDATE of its own; with ``keep`` the new records go into ``behind`` for that. With ``defer``,
	confirms alone do not start a write: they wait for the next one (``unwritten``).
	"""

	def __init__(
		self,
		store: MessageStore,
		pending: Mapping[str, MessageRecord],
		defer: bool = False,
		behind: dict[str, MessageRecord] | None = None,
		keep: bool = False,
	) -> None:
		self.store = store
		self.pending = dict(pending)
		self.defer = defer
		self.behind = {} if behind is None else behind
		self.keep = keep
		self.confirmed = 0
		self.failed: set[str] = set()

	def unwritten(self, so_far: SendReport) -> SendReport:
		return SendReport(
			so_far.confirmed[self.confirmed :],
			{k: v for k, v in so_far.failed.items() if k not in self.failed},
		)

	def write(self, ahead: Sequence[Envelope], so_far: SendReport, force: bool = False) -> None:
		confirmed = so_far.confirmed[self.confirmed :]
		failed = {k: v for k, v in so_far.failed.items() if k not in self.failed}
		# A message that failed before its chunk was written (it was never sent) is written now, then failed.
		ids = [e.message_id for e in ahead] + list(failed)
		new = [self.pending.pop(i) for i in ids if i in self.pending]
		if not new and not failed and (not confirmed or (self.defer and not force)):
			return
		published: list[MessageRecord] = []
		updates: list[str] = []
		for message_id in confirmed:
			record = self.behind.pop(message_id, None)
			if record is None:
				updates.append(message_id)
			else:
				published.append(replace(record, status=Status.PUBLISHED))
		for message_id in failed:
			self.behind.pop(message_id, None)
		saved = published + new
		if not failed and not (saved and updates):
			# One write: it is its own transaction.
			if saved:
				self.store.save(saved)
			else:
				self.store.set_status(Direction.OUTGOING, updates, Status.PUBLISHED)
		else:
			with self.store.transaction():
				self.store.save(saved)
				if updates:
					self.store.set_status(Direction.OUTGOING, updates, Status.PUBLISHED)
				for message_id, error in failed.items():
					failure = error_record(error, message_id, Direction.OUTGOING)
					self.store.set_status(
						Direction.OUTGOING,
						[message_id],
						Status.FAILED,
						last_error=f"{failure.exception_type}: {error}",
					)
					self.store.add_error(failure)
		if self.keep:
			for record in new:
				if record.message_id in failed:
					continue  # its status is written: nothing to come for it
				if len(self.behind) < KEEP_BEHIND and len(record.body) <= KEEP_BODY:
					self.behind[record.message_id] = record
		self.confirmed += len(confirmed)
		self.failed.update(failed)


# ``publish(wait=False)`` writes the PUBLISHED statuses of what the broker confirmed with every
# STATUS_EVERY-th confirm or once the oldest waited STATUS_AFTER seconds (see _statuses_can_wait).
STATUS_EVERY = 32
STATUS_AFTER = 1.0

# A publisher keeps at most this many records behind (and none with a larger body); the others' confirms
# are written as an UPDATE, as before.
KEEP_BEHIND = 256
KEEP_BODY = 64 * 1024


def _pause(connection: BrokerConnection, seconds: float) -> None:
	"""Wait ``seconds`` while servicing the connection's I/O (heartbeats), without dispatching consumer
	callbacks as ``BlockingConnection.sleep`` would: a worker's publisher pauses inside its loop."""
	if seconds <= 0:
		return
	raw = connection.blocking
	fired: list[bool] = []
	raw._impl._adapter_call_later(seconds, lambda: fired.append(True))
	raw._flush_output(lambda: bool(fired))


def _coalesce(connection: Any) -> None:
	"""pika queues three frames per message and sends each with a system call of its own; join them."""
	buffers = getattr(getattr(connection, "_transport", None), "_tx_buffers", None)
	if buffers is not None and len(buffers) > 1:
		joined = b"".join(buffers)
		buffers.clear()
		buffers.append(joined)


def _send_now(connection: Any) -> None:
	"""Hand the buffered frames to the socket at once, as pika's I/O loop would on the socket's next
	writable event: one ``send()`` instead of a turn of the loop (a ``select()`` and its dispatch, ~150
	µs a call, which a ``publish()`` per request pays every time). What the socket does not take now
	stays buffered for the loop, so ``_flush_output`` then finishes as before. Plain TCP only; a TLS
	transport has its own write states and keeps going through the loop."""
	transport = getattr(connection, "_transport", None)
	if (
		isinstance(transport, _PLAINTEXT)
		and transport._state == transport._STATE_ACTIVE
		and transport._tx_buffers
	):
		transport._on_socket_writable()


def _refuse_unsendable(
	pending: list[Envelope], frame_max: int, max_bytes: int | None, total: SendReport
) -> list[Envelope]:
	"""Fail what the wire cannot carry before any of it is sent; return the rest, in order."""
	sendable = []
	for envelope in pending:
		problem = wire.check(envelope, max_bytes=max_bytes, frame_max=frame_max)
		if problem is None:
			sendable.append(envelope)
		else:
			total.failed[envelope.message_id] = problem
	return sendable


def _copy(report: SendReport) -> SendReport:
	return SendReport(list(report.confirmed), dict(report.failed))


def _merge(total: SendReport, part: SendReport) -> SendReport:
	total.confirmed += part.confirmed
	total.failed.update(part.failed)
	return total


def _outgoing_record(envelope: Envelope, message: Message) -> MessageRecord:
	return MessageRecord(
		message_id=envelope.message_id,
		direction=Direction.OUTGOING,
		status=Status.PENDING,
		routing_key=envelope.routing_key,
		body=envelope.body.decode("utf-8"),
		exchange=envelope.exchange,
		message_type=message.type,
		headers=dict(envelope.headers),
		created_at=message.created_at,
	)


def envelope_from_record(record: MessageRecord, headers: Mapping[str, Any] | None = None) -> Envelope:
	"""Rebuild the wire form of a stored message, byte for byte, for relaying or replaying it."""
	return Envelope(
		message_id=record.message_id,
		exchange=record.exchange,
		routing_key=record.routing_key,
		body=record.body.encode("utf-8"),
		message_type=record.message_type,
		headers={**record.headers, **(headers or {})},
	)
