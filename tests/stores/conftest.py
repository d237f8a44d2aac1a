"""Throw-away MariaDB and PostgreSQL databases for one test session, on the machine's real servers."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from frappe_eda.stores.sql import SqlStore

MARIADB_SERVER = os.environ.get("EDA_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306")
POSTGRES_SERVER = os.environ.get("EDA_TEST_POSTGRES", "postgresql+psycopg2://postgres@127.0.0.1:5432")


def _throwaway_database(server: str, admin_db: str, create: str, url: str) -> Iterator[str]:
	name = f"eda_test_{uuid.uuid4().hex[:10]}"
	try:
		engine = create_engine(f"{server}/{admin_db}", isolation_level="AUTOCOMMIT")
		with engine.connect() as db:
			db.execute(text(create.format(name=name)))
	except OperationalError as e:
		pytest.fail(f"cannot reach {server.split('@')[-1]} ({e.orig}); .ci/run starts the database servers")
	try:
		yield url.format(server=server, name=name)
	finally:
		with engine.connect() as db:
			if server.startswith("postgresql"):
				db.execute(
					text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
				)
			db.execute(text(f"DROP DATABASE IF EXISTS {name}"))
		engine.dispose()


@pytest.fixture(scope="session")
def mariadb_url() -> Iterator[str]:
	yield from _throwaway_database(
		MARIADB_SERVER, "", "CREATE DATABASE {name} CHARACTER SET utf8mb4", "{server}/{name}?charset=utf8mb4"
	)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
	yield from _throwaway_database(POSTGRES_SERVER, "postgres", "CREATE DATABASE {name}", "{server}/{name}")


# One SQL store per test on each database, with tables of its own (a unique prefix), dropped after it.


@pytest.fixture(params=["sqlite", "mariadb", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
	if request.param == "sqlite":
		return f"sqlite:///{tmp_path / 'eda.sqlite3'}"
	return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
def store(url: str) -> Iterator[SqlStore]:
	store = SqlStore(url, table_prefix=f"eda_{uuid.uuid4().hex[:8]}_")
	yield store
	store.metadata.drop_all(store.engine)
	store.close()
