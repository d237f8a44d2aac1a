"""One function per fault scenario: set up, attack mid-stream, recover, reconcile."""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pika
from sqlalchemy import text

from frappe_eda.messaging.connection import BrokerConnection, BrokerSettings
from frappe_eda.messaging.envelope import Message, encode
from frappe_eda.messaging.errors import PublishNacked, UnroutableMessage
from frappe_eda.messaging.publisher import Publisher
from frappe_eda.messaging.store import Direction
from frappe_eda.messaging.topology import Exchange, Queue, Topology, TopologyDeclarer
from frappe_eda.stores import open_store
from tests.faults.harness import FaultLab, Outcome, in_background, lock_out, mariadb_store, rabbitmqctl
from tests.fixtures.relay_process import start_relays
from tests.outbox_rows import pending_row


def broker_restart(lab: FaultLab, count: int) -> Outcome:
	"""The broker goes away while the producer is publishing and the worker consuming, then returns."""
	lab.start_worker(EDA_FAULT_HANDLER_SECONDS="0.005")
	messages = lab.messages(count)
	restarted: dict[str, float] = {}

	def restart_broker() -> None:
		try:
			rabbitmqctl("stop_app")
			time.sleep(2)
		finally:
			rabbitmqctl("start_app")
			rabbitmqctl("await_startup")
		restarted["at"] = time.monotonic()
		restarted["effects"] = sum(lab.effects().values())

	chunks = max(1, count // 50)
	threads = []
	lab.publish(
		messages,
		between=lambda i: threads.append(in_background(restart_broker)) if i == chunks // 2 else None,
	)
	for thread in threads:
		thread.join(timeout=180)
	lab.settle({m.id for m in messages})
	recovery = None
	if "at" in restarted and restarted["effects"] < count:
		recovery = lab.first_effect_after(restarted["at"], restarted["effects"])
	lab.stop_worker()
	return lab.reconcile("broker restart (stop_app / start_app)", {m.id for m in messages}, recovery)


def connection_cut(lab: FaultLab, count: int) -> Outcome:
	lab.start_worker(EDA_FAULT_HANDLER_SECONDS="0.002")
	messages = lab.messages(count)
	cut = {}

	def cut_connections() -> None:
		cut["effects"] = sum(lab.effects().values())
		cut["at"] = time.monotonic()
		rabbitmqctl("close_all_connections", "--vhost", lab.vhost, "fault injection: connection cut")

	chunks = max(1, count // 50)
	lab.publish(messages, between=lambda i: cut_connections() if i == chunks // 2 else None)
	recovery = (
		lab.first_effect_after(cut["at"], cut["effects"]) if cut.get("effects", count) < count else None
	)
	lab.settle({m.id for m in messages})
	lab.stop_worker()
	return lab.reconcile("connection closed by the broker", {m.id for m in messages}, recovery)


def kill_in_handler(lab: FaultLab, count: int) -> Outcome:
	lab.start_worker(EDA_FAULT_KILL_IN_HANDLER=str(count // 3), EDA_FAULT_HANDLER_SECONDS="0.001")
	return _survive_self_kill(lab, count, "worker SIGKILLed inside a handler")


def kill_before_ack(lab: FaultLab, count: int) -> Outcome:
	lab.start_worker(EDA_FAULT_KILL_BEFORE_ACK="3")
	outcome = _survive_self_kill(lab, count, "worker SIGKILLed after commit, before ack")
	duplicates = sum(
		"duplicates=" in line and "duplicates=0" not in line for line in lab.logs[-1].read_text().splitlines()
	)
	outcome.notes.append(f"redelivered batch detected as duplicates: {bool(duplicates)}")
	assert duplicates, "the restarted worker should have seen the committed batch again as duplicates"
	return outcome


def _survive_self_kill(lab: FaultLab, count: int, scenario: str) -> Outcome:
	"""The worker started by the caller kills itself mid-stream; a new one must finish the job."""
	messages = lab.messages(count)
	lab.publish(messages)
	assert lab.wait_for_worker_death() == -signal.SIGKILL
	before, killed_at = sum(lab.effects().values()), time.monotonic()
	lab.start_worker()
	recovery = lab.first_effect_after(killed_at, before)
	lab.settle({m.id for m in messages})
	lab.stop_worker()
	return lab.reconcile(scenario, {m.id for m in messages}, recovery)


def database_unavailable(lab_factory, workdir: Path, count: int) -> Outcome:
	with mariadb_store(workdir) as (store_url, user):
		lab: FaultLab = lab_factory(store_url)
		try:
			lab.start_worker(EDA_FAULT_HANDLER_SECONDS="0.002")
			messages = lab.messages(count)
			locked = {}

			def lock() -> None:
				locked["effects"] = sum(lab.effects().values())
				locked["at"] = time.monotonic()
				lock_out(user, 3)
				locked["unlocked"] = time.monotonic()

			chunks = max(1, count // 50)
			lab.publish(messages, between=lambda i: in_background(lock) if i == chunks // 3 else None)
			lab.wait_for(lambda: "unlocked" in locked, 60, "the database to come back")
			recovery = (
				lab.first_effect_after(locked["unlocked"], locked["effects"])
				if locked["effects"] < count
				else 0.0
			)
			lab.settle({m.id for m in messages})
			lab.stop_worker()
			return lab.reconcile(
				"database unavailable while consuming (MariaDB)", {m.id for m in messages}, recovery
			)
		finally:
			lab.close()


def handler_failures(lab: FaultLab, count: int) -> tuple[Outcome, int]:
	"""Every 7th message fails once, every 11th twice (both recover); every 13th permanently,
	every 17th more often than max_attempts (both dead)."""

	def payload(n: int) -> dict:
		if n % 13 == 0:
			return {"n": n, "permanent": True}
		if n % 17 == 0:
			return {"n": n, "fail_times": 5}
		return {"n": n, "fail_times": 1 if n % 7 == 0 else 2 if n % 11 == 0 else 0}

	lab.start_worker()
	messages = lab.messages(count, payload)
	lab.publish(messages)
	lab.settle({m.id for m in messages})
	lab.stop_worker()
	expected_dead = sum(1 for n in range(1, count + 1) if n % 13 == 0 or n % 17 == 0)
	return lab.reconcile(
		"handler failing transiently and permanently", {m.id for m in messages}
	), expected_dead


def handlers_that_end_the_transaction(lab: FaultLab, count: int) -> tuple[Outcome, int]:
	"""Every 19th handler commits the store's transaction itself: dead at once (``HandlerCommitted``),
	its effect kept exactly once. Every 23rd rolls it back on its first attempt, taking its batch's
	earlier writes with it: the batch is run again, that message retried, nothing applied twice."""

	def payload(n: int) -> dict:
		if n % 19 == 0:
			return {"n": n, "commit": True}
		return {"n": n, "rollback_times": 1 if n % 23 == 0 else 0}

	lab.start_worker()
	messages = lab.messages(count, payload)
	ids = {m.id for m in messages}
	lab.publish(messages)
	lab.settle(ids)
	lab.stop_worker()
	committed = frozenset(m.id for m in messages if m.payload.get("commit"))
	store = open_store(lab.store_url)
	try:
		wrong = [
			m
			for m in committed
			if not store.errors(m, lab.queue)[-1].exception_type.endswith("HandlerCommitted")
		]
	finally:
		store.close()
	assert not wrong, f"dead without HandlerCommitted: {wrong[:3]}"
	outcome = lab.reconcile(
		"handlers that commit or roll back the worker's transaction", ids, committed_dead=committed
	)
	outcome.notes.append(
		f"{len(committed)} committed (dead, effect once), {sum(1 for n in range(1, count + 1) if n % 23 == 0 and n % 19)} rolled back once (retried)"
	)
	return outcome, len(committed)


POISON = [
	("not JSON", b"{not json", "application/json", {}),
	("invalid UTF-8", b'{"id": "\xff\xfe"}', "application/json", {}),
	("empty body", b"", "application/json", {}),
	("over the size limit", b'{"pad": "' + b"x" * (2 * 1024 * 1024) + b'"}', "application/json", {}),
	("no message id", b'{"type": "fault.item", "payload": {}}', "application/json", {}),
	(
		"duplicated message id",
		b'{"id": "a", "id": "b", "type": "fault.item", "payload": {}}',
		"application/json",
		{},
	),
	("wrong content type", b'{"id": "ct", "type": "fault.item", "payload": {}}', "text/xml", {}),
	(
		"header of the wrong type",
		b'{"id": "hd", "type": "fault.item", "payload": {}}',
		"application/json",
		{"x-eda-attempt": "2"},
	),
	(
		"1,000-deep JSON",
		b'{"id": "deep", "type": "fault.item", "payload": ' + b"[" * 1000 + b"]" * 1000 + b"}",
		"application/json",
		{},
	),
]


def poison(lab: FaultLab, count: int) -> tuple[Outcome, int]:
	lab.start_worker()
	good = lab.messages(count)
	step = max(1, count // len(POISON))
	for index, message in enumerate(good):
		lab.publish_raw(
			encode(message), pika.BasicProperties(content_type="application/json", delivery_mode=2)
		)
		if index % step == 0 and index // step < len(POISON):
			_label, body, content_type, headers = POISON[index // step]
			lab.publish_raw(
				body, pika.BasicProperties(content_type=content_type, headers=headers, delivery_mode=2)
			)
	# A message that names code to run, sent straight into the queue under a key no handler has.
	unknown = Message(
		"os.system", {"cmd": "touch /tmp/eda-pwned"}, headers={"handler": "os.system", "module": "os"}
	)
	properties = pika.BasicProperties(
		content_type="application/json", delivery_mode=2, headers={"x-eda-routing-key": "os.system"}
	)
	lab.publish_raw(encode(unknown), properties, routing_key=lab.queue, exchange="")
	lab.settle({m.id for m in good} | {unknown.id})
	lab.stop_worker()
	outcome = lab.reconcile("poison and malformed input interleaved with good messages", {m.id for m in good})
	outcome.dead = _dead_count(lab)
	outcome.sent += len(POISON) + 1
	outcome.notes.append(
		f"{len(POISON)} malformed bodies and 1 message naming code to run: each dead with its own error"
	)
	assert unknown.id not in lab.effects() and not Path("/tmp/eda-pwned").exists()
	return outcome, len(POISON) + 1


HOSTILE_TEXT = (
	'<img src=x onerror="alert(1)">',
	"'; DROP TABLE eda_message; --",
	'"quoted" & <b>bold</b> &amp; &lt;',
	"%s %(x)s {0} {doctype.__class__}",
	"back\\slash \\n tab\t",
	"ünïcødé ✓ 🙂",
)


def hostile_strings(lab: FaultLab, count: int) -> tuple[Outcome, int]:
	"""Producer text meant to break what stores or shows it, among good messages: HTML, SQL, format
	strings, quotes, entities, emoji in ids, types (so routing keys), headers and payloads, an id of the
	full 255 characters, and a duplicated JSON key whose name is HTML. The valid ones are processed once
	and stored byte for byte; the duplicated key is dead with its own error."""
	lab.start_worker(EDA_FAULT_HANDLER_SECONDS="0.001")
	good = lab.messages(count)
	hostile = [
		Message(f"fault.{n}.{text}", {"n": -n, "text": text, "nested": {text: [text]}}, id=f"h{n}-{text}")
		for n, text in enumerate(HOSTILE_TEXT, 1)
	]
	hostile.append(Message("fault.item", {"n": -99}, id="h" * 255))
	duplicated = b'{"id": "dup-html", "type": "fault.item", "payload": {"<img src=x>": 1, "<img src=x>": 2}}'
	properties = pika.BasicProperties(content_type="application/json", delivery_mode=2)
	lab.publish(good[: count // 2])
	for message in hostile:
		headers = {"x-note": HOSTILE_TEXT[0] * 200, "<b>": "&amp;"}
		lab.publish_raw(
			encode(message),
			pika.BasicProperties(content_type="application/json", delivery_mode=2, headers=headers),
			routing_key=message.type,
		)
	lab.publish_raw(duplicated, properties)
	lab.publish(good[count // 2 :])
	ids = {m.id for m in good} | {m.id for m in hostile}
	lab.settle(ids)
	lab.wait_for(lambda: _dead_count(lab) >= 1, 60, "the duplicated key to be dead")
	lab.stop_worker()
	outcome = lab.reconcile("hostile strings in ids, keys, headers and payloads", ids)
	outcome.dead = _dead_count(lab)
	outcome.sent += 1
	store = open_store(lab.store_url)
	try:
		for message in hostile:
			record = store.get(message.id, Direction.INCOMING, lab.queue)
			assert record is not None and record.body == encode(message).decode(), message.id
			assert record.routing_key == message.type, (record.routing_key, message.type)
	finally:
		store.close()
	outcome.notes.append(
		f"{len(hostile)} hostile messages processed once and stored byte for byte; 1 duplicated HTML key dead"
	)
	return outcome, 1


def store_refuses(lab: FaultLab, count: int) -> tuple[Outcome, int]:
	"""The store refuses some messages (a trigger refuses to record them as processed) and cannot hold
	others (an id over its column, a time with no UTC equivalent), interleaved with good ones: each bad
	one is dead alone with a record, the good ones are processed once, the worker never backs off."""
	with lab.engine.begin() as db:
		db.execute(
			text(
				"CREATE TRIGGER eda_refuse_some BEFORE INSERT ON eda_message "
				"WHEN NEW.status = 'processed' AND NEW.message_id LIKE 'refuse-%' "
				"BEGIN SELECT RAISE(ABORT, 'refused by policy'); END"
			)
		)
	lab.start_worker(EDA_FAULT_HANDLER_SECONDS="0.001")
	good = lab.messages(count)
	refused = [Message("fault.item", {"n": -n}, id=f"refuse-{uuid.uuid4().hex}") for n in range(1, 6)]
	step = max(1, count // len(refused))
	mixed = list(good)
	for index, message in enumerate(refused):
		mixed.insert(index * step + index, message)
	too_early = Message("fault.item", {"n": 0})
	document = json.loads(encode(too_early))
	document["created_at"] = "0001-01-01T00:00:00+14:00"
	long_id = Message("fault.item", {"n": 0}, id="i" * 300)
	properties = pika.BasicProperties(content_type="application/json", delivery_mode=2)
	lab.publish(mixed[: len(mixed) // 2])
	lab.publish_raw(json.dumps(document).encode(), properties)
	lab.publish_raw(encode(long_id), properties)
	lab.publish(mixed[len(mixed) // 2 :])
	ids = {m.id for m in mixed} | {too_early.id}
	lab.settle(ids)
	lab.wait_for(lambda: _dead_count(lab) >= len(refused) + 2, 60, "the unstorable id to be dead")
	lab.stop_worker()
	outcome = lab.reconcile("store refuses or cannot hold a message, among good ones", ids)
	outcome.dead = _dead_count(lab)
	outcome.sent += 1
	backoffs = sum("retrying in" in log.read_text() for log in lab.logs)
	outcome.notes.append(
		f"{len(refused)} refused by a trigger (StoreRefused), 2 unstorable (UnstorableMessage): each dead "
		f"alone with a record; worker back-offs: {backoffs}"
	)
	assert backoffs == 0, "a refused message must not make the worker back off"
	return outcome, len(refused) + 2


def _dead_count(lab: FaultLab) -> int:
	_processed, dead = lab.finished_ids()
	return len(dead)


def publish_refused(lab: FaultLab) -> Outcome:
	"""An unroutable message and one nacked by a full queue: reported as failed, never as sent."""
	settings = BrokerSettings(url=lab.amqp_url)
	full = Queue(f"{lab.prefix}.full", arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
	from frappe_eda.stores import open_store

	store = open_store(lab.store_url)
	refused = 0
	with BrokerConnection(settings) as connection:
		declarer = TopologyDeclarer(connection)
		declarer.declare(Topology((Exchange(lab.exchange),), (full,), ()))
		publisher = Publisher(connection, store, exchange="")
		publisher.publish(Message(full.name, {"first": True}))
		for message, error in (
			(Message("nobody.home", {}), UnroutableMessage),
			(Message(full.name, {}), PublishNacked),
		):
			try:
				publisher.publish(message, exchange="" if error is PublishNacked else lab.exchange)
			except error:
				refused += 1
		declarer.delete(Topology((), (full,), ()))
	failed = sum(n for (direction, status), n in store.counts().items() if status.value == "failed")
	store.close()
	assert refused == 2 and failed == 2
	return Outcome(
		"unroutable and nacked publishes",
		sent=2,
		processed=0,
		dead=0,
		lost=0,
		twice=0,
		notes=["both raised and recorded as failed"],
	)


def backlog_with_restarts(lab: FaultLab, count: int) -> Outcome:
	messages = lab.messages(count)
	lab.start_worker(EDA_FAULT_PREFETCH="20", EDA_FAULT_HANDLER_SECONDS="0.003")
	lab.stop_worker()
	lab.publish(messages)
	for share in (4, 2):
		lab.start_worker(EDA_FAULT_PREFETCH="20", EDA_FAULT_HANDLER_SECONDS="0.003")
		lab.wait_for(lambda s=share: sum(lab.effects().values()) >= count // s, 120, "part of the backlog")
		assert lab.stop_worker() == 0
	lab.start_worker(EDA_FAULT_PREFETCH="20")
	lab.settle({m.id for m in messages})
	lab.stop_worker()
	return lab.reconcile("backlog 10x prefetch, worker restarted twice", {m.id for m in messages})


def concurrent_relays(lab: FaultLab, count: int, relays: int = 4) -> Outcome:
	"""Several relay processes drain one outbox at once (as every worker, ``bench eda relay`` and the
	scheduler do): each PENDING row must reach the broker once, in the order it was written, and be
	processed once. A queue bound to every key counts what the relays sent, by message id."""
	from frappe_eda.stores import open_store

	lab.start_worker()
	audit = f"{lab.prefix}.audit"
	connection = pika.BlockingConnection(pika.URLParameters(lab.amqp_url))
	channel = connection.channel()
	channel.queue_declare(audit, durable=True)
	channel.queue_bind(audit, lab.exchange, "#")
	store = open_store(lab.store_url)
	messages = lab.messages(count)
	first = messages[0].created_at
	store.save(
		[pending_row(m, lab.exchange, first + timedelta(milliseconds=n)) for n, m in enumerate(messages)]
	)
	store.close()
	go = lab.workdir / "relays-go"
	processes = start_relays(
		relays,
		go,
		STORE=lab.store_url,
		PREFIX="eda_",
		AMQP=lab.amqp_url,
		EXCHANGE=lab.exchange,
		BATCH="100",
	)
	time.sleep(1.5)  # every relay connected and waiting
	go.touch()
	shares = []
	for process in processes:
		out, err = process.communicate(timeout=300)
		assert process.returncode == 0, err.decode()[-2000:]
		shares.append(json.loads(out.decode().strip().splitlines()[-1])["confirmed"])
	ids = {m.id for m in messages}
	lab.settle(ids)
	lab.stop_worker()
	sent: list[str] = []
	for method, properties, _body in channel.consume(audit, auto_ack=True, inactivity_timeout=1):
		if method is None:
			break
		sent.append(properties.message_id)
	channel.cancel()
	channel.queue_delete(audit)
	connection.close()
	outcome = lab.reconcile(f"{relays} relays draining one outbox at once", ids)
	sent_twice = sum(1 for n in Counter(sent).values() if n > 1)
	in_order = sent == [m.id for m in messages]
	outcome.twice += sent_twice
	outcome.lost += len(ids - set(sent))
	if not sent_twice and set(sent) == ids:
		assert in_order, "relays sent every row once but out of the order it was written in"
	outcome.notes.append(
		f"broker got each id {'once' if not sent_twice else 'more than once'}, in written order: "
		f"{'yes' if in_order else 'no'}; confirmed per relay {sorted(shares, reverse=True)}"
	)
	return outcome
