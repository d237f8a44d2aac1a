"""Block digests for reconciliation: equal digests iff equal contents, and the cost is what differs.

Measured by ``test_reconciling_100k_documents_with_10_out_of_step`` (deterministic counting, not timing):
100,000 documents, 10 out of step (4 changed, 3 missing here, 3 extra here), 256 buckets:

    digest_to_wire as JSON 8594 bytes (7827 compact); 10 differing buckets -> 10 listings of 3958 names
    in all; 7 documents sent again, 3 gone; 18 messages from the source
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from frappe_eda.messaging.replication.digests import (
	DEFAULT_BUCKETS,
	MAX_BUCKETS,
	BucketDigest,
	bucket_of,
	compare_listing,
	differing_buckets,
	digest,
	digest_from_wire,
	digest_to_wire,
	normalized_modified,
)
from frappe_eda.messaging.replication.versions import InvalidDocumentVersion

T0 = datetime(2026, 12, 1, 10, 0, 0)


def items(docs: Mapping[str, Any]) -> list[tuple[str, Any]]:
	return list(docs.items())


# normalization


@pytest.mark.parametrize(
	"value",
	[
		datetime(2026, 12, 1, 10, 4, 5),
		"2026-12-01 10:04:05",
		"2026-12-01 10:04:05.000000",
		"2026-12-01T10:04:05",
		" 2026-12-01 10:04:05 ",
		datetime(2026, 12, 1, 10, 4, 5, tzinfo=timezone(timedelta(hours=3))),
		"2026-12-01 10:04:05+03:00",
	],
)
def test_normalized_modified_is_one_text_whatever_the_database_returned(value: Any) -> None:
	assert normalized_modified(value) == "2026-12-01 10:04:05.000000"


@pytest.mark.parametrize(
	"value", [None, "", 0, "garbage", "2026-12-01 10:04:05\x00", "2026-12-01\udc80", ["x"]]
)
def test_normalized_modified_refuses_what_is_not_a_timestamp(value: Any) -> None:
	with pytest.raises(InvalidDocumentVersion):
		normalized_modified(value)


# buckets


def test_bucket_of_is_stable_and_in_range() -> None:
	assert bucket_of("ITEM-1", 256) == bucket_of("ITEM-1", 256)
	for buckets in (1, 2, 7, 256, MAX_BUCKETS):
		for name in ("", "ITEM-1", "é", "\udc80", "\x00", "x" * 100_000):
			assert 0 <= bucket_of(name, buckets) < buckets
	assert {bucket_of(f"ITEM-{i}", 256) for i in range(5_000)} == set(range(256))  # every bucket used


def test_empty_buckets_are_left_out() -> None:
	assert digest([]) == {}
	result = digest([("ITEM-1", T0)])
	assert list(result) == [bucket_of("ITEM-1", DEFAULT_BUCKETS)]
	assert result[bucket_of("ITEM-1", DEFAULT_BUCKETS)].count == 1


def test_one_bucket_holds_everything() -> None:
	result = digest([(f"I-{i}", T0) for i in range(10)], buckets=1)
	assert list(result) == [0] and result[0].count == 10


@pytest.mark.parametrize("buckets", [0, -1, MAX_BUCKETS + 1, 10**9, 2.0, True, "256"])
def test_a_number_of_buckets_outside_1_to_max_is_refused(buckets: Any) -> None:
	with pytest.raises(ValueError, match="number of buckets"):
		digest([("ITEM-1", T0)], buckets=buckets)
	with pytest.raises(ValueError, match="number of buckets"):
		digest_from_wire({}, buckets)


def test_the_order_of_the_items_does_not_matter() -> None:
	docs = [(f"I-{i}", T0 + timedelta(seconds=i)) for i in range(500)]
	assert digest(docs) == digest(reversed(docs))


def test_a_changed_modified_changes_its_bucket_only() -> None:
	docs = {f"I-{i}": T0 + timedelta(seconds=i) for i in range(1_000)}
	changed = dict(docs, **{"I-7": T0 + timedelta(microseconds=1)})
	assert differing_buckets(digest(items(docs)), digest(items(changed))) == [
		bucket_of("I-7", DEFAULT_BUCKETS)
	]


def test_name_and_modified_do_not_run_into_each_other() -> None:
	stamp = normalized_modified(T0)
	assert digest([("a\x1f" + stamp, T0)]) != digest([("a", T0)])
	assert digest([("ab", T0)]) != digest([("a", T0)])


def test_a_lone_surrogate_is_not_the_text_of_its_escape() -> None:
	"""Both would be the same bytes with ``backslashreplace``: a digest that misses a difference."""
	assert digest([("\udc80", T0)], buckets=1) != digest([("\\udc80", T0)], buckets=1)
	assert digest([("\udc80", T0)]) == digest([("\udc80", "2026-12-01 10:00:00")])


def test_duplicates_cancel_in_the_hash_but_not_in_the_count() -> None:
	"""Names are unique in a table; the count still tells a doubled row from a missing one."""
	one = digest([("I-1", T0)], buckets=1)
	doubled = digest([("I-1", T0), ("I-1", T0)], buckets=1)
	assert doubled[0].hash == 0 and doubled[0].count == 2 and doubled != one


def test_a_bad_modified_in_the_input_is_refused() -> None:
	with pytest.raises(InvalidDocumentVersion):
		digest([("I-1", T0), ("I-2", "not a time")])


# wire


def test_wire_format() -> None:
	result = {3: BucketDigest(2, 0xABC), 1: BucketDigest(1, 2**64 - 1)}
	wire = digest_to_wire(result)
	assert wire == {"1": [1, "ffffffffffffffff"], "3": [2, "0000000000000abc"]}
	assert list(wire) == ["1", "3"]
	assert digest_from_wire(json.loads(json.dumps(wire)), 256) == result


def test_a_real_digest_round_trips_through_json() -> None:
	result = digest((f"I-{i}", T0 + timedelta(seconds=i)) for i in range(3_000))
	assert digest_from_wire(json.loads(json.dumps(digest_to_wire(result))), DEFAULT_BUCKETS) == result


def test_upper_case_and_short_hex_are_read() -> None:
	assert digest_from_wire({"0": [1, "ABC"]}, 4) == {0: BucketDigest(1, 0xABC)}
	assert digest_from_wire({"0": [0, "0"]}, 4) == {0: BucketDigest(0, 0)}


@pytest.mark.parametrize(
	"value",
	[
		None,
		[],
		[[1, "0"]],
		"{}",
		5,
		{str(i): [1, "0"] for i in range(257)},  # more entries than buckets
		{"256": [1, "0"]},
		{"-1": [1, "0"]},
		{"abc": [1, "0"]},
		{"": [1, "0"]},
		{" 1": [1, "0"]},
		{"1 ": [1, "0"]},
		{"1_0": [1, "0"]},  # int() reads this as 10
		{"\u0661": [1, "0"]},  # an Arabic-Indic digit, int() reads it as 1
		{"1.0": [1, "0"]},
		{"1e2": [1, "0"]},
		{"0x1": [1, "0"]},
		{"9" * 10_000: [1, "0"]},
		{None: [1, "0"]},
		{1.5: [1, "0"]},
		{(1,): [1, "0"]},
		{"01": [1, "0"], "1": [2, "0"]},  # one bucket given twice
		{"1": None},
		{"1": "1,0"},
		{"1": {"count": 1, "hash": "0"}},
		{"1": (1, "0")},
		{"1": []},
		{"1": [1]},
		{"1": [1, "0", "extra"]},
		{"1": ["1", "0"]},
		{"1": [1.0, "0"]},
		{"1": [True, "0"]},
		{"1": [None, "0"]},
		{"1": [-1, "0"]},
		{"1": [1, 0]},
		{"1": [1, None]},
		{"1": [1, ""]},
		{"1": [1, "xyz"]},
		{"1": [1, "-1"]},
		{"1": [1, "0x10"]},
		{"1": [1, " ff"]},
		{"1": [1, "ff\n"]},
		{"1": [1, "f_f"]},
		{"1": [1, "f" * 17]},  # more than 64 bits
		{"1": [1, "f" * 1_000_000]},
		{"1": [1, "\udc80"]},
		{"1": [1, "\x00"]},
		{"1": [1, "٣"]},
	],
)
def test_anything_else_from_the_wire_is_a_value_error(value: Any) -> None:
	with pytest.raises(ValueError) as caught:
		digest_from_wire(value, DEFAULT_BUCKETS)
	assert len(str(caught.value)) < 200


@settings(derandomize=True, max_examples=60)
@given(
	st.recursive(
		st.none()
		| st.booleans()
		| st.integers()
		| st.floats()
		| st.text(st.characters(exclude_categories=())),
		lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
		max_leaves=10,
	)
)
def test_digest_from_wire_raises_only_value_error(value: Any) -> None:
	try:
		result = digest_from_wire(value, 16)
	except ValueError:
		return
	for bucket, entry in result.items():
		assert 0 <= bucket < 16 and entry.count >= 0 and 0 <= entry.hash < 2**64


# differing buckets and listings


def test_differing_buckets() -> None:
	a = {1: BucketDigest(1, 5), 2: BucketDigest(2, 6), 4: BucketDigest(1, 1)}
	b = {1: BucketDigest(1, 5), 2: BucketDigest(2, 7), 3: BucketDigest(1, 1)}
	assert differing_buckets(a, b) == [2, 3, 4]
	assert differing_buckets(a, a) == []
	assert differing_buckets({}, {}) == []
	assert differing_buckets(a, {}) == [1, 2, 4]
	assert differing_buckets({1: BucketDigest(1, 5)}, {1: BucketDigest(2, 5)}) == [1]


def test_compare_listing() -> None:
	source = {"A": "2026-12-01 10:00:00", "B": T0, "C": "2026-12-01 10:00:00.000001", "D": T0}
	local = {"A": T0, "B": "2026-12-01T10:00:00.000000", "C": T0, "E": T0, "F": T0}
	assert compare_listing(source, local) == (["C", "D"], ["E", "F"])
	assert compare_listing({}, {}) == ([], [])
	assert compare_listing(source, {}) == (["A", "B", "C", "D"], [])
	assert compare_listing({}, local) == ([], ["A", "B", "C", "E", "F"])


def test_compare_listing_refuses_a_listing_with_a_bad_modified() -> None:
	for junk in (None, 5, "x", "9" * 1_000, "2026-12-01\x00", ["2026-12-01"]):
		with pytest.raises(InvalidDocumentVersion):
			compare_listing({"A": junk}, {"A": T0})


def test_compare_listing_does_not_parse_what_only_one_side_has() -> None:
	assert compare_listing({"A": "junk"}, {}) == (["A"], [])
	assert compare_listing({}, {"A": "junk"}) == ([], ["A"])


# properties

names = st.text(st.characters(exclude_categories=()), min_size=1, max_size=10)
stamps = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1))
documents = st.dictionaries(names, stamps, max_size=40)


def spelled(stamp: datetime, how: int) -> Any:
	"""One ``modified`` as one or other database driver may return it."""
	return [
		stamp,
		str(stamp),
		stamp.isoformat(),
		stamp.isoformat(timespec="microseconds"),
		stamp.replace(tzinfo=timezone.utc),
	][how]


@st.composite
def two_sides(draw: st.DrawFn) -> tuple[dict[str, datetime], dict[str, datetime], dict[str, Any]]:
	"""A source's documents, the subscriber's (the same with some changes), and those spelled some other way."""
	source = draw(documents)
	local = dict(source)
	for _ in range(draw(st.integers(0, 4))):
		kind = draw(st.sampled_from(["change", "touch", "drop", "add"]))
		if kind == "add" or not local:
			local[draw(names)] = draw(stamps)
			continue
		name = draw(st.sampled_from(sorted(local)))
		if kind == "drop":
			del local[name]
		elif kind == "touch":
			local[name] = local[name]  # the same value again: no change
		else:
			local[name] = local[name] + timedelta(microseconds=draw(st.integers(1, 10**9)))
	respelled = {name: spelled(stamp, draw(st.integers(0, 4))) for name, stamp in local.items()}
	return source, local, respelled


@settings(derandomize=True, max_examples=60)
@given(two_sides(), st.sampled_from([1, 4, 256]))
def test_digests_are_equal_iff_the_documents_are(
	sides: tuple[dict[str, datetime], dict[str, datetime], dict[str, Any]], buckets: int
) -> None:
	source, local, respelled = sides
	theirs, ours = digest(items(source), buckets), digest(items(respelled), buckets)
	assert (theirs == ours) == (source == local)
	assert (differing_buckets(theirs, ours) == []) == (source == local)
	assert differing_buckets(theirs, digest(items(source), buckets)) == []


@settings(derandomize=True, max_examples=60)
@given(two_sides())
def test_compare_listing_finds_exactly_what_is_out_of_step(
	sides: tuple[dict[str, datetime], dict[str, datetime], dict[str, Any]],
) -> None:
	source, local, respelled = sides
	to_send, gone = compare_listing(source, respelled)
	assert to_send == sorted(n for n in source if n not in local or local[n] != source[n])
	assert gone == sorted(set(local) - set(source))


def reconcile(
	source: Mapping[str, Any], local: Mapping[str, Any], buckets: int
) -> tuple[list[int], list[str], list[str]]:
	"""The protocol: digests over the wire, a listing per differing bucket, compared."""
	theirs = digest_from_wire(json.loads(json.dumps(digest_to_wire(digest(items(source), buckets)))), buckets)
	differing = differing_buckets(theirs, digest(items(local), buckets))
	to_send: list[str] = []
	gone: list[str] = []
	for bucket in differing:
		listed = {n: m for n, m in source.items() if bucket_of(n, buckets) == bucket}
		held = {n: m for n, m in local.items() if bucket_of(n, buckets) == bucket}
		send, drop = compare_listing(listed, held)
		to_send += send
		gone += drop
	return differing, sorted(to_send), sorted(gone)


@settings(derandomize=True, max_examples=60)
@given(two_sides(), st.sampled_from([1, 8, 256]))
def test_reconciling_through_the_differing_buckets_finds_everything(
	sides: tuple[dict[str, datetime], dict[str, datetime], dict[str, Any]], buckets: int
) -> None:
	source, local, respelled = sides
	differing, to_send, gone = reconcile(source, respelled, buckets)
	assert to_send == sorted(n for n in source if n not in local or local[n] != source[n])
	assert gone == sorted(set(local) - set(source))
	assert len(differing) <= len(to_send) + len(gone)


# the measurement that goes into the docs


def test_reconciling_100k_documents_with_10_out_of_step() -> None:
	source = {f"ITEM-{i:06d}": T0 + timedelta(seconds=i, microseconds=i % 997) for i in range(100_000)}
	local: dict[str, Any] = {name: str(stamp) for name, stamp in source.items()}  # as text, as a driver may
	changed = [f"ITEM-{i:06d}" for i in (3, 17_171, 42_000, 77_777)]
	missing = [f"ITEM-{i:06d}" for i in (1, 50_000, 99_999)]
	extra = ["ITEM-100000", "ITEM-100001", "OLD-1"]
	for name in changed:
		local[name] = source[name] - timedelta(minutes=5)
	for name in missing:
		del local[name]
	for name in extra:
		local[name] = T0
	out_of_step = len(changed) + len(missing) + len(extra)
	assert out_of_step == 10

	wire = digest_to_wire(digest(items(source)))
	digest_bytes = len(json.dumps(wire).encode())
	compact_bytes = len(json.dumps(wire, separators=(",", ":")).encode())
	differing, to_send, gone = reconcile(source, local, DEFAULT_BUCKETS)
	listed = sum(1 for name in source if bucket_of(name, DEFAULT_BUCKETS) in differing)
	messages = 1 + len(differing) + len(to_send)
	print(
		f"\n100,000 documents, {out_of_step} out of step, {DEFAULT_BUCKETS} buckets: digest_to_wire as JSON "
		f"{digest_bytes} bytes ({compact_bytes} compact); {len(differing)} differing buckets -> "
		f"{len(differing)} listings of {listed} names in all; {len(to_send)} documents sent again, "
		f"{len(gone)} gone; {messages} messages from the source"
	)

	assert len(wire) == DEFAULT_BUCKETS  # 100,000 names fill every bucket
	assert digest_bytes == DIGEST_JSON_BYTES
	assert compact_bytes == DIGEST_COMPACT_BYTES
	assert len(differing) == DIFFERING_BUCKETS <= out_of_step
	assert to_send == sorted(changed + missing)
	assert gone == sorted(extra)
	assert messages == 1 + DIFFERING_BUCKETS + 7


# Deterministic (SHA-1 buckets, BLAKE2b hashes of fixed names): measured once, asserted exactly.
DIGEST_JSON_BYTES = 8594
DIGEST_COMPACT_BYTES = 7827
DIFFERING_BUCKETS = 10
