"""Poison isolation in the real worker, on the real broker, over SQLite, MariaDB and PostgreSQL.

A message the store cannot hold is dead at once, before its handler; a message the store refuses when the
batch is recorded is found by recording the batch's deliveries one at a time and dead-lettered alone; a
store that is down still backs off and loses nothing. Effects are rows written in the store's transaction,
so "ran once" means committed once.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator

import pika
import pytest
from sqlalchemy import text

from frappe_eda.messaging.connection import BrokerConnection
from frappe_eda.messaging.consumer import Worker, WorkerOptions, WorkerStats
from frappe_eda.messaging.context import current_context
from frappe_eda.messaging.envelope import Message, encode
from frappe_eda.messaging.notify import DEAD_LETTERED, FailureNotice
from frappe_eda.messaging.registry import HandlerRegistry
from frappe_eda.messaging.store import Direction, MessageFilter, Status
from frappe_eda.messaging.topology import TopologyDeclarer
from frappe_eda.stores.sql import SqlStore

REFUSED_ID = "refused-by-the-store"


class Effects:
	"""A side-effect table in the store's own database, written in the handler's transaction."""

	def __init__(self, store: SqlStore, prefix: str) -> None:
		self.store = store
		self.table = f"{prefix}effect"
		with store.engine.begin() as db:
			db.execute(text(f"CREATE TABLE {self.table} (message_id VARCHAR(255) NOT NULL)"))
		self.calls: Counter[str] = Counter()

	def handler(self, message: Message) -> None:
		self.calls[message.id] += 1
		connection = current_context().store.connection  # type: ignore[attr-defined]
		connection.execute(text(f"INSERT INTO {self.table} (message_id) VALUES (:id)"), {"id": message.id})

	def committed(self) -> Counter[str]:
		with self.store.engine.connect() as db:
			return Counter(row[0] for row in db.execute(text(f"SELECT message_id FROM {self.table}")))


class Alerts:
	def __init__(self) -> None:
		self.notices: list[FailureNotice] = []

	def notify(self, notice: FailureNotice) -> None:
		self.notices.append(notice)


@pytest.fixture
def sql_store(any_store_url: str) -> Iterator[tuple[SqlStore, str]]:
	prefix = f"eda_{uuid.uuid4().hex[:8]}_"
	store = SqlStore(any_store_url, table_prefix=prefix)
	try:
		yield store, prefix
	finally:
		with store.engine.begin() as db:
			db.execute(text(f"DROP TABLE IF EXISTS {prefix}effect"))
		store.metadata.drop_all(store.engine)
		store.close()


def _publish(channel: object, exchange: str, bodies: list[bytes], routing_key: str = "order.created") -> None:
	properties = pika.BasicProperties(content_type="application/json", delivery_mode=2)
	for body in bodies:
		channel.basic_publish(exchange, routing_key, body, properties)  # type: ignore[attr-defined]


def _with_created_at(message: Message, created_at: str) -> bytes:
	document = json.loads(encode(message))
	document["created_at"] = created_at
	return json.dumps(document).encode()


def _refuse_id(store: SqlStore, message_id: str) -> None:
	"""A store policy the core cannot know about: a trigger that refuses every row of one id."""
	table = store.messages.name
	dialect = store.engine.dialect.name
	with store.engine.begin() as db:
		if dialect == "sqlite":
			db.execute(
				text(
					f"CREATE TRIGGER {table}_refuse BEFORE INSERT ON {table} WHEN NEW.message_id = '{message_id}' "
					"BEGIN SELECT RAISE(ABORT, 'refused by policy'); END"
				)
			)
		elif dialect == "postgresql":
			db.execute(
				text(
					f"CREATE FUNCTION {table}_refuse() RETURNS trigger AS $$ BEGIN "
					f"IF NEW.message_id = '{message_id}' THEN RAISE EXCEPTION 'refused by policy'; END IF; "
					"RETURN NEW; END $$ LANGUAGE plpgsql"
				)
			)
			db.execute(
				text(
					f"CREATE TRIGGER {table}_refuse BEFORE INSERT ON {table} "
					f"FOR EACH ROW EXECUTE FUNCTION {table}_refuse()"
				)
			)
		else:
			db.execute(
				text(
					f"CREATE TRIGGER {table}_refuse BEFORE INSERT ON {table} FOR EACH ROW BEGIN "
					f"IF NEW.message_id = '{message_id}' THEN "
					"SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused by policy'; END IF; END"
				)
			)


def _run(worker: Worker, until: Callable[[WorkerStats], bool], seconds: float = 30) -> WorkerStats:
	"""Run until ``until`` or a watchdog: a worker stuck in a redelivery loop never ends a turn of its
	loop, so ``until`` alone would not stop it."""
	watchdog = threading.Timer(seconds, worker.stop)
	watchdog.start()
	try:
		return worker.run(until=until, idle_timeout=seconds)
	finally:
		watchdog.cancel()


def _dead_records(store: SqlStore, queue: str) -> list:
	return store.find(MessageFilter(direction=Direction.INCOMING, queue=queue, statuses=(Status.DEAD,)))


def test_unstorable_messages_are_dead_before_their_handler_and_their_neighbours_run_once(
	connection: BrokerConnection,
	registry: HandlerRegistry,
	sql_store: tuple[SqlStore, str],
	unique_name: str,
	raw_channel,
) -> None:
	store, prefix = sql_store
	queue, exchange = f"{unique_name}.orders", f"{unique_name}.ex"
	effects = Effects(store, prefix)
	registry.subscribe("order.*", queue=queue, exchange=exchange)(effects.handler)
	alerts = Alerts()
	worker = Worker(connection, registry, store, notifier=alerts, options=WorkerOptions(poll_seconds=0.1))
	worker.declare()
	good = [Message("order.created", {"n": n}) for n in range(6)]
	too_early = Message("order.created", {"bad": "time"})
	long_id = Message("order.created", {"bad": "id"}, id="i" * 300)
	long_type = Message("x" * 300, {"bad": "type"})
	bodies = [encode(m) for m in good[:3]]
	bodies += [_with_created_at(too_early, "0001-01-01T00:00:00+14:00"), encode(long_id), encode(long_type)]
	bodies += [encode(m) for m in good[3:]]
	_publish(raw_channel, exchange, bodies)

	started = time.monotonic()
	stats = _run(worker, lambda s: s.handled >= 9 or s.store_failures >= 3)

	assert stats.store_failures == 0
	assert time.monotonic() - started < 10
	assert effects.committed() == Counter(m.id for m in good)
	assert effects.calls == Counter(m.id for m in good)  # the bad ones' handler never ran
	assert (stats.processed, stats.dead, stats.refused) == (6, 3, 0)
	dead = _dead_records(store, queue)
	assert len(dead) == 3
	for record in dead:
		[error] = store.errors(record.message_id, queue)
		assert error.exception_type.endswith("UnstorableMessage")
	reasons = " | ".join(store.errors(r.message_id, queue)[0].error for r in dead)
	assert "created_at" in reasons and "message_id is 300 characters" in reasons
	assert "message_type is 300 characters" in reasons
	assert TopologyDeclarer(connection).queue_depth(f"{queue}.dead") == 3
	assert [n.kind for n in alerts.notices] == [DEAD_LETTERED] * 3


def test_a_message_the_store_refuses_is_dead_alone_and_other_queues_keep_flowing(
	connection: BrokerConnection,
	registry: HandlerRegistry,
	sql_store: tuple[SqlStore, str],
	unique_name: str,
	raw_channel,
) -> None:
	store, prefix = sql_store
	queue, other, exchange = f"{unique_name}.orders", f"{unique_name}.billing", f"{unique_name}.ex"
	effects = Effects(store, prefix)
	registry.subscribe("order.*", queue=queue, exchange=exchange)(effects.handler)
	registry.subscribe("invoice.*", queue=other, exchange=exchange)(effects.handler)
	_refuse_id(store, REFUSED_ID)
	alerts = Alerts()
	worker = Worker(connection, registry, store, notifier=alerts, options=WorkerOptions(poll_seconds=0.1))
	worker.declare()
	good = [Message("order.created", {"n": n}) for n in range(10)]
	refused = Message("order.created", {"bad": "policy"}, id=REFUSED_ID)
	invoices = [Message("invoice.created", {"n": n}) for n in range(10)]
	_publish(raw_channel, exchange, [encode(m) for m in good[:5]] + [encode(refused)])
	_publish(raw_channel, exchange, [encode(m) for m in invoices[:5]], "invoice.created")
	_publish(raw_channel, exchange, [encode(m) for m in good[5:]])
	_publish(raw_channel, exchange, [encode(m) for m in invoices[5:]], "invoice.created")

	started = time.monotonic()
	stats = _run(worker, lambda s: s.handled >= 21 or s.store_failures >= 3)

	assert stats.store_failures == 0
	assert time.monotonic() - started < 10  # no back-off: nothing waited 30 s behind the refused message
	committed = effects.committed()
	assert committed == Counter(m.id for m in good + invoices)
	# A neighbour of the refused message ran once in the failed batch (rolled back) and once alone.
	assert max(effects.calls.values()) <= 2 and effects.calls[REFUSED_ID] <= 2
	assert (stats.processed, stats.dead, stats.refused) == (20, 1, 1)
	[dead] = _dead_records(store, queue)
	[error] = store.errors(dead.message_id, queue)
	assert error.exception_type.endswith("StoreRefused")
	assert REFUSED_ID in error.error and "refused by policy" in error.error
	_method, properties, body = raw_channel.basic_get(f"{queue}.dead", auto_ack=True)
	assert body == encode(refused)
	assert properties.headers["x-eda-error-type"].endswith("StoreRefused")
	assert [n.kind for n in alerts.notices] == [DEAD_LETTERED]


def test_a_message_not_even_a_minimal_record_of_which_is_stored_goes_to_dead_with_headers_and_an_alert(
	connection: BrokerConnection, registry: HandlerRegistry, unique_name: str, raw_channel, tmp_path
) -> None:
	prefix = f"eda_{uuid.uuid4().hex[:8]}_"
	store = SqlStore(f"sqlite:///{tmp_path / 'eda.sqlite3'}", table_prefix=prefix)
	effects = Effects(store, prefix)
	queue, exchange = f"{unique_name}.orders", f"{unique_name}.ex"
	registry.subscribe("order.*", queue=queue, exchange=exchange)(effects.handler)
	table = store.messages.name
	with store.engine.begin() as db:  # refuses the message as processed, and every dead record at all
		db.execute(
			text(
				f"CREATE TRIGGER {table}_refuse BEFORE INSERT ON {table} "
				f"WHEN NEW.message_id = '{REFUSED_ID}' OR NEW.status = 'dead' "
				"BEGIN SELECT RAISE(ABORT, 'refused by policy'); END"
			)
		)
	alerts = Alerts()
	worker = Worker(connection, registry, store, notifier=alerts, options=WorkerOptions(poll_seconds=0.1))
	worker.declare()
	good = [Message("order.created", {"n": n}) for n in range(4)]
	refused = Message("order.created", {}, id=REFUSED_ID)
	_publish(raw_channel, exchange, [encode(m) for m in [*good[:2], refused, *good[2:]]])

	stats = _run(worker, lambda s: s.handled >= 5 or s.store_failures >= 3)

	assert (stats.processed, stats.dead, stats.refused, stats.store_failures) == (4, 1, 1, 0)
	assert effects.committed() == Counter(m.id for m in good)
	assert _dead_records(store, queue) == []
	_method, properties, body = raw_channel.basic_get(f"{queue}.dead", auto_ack=True)
	assert body == encode(refused)
	assert properties.headers["x-eda-unrecorded"] is True
	assert "not even a minimal record could be stored" in properties.headers["x-eda-error"]
	[alert] = alerts.notices
	assert alert.kind == DEAD_LETTERED and REFUSED_ID in alert.error
	assert TopologyDeclarer(connection).queue_depth(queue) == 0  # acked, not looping
	store.close()


def test_a_store_outage_still_backs_off_and_loses_nothing(
	connection: BrokerConnection, registry: HandlerRegistry, unique_name: str, raw_channel, tmp_path
) -> None:
	from tests.faults.harness import lock_out, mariadb_store

	with mariadb_store(tmp_path) as (url, user):
		prefix = f"eda_{uuid.uuid4().hex[:8]}_"
		store = SqlStore(url, table_prefix=prefix)
		try:
			effects = Effects(store, prefix)
			queue, exchange = f"{unique_name}.orders", f"{unique_name}.ex"

			def slow(message: Message) -> None:
				time.sleep(0.01)
				effects.handler(message)

			registry.subscribe("order.*", queue=queue, exchange=exchange)(slow)
			locker: list[threading.Thread] = []

			def lock_once() -> None:
				if not locker and sum(effects.calls.values()) >= 40:
					locker.append(threading.Thread(target=lock_out, args=(user, 2), daemon=True))
					locker[0].start()
					time.sleep(0.5)  # the account is locked and its connections killed by now

			worker = Worker(
				connection,
				registry,
				store,
				options=WorkerOptions(poll_seconds=0.1, max_batch=20),
				before_batch=lock_once,
			)
			worker.declare()
			messages = [Message("order.created", {"n": n}) for n in range(300)]
			_publish(raw_channel, exchange, [encode(m) for m in messages])

			stats = _run(worker, lambda s: s.processed >= len(messages), 60)
			locker[0].join(timeout=30)

			assert stats.store_failures >= 1 and stats.dead == 0
			assert effects.committed() == Counter(m.id for m in messages)
			assert TopologyDeclarer(connection).queue_depth(f"{queue}.dead") == 0
		finally:
			store.metadata.drop_all(store.engine)
			store.close()
