"""The client on a real three-node cluster: moving to another node when its node dies, and the
ordering option (single active consumer) with competing consumers."""

from __future__ import annotations

import uuid

import pika

from frappe_eda.messaging.connection import BrokerConnection, BrokerSettings
from frappe_eda.messaging.registry import HandlerRegistry
from frappe_eda.messaging.retry import RetryPolicy
from frappe_eda.messaging.topology import TopologyDeclarer, topology_for
from tests.faults.cluster import RabbitCluster
from tests.faults.cluster_scenarios import heal


def test_a_connection_moves_to_another_node_when_its_node_dies(rabbit_cluster: RabbitCluster) -> None:
	settings = BrokerSettings(url=",".join(rabbit_cluster.urls()), reconnect_attempts=5, reconnect_max_wait=1)
	try:
		with BrokerConnection(settings) as connection:
			first = connection.node
			assert first == settings.redacted_url(settings.addresses[0])
			rabbit_cluster.kill_node(rabbit_cluster.nodes[0])
			connection.reconnect()
			assert connection.node not in (None, first)
			queue = f"moved-{uuid.uuid4().hex[:6]}"
			channel = connection.channel()
			channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
			channel.queue_delete(queue)
	finally:
		heal(rabbit_cluster)


def test_single_active_consumer_gives_the_queue_to_one_worker_at_a_time(
	rabbit_cluster: RabbitCluster,
) -> None:
	registry = HandlerRegistry()
	queue = f"ordered-{uuid.uuid4().hex[:6]}"
	registry.subscribe("order.*", queue=queue, exchange=f"{queue}.events", single_active_consumer=True)(
		lambda message: None
	)
	topology = topology_for(registry, RetryPolicy(), default_queue_type="quorum")
	work = next(q for q in topology.queues if q.name == queue)
	assert work.declare_arguments()["x-single-active-consumer"] is True
	urls = rabbit_cluster.urls()
	with BrokerConnection(BrokerSettings(url=urls[0])) as connection:
		TopologyDeclarer(connection).declare(topology)
	consumers = [pika.BlockingConnection(pika.URLParameters(url)) for url in urls[1:]]
	got: dict[int, list[bytes]] = {0: [], 1: []}
	channels = []
	try:
		for index, consumer in enumerate(consumers):
			channel = consumer.channel()
			channel.basic_consume(queue, lambda ch, m, p, body, i=index: got[i].append(body), auto_ack=True)
			channels.append(channel)
		sender = pika.BlockingConnection(pika.URLParameters(urls[0]))
		out = sender.channel()
		out.confirm_delivery()
		for n in range(50):
			out.basic_publish("", queue, str(n).encode())
		while sum(len(v) for v in got.values()) < 50:
			for consumer in consumers:
				consumer.process_data_events(time_limit=0.1)
		active = 0 if got[0] else 1
		assert got[1 - active] == [], "the standby consumer received messages"
		assert got[active] == [str(n).encode() for n in range(50)]
		consumers[active].close()  # the active one goes: the standby takes over, in order
		for n in range(50, 60):
			out.basic_publish("", queue, str(n).encode())
		while len(got[1 - active]) < 10:
			consumers[1 - active].process_data_events(time_limit=0.1)
		assert got[1 - active] == [str(n).encode() for n in range(50, 60)]
		for q in topology.queues:
			out.queue_delete(q.name)
		out.exchange_delete(f"{queue}.events")
		sender.close()
	finally:
		for consumer in consumers:
			if consumer.is_open:
				consumer.close()
