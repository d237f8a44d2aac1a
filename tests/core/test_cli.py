from __future__ import annotations

import json

from click.testing import CliRunner

from frappe_eda.cli import main
from frappe_eda.messaging.topology import Binding, Exchange, Queue, Topology, TopologyDeclarer


def test_publish_status_and_replay_from_the_command_line(
	amqp_url: str, store_url: str, unique_name: str
) -> None:
	exchange, queue = f"{unique_name}.ex", f"{unique_name}.q"
	runner = CliRunner()
	base = ["--url", amqp_url, "--store", store_url, "--exchange", exchange]
	from frappe_eda.messaging.connection import BrokerConnection, BrokerSettings

	topology = Topology((Exchange(exchange),), (Queue(queue),), (Binding(exchange, queue, "order.*"),))
	with BrokerConnection(BrokerSettings(url=amqp_url)) as connection:
		TopologyDeclarer(connection).declare(topology)

	published = runner.invoke(main, [*base, "publish", "order.created", json.dumps({"name": "SO-1"})])
	assert published.exit_code == 0, published.output
	message_id = published.output.split()[1]

	unroutable = runner.invoke(main, [*base, "publish", "invoice.created", "{}"])
	assert unroutable.exit_code != 0 and "no queue bound" in str(unroutable.exception)

	status = runner.invoke(main, [*base, "status"])
	assert status.exit_code == 0, status.output
	assert "published" in status.output and "failed" in status.output

	refused = runner.invoke(main, [*base, "replay", message_id])
	assert "already published" in str(refused.exception)
	dry = runner.invoke(main, [*base, "replay", "--status", "failed", "--dry-run"])
	assert dry.exit_code == 0 and "0 of 1 replayed" in dry.output and "dry run" in dry.output

	with BrokerConnection(BrokerSettings(url=amqp_url)) as connection:
		declarer = TopologyDeclarer(connection)
		assert declarer.queue_depth(queue) == 1
		declarer.delete(topology)


def test_replay_from_the_command_line_says_how_many_dead_copies_it_removed(
	amqp_url: str, store_url: str, unique_name: str, raw_channel
) -> None:
	import pika

	from frappe_eda.messaging.connection import BrokerConnection, BrokerSettings
	from frappe_eda.messaging.store import Direction, MessageRecord, Status
	from frappe_eda.stores import open_store

	queue = f"{unique_name}.q"
	topology = Topology(queues=(Queue(queue), Queue(f"{queue}.dead")))
	with BrokerConnection(BrokerSettings(url=amqp_url)) as connection:
		TopologyDeclarer(connection).declare(topology)
	store = open_store(store_url)
	body = json.dumps({"id": "m-1", "type": "order.created", "payload": {}})
	store.save([MessageRecord("m-1", Direction.INCOMING, Status.DEAD, "order.created", body, queue=queue)])
	store.close()
	raw_channel.confirm_delivery()
	raw_channel.basic_publish("", f"{queue}.dead", body.encode(), pika.BasicProperties(message_id="m-1"))

	replayed = CliRunner().invoke(main, ["--url", amqp_url, "--store", store_url, "replay", "m-1"])

	assert replayed.exit_code == 0, replayed.output
	assert "1 of 1 replayed" in replayed.output and "1 dead copies removed" in replayed.output
	with BrokerConnection(BrokerSettings(url=amqp_url)) as connection:
		declarer = TopologyDeclarer(connection)
		assert (declarer.queue_depth(queue), declarer.queue_depth(f"{queue}.dead")) == (1, 0)
		declarer.delete(topology)
