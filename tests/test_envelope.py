"""The wire format: everything survives a round trip, and bad bytes fail with a class that says why."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta, timezone

import pytest

from frappe_eda.messaging import errors
from frappe_eda.messaging.envelope import DEFAULT_MAX_DEPTH, Message, decode, encode

VALID = {"id": "m-1", "type": "order.created", "payload": {}}


def body(**fields: object) -> bytes:
	return json.dumps({**VALID, **fields}).encode()


def test_every_field_survives_the_round_trip() -> None:
	message = Message(
		type="sales_order.submitted",
		payload={"name": "SO-1", "items": [{"qty": 2.5, "free": None, "ok": True}], "note": "Zoë ✓ 😀"},
		id="0b8f9a",
		source="erp.example.com",
		correlation_id="c-1",
		causation_id="m-0",
		created_at=datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=5, minutes=30))),
		schema_version=3,
		headers={"tenant": "acme", "n": 1},
	)
	decoded = decode(encode(message))
	differences = [
		f.name for f in dataclasses.fields(Message) if getattr(decoded, f.name) != getattr(message, f.name)
	]
	assert differences == []
	assert decoded.created_at.utcoffset() == timedelta(hours=5, minutes=30)


def test_the_body_is_compact_utf8_json() -> None:
	raw = encode(Message("a", {"note": "Zoë"}, id="x"))
	assert "Zoë".encode() in raw and b": " not in raw
	assert set(json.loads(raw)) == {
		"id",
		"type",
		"source",
		"correlation_id",
		"causation_id",
		"created_at",
		"schema_version",
		"headers",
		"payload",
	}


def test_a_payload_that_is_not_json_cannot_be_encoded() -> None:
	with pytest.raises(errors.InvalidEnvelope, match="payload of 'a' is not JSON-serialisable"):
		encode(Message("a", {"when": datetime.now()}))


def test_nan_is_not_json_and_is_neither_sent_nor_accepted() -> None:
	with pytest.raises(errors.InvalidEnvelope, match="not JSON-serialisable"):
		encode(Message("a", {"amount": float("nan")}))
	for constant in ("NaN", "Infinity", "-Infinity"):
		with pytest.raises(errors.MalformedMessage, match=constant):
			decode(b'{"id": "a", "type": "a", "payload": {"amount": ' + constant.encode() + b"}}")


def test_a_created_at_without_zone_is_taken_as_utc_and_z_is_accepted() -> None:
	assert decode(body(created_at="2026-01-02T03:04:05")).created_at == datetime(
		2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc
	)
	assert decode(body(created_at="2026-01-02T03:04:05Z")).created_at.tzinfo is not None


@pytest.mark.parametrize(
	("raw", "content_type", "error", "text"),
	[
		pytest.param(b"{not json", "application/json", errors.InvalidJson, "line 1 column 2", id="not-json"),
		pytest.param(
			b'{\n  "id": "a",\n  "type": ]}', "application/json", errors.InvalidJson, "line 3", id="json-line"
		),
		pytest.param(
			b'{"id": "ok", "type": "\xe9t\xe9"}',
			"application/json",
			errors.InvalidEncoding,
			"at byte 22",
			id="utf8",
		),
		pytest.param(b"", "application/json", errors.EmptyBody, "body is empty", id="empty"),
		pytest.param(
			b'{"type": "a", "payload": {}}',
			"application/json",
			errors.MissingMessageId,
			"no 'id'",
			id="no-id",
		),
		pytest.param(
			b'{"id": 7, "type": "a", "payload": {}}',
			"application/json",
			errors.MissingMessageId,
			"envelope 'id' is 7",
			id="int-id",
		),
		pytest.param(
			b'{"id": null, "type": "a", "payload": {}}',
			"application/json",
			errors.MissingMessageId,
			"no 'id'",
			id="null-id",
		),
		pytest.param(
			b'{"id": "  ", "type": "a", "payload": {}}',
			"application/json",
			errors.MissingMessageId,
			"unique non-empty string id",
			id="blank-id",
		),
		pytest.param(
			b'{"id": "a", "id": "b", "type": "a", "payload": {}}',
			"application/json",
			errors.DuplicateKey,
			"key 'id' appears twice",
			id="duplicate-id",
		),
		pytest.param(
			b'{"id": "a", "type": "a", "payload": {"qty": 1, "qty": 2}}',
			"application/json",
			errors.DuplicateKey,
			"key 'qty' appears twice",
			id="duplicate-nested",
		),
		pytest.param(body(), "text/plain", errors.UnsupportedContentType, "'text/plain'", id="text-plain"),
		pytest.param(
			body(),
			"application/json; charset=latin-1",
			errors.UnsupportedContentType,
			"latin-1",
			id="charset",
		),
		pytest.param(body(), None, errors.UnsupportedContentType, "content type is None", id="no-type"),
		pytest.param(body(), "", errors.UnsupportedContentType, "content type is ''", id="empty-type"),
		pytest.param(b"[1, 2]", "application/json", errors.InvalidEnvelope, "body is a JSON list", id="list"),
		pytest.param(b'"hello"', "application/json", errors.InvalidEnvelope, "body is a JSON str", id="str"),
		pytest.param(b"null", "application/json", errors.InvalidEnvelope, "JSON NoneType", id="null"),
		pytest.param(
			body(created_at="yesterday"),
			"application/json",
			errors.InvalidEnvelope,
			"'created_at' is 'yesterday'",
			id="bad-date",
		),
		pytest.param(
			body(created_at=1700000000),
			"application/json",
			errors.InvalidEnvelope,
			"expected an ISO 8601 string",
			id="numeric-date",
		),
		pytest.param(
			body(type=""), "application/json", errors.InvalidEnvelope, "'type' is ''", id="empty-type-field"
		),
		pytest.param(
			b'{"id": "a", "type": "a"}',
			"application/json",
			errors.InvalidEnvelope,
			"no 'payload'",
			id="no-payload",
		),
		pytest.param(
			body(headers=[1]), "application/json", errors.InvalidEnvelope, "'headers' is a list", id="headers"
		),
		pytest.param(
			body(schema_version=0), "application/json", errors.InvalidEnvelope, "integer >= 1", id="version"
		),
		pytest.param(
			body(schema_version=True), "application/json", errors.InvalidEnvelope, "True", id="bool-version"
		),
		pytest.param(
			body(source=5), "application/json", errors.InvalidEnvelope, "'source' is 5", id="source"
		),
	],
)
def test_strict_decoding_names_what_is_wrong(
	raw: bytes, content_type: str | None, error: type[errors.InvalidMessage], text: str
) -> None:
	with pytest.raises(errors.InvalidMessage) as raised:
		decode(raw, content_type)
	assert type(raw_error := raised.value) is error, f"{type(raw_error).__name__}: {raw_error}"
	assert text in str(raw_error)


def test_invalid_utf8_reports_the_byte_position() -> None:
	with pytest.raises(errors.InvalidEncoding) as raised:
		decode(b'{"id": "\xff"}')
	assert raised.value.position == 8
	assert str(raised.value) == "body is not valid UTF-8 at byte 8: invalid start byte"


def test_oversize_is_refused_before_parsing() -> None:
	with pytest.raises(errors.MessageTooLarge) as raised:
		decode(b"\xff" * 2000, max_bytes=1000)  # not UTF-8 either: size is checked first
	assert (raised.value.size, raised.value.limit) == (2000, 1000)
	assert str(raised.value) == "body is 2000 bytes, over the limit of 1000 bytes"
	assert decode(body(), max_bytes=len(body())).id == "m-1"


def test_a_thousand_levels_of_nesting_is_refused() -> None:
	raw = b'{"id": "a", "type": "a", "payload": ' + b"[" * 1000 + b"]" * 1000 + b"}"
	with pytest.raises(errors.NestingTooDeep, match=f"deeper than {DEFAULT_MAX_DEPTH} levels"):
		decode(raw)
	objects = b'{"id": "a", "type": "a", "payload": ' + b'{"a":' * 1000 + b"1" + b"}" * 1000 + b"}"
	with pytest.raises(errors.NestingTooDeep):
		decode(objects)


def test_nesting_up_to_the_limit_is_accepted() -> None:
	inner = DEFAULT_MAX_DEPTH - 1  # the envelope object is the first level
	raw = b'{"id": "a", "type": "a", "payload": ' + b"[" * inner + b"]" * inner + b"}"
	assert decode(raw).id == "a"
	with pytest.raises(errors.NestingTooDeep):
		decode(b'{"id": "a", "type": "a", "payload": ' + b"[" * (inner + 1) + b"]" * (inner + 1) + b"}")


def test_brackets_inside_strings_are_not_nesting() -> None:
	text = '[{"\\"[' * 300
	assert decode(encode(Message("a", {"text": text}))).payload["text"] == text


@pytest.mark.parametrize(
	"content_type", ["application/json", "Application/JSON; charset=UTF-8", "application/json;charset=utf8"]
)
def test_json_content_types_are_accepted(content_type: str) -> None:
	assert decode(body(), content_type).type == "order.created"


def test_every_decoding_error_is_invalid_input_that_is_never_retried() -> None:
	leaves = [
		errors.MessageTooLarge,
		errors.UnsupportedContentType,
		errors.EmptyBody,
		errors.InvalidEncoding,
		errors.InvalidJson,
		errors.NestingTooDeep,
		errors.DuplicateKey,
		errors.MissingMessageId,
		errors.InvalidEnvelope,
	]
	assert [c for c in leaves if not issubclass(c, errors.InvalidMessage)] == []
