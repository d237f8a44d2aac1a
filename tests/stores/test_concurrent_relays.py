"""Any number of relays on one store send every PENDING message once, oldest first.

Real relay processes (each with its own store handle and broker connection, as ``bench eda relay``,
the workers and the scheduler are) race over thousands of rows on SQLite, MariaDB and PostgreSQL; a
queue bound to everything counts what reached the broker, by message id.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pika
import pytest

from frappe_eda.messaging.envelope import Message
from frappe_eda.messaging.store import Direction, Status
from frappe_eda.stores.sql import SqlStore
from tests.fixtures.relay_process import start_relays
from tests.outbox_rows import pending_row

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=timezone.utc)
ROWS = 3000
RELAYS = 4


@pytest.fixture
def audit(
	amqp_url: str, unique_name: str
) -> Iterator[tuple[str, str, pika.adapters.blocking_connection.BlockingChannel]]:
	"""An exchange and a queue bound to every key on it: what the relays sent, in the order it arrived."""
	connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
	channel = connection.channel()
	exchange, queue = f"{unique_name}.ex", f"{unique_name}.audit"
	channel.exchange_declare(exchange, "topic", durable=True)
	channel.queue_declare(queue, durable=True)
	channel.queue_bind(queue, exchange, "#")
	yield exchange, queue, channel
	channel.queue_delete(queue)
	channel.exchange_delete(exchange)
	connection.close()


def _fill(store: SqlStore, exchange: str, count: int) -> list[str]:
	"""PENDING rows as the Frappe outbox writes them, each a millisecond younger than the one before."""
	records = []
	for n in range(count):
		message = Message("order.created", {"n": n}, created_at=T0 + timedelta(milliseconds=n))
		records.append(pending_row(message, exchange))
	store.save(records)
	return [r.message_id for r in records]


def _received(channel, queue: str, expected: int, timeout: float = 60) -> list[str]:  # type: ignore[no-untyped-def]
	ids: list[str] = []
	deadline = time.monotonic() + timeout
	for method, properties, _body in channel.consume(queue, auto_ack=True, inactivity_timeout=1):
		if method is None:
			if len(ids) >= expected or time.monotonic() > deadline:
				break
			continue
		ids.append(properties.message_id)
	channel.cancel()
	return ids


def test_concurrent_relays_send_every_row_once_and_in_order(
	store: SqlStore, url: str, amqp_url: str, audit, tmp_path: Path
) -> None:
	exchange, queue, channel = audit
	written = _fill(store, exchange, ROWS)
	go = tmp_path / "go"
	relays = start_relays(
		RELAYS,
		go,
		STORE=url,
		PREFIX=store.messages.name.removesuffix("message"),
		AMQP=amqp_url,
		EXCHANGE=exchange,
		BATCH="100",
	)
	time.sleep(1.5)  # every relay imported, connected and waiting
	go.touch()
	results = []
	for relay in relays:
		out, err = relay.communicate(timeout=180)
		assert relay.returncode == 0, err.decode()[-3000:]
		results.append(json.loads(out.decode().strip().splitlines()[-1]))

	received = _received(channel, queue, ROWS)
	twice = {i: n for i, n in Counter(received).items() if n > 1}
	assert not twice, f"{len(twice)} messages sent more than once"
	assert set(received) == set(written)
	assert received == written, "relays sent out of order"
	assert sum(r["confirmed"] for r in results) == ROWS
	assert store.counts() == {(Direction.OUTGOING, Status.PUBLISHED): ROWS}


def test_a_relay_killed_while_holding_the_claim_frees_it(store: SqlStore, url: str) -> None:
	"""A session lock, not a lease: the database server (or the kernel, for SQLite) frees it with its holder."""
	holder = subprocess.Popen(
		[
			sys.executable,
			"-c",
			"import sys, time\n"
			"from frappe_eda.stores.sql import SqlStore\n"
			"store = SqlStore(sys.argv[1], table_prefix=sys.argv[2], create_tables=False)\n"
			"with store.relay_claim() as held:\n"
			"    print(held, flush=True)\n"
			"    time.sleep(600)\n",
			url,
			store.messages.name.removesuffix("message"),
		],
		cwd=REPO,
		env={**os.environ, "PYTHONPATH": str(REPO)},
		stdout=subprocess.PIPE,
	)
	try:
		assert holder.stdout is not None
		assert holder.stdout.readline().strip() == b"True"
		with store.relay_claim() as held:
			assert not held
		holder.send_signal(signal.SIGKILL)
		holder.wait(timeout=30)
		deadline = time.monotonic() + 20
		while True:
			with store.relay_claim() as held:
				if held:
					break
			assert time.monotonic() < deadline, "the dead relay's claim was never freed"
			time.sleep(0.1)
	finally:
		if holder.poll() is None:
			holder.kill()
			holder.wait()
