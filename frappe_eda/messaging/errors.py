"""Every failure a caller of the messaging core may want to handle, each as its own class.

The hierarchy mirrors the decisions the core takes:
- ``InvalidMessage`` and its subclasses are bad input: recorded and dead-lettered at once, never retried.
- ``PermanentFailure`` is raised by a handler that knows retrying cannot help.
- ``PublishError`` means the broker did not take responsibility for a message; it is never "sent".
Messages say what failed and what to do, because operators read them in the desk and in alerts.
"""

from __future__ import annotations


class EdaError(Exception):
	"""Base class of every error raised by frappe_eda."""


class ConfigurationError(EdaError):
	"""Settings that cannot work (bad URL, missing certificate, impossible retry policy)."""


class InvalidRoutingKeyTemplate(ConfigurationError):
	"""A routing-key template uses something other than its plain placeholders.

	``str.format`` would otherwise evaluate attribute access (``{doctype.__class__}``) and format specs
	(``{name:>9999}``) taken from desk-edited configuration.
	"""

	def __init__(self, template: str, problem: str, allowed: tuple[str, ...]):
		self.template = template
		self.allowed = allowed
		placeholders = ", ".join("{" + name + "}" for name in allowed)
		super().__init__(
			f"routing key template {template!r}: {problem}; use only the plain placeholders {placeholders}"
		)


class DestinationUnavailable(ConfigurationError):
	"""``publish(to=...)`` named an EDA Destination that does not exist or is disabled."""

	def __init__(self, destination: str, reason: str):
		self.destination = destination
		self.reason = reason
		super().__init__(
			f"EDA Destination {destination!r} {reason}; enable or create it in the desk, or send to "
			f"another destination"
		)


# --- connection -----------------------------------------------------------------------------------


class BrokerUnavailable(EdaError):
	"""The broker could not be reached (after the configured reconnect attempts)."""


class WrongThreadError(EdaError):
	"""A connection was used from a thread (or process) other than the one that opened it.

	pika connections are not thread-safe; sharing one corrupts frames silently, so we refuse loudly.
	"""


class ConnectionAlreadyOpen(EdaError):
	"""A second broker connection was opened in a process that already has one."""


# --- topology -------------------------------------------------------------------------------------


class TopologyMismatch(EdaError):
	"""A queue or exchange exists on the broker with other arguments than the ones declared."""

	def __init__(self, kind: str, name: str, argument: str, declared: str, existing: str, vhost: str = ""):
		self.kind = kind
		self.name = name
		self.argument = argument
		self.declared = declared
		self.existing = existing
		self.vhost = vhost
		super().__init__(
			f"{kind} {name!r} already exists with {argument}={existing!r} but was declared with "
			f"{argument}={declared!r}; delete the {kind} (after draining it) or declare it with the "
			f"existing value"
		)


# --- publishing -----------------------------------------------------------------------------------


class PublishError(EdaError):
	"""The broker did not confirm a message; it must not be reported as sent."""

	def __init__(self, message: str, message_id: str = "", exchange: str = "", routing_key: str = ""):
		self.message_id = message_id
		self.exchange = exchange
		self.routing_key = routing_key
		super().__init__(message)


class UnroutableMessage(PublishError):
	"""A mandatory message matched no queue and came back with Basic.Return."""

	def __init__(self, message_id: str, exchange: str, routing_key: str):
		super().__init__(
			f"no queue bound to {exchange or '(default exchange)'} with key {routing_key!r} "
			f"(message {message_id}); declare the consumer first or check the routing key",
			message_id,
			exchange,
			routing_key,
		)


class PublishNacked(PublishError):
	"""The broker refused the message (Basic.Nack): a full queue with reject-publish, an internal error, or
	in a cluster a quorum queue whose leader the channel's node could not reach (retried first, then
	``StillNacked``)."""

	def __init__(self, message_id: str, exchange: str, routing_key: str):
		super().__init__(
			f"broker refused message {message_id} to {exchange or '(default exchange)'} "
			f"with key {routing_key!r} (Basic.Nack); check queue length limits and broker logs",
			message_id,
			exchange,
			routing_key,
		)


class StillNacked(PublishNacked):
	"""The broker nacked the message on every fresh channel for as long as the publisher retries nacks
	(``Publisher(retry_refused_for=...)``): in a cluster a nack usually means "not now" (a quorum queue
	between leaders), so the message is recorded FAILED with this error and ``OutboxRelay`` sends it
	again on its own schedule (``OutboxRelay(retry_refused_after=...)``); nobody needs to replay it."""

	def __init__(self, message_id: str, exchange: str, routing_key: str, seconds: float):
		self.seconds = seconds
		PublishError.__init__(
			self,
			f"broker still refused message {message_id} to {exchange or '(default exchange)'} with key "
			f"{routing_key!r} (Basic.Nack) after {seconds:.1f}s of tries on fresh channels; the relay sends "
			f"it again later. If it keeps failing, check queue length limits and broker logs",
			message_id,
			exchange,
			routing_key,
		)


class ExchangeNotFound(PublishError):
	"""The broker has no exchange of that name (it closes the channel with 404 NOT_FOUND)."""

	def __init__(self, message_id: str, exchange: str, routing_key: str):
		super().__init__(
			f"exchange {exchange!r} does not exist (message {message_id}); declare it (start the consumer, "
			f"or run 'declare') or check the exchange name",
			message_id,
			exchange,
			routing_key,
		)


class PublishNotConfirmed(PublishError):
	"""No confirm arrived before the connection dropped or the timeout ran out; the outcome is unknown."""


class PublishRefused(PublishError):
	"""The broker closed the channel over this message (406 PRECONDITION_FAILED, 403 ACCESS_REFUSED...).

	The publisher sends the messages that were in flight again one at a time, so the one the broker refuses
	is known for certain; the others go out.
	"""

	def __init__(self, message_id: str, exchange: str, routing_key: str, reply_code: int, reply_text: str):
		self.reply_code = reply_code
		self.reply_text = reply_text
		super().__init__(
			f"broker refused message {message_id} to {exchange or '(default exchange)'} with key "
			f"{routing_key!r} and closed the channel: {reply_code} {reply_text}; the message was not sent: "
			f"fix what the broker names (headers, size, permissions) and publish it again",
			message_id,
			exchange,
			routing_key,
		)


class Unsendable(PublishError):
	"""The message cannot be put on the AMQP wire at all; it is refused before anything is sent."""


class FieldTooLong(Unsendable):
	"""A routing key, exchange name, property or header name over AMQP's 255-byte short-string limit."""

	def __init__(self, message_id: str, exchange: str, routing_key: str, field: str, size: int):
		self.field = field
		self.size = size
		super().__init__(
			f"{field} of message {message_id} is {size} bytes of UTF-8; AMQP carries at most 255 there; "
			f"shorten it (put the detail in the payload instead) and publish the message again",
			message_id,
			exchange,
			_shown(routing_key),
		)


class UnencodableField(Unsendable):
	"""A value AMQP cannot encode: a string that is not valid Unicode, or a header of an unsupported type."""

	def __init__(self, message_id: str, exchange: str, routing_key: str, field: str, reason: str):
		self.field = field
		super().__init__(
			f"{field} of message {message_id} cannot be encoded for AMQP ({reason}); send only valid "
			f"Unicode text, numbers, booleans, lists and objects there",
			message_id,
			exchange,
			_shown(routing_key),
		)


class HeadersTooLarge(Unsendable):
	"""Properties and headers together exceed one AMQP frame (the broker would drop the connection)."""

	def __init__(self, message_id: str, exchange: str, routing_key: str, size: int, limit: int):
		self.size = size
		self.limit = limit
		super().__init__(
			f"headers of message {message_id} take {size} bytes, over the broker's frame limit of {limit} "
			f"bytes; move large values from the headers into the payload",
			message_id,
			exchange,
			_shown(routing_key),
		)


def _shown(text: str, limit: int = 300) -> str:
	"""A value quoted in an error stays readable: a 10 MB routing key is cut, with a visible marker."""
	return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


# --- dead-letter copies ---------------------------------------------------------------------------


class DeadLetterCleanupError(EdaError):
	"""Removing settled copies from a ``<queue>.dead`` queue did not finish. What it acked is gone; what
	it held unacked goes back to the queue when its channel closes, so nothing is lost (a copy it had
	republished but not yet acked may be there twice). Run the cleaning again."""

	def __init__(self, queue: str, message: str) -> None:
		self.queue = queue
		super().__init__(message)


class DeadLetterQueueBusy(DeadLetterCleanupError):
	"""Another process held the cleaning lock of ``<queue>.dead`` for longer than the timeout."""

	def __init__(self, queue: str, lock: str, waited: float) -> None:
		self.lock = lock
		self.waited = waited
		super().__init__(
			queue,
			f"another cleaning of {queue!r} held its lock (the exclusive queue {lock!r}) for {waited:.0f}s; "
			f"its copies stay there until a later replay or resolve cleans the queue again (or delete "
			f"the lock queue if no frappe_eda process is cleaning it)",
		)


class DeadLetterCleanupInterrupted(DeadLetterCleanupError):
	"""The channel or the connection closed while ``<queue>.dead`` was being scanned, or the broker
	refused to take back a copy that is kept."""

	def __init__(self, queue: str, cause: BaseException) -> None:
		self.cause = cause
		super().__init__(
			queue,
			f"cleaning {queue!r} stopped ({type(cause).__name__}: {cause or 'no detail'}); the copies not yet "
			f"removed went back to the queue, a kept one may now be there twice: run the cleaning again",
		)


# --- bad input (dead-lettered at once) ------------------------------------------------------------


class InvalidMessage(EdaError):
	"""Input that no retry can fix. The consumer records it and dead-letters it at once."""


class MessageTooLarge(InvalidMessage):
	def __init__(self, size: int, limit: int):
		self.size = size
		self.limit = limit
		super().__init__(f"body is {size} bytes, over the limit of {limit} bytes")


class BodyTooLarge(Unsendable, MessageTooLarge):
	"""A body over the size consumers accept: refused by ``publish()`` before it is stored or sent, and
	failed by the relay (it would only be dead-lettered by every consumer)."""

	def __init__(self, message_id: str, exchange: str, routing_key: str, size: int, limit: int):
		self.size = size
		self.limit = limit
		self.message_id = message_id
		self.exchange = exchange
		self.routing_key = _shown(routing_key)
		# Both bases set their fields above; Exception takes the text (their __init__ signatures differ).
		Exception.__init__(
			self,
			f"body of message {message_id} is {size} bytes, over the limit of {limit} bytes that consumers "
			f"accept; publish a reference (a document name, a file URL) instead of the content, or raise "
			f"max_bytes on the publisher and every consumer together",
		)


class UnsupportedContentType(InvalidMessage):
	def __init__(self, content_type: str | None):
		self.content_type = content_type
		super().__init__(f"content type is {content_type!r}; frappe_eda messages are 'application/json'")


class MalformedMessage(InvalidMessage):
	"""The body is not a well-formed frappe_eda envelope."""


class EmptyBody(MalformedMessage):
	def __init__(self) -> None:
		super().__init__("body is empty; expected a JSON envelope")


class InvalidEncoding(MalformedMessage):
	def __init__(self, position: int, reason: str):
		self.position = position
		super().__init__(f"body is not valid UTF-8 at byte {position}: {reason}")


class InvalidJson(MalformedMessage):
	def __init__(self, line: int, column: int, reason: str):
		self.line = line
		self.column = column
		super().__init__(f"body is not valid JSON at line {line} column {column}: {reason}")


class NestingTooDeep(MalformedMessage):
	def __init__(self, limit: int):
		self.limit = limit
		super().__init__(f"body nests JSON deeper than {limit} levels")


class DuplicateKey(MalformedMessage):
	def __init__(self, key: str, where: str):
		self.key = key
		super().__init__(f"key {key!r} appears twice in {where}")


class MissingMessageId(MalformedMessage):
	def __init__(self, detail: str = "envelope has no 'id'"):
		super().__init__(f"{detail}; every message needs a unique non-empty string id")


class InvalidEnvelope(MalformedMessage):
	"""A field of the envelope has the wrong type or value."""


class InvalidHeader(InvalidMessage):
	def __init__(self, header: str, value: object, expected: str):
		self.header = header
		super().__init__(f"header {header!r} is {value!r} ({type(value).__name__}); expected {expected}")


class UnknownMessageType(InvalidMessage):
	def __init__(self, routing_key: str, queue: str):
		self.routing_key = routing_key
		self.queue = queue
		super().__init__(
			f"no handler on queue {queue!r} subscribes to routing key {routing_key!r}; "
			f"check the binding or register a handler for it"
		)


class SchemaViolation(InvalidMessage):
	"""The payload breaks the JSON Schema registered for its message type."""

	def __init__(self, message_type: str, problems: list[str]):
		self.message_type = message_type
		self.problems = problems
		super().__init__(f"payload of {message_type!r} breaks its schema: " + "; ".join(problems))


class UntrustedSender(InvalidMessage):
	"""Nothing proves that the message comes from a sender its queue takes messages from: refused,
	recorded and dead-lettered, its handler never run (``frappe_eda.messaging.trust``)."""


class UnprovenSender(UntrustedSender):
	"""The message carries no sender the broker validated (no AMQP ``user_id``)."""

	def __init__(self, expected: str):
		super().__init__(
			"no broker-validated sender (the message has no AMQP user_id): not applied; this queue takes "
			f"messages only from {expected}; the sender must publish with frappe_eda (which sets user_id) "
			"under its own broker user"
		)


class WrongSender(UntrustedSender):
	"""The broker-validated sender is not one this queue takes messages from."""

	def __init__(self, sender: str, expected: str, claimed: str = ""):
		self.sender = sender
		said = f" although its body says {claimed[:80]!r}" if claimed and claimed != sender else ""
		super().__init__(
			f"sent by broker user {sender[:80]!r}{said}; this queue takes messages only from {expected}: "
			"not applied"
		)


class UnsignedMessage(UntrustedSender):
	"""The queue requires a signature and the message carries none."""

	def __init__(self, header: str):
		super().__init__(
			f"no signature (header {header}): this queue requires messages signed by the source's key; "
			"set the source's signing key, or remove the public keys from the subscriber"
		)


class BadSignature(UntrustedSender):
	"""The signature does not verify with any public key the queue trusts."""

	def __init__(self, reason: str):
		super().__init__(f"signature refused: {reason}; not applied")


class UnstorableMessage(InvalidMessage):
	"""A field of the delivery's record is more than the store can hold (too long, not storable text, a
	time out of range); it is dead-lettered before its handler runs, with a minimal record that fits."""

	def __init__(self, field: str, reason: str):
		self.field = field
		self.reason = reason
		super().__init__(
			f"{field} {reason}; the store cannot record it, so the message is dead-lettered before its "
			f"handler runs: fix it at the producer (or widen the store's column) and replay it"
		)


class StoreRefused(EdaError):
	"""The store refused to record one delivery while it recorded others (a constraint, a trigger, a
	column narrower than it declared): that delivery alone is dead-lettered."""

	def __init__(self, message_id: str, error: BaseException):
		self.message_id = message_id
		self.original = error
		shown = message_id if len(message_id) <= 200 else message_id[:200] + "..."
		super().__init__(
			f"the store refused to record message {shown!r} ({_database_error(error)}) while it "
			f"accepted other messages; it was dead-lettered alone: fix the store's constraint or the "
			f"message and replay it"
		)


# --- handlers and replay --------------------------------------------------------------------------


class PermanentFailure(EdaError):
	"""Raise from a handler when retrying cannot succeed: the message is dead-lettered at once."""


class TransactionLost(EdaError):
	"""The database ended the store's transaction underneath a savepoint (a deadlock, or a handler's
	rollback that took other messages' writes with it): nothing of the batch was recorded, and the
	whole batch must be run again."""


class HandlerEndedTransaction(EdaError):
	"""A handler committed or rolled back the transaction the worker runs it in.

	The worker commits a handler's writes together with the message's record, which is what makes the
	effect happen once. A handler that ends that transaction itself breaks it. This class (raised
	as-is) means a rollback: everything the handler wrote is undone, so the message is retried like any
	failure, within max_attempts. ``HandlerCommitted`` means a commit.
	"""

	action = "rollback"

	def __init__(self, call: str, where: str = "", handler: str = "") -> None:
		self.call = call
		self.where = where
		self.handler = handler
		at = f" at {where}" if where else ""
		who = f"handler {handler}" if handler else "the handler"
		super().__init__(
			f"{who} called {call}{at} inside the worker's transaction; {self._outcome()}. Remove {call} "
			f"from the handler: the worker commits the handler's writes together with the message record"
		)

	def _outcome(self) -> str:
		return "everything it wrote was rolled back and the message is retried"


class HandlerCommitted(HandlerEndedTransaction, PermanentFailure):
	"""A handler committed the worker's transaction: what it wrote up to then is already durable.

	Running it again could apply that effect twice, so the message is dead-lettered at once (a
	``PermanentFailure``). What it wrote after the commit is committed with the record when the handler
	returned, and rolled back when it raised.
	"""

	action = "commit"

	def _outcome(self) -> str:
		return "its writes up to that call are already committed, so the message is not retried"


class DuplicateSubscription(ConfigurationError):
	"""Two handlers were registered for one queue; a queue has exactly one handler."""


class MessageNotFound(EdaError):
	"""No stored message matches the id (and queue) asked for."""


class ReplayRefused(EdaError):
	"""Replaying would run a handler again on a message it already processed; replay
	with force (``--force`` on the command line) to do it."""


def _database_error(error: BaseException) -> str:
	"""The driver's own error, first line: a SQLAlchemy error's text goes on to quote the statement and
	its parameters, which hold payloads, and error texts travel to alerts."""
	cause = getattr(error, "orig", None) or error
	lines = str(cause).splitlines()
	text = lines[0] if lines else type(cause).__name__
	return f"{type(cause).__name__}: {text[:500]}"
