"""Worker heartbeats in the SQL store's database, on SQLite, MariaDB and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from frappe_eda.messaging.heartbeat import WorkerBeat
from frappe_eda.stores import worker_table
from frappe_eda.stores.memory import MemoryStore
from frappe_eda.stores.sql import SqlStore
from frappe_eda.stores.sql_workers import SqlWorkerTable


@pytest.fixture
def workers(store: SqlStore) -> Iterator[SqlWorkerTable]:
	table = worker_table(store)
	assert table is not None
	yield table
	table.metadata.drop_all(store.engine)


def _beat(worker_id: str, last_seen: datetime, **changes: object) -> WorkerBeat:
	beat = WorkerBeat(
		worker_id=worker_id,
		host="web-1",
		pid=4242,
		queues=("inventory.orders", "odd, name ü"),
		started_at=last_seen - timedelta(minutes=5),
		last_seen=last_seen,
		heartbeat_every=15.0,
	)
	return replace(beat, **changes)  # type: ignore[arg-type]


def test_a_beat_is_upserted_by_worker_id_and_read_back(workers: SqlWorkerTable, store: SqlStore) -> None:
	assert workers.table.name == store.messages.name.removesuffix("message") + "workers"
	now = datetime.now(timezone.utc).replace(microsecond=123456)
	first = _beat("web-1:4242:abcd1234", now - timedelta(seconds=30))
	workers.record(first)
	later = replace(
		first,
		last_seen=now,
		processed=3_000_000_000,  # past 32 bits: a busy worker gets there in days
		duplicates=2,
		retried=3,
		dead=4,
		reconnects=1,
		store_failures=5,
		refused=6,
		stopped=True,
	)
	workers.record(later)
	workers.record(_beat("web-2:7:ffff0000", now - timedelta(seconds=5)))

	rows = workers.workers()

	assert [b.worker_id for b in rows] == ["web-1:4242:abcd1234", "web-2:7:ffff0000"]  # last seen first
	assert rows[0] == later
	assert rows[0].started_at.tzinfo is not None and rows[0].last_seen == now
	assert workers.workers(limit=1) == [later]


def test_state_tells_alive_stale_and_stopped_apart(workers: SqlWorkerTable) -> None:
	now = datetime.now(timezone.utc)
	workers.record(_beat("alive", now - timedelta(seconds=20)))
	workers.record(_beat("stale", now - timedelta(seconds=61), heartbeat_every=15.0))
	workers.record(_beat("slow-beats", now - timedelta(seconds=200), heartbeat_every=120.0))
	workers.record(_beat("stopped", now - timedelta(hours=3), stopped=True))

	states = {b.worker_id: b.state(now) for b in workers.workers()}

	assert states == {"alive": "alive", "stale": "stale", "slow-beats": "alive", "stopped": "stopped"}


def test_prune_forgets_runs_last_seen_long_ago(workers: SqlWorkerTable) -> None:
	now = datetime.now(timezone.utc)
	workers.record(_beat("recent", now - timedelta(days=6)))
	workers.record(_beat("old", now - timedelta(days=8), stopped=True))

	assert workers.prune(timedelta(days=7), now=now) == 1
	assert [b.worker_id for b in workers.workers()] == ["recent"]


def test_a_memory_store_has_no_worker_table() -> None:
	assert worker_table(MemoryStore()) is None
