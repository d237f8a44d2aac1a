"""Fixtures for poison isolation: the worker on the real broker over each real store.

The broker and database fixtures are the core's and the stores' own; ``any_store_url`` runs a test once per
SQL dialect (SQLite file, MariaDB and PostgreSQL databases of this session).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.core.conftest import connection, registry, settings  # noqa: F401 (fixtures)
from tests.stores.conftest import mariadb_url, postgres_url  # noqa: F401 (fixtures)


@pytest.fixture(params=["sqlite", "mariadb", "postgresql"])
def any_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
	if request.param == "sqlite":
		return f"sqlite:///{tmp_path / 'eda.sqlite3'}"
	return request.getfixturevalue("mariadb_url" if request.param == "mariadb" else "postgres_url")
