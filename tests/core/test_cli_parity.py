"""The standalone ``frappe-eda replay`` speaks as ``bench eda replay`` does: statuses in any case, times
in UTC or with an offset, and a refusal that names the real option."""

from __future__ import annotations

import json

from click.testing import CliRunner

from frappe_eda.cli import main
from frappe_eda.messaging.connection import BrokerConnection, BrokerSettings
from frappe_eda.messaging.topology import Binding, Exchange, Queue, Topology, TopologyDeclarer


def test_replay_vocabulary(amqp_url: str, store_url: str, unique_name: str) -> None:
	exchange, queue = f"{unique_name}.ex", f"{unique_name}.q"
	runner = CliRunner()
	base = ["--url", amqp_url, "--store", store_url, "--exchange", exchange]
	topology = Topology((Exchange(exchange),), (Queue(queue),), (Binding(exchange, queue, "order.*"),))
	with BrokerConnection(BrokerSettings(url=amqp_url)) as connection:
		TopologyDeclarer(connection).declare(topology)
	try:
		published = runner.invoke(main, [*base, "publish", "order.created", json.dumps({"name": "SO-1"})])
		assert published.exit_code == 0, published.output
		message_id = published.output.split()[1]

		refused = runner.invoke(main, [*base, "replay", message_id])
		assert "--force" in str(refused.exception) and "pass force" not in str(refused.exception)

		for value in ("published", "Published", "PUBLISHED"):
			found = runner.invoke(main, [*base, "replay", "--status", value, "--dry-run"])
			assert found.exit_code == 0, found.output
			assert "already published" in found.output  # listed, and refused without --force

		window = ["--status", "published", "--force", "--dry-run"]
		since = runner.invoke(main, [*base, "replay", *window, "--since", "2000-01-01T00:00:00+14:00"])
		assert since.exit_code == 0, since.output
		assert "0 of 1 replayed" in since.output and "dry run" in since.output
		until = runner.invoke(main, [*base, "replay", *window, "--until", "2000-01-01T00:00:00Z"])
		assert until.exit_code == 0, until.output
		assert "0 of 0 replayed" in until.output
		assert runner.invoke(main, ["replay", "--help"]).output.count("UTC") >= 2
	finally:
		with BrokerConnection(BrokerSettings(url=amqp_url)) as connection:
			TopologyDeclarer(connection).delete(topology)
