"""The message envelope and its strict wire format.

A message travels as one self-contained JSON document (id, type, source, correlation, payload, ...),
so the stored body is exactly what can be replayed later. The AMQP properties repeat the id, type and
correlation id for broker tooling, but the body is the source of truth.

Decoding refuses anything it cannot vouch for (wrong content type, oversize, invalid UTF-8 or JSON,
duplicated keys, absurd nesting, a missing id) with an ``InvalidMessage`` subclass that says what was
wrong and where; the consumer dead-letters such input instead of retrying it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from frappe_eda.messaging.errors import (
	DuplicateKey,
	EmptyBody,
	InvalidEncoding,
	InvalidEnvelope,
	InvalidJson,
	MessageTooLarge,
	MissingMessageId,
	NestingTooDeep,
	UnsupportedContentType,
)

CONTENT_TYPE = "application/json"
DEFAULT_MAX_BYTES = 1024 * 1024
DEFAULT_MAX_DEPTH = 64


def new_message_id() -> str:
	return uuid.uuid4().hex


def utcnow() -> datetime:
	return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Message:
	"""One event or command. ``type`` doubles as the routing key unless the publisher says otherwise."""

	type: str
	payload: Any = field(default_factory=dict)
	id: str = field(default_factory=new_message_id)
	source: str = ""
	correlation_id: str | None = None
	causation_id: str | None = None
	created_at: datetime = field(default_factory=utcnow)
	schema_version: int = 1
	headers: Mapping[str, Any] = field(default_factory=dict)

	def caused(self, type: str, payload: Any = None, **changes: Any) -> Message:
		"""A follow-up message that keeps this one's correlation and names it as its cause."""
		return Message(
			type=type,
			payload={} if payload is None else payload,
			source=changes.pop("source", self.source),
			correlation_id=self.correlation_id or self.id,
			causation_id=self.id,
			**changes,
		)

	def with_headers(self, **headers: Any) -> Message:
		return replace(self, headers={**self.headers, **headers})

	def to_dict(self) -> dict[str, Any]:
		return {
			"id": self.id,
			"type": self.type,
			"source": self.source,
			"correlation_id": self.correlation_id,
			"causation_id": self.causation_id,
			"created_at": self.created_at.isoformat(),
			"schema_version": self.schema_version,
			"headers": dict(self.headers),
			"payload": self.payload,
		}


def encode(message: Message) -> bytes:
	"""The exact bytes sent and stored; compact and UTF-8, so sizes are predictable."""
	try:
		text = json.dumps(message.to_dict(), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
		return text.encode("utf-8")
	except (TypeError, ValueError) as e:
		raise InvalidEnvelope(f"payload of {message.type!r} is not JSON-serialisable: {e}") from e


def decode(
	body: bytes,
	content_type: str | None = CONTENT_TYPE,
	max_bytes: int = DEFAULT_MAX_BYTES,
	max_depth: int = DEFAULT_MAX_DEPTH,
) -> Message:
	"""Turn received bytes into a ``Message`` or raise the specific ``InvalidMessage`` subclass."""
	if not _is_json_content_type(content_type):
		raise UnsupportedContentType(content_type)
	if len(body) > max_bytes:
		raise MessageTooLarge(len(body), max_bytes)
	if not body:
		raise EmptyBody()
	try:
		text = body.decode("utf-8")
	except UnicodeDecodeError as e:
		raise InvalidEncoding(e.start, e.reason) from e
	_check_depth(text, max_depth)
	try:
		document = _DECODER.decode(text)
	except json.JSONDecodeError as e:
		raise InvalidJson(e.lineno, e.colno, e.msg) from e
	except RecursionError as e:
		raise NestingTooDeep(max_depth) from e
	return _envelope_from(document)


def _is_json_content_type(content_type: str | None) -> bool:
	if not content_type:
		return False
	media_type, _, params = content_type.partition(";")
	if media_type.strip().lower() != CONTENT_TYPE:
		return False
	charset = params.strip().lower()
	return not charset or charset.replace(" ", "") in ("charset=utf-8", "charset=utf8")


def _check_depth(text: str, limit: int) -> None:
	"""Reject deep nesting before the parser recurses into it (and before Python's stack does)."""
	if text.count("[") + text.count("{") <= limit:
		return
	depth = 0
	in_string = False
	escaped = False
	for char in text:
		if in_string:
			if escaped:
				escaped = False
			elif char == "\\":
				escaped = True
			elif char == '"':
				in_string = False
		elif char == '"':
			in_string = True
		elif char in "[{":
			depth += 1
			if depth > limit:
				raise NestingTooDeep(limit)
		elif char in "]}":
			depth -= 1


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
	document = dict(pairs)
	if len(document) == len(pairs):
		return document
	seen: set[str] = set()
	for key, _value in pairs:
		if key in seen:
			raise DuplicateKey(key, "a JSON object of the body")
		seen.add(key)
	return document  # unreachable: a shorter dict means a repeated key


def _reject_non_json_number(constant: str) -> Any:
	"""Python's json reads NaN and Infinity; JSON has no such numbers and other consumers refuse them."""
	raise InvalidEnvelope(f"body contains {constant}, which is not a JSON number; send a number or null")


# One decoder for every message: ``json.loads`` with hooks builds a new one per call.
_DECODER = json.JSONDecoder(object_pairs_hook=_reject_duplicate_keys, parse_constant=_reject_non_json_number)


def _envelope_from(document: Any) -> Message:
	if not isinstance(document, dict):
		raise InvalidEnvelope(f"body is a JSON {type(document).__name__}; expected an envelope object")
	message_id = document.get("id")
	if message_id is None:
		raise MissingMessageId()
	if not isinstance(message_id, str) or not message_id.strip():
		raise MissingMessageId(f"envelope 'id' is {message_id!r}")
	message_type = document.get("type")
	if not isinstance(message_type, str) or not message_type:
		raise InvalidEnvelope(f"envelope 'type' is {message_type!r}; expected a non-empty string")
	if "payload" not in document:
		raise InvalidEnvelope("envelope has no 'payload'")
	headers = document.get("headers") or {}
	if not isinstance(headers, dict):
		raise InvalidEnvelope(f"envelope 'headers' is a {type(headers).__name__}; expected an object")
	schema_version = document.get("schema_version", 1)
	if not isinstance(schema_version, int) or isinstance(schema_version, bool) or schema_version < 1:
		raise InvalidEnvelope(f"envelope 'schema_version' is {schema_version!r}; expected an integer >= 1")
	for name in ("source", "correlation_id", "causation_id"):
		value = document.get(name)
		if value is not None and not isinstance(value, str):
			raise InvalidEnvelope(f"envelope {name!r} is {value!r}; expected a string")
	return Message(
		type=message_type,
		payload=document["payload"],
		id=message_id,
		source=document.get("source") or "",
		correlation_id=document.get("correlation_id"),
		causation_id=document.get("causation_id"),
		created_at=_parse_timestamp(document.get("created_at")),
		schema_version=schema_version,
		headers=headers,
	)


def _parse_timestamp(value: Any) -> datetime:
	if value is None:
		return utcnow()
	if not isinstance(value, str):
		raise InvalidEnvelope(f"envelope 'created_at' is {value!r}; expected an ISO 8601 string")
	try:
		parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
	except ValueError as e:
		raise InvalidEnvelope(f"envelope 'created_at' is {value!r}: {e}") from e
	return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
