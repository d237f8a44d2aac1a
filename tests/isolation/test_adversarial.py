"""Hostile deliveries, generated, through screen -> process -> record on SQLite, MariaDB and PostgreSQL.

Whatever arrives (valid envelopes with hostile ids, types, headers, timestamps, nesting and sizes; raw
garbage; odd content types and routing keys), each delivery must end PROCESSED once or DEAD with a record
and an error in the store, no exception may escape the processor, and no handler may complete twice for
one (queue, id). The profile is derandomized, so CI runs the same examples every time.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from frappe_eda.messaging.envelope import Message
from frappe_eda.messaging.processing import (
	ORIGINAL_ROUTING_KEY,
	REPLAY_COUNT,
	REPLAY_OF,
	Delivery,
	DeliveryProcessor,
	Outcome,
)
from frappe_eda.messaging.registry import HandlerRegistry
from frappe_eda.messaging.store import Direction, MessageStore, Status
from frappe_eda.stores.memory import MemoryStore
from frappe_eda.stores.sql import SqlStore

QUEUE = "adversarial.q"
PROFILE = settings(
	max_examples=60,
	deadline=None,
	derandomize=True,
	database=None,
	suppress_health_check=[
		HealthCheck.function_scoped_fixture,
		HealthCheck.too_slow,
		HealthCheck.data_too_large,
	],
)

# Every code point, lone surrogates and NUL included.
anything = st.characters(codec=None, exclude_categories=())
hostile_text = st.one_of(
	st.text(anything, max_size=20),
	st.text(anything, min_size=250, max_size=300),
	st.sampled_from(["\x00", "\ud800", "a\udfffb", "<img src=x onerror=alert(1)>", "é" * 256, "x" * 70_000]),
)
offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
timestamps = st.one_of(
	st.datetimes(timezones=offsets).map(lambda d: d.isoformat()),
	st.sampled_from(
		[
			"0001-01-01T00:00:00+14:00",
			"9999-12-31T23:59:59-14:00",
			"0999-12-31T23:59:59+00:00",
			"1000-01-01T00:00:00+00:00",
			"not a time",
		]
	),
	st.none(),
	st.integers(),
)
json_leaf = st.one_of(
	st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(anything, max_size=10)
)
json_values = st.recursive(
	json_leaf,
	lambda inner: st.one_of(
		st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
	),
	max_leaves=10,
)
header_values = st.one_of(
	st.integers(min_value=-(2**63), max_value=2**63 - 1), st.booleans(), hostile_text, st.binary(max_size=20)
)
headers = st.dictionaries(
	st.one_of(
		st.sampled_from(["x-eda-attempt", REPLAY_COUNT, REPLAY_OF, ORIGINAL_ROUTING_KEY]),
		st.text(max_size=10),
	),
	header_values,
	max_size=4,
)


def _deep(depth: int) -> Any:
	value: Any = []
	for _ in range(depth):
		value = [value]
	return value


@st.composite
def envelopes(draw: st.DrawFn) -> bytes:
	document: dict[str, Any] = {
		"id": draw(st.one_of(hostile_text, st.integers(), st.none())),
		"type": draw(st.one_of(hostile_text, st.just("order.created"))),
		"payload": draw(
			st.one_of(json_values, st.integers(0, 80).map(_deep), st.just({"fail": "\ud800<b>boom"}))
		),
	}
	if draw(st.booleans()):
		document["created_at"] = draw(timestamps)
	if draw(st.booleans()):
		document["headers"] = draw(st.dictionaries(st.text(anything, max_size=300), json_leaf, max_size=3))
	text = json.dumps(document, ensure_ascii=draw(st.booleans()))
	if draw(st.integers(0, 9)) == 0:
		text = text[:-1] + ',"id":"dup"}'  # a duplicated key
	return text.encode("utf-8", "surrogatepass")


deliveries = st.builds(
	Delivery,
	queue=st.just(QUEUE),
	routing_key=st.one_of(st.just("order.created"), st.text(max_size=255)),
	body=st.one_of(envelopes(), st.binary(max_size=64), st.just(b""), st.just(b"x" * 5000)),
	content_type=st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain", None]),
	headers=headers,
	redelivered=st.booleans(),
)


class Harness:
	"""One processor on one store; counts completed handler runs per (queue, id)."""

	def __init__(self, store: MessageStore) -> None:
		self.store = store
		self.completed: Counter[str] = Counter()
		registry = HandlerRegistry()
		registry.subscribe("#", queue=QUEUE, exchange="adversarial.ex", max_attempts=1)(self.handle)
		from frappe_eda.messaging.processing import Limits

		self.processor = DeliveryProcessor(registry, store, limits=Limits(max_bytes=4096))

	def handle(self, message: Message) -> None:
		if isinstance(message.payload, dict) and "fail" in message.payload:
			raise RuntimeError(f"handler refused {message.payload['fail']} of {message.id}")
		self.completed[message.id] += 1

	def check(self, batch: list[Delivery]) -> None:
		screened = [self.processor.screen(d) for d in batch[: len(batch) // 2]] + batch[len(batch) // 2 :]
		decisions = self.processor.process(screened)  # nothing may escape
		assert len(decisions) == len(batch)
		for decision in decisions:
			if decision.outcome in (Outcome.PROCESSED, Outcome.DUPLICATE):
				assert decision.message is not None
				record = self.store.get(decision.message.id, Direction.INCOMING, QUEUE)
				# A duplicate is an id already settled: processed, or (for a redelivered batch, where the
				# worker asks for them) dead, which only a replay runs again.
				settled = (Status.PROCESSED, Status.DEAD) if decision.outcome is Outcome.DUPLICATE else ()
				assert record is not None and (
					record.status is Status.PROCESSED
					or (record.status in settled and any(d.redelivered for d in batch))
				)
			else:
				assert decision.outcome is Outcome.DEAD, decision.outcome
				assert decision.error is not None
				record = self.store.get(decision.error.message_id, Direction.INCOMING, QUEUE)
				assert record is not None and record.status is Status.DEAD
				assert self.store.errors(decision.error.message_id, QUEUE)
		assert all(count == 1 for count in self.completed.values()), self.completed.most_common(3)


def _sql(url: str) -> Iterator[SqlStore]:
	store = SqlStore(url, table_prefix=f"eda_{uuid.uuid4().hex[:8]}_")
	try:
		yield store
	finally:
		store.metadata.drop_all(store.engine)
		store.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SqlStore]:
	yield from _sql(f"sqlite:///{tmp_path / 'adversarial.sqlite3'}")


@pytest.fixture
def mariadb_store(mariadb_url: str) -> Iterator[SqlStore]:
	yield from _sql(mariadb_url)


@pytest.fixture
def postgres_store(postgres_url: str) -> Iterator[SqlStore]:
	yield from _sql(postgres_url)


def _property(store: MessageStore) -> Any:
	harness = Harness(store)

	@PROFILE
	@given(st.lists(deliveries, min_size=1, max_size=6))
	def run(batch: list[Delivery]) -> None:
		# Each batch twice: the second time every processed id must be a duplicate, never run again.
		harness.check(batch)
		harness.check(batch)

	return run


def test_hostile_deliveries_on_memory() -> None:
	_property(MemoryStore())()


def test_hostile_deliveries_on_sqlite(sqlite_store: SqlStore) -> None:
	_property(sqlite_store)()


def test_hostile_deliveries_on_mariadb(mariadb_store: SqlStore) -> None:
	_property(mariadb_store)()


def test_hostile_deliveries_on_postgresql(postgres_store: SqlStore) -> None:
	_property(postgres_store)()


def test_the_edges_of_time_on_every_sql_dialect(
	sqlite_store: SqlStore, mariadb_store: SqlStore, postgres_store: SqlStore
) -> None:
	"""The timestamps the issue saw fail, each on each store: dead with a record, never an exception."""
	for store in (sqlite_store, mariadb_store, postgres_store):
		harness = Harness(store)
		for stamp in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "0999-06-01T00:00:00+00:00"):
			body = json.dumps(
				{"id": f"t-{stamp}", "type": "order.created", "payload": {}, "created_at": stamp}
			)
			harness.check([Delivery(QUEUE, "order.created", body.encode())])
		# Before year 1000 only MariaDB's DATETIME cannot hold it.
		expected = {} if store.limits.min_time.year == 1000 else {"t-0999-06-01T00:00:00+00:00": 1}
		assert harness.completed == expected
