# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE
"""The whole life of a message in a real site, on the machine's RabbitMQ.

Relay and worker commit (they own their transactions), so these tests commit too and delete what
they created afterwards. Names are unique per run; nothing else on the broker is touched.
"""

import json

import frappe
from frappe.tests.utils import FrappeTestCase

import frappe_eda
from frappe_eda.consumer import build_worker
from frappe_eda.messaging.connection import BrokerConnection
from frappe_eda.messaging.errors import BrokerUnavailable
from frappe_eda.messaging.registry import default_registry
from frappe_eda.messaging.topology import Binding, Exchange, Queue, Topology, TopologyDeclarer
from frappe_eda.outbox.relay import drain
from frappe_eda.outbox.rules import clear_rules_cache
from frappe_eda.settings import load_settings

BROKER = "amqp://guest:guest@127.0.0.1:5672/%2F"


class SiteMessagingCase(FrappeTestCase):
	def setUp(self):
		self.prefix = f"site-{frappe.generate_hash(length=8)}"
		self.exchange = f"{self.prefix}.events"
		settings = frappe.get_single("EDA Settings")
		self.saved_settings = settings.as_dict()
		settings.update(
			{
				"enabled": 1,
				"amqp_url": BROKER,
				"default_exchange": self.exchange,
				"retry_delays": "0.2",
				"max_attempts": 2,
				"notify_role": "EDA Manager",
			}
		)
		settings.save()
		frappe.db.commit()

	def tearDown(self):
		frappe.db.rollback()
		with BrokerConnection(load_settings().broker) as connection:
			connection.channel().exchange_delete(self.exchange)  # workers and rules declare it
		frappe.db.delete("EDA Error", {"queue": ["like", f"{self.prefix}%"]})
		frappe.db.delete("EDA Message", {"exchange": ["like", f"{self.prefix}%"]})
		frappe.db.delete("EDA Message", {"queue": ["like", f"{self.prefix}%"]})
		frappe.db.delete("EDA Event Rule", {"exchange": self.exchange})
		frappe.db.delete("ToDo", {"description": ["like", f"{self.prefix}%"]})
		frappe.db.delete("Notification Log", {"subject": ["like", "EDA:%"]})
		settings = frappe.get_single("EDA Settings")
		settings.update(
			{
				k: self.saved_settings.get(k)
				for k in ("enabled", "amqp_url", "default_exchange", "retry_delays", "max_attempts")
			}
		)
		settings.flags.ignore_mandatory = True
		settings.save()
		frappe.db.commit()
		clear_rules_cache()
		for subscription in list(default_registry):
			if subscription.queue.startswith(self.prefix):
				default_registry.remove(subscription.queue)

	def declare_queue(self, connection, queue, pattern="#"):
		topology = Topology(
			(Exchange(self.exchange),), (Queue(queue),), (Binding(self.exchange, queue, pattern),)
		)
		TopologyDeclarer(connection).declare(topology)
		self.addCleanup(lambda: _delete(topology))
		return topology


def _delete(topology):
	with BrokerConnection(load_settings().broker) as connection:
		TopologyDeclarer(connection).delete(topology)


def _delete_worker_queues(queue):
	with BrokerConnection(load_settings().broker) as connection:
		channel = connection.channel()
		for name in (queue, f"{queue}.dead", f"{queue}.retry.200ms"):
			channel.queue_delete(name)


class TestRelay(SiteMessagingCase):
	def test_a_saved_document_reaches_rabbitmq_with_the_right_routing_key(self):
		frappe.get_doc(
			{
				"doctype": "EDA Event Rule",
				"document_type": "ToDo",
				"event": "after_insert",
				"exchange": self.exchange,
			}
		).insert()
		with BrokerConnection(load_settings().broker) as connection:
			self.declare_queue(connection, f"{self.prefix}.todos", "todo.*")
			todo = frappe.get_doc({"doctype": "ToDo", "description": f"{self.prefix} ship"}).insert()
			frappe.db.commit()
			self.assertEqual(drain(connection), 1)
			method, _properties, body = connection.channel().basic_get(f"{self.prefix}.todos", auto_ack=True)
		self.assertEqual(method.routing_key, "todo.after_insert")
		self.assertEqual(json.loads(body)["payload"]["name"], todo.name)
		[status] = frappe.get_all("EDA Message", filters={"reference_name": todo.name}, pluck="status")
		self.assertEqual(status, "Published")

	def test_with_the_broker_unreachable_messages_wait_pending_then_go_out_in_order(self):
		frappe.db.set_single_value("EDA Settings", "amqp_url", "amqp://guest:guest@127.0.0.1:1/%2F")
		frappe.db.commit()
		frappe.clear_document_cache("EDA Settings", "EDA Settings")
		names = [frappe_eda.publish(f"order.{n}", {"n": n}).id for n in range(3)]
		frappe.db.commit()
		with self.assertRaises(BrokerUnavailable):
			with BrokerConnection(
				load_settings().broker.__class__(
					url="amqp://guest:guest@127.0.0.1:1/%2F", reconnect_attempts=2, reconnect_max_wait=0.1
				)
			) as connection:
				drain(connection)
		pending = frappe.get_all("EDA Message", filters={"message_id": ["in", names]}, pluck="status")
		self.assertEqual(pending, ["Pending"] * 3)

		frappe.db.set_single_value("EDA Settings", "amqp_url", BROKER)
		frappe.db.commit()
		frappe.clear_document_cache("EDA Settings", "EDA Settings")
		with BrokerConnection(load_settings().broker) as connection:
			self.declare_queue(connection, f"{self.prefix}.orders", "order.*")
			self.assertEqual(drain(connection), 3)
			channel = connection.channel()
			received = [
				json.loads(channel.basic_get(f"{self.prefix}.orders", auto_ack=True)[2])["id"] for _ in names
			]
		self.assertEqual(received, names)


class TestWorker(SiteMessagingCase):
	def test_failure_is_retried_dead_lettered_recorded_notified_then_replayed_to_processed(self):
		from frappe_eda.desk.api import replay_messages
		from frappe_eda.desk.replay import replay_job

		queue = f"{self.prefix}.stock"
		self.addCleanup(_delete_worker_queues, queue)
		manager = _manager_user()
		state = {"broken": True, "calls": 0}

		@default_registry.subscribe("stock.*", queue=queue, exchange=self.exchange)
		def reserve(message):
			state["calls"] += 1
			frappe.get_doc(
				{"doctype": "ToDo", "description": f"{self.prefix} reserve {message.payload['item']}"}
			).insert()
			if state["broken"]:
				raise LookupError(f"unknown item {message.payload['item']}")

		with BrokerConnection(load_settings().broker) as connection:
			worker = build_worker(connection, [queue])
			worker.declare()
			sent = frappe_eda.publish("stock.reserve", {"item": "WIDGET"})
			frappe.db.commit()
			drain(connection)
			worker.run(until=lambda s: s.dead >= 1, idle_timeout=15)
			frappe.db.rollback()  # a fresh snapshot: the worker committed on its own connection

			record = frappe.get_all(
				"EDA Message",
				filters={"message_id": sent.id, "direction": "Incoming"},
				fields=["name", "status", "attempts"],
			)[0]
			self.assertEqual((record.status, record.attempts, state["calls"]), ("Dead", 2, 2))
			errors = frappe.get_all(
				"EDA Error",
				filters={"message_id": sent.id},
				fields=["attempt", "exception_type", "traceback"],
				order_by="attempt",
			)
			self.assertEqual([e.attempt for e in errors], [1, 2])
			self.assertIn("LookupError: unknown item WIDGET", errors[-1].traceback)
			self.assertEqual(
				frappe.db.count("ToDo", {"description": f"{self.prefix} reserve WIDGET"}), 0
			)  # rolled back
			self.assertTrue(
				frappe.db.exists("Notification Log", {"for_user": manager, "document_name": record.name})
			)

			worker.close()

		state["broken"] = (
			False  # the fix is deployed; replay from the desk (a web request: no open connection)
		)
		frappe.set_user(manager)
		try:
			answer = replay_messages(json.dumps([record.name]))  # queued: the request returns at once
			[result] = _run_queued(answer, replay_job, names=[record.name])["results"]
		finally:
			frappe.set_user("Administrator")
		self.assertTrue(result["sent"], result)
		with BrokerConnection(load_settings().broker) as connection:
			worker = build_worker(connection, [queue])
			worker.run(until=lambda s: s.processed >= 1, idle_timeout=15)
			worker.close()
		frappe.db.rollback()
		self.assertEqual(frappe.db.get_value("EDA Message", record.name, "status"), "Processed")
		self.assertEqual(frappe.db.count("ToDo", {"description": f"{self.prefix} reserve WIDGET"}), 1)

	def test_edit_and_replay_sends_a_linked_copy_and_groups_replay_together(self):
		from frappe_eda.desk.api import edit_and_replay, mark_resolved, replay_failure_group
		from frappe_eda.desk.replay import edit_and_replay_job, group_names, replay_job, resolve_job
		from frappe_eda.frappe_eda.report.eda_failure_groups.eda_failure_groups import execute

		queue = f"{self.prefix}.prices"
		self.addCleanup(_delete_worker_queues, queue)
		seen = []

		@default_registry.subscribe("price.*", queue=queue, exchange=self.exchange)
		def update_price(message):
			if message.payload["price"] < 0:
				raise ValueError(f"negative price {message.payload['price']}")
			seen.append(message.payload["price"])

		with BrokerConnection(load_settings().broker) as connection:
			worker = build_worker(connection, [queue])
			worker.declare()
			sent = [frappe_eda.publish("price.changed", {"price": -n}) for n in (1, 2, 3)]
			frappe.db.commit()
			drain(connection)
			worker.run(until=lambda s: s.dead >= 3, idle_timeout=20)
			worker.close()
		frappe.db.rollback()
		dead = {
			r.message_id: r.name
			for r in frappe.get_all(
				"EDA Message", filters={"queue": queue, "status": "Dead"}, fields=["name", "message_id"]
			)
		}
		self.assertEqual(set(dead), {m.id for m in sent})

		_, groups = execute({})
		[group] = [g for g in groups if g.queue == queue]
		self.assertEqual((group["count"], group.exception_type), (6, "ValueError"))  # 3 messages x 2 attempts

		answer = edit_and_replay(dead[sent[0].id], json.dumps({"price": 10}))
		copy_name = _run_queued(answer, edit_and_replay_job, name=dead[sent[0].id], payload={"price": 10})[
			"copy"
		]
		original = frappe.get_doc("EDA Message", dead[sent[0].id])
		copy = frappe.get_doc("EDA Message", copy_name)
		self.assertEqual((original.resolved, copy.replay_of, copy.status), (1, sent[0].id, "Received"))
		self.assertNotEqual(copy.message_id, sent[0].id)

		answer = mark_resolved(json.dumps([dead[sent[1].id]]))  # queued, as a replay
		outcome = _run_queued(answer, resolve_job, names=[dead[sent[1].id]])
		self.assertEqual(outcome["summary"]["resolved"], 1)
		names = group_names(group.fingerprint)
		answer = replay_failure_group(group.fingerprint)
		results = _run_queued(answer, replay_job, names=names)["results"]
		# Only what is still unresolved goes again: the edited original and the resolved one stay put.
		self.assertEqual([r["name"] for r in results if r["sent"]], [dead[sent[2].id]])

		with BrokerConnection(load_settings().broker) as connection:
			worker = build_worker(connection, [queue])
			worker.run(until=lambda s: s.handled >= 2, idle_timeout=20)
			worker.close()
		frappe.db.rollback()
		self.assertIn(10, seen)
		self.assertEqual(frappe.db.get_value("EDA Message", copy_name, "status"), "Processed")

	def test_only_an_eda_manager_may_replay(self):
		from frappe_eda.desk.api import replay_messages

		frappe.set_user("Guest")
		try:
			with self.assertRaises(frappe.PermissionError):
				replay_messages("[]")
		finally:
			frappe.set_user("Administrator")


def _run_queued(answer, job, **kwargs):
	"""Take a queued desk job off the site's queue and run it here, as the worker would."""
	from frappe.utils.background_jobs import get_job

	queued = get_job(answer["job_id"])
	if queued is not None:
		queued.cancel()
		queued.delete()
	return job(answer["job_id"], **kwargs)


def _manager_user():
	email = "eda-manager@example.com"
	if not frappe.db.exists("User", email):
		user = frappe.get_doc(
			{"doctype": "User", "email": email, "first_name": "EDA", "send_welcome_email": 0}
		)
		user.insert(ignore_permissions=True)
		user.add_roles("EDA Manager")
		frappe.db.commit()
	return email
