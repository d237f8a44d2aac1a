"""``wire.check`` refuses exactly what pika cannot encode or the broker would drop the connection over."""

from __future__ import annotations

from typing import Any

import pika
import pika.frame
import pika.spec
import pytest

from frappe_eda.messaging import wire
from frappe_eda.messaging.errors import BodyTooLarge, FieldTooLong, HeadersTooLarge, UnencodableField
from frappe_eda.messaging.publisher import Envelope


def _envelope(**fields: Any) -> Envelope:
	values: dict[str, Any] = {
		"message_id": "m-1",
		"exchange": "eda.events",
		"routing_key": "order.created",
		"body": b"{}",
		"message_type": "order.created",
	}
	values.update(fields)
	return Envelope(**values)


def _pika_encodes(envelope: Envelope) -> bool:
	try:
		pika.frame.Method(
			1, pika.spec.Basic.Publish(exchange=envelope.exchange, routing_key=envelope.routing_key)
		).marshal()
		pika.frame.Header(1, len(envelope.body), envelope.properties()).marshal()
	except Exception:
		return False
	return True


@pytest.mark.parametrize(
	("fields", "error", "words"),
	[
		({"routing_key": "k" * 256}, FieldTooLong, "routing key of message m-1 is 256 bytes"),
		({"routing_key": "é" * 128}, FieldTooLong, "routing key of message m-1 is 256 bytes"),
		({"exchange": "x" * 300}, FieldTooLong, "exchange of message m-1 is 300 bytes"),
		({"message_id": "i" * 256}, FieldTooLong, "property message_id"),
		({"message_type": "t" * 256}, FieldTooLong, "property type"),
		({"correlation_id": "c" * 256}, FieldTooLong, "property correlation_id"),
		({"source": "s" * 256}, FieldTooLong, "property app_id"),
		({"headers": {"h" * 256: "v"}}, FieldTooLong, "header name"),
		({"headers": {"outer": {"n" * 256: 1}}}, FieldTooLong, "header 'outer' name"),
		({"routing_key": "order.\ud800"}, UnencodableField, "routing key of message m-1 cannot be encoded"),
		({"headers": {"x-ratio": 0.5}}, UnencodableField, "headers of message m-1 cannot be encoded"),
		({"headers": {"x-big": 2**70}}, UnencodableField, "headers of message m-1 cannot be encoded"),
		({"headers": {"x-note": "n" * 140_000}}, HeadersTooLarge, "over the broker's frame limit of 131072"),
		({"body": b"x" * 101}, BodyTooLarge, "101 bytes, over the limit of 100 bytes"),
	],
)
def test_what_cannot_go_on_the_wire_is_named(fields: dict[str, Any], error: type, words: str) -> None:
	envelope = _envelope(**fields)

	problem = wire.check(envelope, max_bytes=100)

	assert isinstance(problem, error) and words in str(problem), problem
	assert problem.message_id == envelope.message_id
	if error is not BodyTooLarge and error is not HeadersTooLarge:
		assert not _pika_encodes(envelope)  # pika would have raised in the middle of a batch


@pytest.mark.parametrize(
	"fields",
	[
		{},
		{"routing_key": "k" * 255, "exchange": "x" * 255, "message_id": "i" * 255, "source": "s" * 255},
		{"routing_key": "é" * 127 + "k"},
		{"routing_key": "a\x00b"},  # RabbitMQ takes a NUL in a short string
		{"headers": {"x-note": "n" * 100_000, "x-list": [1, "a", {"b": True}], "x-none": None}},
		{"headers": {"h" * 255: {"n" * 255: "v"}}},
		{"body": b"x" * 100},
	],
)
def test_what_fits_passes_and_pika_encodes_it(fields: dict[str, Any]) -> None:
	envelope = _envelope(**fields)

	assert wire.check(envelope, max_bytes=100) is None
	assert _pika_encodes(envelope)


def test_a_smaller_negotiated_frame_is_the_limit() -> None:
	envelope = _envelope(headers={"x-note": "n" * 5000})

	assert wire.check(envelope, max_bytes=None) is None
	assert isinstance(wire.check(envelope, max_bytes=None, frame_max=4096), HeadersTooLarge)


def test_a_huge_routing_key_is_cut_in_the_error_it_is_quoted_in() -> None:
	problem = wire.check(_envelope(routing_key="k" * 1_000_000), max_bytes=None)

	assert problem is not None and len(str(problem)) < 1000 and len(problem.routing_key) < 400
