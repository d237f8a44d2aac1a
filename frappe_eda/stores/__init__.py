"""Store implementations outside Frappe: in memory (tests) and SQL (SQLite, MariaDB/MySQL, PostgreSQL)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from frappe_eda.messaging.errors import ConfigurationError
from frappe_eda.messaging.store import MessageStore

if TYPE_CHECKING:
	from frappe_eda.stores.sql_workers import SqlWorkerTable

DEFAULT_STORE_URL = "sqlite:///eda.sqlite3"


def open_store(url: str = DEFAULT_STORE_URL) -> MessageStore:
	"""``memory://`` or an SQLAlchemy URL; the SQL store needs the ``sql`` extra installed."""
	if url.startswith("memory:"):
		from frappe_eda.stores.memory import MemoryStore

		return MemoryStore()
	try:
		from frappe_eda.stores.sql import SqlStore
	except ImportError as e:
		raise ConfigurationError(
			f"the SQL store needs SQLAlchemy and a driver: pip install 'frappe_eda[sql]' ({e})"
		) from e
	return SqlStore(url)


def worker_table(store: MessageStore) -> SqlWorkerTable | None:
	"""The worker heartbeat table beside a SQL store (same database and table prefix); ``None`` for a
	store that other processes cannot read (memory://)."""
	try:
		from frappe_eda.stores.sql import SqlStore
		from frappe_eda.stores.sql_workers import SqlWorkerTable
	except ImportError:
		return None
	if not isinstance(store, SqlStore):
		return None
	return SqlWorkerTable(store.engine, table_prefix=store.messages.name.removesuffix("message"))
