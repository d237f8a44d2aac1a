"""The storable checks against a store that measures what it writes (escaped HTML, as the Frappe store)."""

from __future__ import annotations

import html
from datetime import datetime, timezone

import pytest

from frappe_eda.messaging.errors import UnstorableMessage
from frappe_eda.messaging.storable import (
	MARKER,
	check_message,
	fit_headers,
	fit_text,
	printable,
	storable_record,
)
from frappe_eda.messaging.store import Direction, MessageRecord, Status, StoreLimits
from frappe_eda.stores.memory import MemoryStore


class EscapingStore(MemoryStore):
	limits = StoreLimits(
		key_chars={"message_id": 12, "routing_key": 12, "message_type": 12},
		text_chars={"last_error": 60, "headers": 200},
		min_time=datetime(1000, 1, 1, tzinfo=timezone.utc),
		max_int=1000,
	)

	def stored_length(self, field: str, value: str) -> int:
		return len(html.escape(value))


def _record(**fields: object) -> MessageRecord:
	values: dict = {
		"message_id": "m-1",
		"direction": Direction.INCOMING,
		"status": Status.DEAD,
		"routing_key": "k",
		"body": "{}",
	}
	values.update(fields)
	return MessageRecord(**values)


def test_an_identifier_is_measured_as_the_store_writes_it() -> None:
	store = EscapingStore()
	check_message(_record(message_id="a" * 12), store)
	with pytest.raises(
		UnstorableMessage,
		match=r"message_id is 20 characters as the store writes it \(5 as sent\), over the store.s limit of 12",
	):
		check_message(_record(message_id="<<<<<"), store)


def test_display_text_is_cut_with_a_marker_to_what_the_store_measures() -> None:
	store = EscapingStore()
	fitted = fit_text("last_error", "<b>" * 100, store)
	assert store.stored_length("last_error", fitted) <= 60
	assert fitted.startswith("<b>") and fitted.endswith(
		MARKER.format(count=len("<b>" * 100) - fitted.index(" ["))
	)
	assert fit_text("last_error", "short", store) == "short"


def test_headers_too_long_become_one_header_saying_so() -> None:
	store = EscapingStore()
	fitted = fit_headers({"x-note": "&" * 400}, store)
	assert (
		list(fitted) == ["x-eda-headers-truncated"]
		and "cut by frappe_eda" in fitted["x-eda-headers-truncated"]
	)
	assert fit_headers({"a": 1}, store) == {"a": 1}


def test_text_no_store_can_write_is_made_printable() -> None:
	assert printable("a\ud800b\x00c") == "a\\ud800b\\x00c"
	assert printable("Zoë ✓") == "Zoë ✓"


def test_the_storable_record_replaces_only_what_does_not_fit() -> None:
	store = EscapingStore()
	record = _record(
		message_id="i" * 40,
		routing_key="<key><",
		message_type="ok",
		created_at=datetime(999, 1, 1, tzinfo=timezone.utc),
		attempts=10**6,
		last_error="x" * 500,
	)
	fitted = storable_record(record, store, "fallback")
	assert (fitted.message_id, fitted.routing_key, fitted.message_type, fitted.attempts) == (
		"fallback",
		"",
		"ok",
		0,
	)
	assert fitted.created_at.year >= 2026 and "cut by frappe_eda" in fitted.last_error
	with pytest.raises(UnstorableMessage):
		storable_record(_record(message_id="i" * 40), store, "a fallback that is too long")
