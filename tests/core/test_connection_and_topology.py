from __future__ import annotations

import threading

import pytest

from frappe_eda.messaging.connection import BrokerConnection, BrokerSettings, TlsOptions
from frappe_eda.messaging.errors import (
	BrokerUnavailable,
	ConfigurationError,
	ConnectionAlreadyOpen,
	TopologyMismatch,
	WrongThreadError,
)
from frappe_eda.messaging.registry import HandlerRegistry
from frappe_eda.messaging.retry import RetryPolicy
from frappe_eda.messaging.topology import Queue, Topology, TopologyDeclarer, topology_for
from tests.conftest import AMQP_PORT


def test_settings_never_show_the_password() -> None:
	settings = BrokerSettings.from_parts(host="mq.example.com", user="erp", password="s3cr3t!", vhost="prod")
	assert "s3cr3t" not in repr(settings) and "s3cr3t" not in str(settings)
	assert settings.redacted_url() == "amqp://erp:***@mq.example.com:5672/prod"
	assert settings.vhost == "prod"
	assert settings.parameters().credentials.password == "s3cr3t!"


def test_amqps_settings_carry_tls_options(tmp_path) -> None:
	settings = BrokerSettings(
		url="amqps://u:p@b-123.mq.eu-west-1.amazonaws.com:5671/%2F", tls=TlsOptions(server_hostname="b-123")
	)
	parameters = settings.parameters()
	assert parameters.ssl_options is not None and parameters.ssl_options.server_hostname == "b-123"
	assert BrokerSettings.from_parts(tls=TlsOptions()).url.startswith("amqps://")
	with pytest.raises(ConfigurationError, match="amqp:// or amqps://"):
		BrokerSettings(url="http://localhost")


def test_unreachable_broker_fails_after_backing_off() -> None:
	settings = BrokerSettings(
		url="amqp://guest:secret@127.0.0.1:1/%2F", reconnect_attempts=3, reconnect_max_wait=0.1
	)
	with pytest.raises(BrokerUnavailable, match="after 3 tries") as raised:
		BrokerConnection(settings).open()
	assert "secret" not in str(raised.value)


def test_connection_refuses_other_threads_and_second_connections(
	settings: BrokerSettings, connection: BrokerConnection
) -> None:
	errors: list[BaseException] = []
	thread = threading.Thread(target=lambda: _capture(errors, connection.channel))
	thread.start()
	thread.join()
	assert len(errors) == 1 and isinstance(errors[0], WrongThreadError)
	assert "not thread-safe" in str(errors[0])
	with pytest.raises(ConnectionAlreadyOpen):
		BrokerConnection(settings).open()
	connection.close()
	with BrokerConnection(settings) as again:  # once closed, a new one may open
		assert again.is_open


def _capture(errors: list[BaseException], call) -> None:
	try:
		call()
	except BaseException as e:
		errors.append(e)


def test_declaring_twice_is_a_no_op_and_a_changed_argument_is_named(
	connection: BrokerConnection, unique_name: str
) -> None:
	declarer = TopologyDeclarer(connection)
	first = Topology((), (Queue(f"{unique_name}.q", arguments={"x-message-ttl": 1000}),), ())
	declarer.declare(first)
	declarer.declare(first)
	with pytest.raises(TopologyMismatch) as raised:
		declarer.declare(Topology((), (Queue(f"{unique_name}.q", arguments={"x-message-ttl": 5000}),), ()))
	assert (raised.value.argument, raised.value.declared, raised.value.existing) == (
		"x-message-ttl",
		"5000",
		"1000",
	)
	assert declarer.queue_depth(f"{unique_name}.q") == 0  # the declarer recovers its channel
	declarer.delete(first)


def test_quorum_queues_get_a_delivery_limit_and_a_dead_letter_target(
	connection: BrokerConnection, unique_name: str
) -> None:
	registry = HandlerRegistry()
	registry.subscribe(
		"a.#", queue=f"{unique_name}.quorum", exchange=f"{unique_name}.ex", queue_type="quorum"
	)(lambda m: None)
	topology = topology_for(registry, RetryPolicy(max_attempts=3, delays=(1, 5)))
	work = next(q for q in topology.queues if q.name == f"{unique_name}.quorum")
	assert work.declare_arguments()["x-queue-type"] == "quorum"
	assert work.arguments["x-delivery-limit"] == 20
	assert work.arguments["x-dead-letter-routing-key"] == f"{unique_name}.quorum.dead"
	assert sorted(q.name for q in topology.queues) == sorted(
		[
			f"{unique_name}.quorum",
			f"{unique_name}.quorum.dead",
			f"{unique_name}.quorum.retry.1s",
			f"{unique_name}.quorum.retry.5s",
		]
	)
	declarer = TopologyDeclarer(connection)
	declarer.declare(topology)
	assert declarer.queue_depth(f"{unique_name}.quorum") == 0
	declarer.delete(topology)


def test_a_node_list_gives_each_host_the_credentials_and_vhost_of_the_first() -> None:
	settings = BrokerSettings(url="amqp://erp:s3cr3t@mq1:5672/prod", nodes=("mq2", "mq3:5673"))
	assert settings.addresses == (
		"amqp://erp:s3cr3t@mq1:5672/prod",
		"amqp://erp:s3cr3t@mq2:5672/prod",
		"amqp://erp:s3cr3t@mq3:5673/prod",
	)
	assert "s3cr3t" not in repr(settings) and "mq3:5673" in repr(settings)
	assert "s3cr3t" not in settings.redacted_addresses()
	assert [p.host for p in settings.node_parameters()] == ["mq1", "mq2", "mq3"]
	assert settings.with_vhost("other").addresses[2] == "amqp://erp:s3cr3t@mq3:5673/other"


def test_a_url_may_list_several_nodes_as_an_environment_variable_carries_them() -> None:
	listed = BrokerSettings(url="amqp://u:p%2Cq@a:5672/v, amqp://u:p%2Cq@b:5672/v c")
	assert listed.url == "amqp://u:p%2Cq@a:5672/v"
	assert listed.nodes == ("amqp://u:p%2Cq@b:5672/v", "amqp://u:p%2Cq@c:5672/v")
	assert listed.parameters().credentials.password == "p,q"
	assert BrokerSettings.from_parts(host="mq1, mq2:5673", password="a,b").nodes == (
		"amqp://guest:a%2Cb@mq2:5673/%2F",
	)
	single = BrokerSettings(url="amqps://u:p@b-1.mq.eu-west-1.amazonaws.com:5671/%2F")
	assert single.nodes == () and len(single.node_parameters()) == 1


def test_nodes_of_one_cluster_share_a_vhost_and_a_scheme() -> None:
	with pytest.raises(ConfigurationError, match="same vhost"):
		BrokerSettings(url="amqp://u:p@a/one", nodes=("amqp://u:p@b/two",))
	with pytest.raises(ConfigurationError, match="one scheme"):
		BrokerSettings(url="amqp://u:p@a/one", nodes=("amqps://u:p@b/one",))


def test_a_dead_node_first_in_the_list_is_skipped(amqp_url: str) -> None:
	dead = amqp_url.replace(f":{AMQP_PORT}/", ":1/")
	settings = BrokerSettings(url=dead, nodes=(amqp_url,), reconnect_attempts=2)
	with BrokerConnection(settings) as connection:
		assert connection.node == settings.redacted_url(amqp_url)
		connection.reconnect()  # starts after the node it was on: the dead one, then back here
		assert connection.is_open


def test_unreachable_nodes_fail_after_backing_off_naming_every_one() -> None:
	settings = BrokerSettings(
		url="amqp://guest:secret@127.0.0.1:1/%2F",
		nodes=("127.0.0.1:2",),
		reconnect_attempts=2,
		reconnect_max_wait=0.1,
	)
	with pytest.raises(BrokerUnavailable, match=r"any of .*:1/.*:2/.* after 2 tries") as raised:
		BrokerConnection(settings).open()
	assert "secret" not in str(raised.value)
