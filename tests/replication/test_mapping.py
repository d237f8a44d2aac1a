"""Source fields to local fields: rename, skip, default, constant; child tables; copy_unlisted."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from frappe_eda.messaging.errors import ConfigurationError
from frappe_eda.messaging.replication.mapping import (
	NEVER_COPIED,
	FieldAction,
	FieldMapping,
	FieldRule,
	LocalFields,
	map_document,
)

MAP, SKIP, DEFAULT, CONSTANT = FieldAction.MAP, FieldAction.SKIP, FieldAction.DEFAULT, FieldAction.CONSTANT

ITEM = {
	"doctype": "Item",
	"name": "ITEM-1",
	"owner": "someone@source",
	"creation": "2026-01-01 00:00:00",
	"modified": "2026-12-01 10:04:05.123456",
	"modified_by": "someone@source",
	"docstatus": 1,
	"idx": 0,
	"amended_from": None,
	"_user_tags": ",x",
	"_comments": "[]",
	"item_code": "ITEM-1",
	"item_name": "Bolt",
	"stock_uom": "Kg",
	"secret": "source only",
	"barcodes": [
		{"name": "row-1", "parent": "ITEM-1", "parentfield": "barcodes", "parenttype": "Item", "idx": 1}
		| {"doctype": "Item Barcode", "barcode": "123", "barcode_type": "EAN"},
		{"name": "row-2", "idx": 2, "barcode": "456", "barcode_type": ""},
	],
}
LOCAL = LocalFields(
	{"item_code", "item_name", "stock_uom", "description", "barcodes", "owner", "name"},
	{"barcodes": {"barcode", "barcode_type", "name", "idx"}},
)


def mapped(
	*rules: FieldRule, copy_unlisted: bool = True, payload: Any = None, local: Any = None
) -> dict[str, Any]:
	return map_document(
		ITEM if payload is None else payload, FieldMapping(rules, copy_unlisted), local or LOCAL
	)


def test_without_rules_fields_the_local_doctype_has_are_copied() -> None:
	assert mapped() == {
		"item_code": "ITEM-1",
		"item_name": "Bolt",
		"stock_uom": "Kg",
		"barcodes": [{"barcode": "123", "barcode_type": "EAN"}, {"barcode": "456", "barcode_type": ""}],
	}


def test_standard_and_underscore_fields_are_never_copied_even_when_local_has_them() -> None:
	local = LocalFields(
		set(ITEM) | {"_user_tags", "_comments"}, {"barcodes": set(NEVER_COPIED) | {"barcode"}}
	)
	values = mapped(local=local)
	assert not (set(values) & (NEVER_COPIED | {"_user_tags", "_comments"}))
	assert values["secret"] == "source only"
	assert all(set(row) == {"barcode"} for row in values["barcodes"])


def test_the_payload_is_not_modified() -> None:
	before = repr(ITEM)
	mapped(FieldRule(MAP, "item_name", "title"), FieldRule(CONSTANT, target="stock_uom", value="Nos"))
	assert repr(ITEM) == before


def test_map_renames() -> None:
	local = LocalFields({"title", "item_name", "item_code"})
	values = mapped(FieldRule(MAP, "item_name", "title"), local=local)
	assert values == {"title": "Bolt", "item_code": "ITEM-1"}  # not also under its own name


def test_map_can_take_a_standard_field_when_named() -> None:
	local = LocalFields({"source_name", "source_owner"})
	values = mapped(
		FieldRule(MAP, "name", "source_name"), FieldRule(MAP, "owner", "source_owner"), local=local
	)
	assert values == {"source_name": "ITEM-1", "source_owner": "someone@source"}


def test_map_to_a_field_the_local_doctype_lacks_is_dropped() -> None:
	assert "nowhere" not in mapped(FieldRule(MAP, "item_name", "nowhere"))


def test_map_of_a_field_the_source_does_not_send_leaves_the_target_alone() -> None:
	values = mapped(FieldRule(MAP, "not_sent", "description"))
	assert "description" not in values


def test_map_copies_null_and_falsy_values() -> None:
	payload = {"a": None, "b": 0, "c": "", "d": False}
	local = LocalFields({"A", "B", "C", "D"})
	rules = [FieldRule(MAP, k, k.upper()) for k in "abcd"]
	assert mapped(*rules, payload=payload, local=local) == {"A": None, "B": 0, "C": "", "D": False}


def test_skip() -> None:
	values = mapped(FieldRule(SKIP, "item_name"))
	assert "item_name" not in values and values["item_code"] == "ITEM-1"


def test_constant_wins_over_whatever_the_source_sends() -> None:
	assert mapped(FieldRule(CONSTANT, "stock_uom", value="Nos"))["stock_uom"] == "Nos"
	assert mapped(FieldRule(CONSTANT, target="description", value="from head"))["description"] == "from head"
	assert mapped(FieldRule(CONSTANT, target="description", value=None))["description"] is None
	assert "elsewhere" not in mapped(FieldRule(CONSTANT, target="elsewhere", value=1))


def test_constant_wins_over_map_and_default_to_the_same_target() -> None:
	for rules in (
		(FieldRule(MAP, "item_name", "description"), FieldRule(CONSTANT, target="description", value="K")),
		(FieldRule(CONSTANT, target="description", value="K"), FieldRule(MAP, "item_name", "description")),
		(
			FieldRule(DEFAULT, "item_name", "description", "D"),
			FieldRule(CONSTANT, target="description", value="K"),
		),
	):
		assert mapped(*rules)["description"] == "K", rules


@pytest.mark.parametrize("sent", [None, "", "missing"])
@pytest.mark.parametrize("copy_unlisted", [True, False])
def test_default_fills_in_when_the_source_sends_nothing(sent: Any, copy_unlisted: bool) -> None:
	payload = {} if sent == "missing" else {"stock_uom": sent}
	values = mapped(
		FieldRule(DEFAULT, "stock_uom", value="Nos"), copy_unlisted=copy_unlisted, payload=payload
	)
	assert values == {"stock_uom": "Nos"}


@pytest.mark.parametrize("sent", ["Kg", 0, False, "0"])
@pytest.mark.parametrize("copy_unlisted", [True, False])
def test_default_keeps_what_the_source_sends(sent: Any, copy_unlisted: bool) -> None:
	payload = {"stock_uom": sent}
	values = mapped(
		FieldRule(DEFAULT, "stock_uom", value="Nos"), copy_unlisted=copy_unlisted, payload=payload
	)
	assert values == {"stock_uom": sent}


@pytest.mark.parametrize("copy_unlisted", [True, False])
def test_default_with_a_rename_maps_the_source_into_the_target(copy_unlisted: bool) -> None:
	local = LocalFields({"uom", "stock_uom"})
	rule = FieldRule(DEFAULT, "stock_uom", "uom", "Nos")
	assert mapped(rule, copy_unlisted=copy_unlisted, local=local) == {"uom": "Kg"}
	assert mapped(rule, copy_unlisted=copy_unlisted, local=local, payload={"stock_uom": ""}) == {"uom": "Nos"}
	# the source's value of the renamed field wins over a same-named field the payload also has
	both = {"stock_uom": "Kg", "uom": "Box"}
	assert mapped(rule, copy_unlisted=copy_unlisted, local=local, payload=both) == {"uom": "Kg"}


def test_default_with_only_a_target_is_a_local_default() -> None:
	rule = FieldRule(DEFAULT, target="description", value="none given")
	assert mapped(rule)["description"] == "none given"
	assert mapped(rule, payload={"description": "sent"}) == {"description": "sent"}
	assert mapped(rule, payload={"description": "sent"}, copy_unlisted=False) == {"description": "none given"}


def test_default_does_not_read_a_standard_field_it_only_targets() -> None:
	local = LocalFields({"owner"})
	rule = FieldRule(DEFAULT, target="owner", value="Administrator")
	assert mapped(rule, local=local) == {"owner": "Administrator"}


def test_default_fills_a_target_a_map_rule_left_empty_but_keeps_a_mapped_value() -> None:
	rules = (FieldRule(MAP, "empty", "description"), FieldRule(DEFAULT, target="description", value="D"))
	assert mapped(*rules, payload={"empty": ""})["description"] == "D"
	assert mapped(*rules, payload={"empty": "x"})["description"] == "x"
	rules = (FieldRule(MAP, "item_name", "description"), FieldRule(DEFAULT, "other", "description", "D"))
	assert mapped(*rules, payload={"item_name": "Bolt", "other": "O"})["description"] == "Bolt"


def test_copy_unlisted_false_copies_only_what_rules_name() -> None:
	values = mapped(FieldRule(MAP, "item_name"), copy_unlisted=False)
	assert values == {"item_name": "Bolt"}


def test_a_list_is_never_a_plain_field_value() -> None:
	payload = {"item_name": ["not", "a", "field"], "tags": []}
	local = LocalFields({"item_name", "tags", "title"})
	assert mapped(payload=payload, local=local) == {}
	assert mapped(FieldRule(MAP, "item_name", "title"), payload=payload, local=local) == {}


def test_dicts_and_other_values_are_passed_as_they_are() -> None:
	payload = {"meta": {"k": 1}, "qty": 1.5, "big": 10**30}
	local = LocalFields({"meta", "qty", "big"})
	assert mapped(payload=payload, local=local) == payload


# child tables


def test_rules_inside_a_table_apply_to_each_row() -> None:
	local = LocalFields({"barcodes"}, {"barcodes": {"code", "barcode_type"}})
	values = mapped(
		FieldRule(MAP, "barcode", "code", table="barcodes"),
		FieldRule(DEFAULT, "barcode_type", value="UPC", table="barcodes"),
		local=local,
	)
	assert values["barcodes"] == [
		{"code": "123", "barcode_type": "EAN"},
		{"code": "456", "barcode_type": "UPC"},
	]


def test_top_level_rules_do_not_reach_into_rows_and_row_rules_not_the_top() -> None:
	local = LocalFields({"barcode", "barcodes"}, {"barcodes": {"barcode"}})
	payload = {"barcode": "top", "barcodes": [{"barcode": "row"}]}
	values = mapped(
		FieldRule(CONSTANT, "barcode", value="TOP"),
		FieldRule(SKIP, "barcode", table="barcodes"),
		payload=payload,
		local=local,
	)
	assert values == {"barcode": "TOP", "barcodes": [{}]}


def test_a_table_renamed_by_a_top_level_rule_keeps_its_row_rules_by_source_name() -> None:
	local = LocalFields({"codes"}, {"codes": {"code", "barcode_type"}})
	values = mapped(
		FieldRule(MAP, "barcodes", "codes"),
		FieldRule(MAP, "barcode", "code", table="barcodes"),
		local=local,
	)
	assert values == {"codes": [{"code": "123", "barcode_type": "EAN"}, {"code": "456", "barcode_type": ""}]}


def test_a_skipped_table_is_not_copied() -> None:
	assert "barcodes" not in mapped(FieldRule(SKIP, "barcodes"))


def test_a_table_the_local_doctype_lacks_is_dropped() -> None:
	assert "barcodes" not in mapped(local=LocalFields({"item_code", "barcodes"}))
	assert "codes" not in mapped(FieldRule(MAP, "barcodes", "codes"), local=LocalFields({"codes"}))


def test_copy_unlisted_false_drops_an_unnamed_table() -> None:
	assert mapped(FieldRule(MAP, "item_code"), copy_unlisted=False) == {"item_code": "ITEM-1"}


def test_copy_unlisted_false_copies_a_table_named_by_a_top_level_rule_with_only_row_rules() -> None:
	values = mapped(
		FieldRule(MAP, "barcodes"), FieldRule(MAP, "barcode", table="barcodes"), copy_unlisted=False
	)
	assert values == {"barcodes": [{"barcode": "123"}, {"barcode": "456"}]}
	values = mapped(FieldRule(MAP, "barcodes"), copy_unlisted=False)
	assert values == {"barcodes": [{}, {}]}  # rows kept (so the count matches), none of their fields named


def test_copy_unlisted_false_copies_a_table_its_row_rules_name() -> None:
	values = mapped(FieldRule(MAP, "barcode", table="barcodes"), copy_unlisted=False)
	assert values == {"barcodes": [{"barcode": "123"}, {"barcode": "456"}]}


def test_rows_that_are_not_objects_are_dropped_and_empty_tables_kept() -> None:
	payload = {"barcodes": [{"barcode": "1"}, "junk", None, 3, ["x"], {"barcode": "2"}]}
	assert mapped(payload=payload)["barcodes"] == [{"barcode": "1"}, {"barcode": "2"}]
	assert mapped(payload={"barcodes": []}) == {"barcodes": []}


def test_a_non_list_value_under_a_table_name_is_not_a_table() -> None:
	for junk in ("123", {"barcode": "1"}, None, 5):
		assert "barcodes" not in mapped(payload={"barcodes": junk}, local=LocalFields(set(), LOCAL.tables))


def test_nested_lists_inside_rows_are_not_copied() -> None:
	payload = {"barcodes": [{"barcode": "1", "barcode_type": [{"deeper": 1}]}]}
	assert mapped(payload=payload)["barcodes"] == [{"barcode": "1"}]


# rules


@pytest.mark.parametrize(
	"rule",
	[
		dict(action=MAP),
		dict(action=SKIP),
		dict(action=MAP, target="x"),
		dict(action=DEFAULT, value=1),
		dict(action=CONSTANT, value=1),
	],
)
def test_a_rule_without_its_field_is_a_configuration_error(rule: dict[str, Any]) -> None:
	with pytest.raises(ConfigurationError):
		FieldRule(**rule)


def test_rules_for_selects_by_table() -> None:
	rules = (FieldRule(MAP, "a"), FieldRule(MAP, "b", table="t"), FieldRule(SKIP, "c", table="t"))
	mapping = FieldMapping(rules)
	assert mapping.rules_for("") == [rules[0]]
	assert mapping.rules_for("t") == list(rules[1:])
	assert mapping.rules_for("u") == []
	assert FieldRule(MAP, "a", "b").target_field == "b" and FieldRule(MAP, "a").target_field == "a"


# properties

field_names = st.text(st.characters(exclude_categories=()), min_size=1, max_size=12)
values = st.one_of(st.none(), st.text(max_size=5), st.integers(), st.booleans(), st.floats(allow_nan=False))
payloads = st.dictionaries(
	field_names, st.one_of(values, st.lists(st.dictionaries(field_names, values), max_size=3))
)


@settings(derandomize=True, max_examples=60)
@given(payloads, st.sets(field_names), st.booleans())
def test_only_local_fields_come_out_and_never_standard_ones(
	payload: dict[str, Any], local_fields: set[str], copy_unlisted: bool
) -> None:
	tables = {k: set(local_fields) for k, val in payload.items() if isinstance(val, list)}
	local = LocalFields(local_fields | set(tables), tables)
	values = map_document(payload, FieldMapping((), copy_unlisted), local)
	for key, value in values.items():
		assert key not in NEVER_COPIED and not key.startswith("_")
		if isinstance(value, list):
			assert key in tables
			for row in value:
				assert set(row) <= local_fields
				assert not any(k in NEVER_COPIED or k.startswith("_") for k in row)
		else:
			assert key in local_fields and payload[key] == value
	if not copy_unlisted:
		assert values == {}
