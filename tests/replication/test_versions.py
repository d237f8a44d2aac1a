"""The version a replicated document carries (``modified`` and a rank), read from untrusted input."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from frappe_eda.messaging.errors import InvalidMessage
from frappe_eda.messaging.replication.versions import (
	MAX_TIMESTAMP_TEXT,
	RANK,
	DocVersion,
	InvalidDocumentVersion,
	parse_modified,
)

STAMP = datetime(2026, 12, 1, 10, 4, 5, 123456)
datetimes = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59))
events = st.sampled_from(
	["", "on_update", "after_insert", "on_submit", "on_trash", "after_delete", "after_rename"]
)


@pytest.mark.parametrize(
	"text, expected",
	[
		("2026-12-01 10:04:05.123456", STAMP),
		("2026-12-01 10:04:05", STAMP.replace(microsecond=0)),
		("2026-12-01T10:04:05.123456", STAMP),
		("  2026-12-01 10:04:05.123456\n", STAMP),  # surrounding whitespace is Frappe-harmless
		("2026-12-01 10:04:05.123456+05:30", STAMP),  # a zone is dropped, the wall time kept
		("2026-12-01", datetime(2026, 12, 1)),
	],
)
def test_parse_modified_reads_frappe_timestamps(text: str, expected: datetime) -> None:
	parsed = parse_modified(text)
	assert parsed == expected
	assert parsed.tzinfo is None


def test_parse_modified_keeps_a_datetime_and_drops_its_zone_without_converting() -> None:
	assert parse_modified(STAMP) is STAMP or parse_modified(STAMP) == STAMP
	aware = STAMP.replace(tzinfo=timezone(timedelta(hours=-7)))
	assert parse_modified(aware) == STAMP
	assert parse_modified(aware).tzinfo is None


@pytest.mark.parametrize(
	"value",
	[
		None,
		"",
		" ",
		0,
		1733047445,
		1733047445.5,
		True,
		b"2026-12-01 10:04:05",
		["2026-12-01 10:04:05"],
		{"modified": "2026-12-01 10:04:05"},
		STAMP.date(),
		"yesterday",
		"2026-13-01 10:04:05",
		"2026-02-30 10:04:05",
		"2026-12-01 25:04:05",
		"2026-12-01 10:04:05\x00",
		"\x002026-12-01 10:04:05",
		"2026-12-01 10:04:\udc8005",
		"2026-12-01 10:04:05\udc80",
		"\uff12\uff10\uff12\uff16-12-01 10:04:05",  # fullwidth digits
		"2026-12-01 10:04:05" + " " * (MAX_TIMESTAMP_TEXT - 18),  # valid, but longer than a timestamp
		"9" * (MAX_TIMESTAMP_TEXT + 1),
		"2026-12-01 10:04:05" * 100_000,
	],
)
def test_parse_modified_refuses_what_is_not_a_timestamp(value: object) -> None:
	with pytest.raises(InvalidDocumentVersion) as caught:
		parse_modified(value)
	assert isinstance(caught.value, InvalidMessage)
	assert len(str(caught.value)) < 400  # a huge value is not echoed back whole


def test_a_timestamp_at_the_length_limit_is_read() -> None:
	text = "2026-12-01 10:04:05.123456+05:30"
	padded = text + " " * (MAX_TIMESTAMP_TEXT - len(text))
	assert len(padded) == MAX_TIMESTAMP_TEXT
	assert parse_modified(padded) == STAMP


def test_the_error_names_the_value_and_what_a_timestamp_looks_like() -> None:
	with pytest.raises(InvalidDocumentVersion, match=r"'modified' is 'yesterday'.*2026-12-01 10:04:05"):
		DocVersion.of("yesterday", "on_update")


@pytest.mark.parametrize(
	"event, rank",
	[
		("on_update", 0),
		("after_insert", 0),
		("on_submit", 0),
		("on_cancel", 0),
		("backfill", 0),
		("after_rename", 1),
		("on_trash", 2),
		("after_delete", 2),
		("", 0),
		("no_such_event", 0),
	],
)
def test_the_rank_of_each_event(event: str, rank: int) -> None:
	assert DocVersion.of("2026-12-01 10:04:05", event).rank == rank


def test_rank_table_only_raises_events_that_keep_modified() -> None:
	assert set(RANK) == {"on_trash", "after_delete", "after_rename"}


def test_a_delete_at_the_same_modified_ranks_above_the_update_it_follows() -> None:
	update = DocVersion.of(STAMP, "on_update")
	rename = DocVersion.of(STAMP, "after_rename")
	delete = DocVersion.of(STAMP, "on_trash")
	assert update < rename < delete
	assert DocVersion.of(STAMP, "on_trash") == DocVersion.of(STAMP, "after_delete")
	# but a later save outranks any earlier delete
	assert DocVersion.of(STAMP + timedelta(microseconds=1), "on_update") > delete


def test_text_is_the_microsecond_timestamp_and_the_rank() -> None:
	assert DocVersion(STAMP, 2).text() == "2026-12-01 10:04:05.123456|2"
	assert DocVersion(STAMP.replace(microsecond=0)).text() == "2026-12-01 10:04:05.000000|0"
	assert DocVersion.from_text("2026-12-01 10:04:05.123456|2") == DocVersion(STAMP, 2)
	assert DocVersion.from_text("2026-12-01 10:04:05.123456") == DocVersion(STAMP, 0)


def test_from_text_refuses_a_stored_text_that_is_not_a_version() -> None:
	with pytest.raises(InvalidDocumentVersion):
		DocVersion.from_text("|2")
	with pytest.raises(ValueError):
		DocVersion.from_text("2026-12-01 10:04:05|x")


def test_versions_are_frozen_and_hashable() -> None:
	version = DocVersion(STAMP, 1)
	assert {version, DocVersion(STAMP, 1)} == {version}
	with pytest.raises(AttributeError):
		version.rank = 2  # type: ignore[misc]


@settings(derandomize=True, max_examples=60)
@given(datetimes, events, datetimes, events)
def test_ordering_is_modified_then_rank(a: datetime, event_a: str, b: datetime, event_b: str) -> None:
	va, vb = DocVersion.of(a, event_a), DocVersion.of(b, event_b)
	key_a, key_b = (a, RANK.get(event_a, 0)), (b, RANK.get(event_b, 0))
	assert (va < vb) == (key_a < key_b)
	assert (va == vb) == (key_a == key_b)
	if a == b:
		if event_a in ("on_trash", "after_delete") and event_b not in ("on_trash", "after_delete"):
			assert va > vb


@settings(derandomize=True, max_examples=60)
@given(datetimes, st.sampled_from([0, 1, 2]))
def test_text_round_trips(modified: datetime, rank: int) -> None:
	version = DocVersion(modified, rank)
	assert DocVersion.from_text(version.text()) == version
	assert DocVersion.of(str(modified)) == DocVersion(modified)  # Frappe's own str() of a datetime


@settings(derandomize=True, max_examples=60)
@given(st.one_of(st.text(max_size=60), st.binary(max_size=20), st.integers(), st.floats(), st.none()))
def test_parse_modified_only_ever_raises_invalid_document_version(value: object) -> None:
	try:
		parsed = parse_modified(value)
	except InvalidDocumentVersion:
		return
	assert isinstance(value, str) and len(value) <= MAX_TIMESTAMP_TEXT
	assert isinstance(parsed, datetime) and parsed.tzinfo is None
