from __future__ import annotations

import pytest

from frappe_eda.messaging.envelope import Message
from frappe_eda.messaging.errors import ConfigurationError, SchemaViolation
from frappe_eda.messaging.schema import SchemaRegistry

ORDER = {
	"type": "object",
	"required": ["name", "items"],
	"properties": {
		"name": {"type": "string"},
		"items": {
			"type": "array",
			"items": {"type": "object", "properties": {"qty": {"type": "number", "minimum": 0}}},
		},
	},
}


def test_the_error_names_the_json_path_and_the_rule() -> None:
	schemas = SchemaRegistry({"order.created": ORDER})
	with pytest.raises(SchemaViolation) as raised:
		schemas.validate(
			Message("order.created", {"name": "SO-1", "items": [{"qty": 1}] * 3 + [{"qty": -2}]})
		)
	assert raised.value.problems == ["items[3].qty: -2 is less than the minimum of 0"]


def test_every_problem_is_listed_root_included() -> None:
	schemas = SchemaRegistry({"order.created": ORDER})
	with pytest.raises(SchemaViolation) as raised:
		schemas.validate(Message("order.created", {"name": 5, "items": [{"qty": "two"}]}))
	assert raised.value.problems == [
		"items[0].qty: 'two' is not of type 'number'",
		"name: 5 is not of type 'string'",
	]
	with pytest.raises(SchemaViolation, match=r"\$: 'items' is a required property"):
		schemas.validate(Message("order.created", {"name": "x"}))


def test_types_without_a_schema_always_pass() -> None:
	SchemaRegistry({"order.created": ORDER}).validate(Message("anything.else", {"whatever": -1}))


def test_an_invalid_schema_is_a_configuration_error() -> None:
	with pytest.raises(ConfigurationError, match="not a valid JSON Schema"):
		SchemaRegistry({"x": {"type": "no-such-type"}})
