"""Schema problems name the JSON path a developer would type, and every problem is listed."""

from __future__ import annotations

from collections import deque

import pytest

from frappe_eda.messaging.envelope import Message
from frappe_eda.messaging.errors import ConfigurationError, InvalidMessage, SchemaViolation
from frappe_eda.messaging.schema import SchemaRegistry, json_path

ORDER = {
	"type": "object",
	"required": ["name", "items"],
	"additionalProperties": False,
	"properties": {
		"name": {"type": "string"},
		"customer": {
			"type": "object",
			"properties": {"address": {"type": "object", "properties": {"zip": {"type": "string"}}}},
		},
		"items": {
			"type": "array",
			"items": {
				"type": "object",
				"required": ["qty"],
				"properties": {"qty": {"type": "number", "minimum": 0}},
			},
		},
	},
}


def problems(payload: object, schema: dict = ORDER) -> list[str]:
	with pytest.raises(SchemaViolation) as raised:
		SchemaRegistry({"order.created": schema}).validate(Message("order.created", payload))
	return raised.value.problems


def test_the_problem_names_the_item_index_and_field() -> None:
	payload = {"name": "SO-1", "items": [{"qty": 1}, {"qty": 0}, {"qty": 5}, {"qty": -2}]}
	assert problems(payload) == ["items[3].qty: -2 is less than the minimum of 0"]


def test_the_violation_says_which_message_type_broke_its_schema() -> None:
	schemas = SchemaRegistry({"order.created": ORDER})
	with pytest.raises(SchemaViolation) as raised:
		schemas.validate(Message("order.created", {"name": "SO-1", "items": [{"qty": -2}]}))
	assert raised.value.message_type == "order.created"
	assert str(raised.value) == (
		"payload of 'order.created' breaks its schema: items[0].qty: -2 is less than the minimum of 0"
	)
	assert isinstance(raised.value, InvalidMessage)  # dead-lettered at once, never retried


def test_nested_objects_are_joined_with_dots() -> None:
	payload = {"name": "SO-1", "items": [], "customer": {"address": {"zip": 75001}}}
	assert problems(payload) == ["customer.address.zip: 75001 is not of type 'string'"]


def test_problems_of_the_payload_itself_are_at_the_root() -> None:
	assert problems({"name": "SO-1"}) == ["$: 'items' is a required property"]
	assert problems(["not", "an", "object"]) == ["$: ['not', 'an', 'object'] is not of type 'object'"]


def test_every_problem_is_listed_by_path_with_indexes_in_numeric_order() -> None:
	payload = {
		"name": 5,
		"extra": True,
		"items": [{"qty": 1}] * 2 + [{"qty": -1}] + [{"qty": 1}] * 7 + [{"qty": "two"}, {}],
	}
	assert problems(payload) == [
		"$: Additional properties are not allowed ('extra' was unexpected)",
		"items[2].qty: -1 is less than the minimum of 0",
		"items[10].qty: 'two' is not of type 'number'",
		"items[11]: 'qty' is a required property",
		"name: 5 is not of type 'string'",
	]


def test_a_payload_that_fits_passes_and_a_type_without_a_schema_always_passes() -> None:
	schemas = SchemaRegistry({"order.created": ORDER})
	schemas.validate(Message("order.created", {"name": "SO-1", "items": [{"qty": 0}]}))
	schemas.validate(Message("invoice.paid", {"anything": -1}))
	assert "order.created" in schemas and "invoice.paid" not in schemas


def test_a_root_array_payload_starts_with_its_index() -> None:
	schema = {"type": "array", "items": {"type": "integer"}}
	assert problems([1, "x"], schema) == ["[1]: 'x' is not of type 'integer'"]


def test_json_path_spelling() -> None:
	assert json_path(deque()) == "$"
	assert json_path(deque(["items", 3, "qty"])) == "items[3].qty"
	assert json_path(deque([0, "a", 1, 2])) == "[0].a[1][2]"


@pytest.mark.parametrize(
	"schema",
	[{"type": "no-such-type"}, {"minimum": "zero"}, {"required": "name"}, {"properties": []}],
)
def test_an_invalid_schema_is_a_configuration_error_at_registration(schema: dict) -> None:
	with pytest.raises(ConfigurationError, match=r"schema for 'order\.created' is not a valid JSON Schema"):
		SchemaRegistry({"order.created": schema})
	registry = SchemaRegistry()
	with pytest.raises(ConfigurationError):
		registry.register("order.created", schema)
	assert "order.created" not in registry
