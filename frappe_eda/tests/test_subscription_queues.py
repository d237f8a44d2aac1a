# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE
"""A subscription's queues follow it on the real broker (frappe_eda.replication.queues): disabling unbinds
(nothing new piles up), enabling binds again, deleting unbinds and deletes the queues when empty, keeps
them and says so when not; ``eda retire-queue`` finishes the job; the receipts queue follows the
destinations that ask for receipts. The tests commit: the broker work runs after commit."""

from __future__ import annotations

import subprocess

import frappe
import pika
import pika.exceptions
from frappe.tests.utils import FrappeTestCase

from frappe_eda.consumer import eda_command
from frappe_eda.messaging.topology import dead_letter_queue
from frappe_eda.replication.queues import family
from frappe_eda.replication.receipts import receipt_queue
from frappe_eda.settings import load_settings


class TestSubscriptionQueues(FrappeTestCase):
	def setUp(self):
		self.prefix = f"eda-sq-{frappe.generate_hash(length=6)}"
		self.settings = load_settings()
		self.made: list[tuple[str, str]] = []
		self.connection = pika.BlockingConnection(pika.URLParameters(self.settings.broker.url))
		self.channel = self.connection.channel()

	def tearDown(self):
		frappe.db.rollback()
		for doctype, name in reversed(self.made):
			frappe.delete_doc(doctype, name, force=True, ignore_missing=True)
		frappe.db.commit()
		frappe.local.message_log = []
		channel = self.channel if self.channel.is_open else self.connection.channel()
		for queue in self.queues_made():
			for name in family(queue):
				channel.queue_delete(name)
		self.connection.close()

	def queues_made(self):
		return [f"eda.sub.{self.prefix}-{n}" for n in ("a", "b")]

	def subscription(self, label, **values):
		doc = frappe.get_doc(
			{
				"doctype": "EDA Subscription",
				"subscription_name": f"{self.prefix}-{label}",
				"source_doctype": "ToDo",
				"source": "head.example.com",
				"routing_key_patterns": f"{self.prefix}.{label}.*",
				**values,
			}
		).insert()
		self.made.append(("EDA Subscription", doc.name))
		frappe.db.commit()  # the queue work runs once the change is committed
		return doc

	def depth(self, queue):
		"""Ready messages in ``queue``, or None when it does not exist."""
		channel = self.connection.channel()
		try:
			return channel.queue_declare(queue, passive=True).method.message_count
		except pika.exceptions.ChannelClosedByBroker as e:
			self.assertEqual(e.reply_code, 404)
			return None
		finally:
			if channel.is_open:
				channel.close()

	def send(self, key):
		self.channel.basic_publish(self.settings.exchange, key, b"{}")
		self.connection.process_data_events(time_limit=0.2)

	def test_disable_unbinds_enable_binds_again(self):
		doc = self.subscription("a")
		self.assertEqual(self.depth(doc.queue), 0)  # declared and bound on save
		self.send(f"{self.prefix}.a.1")
		self.assertEqual(self.depth(doc.queue), 1)
		doc.enabled = 0
		doc.save()
		frappe.db.commit()
		self.send(f"{self.prefix}.a.2")
		self.assertEqual(self.depth(doc.queue), 1, "a disabled subscription's queue takes nothing new")
		doc.enabled = 1
		doc.routing_key_patterns = f"{self.prefix}.a.new.*"
		doc.save()
		frappe.db.commit()
		self.send(f"{self.prefix}.a.3")  # the old pattern: unbound
		self.send(f"{self.prefix}.a.new.1")
		self.assertEqual(self.depth(doc.queue), 2)

	def test_delete_keeps_what_holds_messages_says_so_and_retire_queue_finishes(self):
		kept = self.subscription("a")
		self.send(f"{self.prefix}.a.1")
		frappe.local.message_log = []
		frappe.delete_doc("EDA Subscription", kept.name)
		said = " ".join(str(m) for m in frappe.local.message_log)
		self.assertIn("still hold messages", said)
		self.assertIn(f"eda retire-queue {kept.queue}", said)
		frappe.db.commit()
		self.send(f"{self.prefix}.a.2")
		self.assertEqual(self.depth(kept.queue), 1, "kept, unbound")
		self.assertEqual(self.depth(dead_letter_queue(kept.queue)), 0)
		refused = subprocess.run(
			eda_command("retire-queue", kept.queue),
			cwd=frappe.local.sites_path,
			capture_output=True,
			text=True,
		)
		self.assertEqual(refused.returncode, 1, refused.stdout + refused.stderr)
		self.assertIn(f"{kept.queue} holds 1", refused.stdout)
		self.channel.queue_purge(kept.queue)  # the operator discarded it
		done = subprocess.run(
			eda_command("retire-queue", kept.queue),
			cwd=frappe.local.sites_path,
			capture_output=True,
			text=True,
		)
		self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
		self.assertEqual([self.depth(name) for name in family(kept.queue)], [None] * len(family(kept.queue)))

		empty = self.subscription("b")
		frappe.delete_doc("EDA Subscription", empty.name)
		frappe.db.commit()
		self.assertEqual(
			[self.depth(name) for name in family(empty.queue)], [None] * len(family(empty.queue))
		)

	def test_the_receipts_queue_follows_the_destinations_that_ask_for_receipts(self):
		if frappe.db.exists("EDA Destination", {"enabled": 1, "request_receipts": 1}):
			self.skipTest("another destination on this site asks for receipts")
		destination = frappe.get_doc(
			{
				"doctype": "EDA Destination",
				"destination_name": f"{self.prefix} wh9",
				"routing_key": "wh9.{type}",
				"target_servers": "wh9.example.com",
				"request_receipts": 1,
			}
		).insert()
		self.made.append(("EDA Destination", destination.name))
		frappe.db.commit()
		self.assertEqual(self.depth(receipt_queue()), 0)
		destination.request_receipts = 0
		destination.save()
		frappe.db.commit()
		self.assertIsNone(self.depth(receipt_queue()))

	def test_a_queue_still_consumed_is_deleted_by_the_worker_once_it_stops_consuming(self):
		from frappe_eda.messaging.connection import BrokerConnection
		from frappe_eda.replication.queues import retire_deleted

		doc = self.subscription("a")
		consumer = self.connection.channel()
		consumer.basic_consume(doc.queue, on_message_callback=lambda *a: None)  # a worker not reloaded yet
		frappe.delete_doc("EDA Subscription", doc.name)
		frappe.db.commit()
		self.assertEqual(self.depth(doc.queue), 0, "in use: kept")
		consumer.close()  # the worker reloads and stops consuming it
		with BrokerConnection(self.settings.broker) as connection:
			[retired] = retire_deleted(connection, [doc.queue])
		self.assertEqual(retired.left, {})
		self.assertIsNone(self.depth(doc.queue))
