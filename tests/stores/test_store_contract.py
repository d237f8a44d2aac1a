"""The shared store contract, run against every store outside Frappe on the real servers."""

from __future__ import annotations

import unittest
import uuid
from pathlib import Path

import pytest

from frappe_eda.messaging.store import MessageStore
from frappe_eda.stores.memory import MemoryStore
from frappe_eda.stores.sql import SqlStore
from frappe_eda.testing.store_contract import StoreContract


class TestMemoryStore(StoreContract, unittest.TestCase):
	def make_store(self) -> MessageStore:
		return MemoryStore()


class _SqlContract(StoreContract, unittest.TestCase):
	"""Each test gets fresh tables (a unique prefix) in the session's database, dropped afterwards."""

	url = ""
	prefix = ""

	def make_store(self) -> MessageStore:
		self.prefix = f"eda_{uuid.uuid4().hex[:8]}_"
		return SqlStore(self.url, table_prefix=self.prefix)

	def make_peer_store(self) -> MessageStore:
		return SqlStore(self.url, table_prefix=self.prefix, create_tables=False)

	def cleanup_store(self, store: MessageStore) -> None:
		assert isinstance(store, SqlStore)
		store.metadata.drop_all(store.engine)
		store.close()


class TestSqliteStore(_SqlContract):
	@pytest.fixture(autouse=True)
	def _database(self, tmp_path: Path) -> None:
		self.url = f"sqlite:///{tmp_path / 'contract.sqlite3'}"


class TestMariaDbStore(_SqlContract):
	@pytest.fixture(autouse=True)
	def _database(self, mariadb_url: str) -> None:
		self.url = mariadb_url


class TestPostgresStore(_SqlContract):
	@pytest.fixture(autouse=True)
	def _database(self, postgres_url: str) -> None:
		self.url = postgres_url


del _SqlContract  # only its subclasses are test cases
