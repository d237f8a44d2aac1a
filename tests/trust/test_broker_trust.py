"""Trust between servers on the real broker: each server has its own broker user with least-privilege
permissions; the broker validates who sends, and each queue takes only its source's messages.

Attacks tried as a hostile warehouse (wh2, with only its own credentials) would: a forged ``user_id``, a
publish on another warehouse's keys, a binding to them, reading another's queue, a message put straight
into another's queue claiming to come from head; and an unsigned or wrongly signed message delivered
by a user allowed to impersonate (as a shovel or a federation link is)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pika
import pika.exceptions
import pytest

from frappe_eda.messaging.connection import BrokerConnection
from frappe_eda.messaging.consumer import Worker, WorkerOptions
from frappe_eda.messaging.context import current_context
from frappe_eda.messaging.envelope import Message, encode
from frappe_eda.messaging.publisher import Publisher
from frappe_eda.messaging.registry import HandlerRegistry
from frappe_eda.messaging.replay import Replayer
from frappe_eda.messaging.retry import RetryPolicy
from frappe_eda.messaging.store import Direction, MessageFilter, MessageStore, Status
from frappe_eda.messaging.trust import SENDER, SIGNATURE, SigningKey
from frappe_eda.messaging.trust.broker_users import ManagementApi, provision
from tests.trust.conftest import Network


@pytest.fixture
def cleanup(raw_channel) -> Iterator[list[str]]:
	"""Queue names to delete (as guest) after the test, with their retry and dead queues."""
	names: list[str] = []
	yield names
	for name in names:
		for suffix in ("", ".dead", ".retry.200ms", ".retry.1s"):
			raw_channel.queue_delete(name + suffix)


def _connect(network: Network, server: str) -> BrokerConnection:
	connection = BrokerConnection(network.settings(server))
	connection.open()
	return connection


def _wh1_worker(
	network: Network, store: MessageStore, handler: Callable[[Message], None], **policy
) -> tuple[BrokerConnection, Worker]:
	"""wh1's worker on its own connection, its queue declared. A process holds one broker connection:
	to act as head, close it (``connection.close()``) and reopen it afterwards (``worker.run`` does)."""
	registry = HandlerRegistry()
	registry.subscribe(
		"wh1.item.*",
		queue=network.queue("wh1"),
		exchange=network.exchange,
		retry_delays=(0.2,),
		max_attempts=2,
		**policy,
	)(handler)
	connection = _connect(network, "wh1")
	worker = Worker(connection, registry, store, options=WorkerOptions(poll_seconds=0.1), retry=RetryPolicy())
	worker.declare()
	return connection, worker


def _publish_as_head(network: Network, wh1: BrokerConnection, *messages: Message) -> None:
	"""head publishes with frappe_eda's Publisher (which sets user_id) while wh1's connection is closed."""
	wh1.close()
	head = _connect(network, "head")
	try:
		publisher = Publisher(head, exchange=network.exchange)
		for message in messages:
			publisher.publish(message, routing_key="wh1.item.on_update")
	finally:
		head.close()
	wh1.open()


def _refused(operation: Callable[[pika.adapters.blocking_connection.BlockingChannel], None], settings) -> str:
	"""Run ``operation`` on a raw channel of ``settings``; the broker's refusal text (fails if allowed)."""
	connection = pika.BlockingConnection(settings.parameters())
	try:
		channel = connection.channel()
		channel.confirm_delivery()
		with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
			operation(channel)
		return f"{refused.value.reply_code} {refused.value.reply_text}"
	finally:
		if connection.is_open:
			connection.close()


def _item(source: str = "head", text: str = "genuine") -> Message:
	return Message(type="item.on_update", payload={"name": "ITEM-1", "text": text}, source=source)


def test_honest_flow_each_server_does_its_own_traffic_and_the_sender_is_proven(
	network: Network, store: MessageStore, cleanup: list[str]
) -> None:
	cleanup.append(network.queue("wh1"))
	seen: list[tuple[str, str]] = []

	def apply(message: Message) -> None:
		seen.append((message.payload["text"], current_context().sender))

	wh1, worker = _wh1_worker(network, store, apply, senders=[network.users["head"]])
	sent = _item()
	try:
		_publish_as_head(network, wh1, sent)
		worker.run(until=lambda s: s.handled >= 1, idle_timeout=10)
	finally:
		wh1.close()
	assert seen == [("genuine", network.users["head"])]
	record = store.get(sent.id, Direction.INCOMING, network.queue("wh1"))
	assert record is not None and record.status is Status.PROCESSED
	assert record.headers[SENDER] == network.users["head"]


def test_a_forged_user_id_is_refused_by_the_broker(network: Network) -> None:
	"""wh2 may publish receipts to head; one that says it comes from wh1 is refused by the broker."""

	def forge(channel) -> None:
		body = encode(Message(type="eda.receipt", payload={"server": "wh1", "outcome": "Applied"}))
		channel.basic_publish(
			network.exchange, "eda.receipt.head", body, pika.BasicProperties(user_id=network.users["wh1"])
		)

	text = _refused(forge, network.settings("wh2"))
	assert text.startswith("406") and "user_id property set to" in text


def test_another_servers_routing_keys_can_be_neither_published_nor_bound(network: Network) -> None:
	wh2 = network.settings("wh2")
	own = network.queue("wh2")

	def publish_on_wh1(channel) -> None:
		channel.basic_publish(
			network.exchange, "wh1.item.on_update", b"{}", pika.BasicProperties(user_id=wh2.user)
		)

	def bind_wh1_keys(channel) -> None:
		channel.queue_declare(own, durable=True)
		channel.queue_bind(own, network.exchange, "wh1.item.*")

	def bind_everything(channel) -> None:
		channel.queue_bind(own, network.exchange, "#")

	def read_wh1_queue(channel) -> None:
		channel.basic_get(network.queue("wh1"))

	def a_queue_of_another_name(channel) -> None:
		channel.queue_declare("eavesdrop", durable=False, exclusive=True)

	def delete_the_shared_exchange(channel) -> None:
		channel.exchange_delete(network.exchange)

	try:
		assert "access to topic 'wh1.item.on_update'" in _refused(publish_on_wh1, wh2)
		assert "access to topic 'wh1.item.*'" in _refused(bind_wh1_keys, wh2)
		assert "access to topic '#'" in _refused(bind_everything, wh2)
		assert _refused(read_wh1_queue, wh2).startswith("403")  # (or 404: the queue is refused either way)
		assert _refused(a_queue_of_another_name, wh2).startswith("403")
		assert _refused(delete_the_shared_exchange, wh2).startswith("403")
	finally:
		connection = pika.BlockingConnection(wh2.parameters())
		connection.channel().queue_delete(own)
		connection.close()


def test_a_message_put_into_another_servers_queue_claiming_to_be_head_is_refused_even_when_replayed(
	network: Network, store: MessageStore, cleanup: list[str]
) -> None:
	cleanup.append(network.queue("wh1"))
	applied: list[Message] = []
	wh1, worker = _wh1_worker(network, store, applied.append, senders=[network.users["head"]])
	forged = _item(text="FORGED by wh2")
	wh2 = pika.BlockingConnection(network.settings("wh2").parameters())
	channel = wh2.channel()
	channel.confirm_delivery()
	# Through the default exchange, straight into wh1's queue, with wh2's own (valid) user_id, a forged
	# x-eda-sender header and a body that says "head".
	props = pika.BasicProperties(
		user_id=network.users["wh2"],
		content_type="application/json",
		message_id=forged.id,
		headers={SENDER: network.users["head"], "x-eda-routing-key": "wh1.item.on_update"},
	)
	channel.basic_publish("", network.queue("wh1"), encode(forged), props)
	unproven = _item(text="no user_id")
	channel.basic_publish(
		"",
		network.queue("wh1"),
		encode(unproven),
		pika.BasicProperties(
			content_type="application/json", headers={"x-eda-routing-key": "wh1.item.on_update"}
		),
	)
	wh2.close()
	try:
		worker.run(until=lambda s: s.handled >= 2, idle_timeout=10)
		assert applied == []
		dead = store.get(forged.id, Direction.INCOMING, network.queue("wh1"))
		assert dead is not None and dead.status is Status.DEAD
		assert "WrongSender: sent by broker user" in dead.last_error
		assert "although its body says 'head'" in dead.last_error
		assert dead.headers[SENDER] == network.users["wh2"]  # the proven one, not the header it carried
		nothing = store.get(unproven.id, Direction.INCOMING, network.queue("wh1"))
		assert nothing is not None and "UnprovenSender: no broker-validated" in nothing.last_error

		# An operator replays it from wh1 (under wh1's own user): it is still wh2's message.
		Replayer(Publisher(wh1), store).replay(forged.id, network.queue("wh1"))
		worker.run(until=lambda s: s.handled >= 3, idle_timeout=10)
		assert applied == []
		again = store.get(forged.id, Direction.INCOMING, network.queue("wh1"))
		assert again is not None and again.status is Status.DEAD and "WrongSender" in again.last_error
	finally:
		wh1.close()


def test_a_retry_keeps_the_first_sender(network: Network, store: MessageStore, cleanup: list[str]) -> None:
	cleanup.append(network.queue("wh1"))
	senders: list[tuple[int, str]] = []

	def flaky(message: Message) -> None:
		context = current_context()
		senders.append((context.attempt, context.sender))
		if context.attempt == 1:
			raise RuntimeError("deadlock, try again")

	wh1, worker = _wh1_worker(network, store, flaky, senders=[network.users["head"]])
	try:
		_publish_as_head(network, wh1, _item())
		worker.run(until=lambda s: s.processed >= 1, idle_timeout=10)
	finally:
		wh1.close()
	# The retry came back through wh1's own delay queue, published under wh1's user.
	assert senders == [(1, network.users["head"]), (2, network.users["head"])]


def test_signatures_hold_where_the_broker_proof_does_not(
	network: Network, management: ManagementApi, store: MessageStore, cleanup: list[str], vhost: str
) -> None:
	"""A user with RabbitMQ's impersonator tag (a shovel's, a federation link's) may set any user_id: the
	broker proves nothing then, the source's signature still does."""
	cleanup.append(network.queue("wh1"))
	key, rotated, stranger = SigningKey.generate(), SigningKey.generate(), SigningKey.generate()
	applied: list[str] = []
	ring = f"{key.public.text}\n{rotated.public.text}  # both during a rotation"
	wh1, worker = _wh1_worker(
		network,
		store,
		lambda m: applied.append(m.payload["text"]),
		senders=[network.users["head"]],
		keys=ring,
	)
	shovel_user = network.users["head"] + "-shovel"
	management.put_user(shovel_user, "shovel-password", tags="impersonator")
	management.request(
		"PUT", f"/api/permissions/{vhost}/{shovel_user}", {"configure": "", "write": ".*", "read": ""}
	)
	try:
		shovel = pika.BlockingConnection(
			pika.URLParameters(
				network.settings("head").url.replace(
					f"{network.users['head']}:{network.passwords['head']}", f"{shovel_user}:shovel-password"
				)
			)
		)
		channel = shovel.channel()
		channel.confirm_delivery()
		for text, signer in (
			("signed", key),
			("after rotation", rotated),
			("unsigned", None),
			("stranger", stranger),
		):
			message = _item(text=text)
			body = encode(message)
			headers = {SIGNATURE: signer.sign(body)} if signer else {}
			props = pika.BasicProperties(
				user_id=network.users["head"],
				content_type="application/json",
				message_id=message.id,
				headers=headers,
			)
			channel.basic_publish(network.exchange, "wh1.item.on_update", body, props)
		tampered = _item(text="tampered")
		signature = key.sign(encode(tampered))
		changed = json.loads(encode(tampered))
		changed["payload"]["text"] = "FORGED"
		props = pika.BasicProperties(
			user_id=network.users["head"],
			content_type="application/json",
			message_id=tampered.id,
			headers={SIGNATURE: signature},
		)
		channel.basic_publish(network.exchange, "wh1.item.on_update", json.dumps(changed).encode(), props)
		shovel.close()
		worker.run(until=lambda s: s.handled >= 5, idle_timeout=10)
	finally:
		wh1.close()
		management.delete_user(shovel_user)
	assert applied == ["signed", "after rotation"]
	dead = store.find(MessageFilter(direction=Direction.INCOMING, statuses=(Status.DEAD,)))
	errors = sorted(r.last_error.split(":")[0].rpartition(".")[2] for r in dead)
	assert errors == ["BadSignature", "BadSignature", "UnsignedMessage"]


def test_provisioning_again_is_idempotent_and_keeps_the_password(
	network: Network, management: ManagementApi, vhost: str
) -> None:
	report = provision(management, vhost, network.traffic["wh1"])
	assert not report.created and report.password is None
	connection = pika.BlockingConnection(network.settings("wh1").parameters())  # the old password works
	connection.close()
	granted = management.request("GET", f"/api/permissions/{vhost}/{network.users['wh1']}")
	assert (granted["configure"], granted["write"], granted["read"]) == (
		report.permissions.configure,
		report.permissions.write,
		report.permissions.read,
	)
	topics = management.request("GET", f"/api/users/{network.users['wh1']}/topic-permissions")
	assert [(t["exchange"], t["write"], t["read"]) for t in topics] == [
		(t.exchange, t.write, t.read) for t in report.permissions.topics
	]
