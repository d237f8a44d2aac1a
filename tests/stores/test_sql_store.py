"""What only the SQL store promises: batches in one round trip, real savepoints, the handler's own rows in
the store's transaction, a transaction per thread. On SQLite, MariaDB and PostgreSQL alike."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, String, Table, create_engine, event, func, select

from frappe_eda.messaging.errors import EdaError
from frappe_eda.messaging.store import Direction, MessageFilter, MessageRecord, Status
from frappe_eda.stores.sql import SqlStore


@pytest.fixture
def stock(store: SqlStore) -> Table:
	"""A table of the handler's own, in the store's database."""
	table = Table(
		store.messages.name.replace("message", "stock"),
		store.metadata,
		Column("item", String(64), nullable=False),
	)
	table.create(store.engine)
	return table


def record(n: int, status: Status = Status.PROCESSED) -> MessageRecord:
	return MessageRecord(f"m{n}", Direction.INCOMING, status, "a.b", "{}", queue="q")


def statements(store: SqlStore) -> list[str]:
	"""Every statement the store runs: through SQLAlchemy on its engine, and on the wire for the writes
	that go alone to its autocommit engine (they bypass SQLAlchemy's cursor events)."""
	seen: list[str] = []
	event.listen(store.engine, "before_cursor_execute", lambda conn, cursor, sql, *a: seen.append(sql))
	for engine in store.engines[1:]:
		_count_wire(engine, seen)
	return seen


def round_trips(store: SqlStore) -> list[str]:
	"""What the driver really sends: a cursor that counts each statement it puts on the wire."""
	sent: list[str] = []
	for engine in store.engines:
		_count_wire(engine, sent)
	return sent


def _count_wire(engine: Any, sent: list[str]) -> None:
	def text_of(query: Any) -> str:
		return bytes(query).decode() if isinstance(query, bytes | bytearray) else str(query)

	name = engine.dialect.name
	if name == "postgresql":
		import psycopg2.extensions

		class PgCounting(psycopg2.extensions.cursor):
			def execute(self, query: Any, vars: Any = None) -> Any:
				sent.append(text_of(query))
				return super().execute(query, vars)

			def executemany(self, query: Any, vars_list: Any) -> Any:
				rows = list(vars_list)
				sent.extend(text_of(query) for _ in rows)
				return super().executemany(query, rows)

		factory: tuple[str, Any] = ("cursor_factory", PgCounting)
	else:
		assert name in ("mysql", "mariadb"), "SQLite has no wire to count"
		import pymysql.cursors

		class MyCounting(pymysql.cursors.Cursor):
			def execute(self, query: Any, args: Any = None) -> Any:
				sent.append(text_of(query))
				return super().execute(query, args)

		factory = ("cursorclass", MyCounting)
	event.listen(engine, "checkout", lambda dbapi, record, proxy: setattr(dbapi, *factory))


def test_a_batch_of_records_is_one_statement(store: SqlStore) -> None:
	seen = statements(store)
	store.save([record(n) for n in range(200)])
	assert len([s for s in seen if s.startswith("INSERT")]) == 1
	assert len(store.processed_ids("q", [f"m{n}" for n in range(200)])) == 200


@pytest.mark.parametrize("url", ["mariadb", "postgres"], indirect=True)
def test_a_batch_of_records_is_one_round_trip_on_the_wire(store: SqlStore) -> None:
	sent = round_trips(store)
	store.save([record(n) for n in range(200)])
	store.save([record(n, status=Status.DEAD) for n in range(100, 300)])
	assert len([s for s in sent if s.lstrip().upper().startswith("INSERT")]) == 2
	assert store.counts() == {
		(Direction.INCOMING, Status.PROCESSED): 100,
		(Direction.INCOMING, Status.DEAD): 200,
	}


def test_a_nested_level_that_writes_nothing_costs_no_savepoint(store: SqlStore) -> None:
	seen = statements(store)
	with store.transaction():
		for _ in range(10):
			with store.transaction():
				store.processed_ids("q", ["m1"])
	assert not [s for s in seen if "SAVEPOINT" in s.upper()]


def test_a_failed_level_rolls_back_to_a_real_savepoint(store: SqlStore) -> None:
	seen = statements(store)
	with store.transaction():
		store.save([record(1)])
		with pytest.raises(RuntimeError):
			with store.transaction():
				store.save([record(2)])
				raise RuntimeError("handler failed")
	assert any("ROLLBACK TO SAVEPOINT" in s.upper() for s in seen)
	assert store.processed_ids("q", ["m1", "m2"]) == {"m1"}


def test_the_handlers_own_rows_roll_back_with_its_level_and_commit_with_the_batch(
	store: SqlStore, stock: Table
) -> None:
	with store.transaction():
		with store.transaction():
			store.connection.execute(stock.insert().values(item="kept"))
		with pytest.raises(RuntimeError):
			with store.transaction():
				store.connection.execute(stock.insert().values(item="rolled back"))
				raise RuntimeError("handler failed after writing")
		store.save([record(1)])
	with store.engine.connect() as db:
		assert db.execute(select(stock.c.item)).scalars().all() == ["kept"]
	assert store.processed_ids("q", ["m1"]) == {"m1"}


def test_a_failed_batch_leaves_nothing_behind(store: SqlStore, stock: Table) -> None:
	with pytest.raises(ValueError):
		with store.transaction():
			store.connection.execute(stock.insert().values(item="x"))
			store.save([record(1)])
			raise ValueError("commit never happens")
	with store.engine.connect() as db:
		assert db.execute(select(func.count()).select_from(stock)).scalar() == 0
	assert store.processed_ids("q", ["m1"]) == set()


def test_connection_outside_a_transaction_is_an_error(store: SqlStore) -> None:
	with pytest.raises(EdaError, match="no transaction is open"):
		store.connection  # noqa: B018


def test_each_thread_has_its_own_transaction(store: SqlStore) -> None:
	"""A worker thread's open batch is invisible to, and cannot be used by, another thread."""
	written, release = threading.Event(), threading.Event()
	failures: list[BaseException] = []

	def batch() -> None:
		try:
			with store.transaction():
				store.save([record(1)])
				written.set()
				release.wait(10)
				raise RuntimeError("this batch rolls back")
		except RuntimeError:
			pass
		except BaseException as e:
			failures.append(e)

	worker = threading.Thread(target=batch)
	worker.start()
	try:
		assert written.wait(10)
		with pytest.raises(EdaError):
			store.connection  # noqa: B018
		assert store.get("m1", Direction.INCOMING, "q") is None
		assert store.find(MessageFilter()) == []
	finally:
		release.set()
		worker.join(10)
	assert not failures
	with store.transaction():
		store.save([record(2)])
	assert store.processed_ids("q", ["m1", "m2"]) == {"m2"}


@pytest.mark.parametrize("url", ["mariadb", "postgres"], indirect=True)
def test_two_threads_commit_and_roll_back_independently_at_the_same_time(store: SqlStore) -> None:
	both_open = threading.Barrier(2, timeout=10)
	failures: list[BaseException] = []

	def batch(n: int, fail: bool) -> None:
		try:
			with store.transaction():
				store.save([record(n)])
				both_open.wait()
				if fail:
					raise RuntimeError("rolled back")
		except RuntimeError:
			pass
		except BaseException as e:
			failures.append(e)

	threads = [threading.Thread(target=batch, args=(n, n == 1)) for n in (1, 2)]
	for thread in threads:
		thread.start()
	for thread in threads:
		thread.join(20)
	assert not failures
	assert store.processed_ids("q", ["m1", "m2"]) == {"m2"}


def test_ids_and_keys_that_differ_only_in_case_are_distinct(store: SqlStore) -> None:
	"""The broker is case-sensitive; MariaDB's default collations are not."""
	store.save([record(1), MessageRecord("M1", Direction.INCOMING, Status.DEAD, "A.B", "{}", queue="q")])
	assert store.processed_ids("q", ["m1", "M1"]) == {"m1"}
	assert [r.message_id for r in store.find(MessageFilter(routing_key="A.B"))] == ["M1"]
	assert [r.message_id for r in store.find(MessageFilter(routing_key="A.*"))] == ["M1"]


def test_from_engine_on_sqlite_gets_working_savepoints_once(tmp_path: Path) -> None:
	"""Hooks installed twice would BEGIN twice and fail."""
	engine = create_engine(f"sqlite:///{tmp_path / 'own.sqlite3'}")
	SqlStore.from_engine(engine)
	store = SqlStore.from_engine(engine, create_tables=False)
	try:
		with store.transaction():
			store.save([record(1)])
			with pytest.raises(RuntimeError):
				with store.transaction():
					store.save([record(2)])
					raise RuntimeError("handler failed")
		assert store.processed_ids("q", ["m1", "m2"]) == {"m1"}
	finally:
		store.close()


def test_the_password_never_shows() -> None:
	store = SqlStore("postgresql+psycopg2://eda:s3cret@db.invalid:5432/eda", create_tables=False)
	assert "s3cret" not in repr(store)
	store.close()


@pytest.mark.parametrize("url", ["sqlite"], indirect=True)
def test_the_inbox_lookup_seeks_the_unique_key_however_many_messages_were_processed(store: SqlStore) -> None:
	"""With status in the WHERE clause SQLite chose the (direction, status) index and read every processed
	message of the table for each batch; the lookup must stay a seek as the table grows."""
	store.save([record(n) for n in range(300)])
	batch = [f"m{n}" for n in range(100)]  # from about ten ids on, the old statement took the status index
	sql = store._inbox.sql(len(batch))
	with store.engine.connect() as connection:
		plan = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", ("in", "q", *batch)).all()
	details = " ".join(str(row[-1]) for row in plan)
	assert "message_id=? AND direction=? AND queue=?" in details, details
	assert store.processed_ids("q", ["m1", "m2", "m999"]) == {"m1", "m2"}


def test_values_that_look_like_sql_or_format_strings_are_stored_as_they_are(store: SqlStore) -> None:
	"""On MariaDB the batch is rendered into one statement with the driver's quoting: nothing in a value
	may be read as SQL or as a parameter marker."""
	tricky = [
		"100% %s %(body)s %%",
		"it's \\'; DROP TABLE x; --",
		'"double" `back` \\\\ \\n',
		"ctrl-z \x1a and a tab\t",
		"emoji \U0001f600 and é",
		"",
	]
	records = [
		MessageRecord(f"t{n}", Direction.INCOMING, Status.PROCESSED, "a.b", text, queue=text, handler=text)
		for n, text in enumerate(tricky)
	]
	store.save(records)
	for n, text in enumerate(tricky):
		saved = store.get(f"t{n}", Direction.INCOMING, queue=text)
		assert saved is not None and (saved.body, saved.handler) == (text, text)


def test_a_batch_larger_than_one_statement_is_split_and_saved_whole(store: SqlStore) -> None:
	body = "x" * 300_000  # four of these pass the 1 MB statement limit of the MariaDB path
	store.save(
		[MessageRecord(f"big{n}", Direction.INCOMING, Status.PROCESSED, "a.b", body) for n in range(5)]
	)
	assert store.counts() == {(Direction.INCOMING, Status.PROCESSED): 5}
	assert all(store.get(f"big{n}", Direction.INCOMING).body == body for n in range(5))


def test_bad_input_with_a_nul_byte_is_recorded_dead_not_refused_by_the_database(store: SqlStore) -> None:
	"""PostgreSQL text cannot hold NUL; a body with one is invalid JSON anyway, and its record must still
	be written (the worker would otherwise return the batch to the queue for ever)."""
	from frappe_eda.messaging.processing import Delivery, DeliveryProcessor, Outcome
	from frappe_eda.messaging.registry import HandlerRegistry

	registry = HandlerRegistry()
	registry.subscribe("a.#", queue="q")(lambda message: None)
	delivery = Delivery(queue="q", routing_key="a.b", body=b'{"id": "x\x00y"}', delivery_tag=1)

	[decision] = DeliveryProcessor(registry, store).process([delivery])

	assert decision.outcome is Outcome.DEAD
	[saved] = store.find(MessageFilter(direction=Direction.INCOMING, statuses=(Status.DEAD,)))
	assert saved.body == '{"id": "x\\x00y"}'
