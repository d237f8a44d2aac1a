# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE
"""The workspace's broker view (frappe_eda.desk.broker_view): real depths of queues declared and filled
here on the site's broker (unique names, deleted after), consumers, retry tiers and the dead-letter
queue; a broker that is away gives a message, not an exception; users who are not managers are refused.
"""

import subprocess
import sys
import time

import frappe
from frappe.tests.utils import FrappeTestCase

from frappe_eda.consumer import eda_command
from frappe_eda.desk.broker_view import broker_view
from frappe_eda.messaging.connection import BrokerConnection
from frappe_eda.messaging.registry import default_registry
from frappe_eda.messaging.topology import TopologyDeclarer, dead_letter_queue, retry_queue, topology_for
from frappe_eda.settings import load_settings

PLAIN = "eda-broker-view-plain@example.com"
# Consumes argv[2] on broker argv[1], two at a time, never acking, for at most 60 s.
CONSUMER = """
import sys, time, pika
connection = pika.BlockingConnection(pika.URLParameters(sys.argv[1]))
channel = connection.channel()
channel.basic_qos(prefetch_count=2)
channel.basic_consume(sys.argv[2], on_message_callback=lambda *a: None)
end = time.monotonic() + 60
while time.monotonic() < end:
	connection.process_data_events(time_limit=0.5)
"""
EDA_USER = "eda-broker-view-user@example.com"


class TestBrokerView(FrappeTestCase):
	def setUp(self):
		self.prefix = f"eda-bv-{frappe.generate_hash(length=8)}"
		self.queue, self.exchange = f"{self.prefix}.work", f"{self.prefix}.events"
		self.missing = f"{self.prefix}.never-declared"
		subscribe = default_registry.subscribe
		subscribe("job.*", queue=self.queue, exchange=self.exchange, max_attempts=3, retry_delays=[0.5, 2])(
			lambda m: None
		)
		subscribe("other.*", queue=self.missing, exchange=self.exchange)(lambda m: None)
		self.settings = load_settings()
		subscription = default_registry.for_queue(self.queue)
		self.topology = topology_for([subscription], self.settings.retry)
		with BrokerConnection(self.settings.broker) as connection:
			TopologyDeclarer(connection).declare(self.topology)

	def tearDown(self):
		frappe.set_user("Administrator")
		frappe.local.conf.pop("eda_management_url", None)
		for queue in (self.queue, self.missing):
			default_registry.remove(queue)
		with BrokerConnection(self.settings.broker) as connection:
			TopologyDeclarer(connection).delete(self.topology)

	def fill(self, channel, queue, n):
		for i in range(n):
			channel.basic_publish("", queue, f"{self.prefix} {i}".encode())

	def start_consumer(self):
		"""A consumer in another process (one broker connection per process) that takes two of the work
		queue's messages and never acks them."""
		consumer = subprocess.Popen(
			[sys.executable, "-c", CONSUMER, self.settings.broker.url, self.queue],
			stdout=subprocess.DEVNULL,
			stderr=subprocess.DEVNULL,
		)
		self.addCleanup(consumer.wait, 10)
		self.addCleanup(consumer.kill)

	def row(self, view, queue):
		[row] = [q for q in view["queues"] if q["queue"] == queue]
		return row

	def test_depths_consumers_tiers_and_dead_of_a_declared_queue(self):
		# One broker connection per process (ConnectionAlreadyOpen): fill, close, then look.
		with BrokerConnection(self.settings.broker) as connection:
			channel = connection.channel()
			channel.confirm_delivery()
			self.fill(channel, self.queue, 3)
			self.fill(channel, retry_queue(self.queue, 2), 1)
			self.fill(channel, dead_letter_queue(self.queue), 2)

		view = broker_view()
		self.assertIsNone(view["error"])
		self.assertIn("***", view["broker"], "the broker URL is shown without its password")
		row = self.row(view, self.queue)
		self.assertEqual((row["ready"], row["consumers"], row["missing"]), (3, 0, False))
		self.assertIsNone(row["unacked"], "no management API configured: n/a")
		self.assertIsNone(view["management"])
		self.assertEqual(row["exchange"], self.exchange)
		self.assertEqual(
			[(t["queue"], t["ready"]) for t in row["tiers"]],
			[(retry_queue(self.queue, 0.5), 0), (retry_queue(self.queue, 2), 1)],
		)
		self.assertEqual((row["dead"]["queue"], row["dead"]["ready"]), (dead_letter_queue(self.queue), 2))

		# a consumer in another process that takes two and does not ack them: one consumer, one ready
		self.start_consumer()
		deadline = time.monotonic() + 20
		while time.monotonic() < deadline:
			row = self.row(broker_view(), self.queue)
			if row["ready"] == 1 and row["consumers"] == 1:
				break
			time.sleep(0.2)
		self.assertEqual((row["ready"], row["consumers"]), (1, 1))

	def test_a_queue_that_is_not_declared_shows_as_missing_and_is_not_created(self):
		row = self.row(broker_view(), self.missing)
		self.assertTrue(row["missing"])
		self.assertIsNone(row["ready"])
		self.assertTrue(row["dead"]["missing"])
		with BrokerConnection(self.settings.broker) as connection:
			self.assertIsNone(TopologyDeclarer(connection).queue_depth(self.missing), "a passive declare")

	def test_a_broker_that_is_away_gives_a_message_at_once(self):
		frappe.local.conf["eda_amqp_url"], saved = (
			"amqp://guest:secret@127.0.0.1:1/eda3",
			frappe.local.conf.get("eda_amqp_url"),
		)
		try:
			started = time.monotonic()
			view = broker_view()
		finally:
			frappe.local.conf["eda_amqp_url"] = saved
		self.assertLess(time.monotonic() - started, 15)
		self.assertTrue(view["error"])
		self.assertIn("could not be reached", view["error"])
		self.assertNotIn("secret", view["error"] + view["broker"])
		self.assertEqual(view["queues"], [])
		self.assertIsInstance(view["workers"], list, "the workers still show")

	def test_unacked_from_the_management_api_when_it_is_configured(self):
		"""Needs RabbitMQ's management plugin on 127.0.0.1:15672 (`rabbitmq-plugins enable
		rabbitmq_management`); skipped, saying so, where it is not enabled."""
		import urllib.request

		try:
			urllib.request.urlopen("http://127.0.0.1:15672/api/overview", timeout=2)
		except urllib.error.HTTPError:
			pass  # 401: it answers
		except OSError:
			self.skipTest("RabbitMQ's management API is not enabled on 127.0.0.1:15672")
		with BrokerConnection(self.settings.broker) as connection:
			channel = connection.channel()
			channel.confirm_delivery()
			self.fill(channel, self.queue, 3)
		self.start_consumer()
		frappe.local.conf["eda_management_url"] = "http://127.0.0.1:15672"  # credentials: the broker URL's
		deadline = time.monotonic() + 30  # the API's statistics refresh every few seconds
		while time.monotonic() < deadline:
			view = broker_view()
			row = self.row(view, self.queue)
			if row["unacked"] == 2:
				break
			time.sleep(0.5)
		self.assertIsNone(view["management"]["error"])
		self.assertEqual((row["ready"], row["unacked"], row["consumers"]), (1, 2, 1))

	def test_a_management_api_that_is_away_leaves_unacked_unknown_with_a_note(self):
		frappe.local.conf["eda_management_url"] = "http://127.0.0.1:1"
		view = broker_view()
		self.assertIsNone(view["error"])
		self.assertIsNone(self.row(view, self.queue)["unacked"])
		self.assertEqual(view["management"]["url"], "http://127.0.0.1:1")
		self.assertTrue(view["management"]["error"])

	def test_users_who_are_not_managers_are_refused(self):
		for email, roles in ((PLAIN, ()), (EDA_USER, ("EDA User",))):
			with self.subTest(user=email):
				_user(email, roles)
				frappe.set_user(email)
				with self.assertRaises(frappe.PermissionError):
					broker_view()
				frappe.set_user("Administrator")


def _user(email, roles):
	if not frappe.db.exists("User", email):
		user = frappe.get_doc(
			{"doctype": "User", "email": email, "first_name": "EDA broker view", "send_welcome_email": 0}
		)
		user.insert(ignore_permissions=True)
		if roles:
			user.add_roles(*roles)
		frappe.db.commit()


class TestEveryQueueOfTheSite(FrappeTestCase):
	"""Not only the apps' handler queues: an enabled EDA Subscription's queue and the receipts queue of
	a destination that asks for receipts are shown too (the issue: ``eda status`` printed nothing for
	them), in the desk's view and in ``bench eda status``."""

	def setUp(self):
		self.prefix = f"eda-bv-{frappe.generate_hash(length=6)}"
		self.subscription = frappe.get_doc(
			{
				"doctype": "EDA Subscription",
				"subscription_name": f"{self.prefix} items",
				"source_doctype": "ToDo",
				"source": "head.example.com",
				"routing_key_patterns": f"{self.prefix}.todo.*",
			}
		).insert()
		frappe.get_doc(
			{
				"doctype": "EDA Destination",
				"destination_name": f"{self.prefix} wh9",
				"routing_key": "wh9.{type}",
				"target_servers": "wh9.example.com",
				"request_receipts": 1,
			}
		).insert()
		frappe.db.commit()  # ``bench eda status`` runs in another process

	def tearDown(self):
		frappe.db.rollback()
		frappe.delete_doc("EDA Subscription", self.subscription.name, force=True)
		frappe.delete_doc("EDA Destination", f"{self.prefix} wh9", force=True)
		frappe.db.commit()

	def test_subscription_and_receipt_queues_are_shown(self):
		from frappe_eda.desk.broker_view import queue_view
		from frappe_eda.replication.receipts import receipt_queue

		wanted = {self.subscription.queue, receipt_queue()}
		rows = {row["queue"]: row for row in queue_view()["queues"]}
		self.assertLessEqual(wanted, set(rows), rows.keys())
		for name in wanted:
			self.assertEqual(rows[name]["dead"]["queue"], dead_letter_queue(name))
		done = subprocess.run(
			eda_command("status"),
			cwd=frappe.local.sites_path,
			capture_output=True,
			text=True,
			timeout=300,
		)
		self.assertEqual(done.returncode, 0, done.stderr)
		for name in wanted:
			self.assertIn(f"\n  {name} ", done.stdout)
			self.assertIn(f"\n  {dead_letter_queue(name)} ", done.stdout)
