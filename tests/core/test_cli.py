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
