"""Shared fixtures: every test session gets its own RabbitMQ vhost on the real broker.

Tests never see each other's messages: the vhost is created for the session and deleted after it,
and tests name their queues and exchanges with ``unique_name`` on top of that.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import pika
import pytest

AMQP_HOST = os.environ.get("EDA_TEST_AMQP_HOST", "127.0.0.1")
AMQP_PORT = int(os.environ.get("EDA_TEST_AMQP_PORT", "5672"))


def _rabbitmqctl(*args: str) -> None:
	if shutil.which("rabbitmqctl") is None:
		pytest.fail("rabbitmqctl is needed to create the test vhost; is RabbitMQ installed?")
	subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=120)


@pytest.fixture(scope="session")
def vhost() -> Iterator[str]:
	name = f"eda-test-{uuid.uuid4().hex[:10]}"
	_rabbitmqctl("add_vhost", name)
	_rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
	try:
		yield name
	finally:
		_rabbitmqctl("delete_vhost", name)


@pytest.fixture(scope="session")
def amqp_url(vhost: str) -> str:
	return f"amqp://guest:guest@{AMQP_HOST}:{AMQP_PORT}/{quote(vhost, safe='')}"


@pytest.fixture
def unique_name() -> str:
	"""A prefix for this test's queues and exchanges."""
	return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def raw_channel(amqp_url: str) -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
	"""A plain pika channel in the test vhost, for inspecting queues and sending raw bytes."""
	connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
	try:
		yield connection.channel()
	finally:
		if connection.is_open:
			connection.close()


@pytest.fixture(scope="session")
def rabbit_cluster():
	"""A three-node RabbitMQ cluster of the session's own, beside the system broker (about 20 s to
	start); stopped and removed at the end. Only tests that ask for it start it."""
	from tests.faults.cluster import ClusterUnavailable, RabbitCluster

	try:
		cluster = RabbitCluster().start()
	except ClusterUnavailable as e:
		pytest.fail(f"cannot start the test cluster: {e}")
	try:
		yield cluster
	finally:
		cluster.close()
