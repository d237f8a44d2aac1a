"""A replication network of real broker users: head, wh1 and wh2, each with least-privilege permissions
made by ``provision`` through RabbitMQ's management API (enabled here when it is off), in the session's
vhost, removed after each test."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote

import pytest

from frappe_eda.messaging.connection import BrokerSettings
from frappe_eda.messaging.store import MessageStore
from frappe_eda.messaging.trust.broker_users import ManagementApi, ManagementApiError, provision
from frappe_eda.messaging.trust.permissions import Route, ServerTraffic
from frappe_eda.stores import open_store
from tests.conftest import AMQP_HOST, AMQP_PORT

MANAGEMENT_URL = os.environ.get("EDA_TEST_MANAGEMENT_URL", f"http://guest:guest@{AMQP_HOST}:15672")


@pytest.fixture(scope="session")
def management() -> ManagementApi:
	api = ManagementApi(MANAGEMENT_URL)
	try:
		api.request("GET", "/api/overview")
		return api
	except ManagementApiError:
		subprocess.run(
			["rabbitmq-plugins", "enable", "rabbitmq_management"], capture_output=True, timeout=120
		)
	deadline = time.monotonic() + 60
	while True:
		try:
			api.request("GET", "/api/overview")
			return api
		except ManagementApiError as e:
			if time.monotonic() > deadline:
				pytest.fail(f"RabbitMQ's management API does not answer at {api.base}: {e}")
			time.sleep(1)


@dataclass
class Network:
	vhost: str
	exchange: str
	users: dict[str, str]  # server -> broker user
	passwords: dict[str, str]
	traffic: dict[str, ServerTraffic]

	def queue(self, server: str) -> str:
		return f"{self.exchange}.sub.{server}"

	def receipts(self, server: str) -> str:
		return f"{self.exchange}.receipts.{server}"

	def settings(self, server: str) -> BrokerSettings:
		user, password = quote(self.users[server], safe=""), quote(self.passwords[server], safe="")
		url = f"amqp://{user}:{password}@{AMQP_HOST}:{AMQP_PORT}/{quote(self.vhost, safe='')}"
		return BrokerSettings(url=url, reconnect_attempts=2)


def traffic_of(exchange: str, users: dict[str, str], server: str) -> ServerTraffic:
	"""head sends documents to each warehouse's keys and takes receipts; a warehouse takes its own keys
	and sends receipts back to head."""
	if server == "head":
		return ServerTraffic(
			users["head"],
			queues=(f"{exchange}.receipts.head",),
			publishes=(Route(exchange, "wh1.#"), Route(exchange, "wh2.#")),
			binds=(Route(exchange, "eda.receipt.head"),),
			topic_exchanges=frozenset({exchange}),
		)
	return ServerTraffic(
		users[server],
		queues=(f"{exchange}.sub.{server}",),
		publishes=(Route(exchange, "eda.receipt.head"),),
		binds=(Route(exchange, f"{server}.item.*"),),
		topic_exchanges=frozenset({exchange}),
	)


@pytest.fixture
def network(management: ManagementApi, vhost: str, unique_name: str) -> Iterator[Network]:
	exchange = f"{unique_name}.ex"
	users = {server: f"{unique_name}-{server}" for server in ("head", "wh1", "wh2")}
	passwords: dict[str, str] = {}
	traffic: dict[str, ServerTraffic] = {}
	try:
		for server in users:
			traffic[server] = traffic_of(exchange, users, server)
			report = provision(management, vhost, traffic[server])
			assert report.created and report.password
			passwords[server] = report.password
		yield Network(vhost, exchange, users, passwords, traffic)
	finally:
		for user in users.values():
			management.delete_user(user)


@pytest.fixture
def store(tmp_path) -> Iterator[MessageStore]:
	"""The receiving server's store (SQLite)."""
	opened = open_store(f"sqlite:///{tmp_path / 'eda.sqlite3'}")
	try:
		yield opened
	finally:
		opened.close()
