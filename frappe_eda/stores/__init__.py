"""Store implementations outside Frappe: in memory (tests) and SQL (SQLite, MariaDB/MySQL, PostgreSQL)."""

from __future__ import annotations

from frappe_eda.messaging.errors import ConfigurationError
from frappe_eda.messaging.store import MessageStore

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
