"""The README's first command: the whole life of a failing message on the local broker, step by step.

Everything the demo declares carries a fresh prefix and is deleted at the end (unless ``--keep``), so
it can run beside anything else on the broker. The store is a SQLite file in a temporary folder.
"""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

import click
import pika

from frappe_eda.messaging.connection import BrokerConnection, BrokerSettings
from frappe_eda.messaging.consumer import Worker, WorkerOptions
from frappe_eda.messaging.envelope import Message
from frappe_eda.messaging.notify import FailureNotice
from frappe_eda.messaging.publisher import Publisher
from frappe_eda.messaging.registry import HandlerRegistry
from frappe_eda.messaging.replay import Replayer
from frappe_eda.messaging.retry import RetryPolicy
from frappe_eda.messaging.store import Direction, MessageStore
from frappe_eda.messaging.topology import TopologyDeclarer, topology_for
from frappe_eda.stores import open_store


class Warehouse:
	"""The demo's downstream system: it fails for items it does not know, until someone adds them."""

	def __init__(self) -> None:
		self.known_items = {"CHAIR-01", "DESK-02"}
		self.reserved: list[str] = []

	def reserve(self, message: Message) -> None:
		order = message.payload
		for line in order["items"]:
			if line["item"] not in self.known_items:
				raise LookupError(f"item {line['item']} is not in the warehouse catalogue")
		self.reserved.append(order["name"])


class EchoNotifier:
	def notify(self, notice: FailureNotice) -> None:
		click.secho(f"   notify: {notice.summary()}", fg="magenta")


def step(number: int, text: str) -> None:
	click.secho(f"\n{number}. {text}", bold=True)


def run_demo(settings: BrokerSettings, store_url: str | None, keep: bool = False) -> None:
	prefix = f"eda-demo-{uuid.uuid4().hex[:6]}"
	folder = Path(tempfile.mkdtemp(prefix="eda-demo-"))
	store = open_store(store_url or f"sqlite:///{folder / 'eda-demo.sqlite3'}")
	click.echo(
		f"broker {settings.redacted_url()}, store {store_url or folder / 'eda-demo.sqlite3'}, names {prefix}.*"
	)

	warehouse = Warehouse()
	registry = HandlerRegistry()
	exchange = f"{prefix}.events"
	registry.subscribe(
		"sales_order.*",
		queue=f"{prefix}.inventory",
		exchange=exchange,
		max_attempts=3,
		retry_delays=(0.5, 1.5),
	)(warehouse.reserve)
	policy = RetryPolicy(max_attempts=3, delays=(0.5, 1.5))
	with BrokerConnection(settings) as connection:
		try:
			_story(connection, registry, store, warehouse, exchange, prefix, policy)
		finally:
			if not keep:
				declarer = TopologyDeclarer(connection)
				declarer.delete(topology_for(registry, policy))
				declarer.close()
			store.close()
	if keep:
		click.echo(f"\nkept the queues {prefix}.* and the store in {folder}")


def _story(
	connection: BrokerConnection,
	registry: HandlerRegistry,
	store: MessageStore,
	warehouse: Warehouse,
	exchange: str,
	prefix: str,
	policy: RetryPolicy,
) -> None:
	queue = f"{prefix}.inventory"
	worker = Worker(
		connection,
		registry,
		store,
		retry=policy,
		notifier=EchoNotifier(),
		options=WorkerOptions(poll_seconds=0.2),
	)
	publisher = Publisher(connection, store, exchange=exchange, source="demo-erp")

	step(
		1,
		f"declare exchange {exchange}, queue {queue} (bound to sales_order.*), its retry and dead-letter queues",
	)
	worker.declare()

	step(2, "publish SO-0001 (known items) with publisher confirms, then consume it")
	good = publisher.publish(
		"sales_order.submitted", {"name": "SO-0001", "items": [{"item": "CHAIR-01", "qty": 2}]}
	)
	click.echo(f"   confirmed by the broker: {good.id}")
	worker.run(until=lambda s: s.processed >= 1)
	click.echo(f"   processed; warehouse reserved {warehouse.reserved}")

	step(3, "publish SO-0002 for WIDGET-X, an item the warehouse does not know: the handler fails")
	bad = publisher.publish(
		"sales_order.submitted", {"name": "SO-0002", "items": [{"item": "WIDGET-X", "qty": 1}]}
	)
	worker.run(until=lambda s: s.dead >= 1)
	for error in store.errors(bad.id, queue):
		click.echo(
			f"   attempt {error.attempt} at {error.occurred_at:%H:%M:%S.%f}: {error.exception_type}: {error.error}"
		)
	record = store.get(bad.id, Direction.INCOMING, queue)
	assert record is not None
	click.echo(
		f"   retried with growing delays {policy.delays}, then dead-lettered: status {record.status.value}, in {queue}.dead"
	)

	step(4, "a malformed message (not JSON) arrives: recorded and dead-lettered at once, never retried")
	channel = connection.channel()
	channel.basic_publish(
		exchange,
		"sales_order.submitted",
		b"{not json",
		pika.BasicProperties(content_type="application/json", delivery_mode=2),
	)
	channel.close()
	worker.run(until=lambda s: s.dead >= 2)

	step(5, "fix the cause: WIDGET-X is added to the catalogue")
	warehouse.known_items.add("WIDGET-X")

	step(6, f"replay {bad.id} (same id, same body, replay headers added)")
	result = Replayer(publisher, store, actor="demo-operator").replay(bad.id, queue)
	click.echo(f"   {result.detail}: sent={result.sent}")
	worker.run(until=lambda s: s.processed >= 2)
	record = store.get(bad.id, Direction.INCOMING, queue)
	assert record is not None
	click.echo(f"   status {record.status.value}; warehouse reserved {warehouse.reserved}")

	step(7, "replaying it again is refused: it was processed already")
	try:
		Replayer(publisher, store).replay(bad.id, queue)
	except Exception as e:
		click.echo(f"   {type(e).__name__}: {e}")

	step(8, "what the store holds")
	for (direction, status), count in sorted(
		store.counts().items(), key=lambda kv: (kv[0][0].value, kv[0][1].value)
	):
		click.echo(f"   {direction.value:<4}{status.value:<11}{count}")
	publisher.close()
	worker.close()
	click.secho("\ndemo finished: nothing lost, the failure was visible, one replay fixed it.", fg="green")
