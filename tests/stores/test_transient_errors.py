"""A real deadlock and a real lock wait timeout, as the SQL store's ``is_transient`` must recognise them
(the worker tries such a delivery again, then returns it to the queue, instead of dead-lettering it)."""

from __future__ import annotations

import threading
import uuid

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from frappe_eda.stores.sql import SqlStore


@pytest.fixture(params=["mariadb", "postgres"])
def server_url(request: pytest.FixtureRequest) -> str:
	return str(request.getfixturevalue(f"{request.param}_url"))


def _deadlock(url: str) -> BaseException:
	"""Two transactions lock two rows in opposite orders; the server kills one: its error."""
	engine = create_engine(url)
	table = f"eda_deadlock_{uuid.uuid4().hex[:8]}"
	with engine.begin() as db:
		db.execute(text(f"CREATE TABLE {table} (id INT PRIMARY KEY, v INT)"))
		db.execute(text(f"INSERT INTO {table} VALUES (1, 0), (2, 0)"))
	both_hold_one = threading.Barrier(2, timeout=20)
	errors: list[BaseException] = []

	def lock(first: int, second: int) -> None:
		try:
			with engine.begin() as db:
				db.execute(text(f"UPDATE {table} SET v = v + 1 WHERE id = {first}"))
				both_hold_one.wait()
				db.execute(text(f"UPDATE {table} SET v = v + 1 WHERE id = {second}"))
		except DBAPIError as e:
			errors.append(e)

	threads = [threading.Thread(target=lock, args=pair) for pair in ((1, 2), (2, 1))]
	for thread in threads:
		thread.start()
	for thread in threads:
		thread.join(timeout=60)
	with engine.begin() as db:
		db.execute(text(f"DROP TABLE {table}"))
	engine.dispose()
	assert len(errors) == 1, f"expected one deadlock victim, got {errors!r}"
	return errors[0]


def test_a_real_deadlock_is_transient(server_url: str) -> None:
	store = SqlStore(server_url, table_prefix=f"eda_{uuid.uuid4().hex[:8]}_")
	try:
		error = _deadlock(server_url)
		assert store.is_transient(error), f"{type(error).__name__}: {error}"
		assert store.is_transient(error.orig)  # the driver's error, unwrapped, too
	finally:
		store.metadata.drop_all(store.engine)
		store.close()


def test_other_errors_are_not_transient(server_url: str) -> None:
	store = SqlStore(server_url, table_prefix=f"eda_{uuid.uuid4().hex[:8]}_")
	try:
		with pytest.raises(DBAPIError) as raised:
			with store.engine.begin() as db:
				db.execute(text("SELECT * FROM no_such_table_here"))
		assert not store.is_transient(raised.value)
		assert not store.is_transient(ValueError("a bug"))
	finally:
		store.metadata.drop_all(store.engine)
		store.close()
