"""``frappe-eda worker`` records its heartbeat in the store's database and logs its throughput;
``frappe-eda status`` lists the workers alive, stale or stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text

from frappe_eda.cli import main
from frappe_eda.messaging.connection import BrokerConnection, BrokerSettings
from frappe_eda.messaging.envelope import Message
from frappe_eda.messaging.heartbeat import WorkerBeat
from frappe_eda.messaging.publisher import Publisher
from frappe_eda.messaging.registry import Subscription
from frappe_eda.messaging.retry import RetryPolicy
from frappe_eda.messaging.topology import TopologyDeclarer, consumer_topology
from frappe_eda.stores import open_store, worker_table

REPO = Path(__file__).resolve().parents[2]


def _wait_for(condition, timeout: float, what: str) -> None:
	deadline = time.monotonic() + timeout
	while time.monotonic() < deadline:
		if condition():
			return
		time.sleep(0.05)
	pytest.fail(f"timed out after {timeout}s waiting for {what}")


def _worker_lines(output: str, marker: str) -> list[str]:
	return [line for line in output.splitlines() if marker in line]


def test_worker_heartbeat_and_throughput_show_in_status_and_log(
	settings: BrokerSettings, amqp_url: str, store_url: str, unique_name: str
) -> None:
	queue, exchange = f"{unique_name}.effects", f"{unique_name}.ex"
	engine = create_engine(store_url)
	with engine.begin() as db:
		db.execute(text("CREATE TABLE side_effect (message_id VARCHAR(64) NOT NULL)"))
	store = open_store(store_url)
	table = worker_table(store)
	assert table is not None
	dead_one = datetime.now(timezone.utc) - timedelta(minutes=10)
	table.record(
		WorkerBeat(
			worker_id="old-host:99:deadbeef",
			host="old-host",
			pid=99,
			queues=(queue,),
			started_at=dead_one - timedelta(hours=1),
			last_seen=dead_one,
			processed=7,
		)
	)
	env = {
		**os.environ,
		"PYTHONPATH": str(REPO),
		"EDA_AMQP_URL": amqp_url,
		"EDA_STORE_URL": store_url,
		"EDA_TEST_QUEUE": queue,
		"EDA_TEST_EXCHANGE": exchange,
	}
	command = [sys.executable, "-m", "frappe_eda.cli", "worker", "-m", "tests.fixtures.side_effect_handlers"]
	worker = subprocess.Popen(
		[*command, "--report-every", "0.5"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
	)
	runner = CliRunner()
	status = ["--url", amqp_url, "--store", store_url, "status"]
	try:
		# One broker connection per process: the status command opens its own, so close this one first.
		with BrokerConnection(settings) as connection:
			declarer = TopologyDeclarer(connection)
			_wait_for(lambda: (declarer.consumer_count(queue) or 0) > 0, 30, "the worker to consume")
			messages = [Message("work.item", {"n": n}) for n in range(3)]
			Publisher(connection, exchange=exchange).publish_many(messages)
			declarer.close()
		with engine.connect() as db:
			_wait_for(
				lambda: db.execute(text("SELECT count(*) FROM side_effect")).scalar() == 3,
				30,
				"3 side effects",
			)

		running = runner.invoke(main, status)
		assert running.exit_code == 0, running.output
		mine = _worker_lines(running.output, f":{worker.pid}:")
		assert len(mine) == 1 and " alive (last seen " in mine[0] and f"queues {queue}" in mine[0], (
			running.output
		)
		(old,) = _worker_lines(running.output, "old-host:99:deadbeef")
		assert "stale (last seen 10 min ago)" in old and "7 handled" in old
		assert running.output.index(mine[0]) < running.output.index(old), "the most recently seen first"

		time.sleep(1.2)  # an interval with the three handled, then idle ones
		worker.send_signal(signal.SIGTERM)
		assert worker.wait(timeout=30) == 0
		output = worker.stdout.read().decode() if worker.stdout else ""
		lines = _worker_lines(output, "INFO frappe_eda.messaging.consumer: last ")
		assert len(lines) == 1, output
		assert "3 handled (3 processed, 0 duplicates, 0 retried, 0 dead)" in lines[0]
		assert lines[0].endswith(f"queues: {queue} 3")

		stopped = runner.invoke(main, status)
		(mine_now,) = _worker_lines(stopped.output, f":{worker.pid}:")
		assert " stopped (last seen " in mine_now and "3 handled (3 processed" in mine_now, stopped.output
	finally:
		if worker.poll() is None:
			worker.kill()
		subscription = Subscription(
			queue, ("work.#",), exchange, lambda m: None, "x", retry=RetryPolicy(3, (0.2,))
		)
		with BrokerConnection(settings) as connection:
			TopologyDeclarer(connection).delete(consumer_topology(subscription, RetryPolicy()))
		store.close()
		engine.dispose()
