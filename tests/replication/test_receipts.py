"""Receipts come from other servers: every field is checked and cut before it is stored."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from frappe_eda.messaging.errors import PermanentFailure
from frappe_eda.messaging.replication.receipts import (
	MAX_DETAIL,
	MAX_NAME,
	RECEIPT_TYPE,
	InvalidReceipt,
	Receipt,
	ReceiptOutcome,
	parse_receipt,
)

GOOD = {
	"message_id": "0190c3a4-7e5f-7b1d-9c2a-1f0e2d3c4b5a",
	"server": "wh1.example.com",
	"subscription": "Items from head",
	"outcome": "Applied",
	"detail": "",
	"document": "ITEM-1",
	"at": "2026-12-01T10:04:05.123456+00:00",
}


def receipt(**changes: Any) -> dict[str, Any]:
	payload = dict(GOOD)
	for key, value in changes.items():
		if value is ...:
			payload.pop(key)
		else:
			payload[key] = value
	return payload


def test_the_receipt_type() -> None:
	assert RECEIPT_TYPE == "eda.receipt"


def test_a_receipt_round_trips_through_its_payload() -> None:
	sent = Receipt(
		message_id="m1",
		server="wh1",
		subscription="Items",
		outcome=ReceiptOutcome.REFUSED,
		detail="missing Item ITEM-9",
		document="ITEM-1",
		at="2026-12-01T10:04:05+00:00",
	)
	payload = sent.payload()
	assert payload["outcome"] == "Refused"
	assert parse_receipt(payload) == sent


@pytest.mark.parametrize("outcome", list(ReceiptOutcome))
def test_each_outcome_is_read(outcome: ReceiptOutcome) -> None:
	assert parse_receipt(receipt(outcome=outcome.value)).outcome is outcome


def test_the_payload_cuts_a_long_detail() -> None:
	sent = Receipt("m", "s", "sub", ReceiptOutcome.REFUSED, detail="d" * 5_000)
	assert len(sent.payload()["detail"]) == MAX_DETAIL


def test_optional_fields_may_be_missing_or_null() -> None:
	parsed = parse_receipt(
		{"message_id": "m", "server": "s", "outcome": "Skipped", "detail": None, "document": None, "at": None}
	)
	assert parsed == Receipt("m", "s", "", ReceiptOutcome.SKIPPED)


def test_unknown_keys_are_ignored() -> None:
	assert parse_receipt(receipt(extra={"x": [1]}, __proto__="x")) == parse_receipt(GOOD)


@pytest.mark.parametrize("payload", [None, "Applied", 5, ["m", "s"], ("m",), b"{}", 1.5, True])
def test_a_payload_that_is_not_an_object_is_refused(payload: Any) -> None:
	with pytest.raises(InvalidReceipt, match="not an object") as caught:
		parse_receipt(payload)
	assert isinstance(caught.value, PermanentFailure)


@pytest.mark.parametrize("key", list(GOOD))
@pytest.mark.parametrize("value", [5, 1.5, True, ["x"], {"x": "y"}, b"x"])
def test_a_field_that_is_not_text_is_refused(key: str, value: Any) -> None:
	with pytest.raises(InvalidReceipt, match=f"{key} is a"):
		parse_receipt(receipt(**{key: value}))


@pytest.mark.parametrize("key", ["message_id", "server"])
@pytest.mark.parametrize("value", [..., None, ""])
def test_a_receipt_needs_its_message_id_and_server(key: str, value: Any) -> None:
	with pytest.raises(InvalidReceipt, match="needs the message_id"):
		parse_receipt(receipt(**{key: value}))


@pytest.mark.parametrize(
	"outcome", [..., "", "applied", "APPLIED", " Applied", "Done", "Applied\x00", "x" * 10_000]
)
def test_an_unknown_outcome_is_refused(outcome: Any) -> None:
	with pytest.raises(InvalidReceipt, match="outcome") as caught:
		parse_receipt(receipt(outcome=outcome))
	assert len(str(caught.value)) < 300


@pytest.mark.parametrize("at", ["yesterday", "2026-13-01", "10:04", "2026-12-01T10:04:05\udc80", "\x00"])
def test_a_time_that_is_not_iso_is_refused(at: str) -> None:
	with pytest.raises(InvalidReceipt, match="ISO timestamp"):
		parse_receipt(receipt(at=at))


def test_a_long_time_is_cut_before_it_is_read() -> None:
	with pytest.raises(InvalidReceipt) as caught:
		parse_receipt(receipt(at="2026-12-01T10:04:05" + "9" * 1_000_000))
	assert len(str(caught.value)) < 200


def test_fields_are_cut_to_size() -> None:
	parsed = parse_receipt(
		receipt(
			message_id="m" * 10_000,
			server="s" * 10_000,
			subscription="u" * 10_000,
			document="d" * 10_000,
			detail="x" * 1_000_000,
		)
	)
	assert parsed.message_id == "m" * MAX_NAME
	assert parsed.server == "s" * MAX_NAME
	assert parsed.subscription == "u" * MAX_NAME
	assert parsed.document == "d" * MAX_NAME
	assert parsed.detail == "x" * MAX_DETAIL


def test_nul_and_lone_surrogates_become_storable_text() -> None:
	parsed = parse_receipt(
		receipt(server="wh\x001", detail="bad \udc80 byte and \x00", document="\ud800", subscription="ok ✓")
	)
	assert parsed.server == "wh\\x001"
	assert parsed.detail == "bad \\udc80 byte and \\x00"
	assert parsed.document == "\\ud800"
	assert parsed.subscription == "ok ✓"
	for text in (parsed.server, parsed.detail, parsed.document):
		text.encode("utf-8")
		assert "\x00" not in text


def test_a_message_id_of_only_nul_is_still_an_id_once_escaped() -> None:
	assert parse_receipt(receipt(message_id="\x00")).message_id == "\\x00"


json_values = st.recursive(
	st.none()
	| st.booleans()
	| st.integers()
	| st.floats()
	| st.text(st.characters(exclude_categories=()), max_size=30),
	lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
	max_leaves=8,
)
fields = st.sampled_from(list(GOOD))


@settings(derandomize=True, max_examples=60)
@given(
	st.dictionaries(fields, json_values | st.sampled_from([o.value for o in ReceiptOutcome])), st.booleans()
)
def test_any_payload_is_a_storable_receipt_or_an_invalid_receipt(changes: dict[str, Any], base: bool) -> None:
	payload = {**GOOD, **changes} if base else changes
	try:
		parsed = parse_receipt(payload)
	except InvalidReceipt:
		return
	for name in ("message_id", "server", "subscription", "document", "at", "detail"):
		text = getattr(parsed, name)
		assert isinstance(text, str)
		text.encode("utf-8")
		assert "\x00" not in text
		assert len(text) <= (MAX_DETAIL if name == "detail" else MAX_NAME)
	assert parsed.message_id and parsed.server
	assert isinstance(parsed.outcome, ReceiptOutcome)
