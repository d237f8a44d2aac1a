"""Fixtures for tests that run the core against the real broker with a SQLite store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from frappe_eda.messaging.connection import BrokerConnection, BrokerSettings
from frappe_eda.messaging.registry import HandlerRegistry
from frappe_eda.messaging.retry import RetryPolicy
from frappe_eda.messaging.store import MessageStore
from frappe_eda.messaging.topology import TopologyDeclarer, topology_for
from frappe_eda.stores import open_store


@pytest.fixture
def settings(amqp_url: str) -> BrokerSettings:
	return BrokerSettings(url=amqp_url, reconnect_attempts=3)


@pytest.fixture
def connection(settings: BrokerSettings) -> Iterator[BrokerConnection]:
	connection = BrokerConnection(settings)
	connection.open()
	try:
		yield connection
	finally:
		if connection.is_open:
			connection.close()


@pytest.fixture
def store_url(tmp_path: Path) -> str:
	return f"sqlite:///{tmp_path / 'eda.sqlite3'}"


@pytest.fixture
def store(store_url: str) -> Iterator[MessageStore]:
	store = open_store(store_url)
	try:
		yield store
	finally:
		store.close()


@pytest.fixture
def registry(connection: BrokerConnection) -> Iterator[HandlerRegistry]:
	"""A registry whose queues (and their retry and dead-letter queues) are deleted after the test."""
	registry = HandlerRegistry()
	yield registry
	if connection.is_open:
		declarer = TopologyDeclarer(connection)
		declarer.delete(topology_for(registry, RetryPolicy()))
		for subscription in registry:
			if subscription.retry is not None:
				declarer.delete(topology_for([subscription], subscription.retry))
		declarer.close()
