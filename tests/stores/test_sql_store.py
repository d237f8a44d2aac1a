"""What only the SQL store promises: one statement per batch, lazy savepoints, the handler's own rows."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import event, text

from frappe_eda.messaging.store import Direction, MessageRecord, Status
from frappe_eda.stores.sql import SqlStore


@pytest.fixture
def store(tmp_path: Path):
	store = SqlStore(f"sqlite:///{tmp_path / 'eda.sqlite3'}")
	with store.transaction():
		store.connection.execute(text("CREATE TABLE stock (item TEXT NOT NULL)"))
	yield store
	store.close()


def _statements(store: SqlStore) -> list[str]:
	seen: list[str] = []
	event.listen(
		store.engine, "before_cursor_execute", lambda conn, cursor, statement, *a: seen.append(statement)
	)
	return seen


def record(n: int) -> MessageRecord:
	return MessageRecord(f"m{n}", Direction.INCOMING, Status.PROCESSED, "a.b", "{}", queue="q")


def test_a_batch_of_records_is_one_statement(store: SqlStore) -> None:
	seen = _statements(store)
	store.save([record(n) for n in range(200)])
	assert len([s for s in seen if s.startswith("INSERT")]) == 1
	assert len(store.processed_ids("q", [f"m{n}" for n in range(200)])) == 200


def test_a_nested_level_that_writes_nothing_costs_no_savepoint(store: SqlStore) -> None:
	seen = _statements(store)
	with store.transaction():
		for _ in range(10):
			with store.transaction():
				pass
	assert not [s for s in seen if "SAVEPOINT" in s.upper()]


def test_the_handlers_own_rows_roll_back_with_its_level_and_commit_with_the_batch(store: SqlStore) -> None:
	with store.transaction():
		with store.transaction():
			store.connection.execute(text("INSERT INTO stock VALUES ('kept')"))
		with pytest.raises(RuntimeError):
			with store.transaction():
				store.connection.execute(text("INSERT INTO stock VALUES ('rolled back')"))
				raise RuntimeError("handler failed after writing")
		store.save([record(1)])
	with store.transaction():
		rows = [r[0] for r in store.connection.execute(text("SELECT item FROM stock"))]
	assert rows == ["kept"]
	assert store.processed_ids("q", ["m1"]) == {"m1"}


def test_a_failed_batch_leaves_nothing_behind(store: SqlStore) -> None:
	with pytest.raises(ValueError):
		with store.transaction():
			store.connection.execute(text("INSERT INTO stock VALUES ('x')"))
			store.save([record(1)])
			raise ValueError("commit never happens")
	with store.transaction():
		assert store.connection.execute(text("SELECT count(*) FROM stock")).scalar() == 0
	assert store.processed_ids("q", ["m1"]) == set()


def test_connection_outside_a_transaction_is_an_error(store: SqlStore) -> None:
	with pytest.raises(Exception, match="no transaction is open"):
		store.connection  # noqa: B018
