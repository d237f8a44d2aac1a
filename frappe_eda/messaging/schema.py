"""Optional JSON Schema per message type, checked on both sides of the wire.

On publish the caller gets ``SchemaViolation`` before anything is stored or sent; on consume the
message is dead-lettered at once (a retry cannot fix a payload). Each problem names its JSON path in
the form a developer would type it: ``items[3].qty: -2 is less than the minimum of 0``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from jsonschema.protocols import Validator

from frappe_eda.messaging.envelope import Message
from frappe_eda.messaging.errors import ConfigurationError, SchemaViolation


class SchemaRegistry:
	def __init__(self, schemas: Mapping[str, Mapping[str, Any]] | None = None) -> None:
		self._validators: dict[str, Validator] = {}
		for message_type, schema in (schemas or {}).items():
			self.register(message_type, schema)

	def register(self, message_type: str, schema: Mapping[str, Any]) -> None:
		validator_class = Draft202012Validator
		try:
			validator_class.check_schema(schema)
		except SchemaError as e:
			raise ConfigurationError(
				f"schema for {message_type!r} is not a valid JSON Schema: {e.message}"
			) from e
		self._validators[message_type] = validator_class(schema)

	def __contains__(self, message_type: str) -> bool:
		return message_type in self._validators

	def validate(self, message: Message) -> None:
		"""Raise ``SchemaViolation`` listing every problem; a type without a schema always passes."""
		validator = self._validators.get(message.type)
		if validator is None:
			return
		problems = [
			f"{json_path(error.absolute_path)}: {error.message}"
			# By path, indexes as numbers (items[2] before items[10]); a type never compares with another.
			for error in sorted(
				validator.iter_errors(message.payload),
				key=lambda e: [(isinstance(part, str), part) for part in e.absolute_path],
			)
		]
		if problems:
			raise SchemaViolation(message.type, problems)


def json_path(path: Any) -> str:
	"""``deque(['items', 3, 'qty'])`` -> ``items[3].qty``; the payload root is ``$``."""
	text = ""
	for part in path:
		if isinstance(part, int):
			text += f"[{part}]"
		else:
			text += f".{part}" if text else str(part)
	return text or "$"
