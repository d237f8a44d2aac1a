"""What the AMQP wire can carry, checked before a message goes on it.

pika raises while it encodes a publish (``ShortStringTooLong`` for a routing key over 255 bytes, a
``UnicodeEncodeError`` for a lone surrogate, ``UnsupportedAMQPFieldException`` for a float header), and
the broker drops the whole connection when the frame of properties and headers is over ``frame_max``.
Either way every message sent with it would be lost from the batch, so the publisher asks here first and
fails only the message that cannot go, with an ``Unsendable`` error that says what to change.

A body is never split wrongly (pika cuts it into frames), so the only body check is the consumers'
size limit, ``max_bytes``; a broker whose own ``max_message_size`` is lower refuses the message with
406, which the publisher handles as ``PublishRefused``.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pika.exceptions
import pika.frame

from frappe_eda.messaging.errors import (
	BodyTooLarge,
	FieldTooLong,
	HeadersTooLarge,
	PublishError,
	UnencodableField,
)

if TYPE_CHECKING:
	from frappe_eda.messaging.publisher import Envelope

SHORT_STRING = 255
# The frame limit every RabbitMQ accepts without configuration (the default is 128 KiB; 4 KiB is the
# smallest frame_max AMQP allows); the publisher passes the one its connection negotiated.
DEFAULT_FRAME_MAX = 131072


# What pika raises while encoding a frame, before any byte of it is queued for the socket.
ENCODING_ERRORS: tuple[type[BaseException], ...] = (
	pika.exceptions.ShortStringTooLong,
	pika.exceptions.UnsupportedAMQPFieldException,
	UnicodeError,
	struct.error,
	TypeError,
	ValueError,
	OverflowError,
)


def check(
	envelope: Envelope, *, max_bytes: int | None, frame_max: int = DEFAULT_FRAME_MAX
) -> PublishError | None:
	"""The reason ``envelope`` cannot be sent, or None. Nothing is sent or recorded here.

	Cheap for the usual message (a few ``len``s): only one with headers is marshalled as pika would,
	since without headers the properties (a handful of short strings) always fit the smallest frame.
	"""
	fields = [
		("routing key", envelope.routing_key),
		("exchange", envelope.exchange),
		("property message_id", envelope.message_id),
		("property type", envelope.message_type),
		("property correlation_id", envelope.correlation_id or ""),
		("property app_id", envelope.source),
		("property content_type", envelope.content_type or ""),
	]
	problem = _short_strings(envelope, fields)
	if problem is not None:
		return problem
	problem = body_too_large(envelope, max_bytes)
	if problem is not None:
		return problem
	if not envelope.headers:
		return None
	problem = _header_names(envelope, envelope.headers, "header")
	if problem is not None:
		return problem
	try:
		# The publisher adds the connection's user as ``user_id``: counted at its longest.
		properties = envelope.properties(user_id="u" * SHORT_STRING)
		size = len(pika.frame.Header(1, len(envelope.body), properties).marshal())
	except ENCODING_ERRORS as e:
		# What the named checks above do not foresee (a header value pika has no AMQP type for, an
		# integer over 64 bits): pika's own encoder is the judge.
		return UnencodableField(
			envelope.message_id, envelope.exchange, envelope.routing_key, "headers", _reason(e)
		)
	if size > frame_max:
		return HeadersTooLarge(envelope.message_id, envelope.exchange, envelope.routing_key, size, frame_max)
	return None


def body_too_large(envelope: Envelope, max_bytes: int | None) -> BodyTooLarge | None:
	"""A body over what consumers accept (``max_bytes``; None: no limit)."""
	if max_bytes is None or len(envelope.body) <= max_bytes:
		return None
	return BodyTooLarge(
		envelope.message_id, envelope.exchange, envelope.routing_key, len(envelope.body), max_bytes
	)


def too_long_to_record(envelope: Envelope) -> PublishError | None:
	"""A routing key, exchange, type or id over 255 characters: over 255 bytes too, so it can never be
	sent, and no store can record it either (their columns hold 255 characters), so ``publish()`` raises
	instead of recording it FAILED."""
	fields = [
		("routing key", envelope.routing_key),
		("exchange", envelope.exchange),
		("property type", envelope.message_type),
		("property message_id", envelope.message_id),
	]
	return _short_strings(envelope, [(name, value) for name, value in fields if len(value) > SHORT_STRING])


def _short_strings(envelope: Envelope, fields: list[tuple[str, str]]) -> PublishError | None:
	for name, value in fields:
		try:
			size = len(value.encode("utf-8"))
		except UnicodeEncodeError as e:
			return UnencodableField(
				envelope.message_id, envelope.exchange, _printable(envelope), name, str(e)
			)
		if size > SHORT_STRING:
			return FieldTooLong(envelope.message_id, envelope.exchange, envelope.routing_key, name, size)
	return None


def _header_names(envelope: Envelope, table: Mapping[str, Any], where: str) -> PublishError | None:
	"""Names in a header table, nested ones too, are short strings; values are long strings (4 GiB)."""
	for name, value in table.items():
		shown = f"{where} name {name[:40]!r}" if isinstance(name, str) else f"{where} name {name!r}"
		if not isinstance(name, str):
			return UnencodableField(
				envelope.message_id, envelope.exchange, _printable(envelope), shown, "not text"
			)
		problem = _short_strings(envelope, [(shown, name)])
		if problem is None and isinstance(value, Mapping):
			problem = _header_names(envelope, value, f"header {name[:40]!r}")
		if problem is not None:
			return problem
	return None


def _printable(envelope: Envelope) -> str:
	"""The routing key for an error message, without characters that cannot be stored or shown."""
	return envelope.routing_key.encode("utf-8", "backslashreplace").decode("utf-8")


def _reason(error: BaseException) -> str:
	text = str(error)
	return f"{type(error).__name__}: {text[:200]}" if text else type(error).__name__
