from __future__ import annotations

from datetime import datetime, timezone

import pytest

from frappe_eda.messaging import errors
from frappe_eda.messaging.envelope import Message, decode, encode


def test_every_field_survives_the_round_trip() -> None:
	message = Message(
		type="sales_order.submitted",
		payload={"name": "SO-1", "items": [{"qty": 2.5}], "note": "Zoë ✓"},
		source="erp.example.com",
		correlation_id="c-1",
		causation_id="m-0",
		created_at=datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc),
		schema_version=3,
		headers={"tenant": "acme"},
	)
	assert decode(encode(message)) == message


def test_caused_keeps_the_correlation_and_names_the_cause() -> None:
	first = Message("order.created", {})
	follow_up = first.caused("stock.reserved", {"ok": True})
	assert (follow_up.correlation_id, follow_up.causation_id) == (first.id, first.id)
	assert follow_up.caused("x").correlation_id == first.id


@pytest.mark.parametrize(
	("body", "content_type", "error", "text"),
	[
		(b"{not json", "application/json", errors.InvalidJson, "line 1 column 2"),
		(b'{"id": "\xff"}', "application/json", errors.InvalidEncoding, "byte 8"),
		(b"", "application/json", errors.EmptyBody, "empty"),
		(b'{"type": "a", "payload": {}}', "application/json", errors.MissingMessageId, "no 'id'"),
		(b'{"id": 7, "type": "a", "payload": {}}', "application/json", errors.MissingMessageId, "7"),
		(b'{"id": "  ", "type": "a", "payload": {}}', "application/json", errors.MissingMessageId, "unique"),
		(
			b'{"id": "a", "id": "b", "type": "a", "payload": {}}',
			"application/json",
			errors.DuplicateKey,
			"'id' appears twice",
		),
		(
			b'{"id": "a", "type": "a", "payload": {"x": 1, "x": 2}}',
			"application/json",
			errors.DuplicateKey,
			"'x'",
		),
		(
			b'{"id": "a", "type": "a", "payload": {}}',
			"text/plain",
			errors.UnsupportedContentType,
			"text/plain",
		),
		(b'{"id": "a", "type": "a", "payload": {}}', None, errors.UnsupportedContentType, "None"),
		(b"[1, 2]", "application/json", errors.InvalidEnvelope, "JSON list"),
		(
			b'{"id": "a", "type": "a", "payload": {}, "created_at": "yesterday"}',
			"application/json",
			errors.InvalidEnvelope,
			"created_at",
		),
		(b'{"id": "a", "type": "", "payload": {}}', "application/json", errors.InvalidEnvelope, "'type'"),
		(b'{"id": "a", "type": "a"}', "application/json", errors.InvalidEnvelope, "'payload'"),
	],
)
def test_strict_decoding_names_what_is_wrong(
	body: bytes, content_type: str | None, error: type, text: str
) -> None:
	with pytest.raises(error, match=None) as raised:
		decode(body, content_type)
	assert text in str(raised.value)
	assert isinstance(raised.value, errors.InvalidMessage)


def test_oversize_is_refused_before_parsing() -> None:
	with pytest.raises(errors.MessageTooLarge, match="2000 bytes, over the limit of 1000"):
		decode(b"x" * 2000, max_bytes=1000)


def test_a_thousand_levels_of_nesting_is_refused_without_recursion() -> None:
	body = b'{"id": "a", "type": "a", "payload": ' + b"[" * 1000 + b"]" * 1000 + b"}"
	with pytest.raises(errors.NestingTooDeep, match="64 levels"):
		decode(body)


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
	payload = "[" * 500
	message = decode(encode(Message("a", {"text": payload})))
	assert message.payload["text"] == payload


def test_content_type_with_utf8_charset_is_accepted() -> None:
	assert decode(encode(Message("a", {})), "application/json; charset=utf-8").type == "a"
	with pytest.raises(errors.UnsupportedContentType):
		decode(encode(Message("a", {})), "application/json; charset=latin-1")
