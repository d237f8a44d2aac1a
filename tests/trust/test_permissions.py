"""Least-privilege permissions: the regular expressions RabbitMQ will apply, checked against the names
and routing keys a server needs and those it must not touch; and the printed ``rabbitmqctl`` commands,
run for real, grant the same as the management API."""

from __future__ import annotations

import os
import re
import subprocess

from frappe_eda.messaging.trust.broker_users import ManagementApi, rabbitmqctl_commands
from frappe_eda.messaging.trust.permissions import NOTHING, Route, ServerTraffic, permissions_for
from tests.trust.conftest import MANAGEMENT_URL

WH1 = ServerTraffic(
	"wh1.example.com",
	queues=("eda.sub.items-from-head", "eda.receipts.wh1_example_com"),
	publishes=(Route("eda.events", "eda.receipt.head_example_com"), Route("eda.events", "wh3.{type}")),
	binds=(Route("eda.events", "wh1.item.*"), Route("eda.events", "eda.receipt.wh1_example_com")),
	topic_exchanges=frozenset({"eda.events"}),
)


def _allows(regex: str, name: str) -> bool:
	return re.search(regex, name) is not None  # RabbitMQ's own match: a search, hence the anchors


def test_a_server_configures_and_reads_only_its_own_queues() -> None:
	p = permissions_for(WH1)
	for name in (
		"eda.sub.items-from-head",
		"eda.sub.items-from-head.retry.5s",
		"eda.sub.items-from-head.dead",
		"eda.sub.items-from-head.dead.cleaning",
	):
		assert _allows(p.configure, name) and _allows(p.read, name)
	for name in (
		"eda.sub.items-from-head2",
		"eda.sub.other",
		"eda.events",
		"xeda.sub.items-from-head",
		"amq.default",
	):
		assert not _allows(p.configure, name)
	assert _allows(p.read, "eda.events") and not _allows(p.read, "eda.sub.other")
	assert _allows(p.write, "eda.events") and _allows(p.write, "amq.default")
	assert not _allows(p.write, "other.exchange")


def test_topic_permissions_are_the_keys_it_publishes_and_exactly_the_keys_it_binds() -> None:
	[topic] = permissions_for(WH1).topics
	assert topic.exchange == "eda.events"
	for key in ("eda.receipt.head_example_com", "wh3.item.on_update", "wh3.sales_order.on_submit"):
		assert _allows(topic.write, key), key
	for key in ("wh1.item.on_update", "eda.receipt.head_example_comX", "wh3", "xwh3.item"):
		assert not _allows(topic.write, key), key
	assert _allows(topic.read, "wh1.item.*") and _allows(topic.read, "eda.receipt.wh1_example_com")
	for binding in ("wh1.#", "#", "*.item.*", "wh2.item.*", "wh1.item.on_update"):
		assert not _allows(topic.read, binding), binding


def test_a_server_with_no_traffic_gets_nothing() -> None:
	p = permissions_for(ServerTraffic("idle"))
	assert p.configure == NOTHING and p.read == NOTHING and p.topics == ()
	assert not _allows(p.write, "eda.events")


def test_printed_rabbitmqctl_commands_grant_what_the_api_grants(
	management: ManagementApi, vhost: str, unique_name: str
) -> None:
	traffic = ServerTraffic(
		f"{unique_name}-ctl",
		queues=(f"{unique_name}.q",),
		publishes=(Route(f"{unique_name}.ex", "a.#"),),
		binds=(Route(f"{unique_name}.ex", "b.*"),),
		topic_exchanges=frozenset({f"{unique_name}.ex"}),
	)
	commands = [c for c in rabbitmqctl_commands(vhost, traffic) if c.startswith("rabbitmqctl ")]
	try:
		for command in commands:
			subprocess.run(
				["bash", "-c", command],
				check=True,
				capture_output=True,
				timeout=120,
				env={**os.environ, "EDA_SERVER_PASSWORD": "s3cret"},
			)
		wanted = permissions_for(traffic)
		granted = management.request("GET", f"/api/permissions/{vhost}/{traffic.user}")
		assert (granted["configure"], granted["write"], granted["read"]) == (
			wanted.configure,
			wanted.write,
			wanted.read,
		)
		topics = management.request("GET", f"/api/users/{traffic.user}/topic-permissions")
		assert [(t["exchange"], t["write"], t["read"]) for t in topics] == [
			(t.exchange, t.write, t.read) for t in wanted.topics
		]
	finally:
		management.delete_user(traffic.user)


def test_the_frappe_eda_command_creates_a_user_that_can_do_exactly_its_traffic(
	management: ManagementApi, vhost: str, unique_name: str, amqp_url: str
) -> None:
	from click.testing import CliRunner

	from frappe_eda.cli import main

	user = f"{unique_name}-svc"
	args = [
		"--url",
		amqp_url,
		"broker-user",
		user,
		"--queue",
		f"{unique_name}.q",
		"--bind",
		f"{unique_name}.ex:a.*",
	]
	try:
		result = CliRunner().invoke(main, [*args, "--management-url", MANAGEMENT_URL])
		assert result.exit_code == 0, result.output
		assert f"created broker user {user!r}" in result.output and "shown once" in result.output
		again = CliRunner().invoke(main, [*args, "--management-url", MANAGEMENT_URL])
		assert f"updated broker user {user!r}" in again.output and "shown once" not in again.output
		printed = CliRunner().invoke(main, [*args, "--print"])
		assert printed.exit_code == 0 and "rabbitmqctl set_topic_permissions" in printed.output
	finally:
		management.delete_user(user)


def test_routes_parse_and_a_server_logs_in_as_its_own_user_on_every_node() -> None:
	import pytest

	from frappe_eda.messaging.connection import BrokerSettings
	from frappe_eda.messaging.errors import ConfigurationError

	assert Route.parse("eda.events:wh1.#") == Route("eda.events", "wh1.#")
	for bad in ("eda.events", ":wh1", "eda.events:"):
		with pytest.raises(ConfigurationError, match="give EXCHANGE:KEY"):
			Route.parse(bad)
	shared = BrokerSettings(url="amqp://guest:guest@mq1:5672/net", nodes=("mq2:5673",))
	own = shared.with_user("wh1.example.com", "p@ss:w/rd")
	assert own.user == "wh1.example.com" and own.vhost == "net"
	assert own.addresses == (
		"amqp://wh1.example.com:p%40ss%3Aw%2Frd@mq1:5672/net",
		"amqp://wh1.example.com:p%40ss%3Aw%2Frd@mq2:5673/net",
	)
	assert "p%40ss" not in repr(own)
