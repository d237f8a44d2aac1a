# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE
"""Two ``bench eda worker`` processes on one queue of a real site (issue #12 item 4): each message is
applied once (one ToDo per id) although both workers consume, every message is sent twice (the copies
reach both workers at once), and one worker is SIGKILLed mid-stream.

These tests commit (the workers run in other processes) and clean up after themselves.
"""

import signal

import frappe
import pika
from frappe.tests.utils import FrappeTestCase

from frappe_eda.consumer import stop_process
from frappe_eda.messaging.envelope import Message, encode
from frappe_eda.tests import site_workers
from frappe_eda.tests.site_workers import broker_url, wait_for


class TestCompetingWorkers(FrappeTestCase):
	def setUp(self):
		self.prefix = f"competing-{frappe.generate_hash(length=6)}"
		self.queue, self.exchange = f"{self.prefix}.work", f"{self.prefix}.events"
		# A node list whose first node is down: each worker connects to the next one.
		self.saved = site_workers.use_broker(broker_nodes="127.0.0.1:1")
		self.workers = []

	def tearDown(self):
		for index in range(len(self.workers)):
			self.stop(index)
		frappe.db.rollback()
		site_workers.delete_records(self.queue, self.exchange)
		site_workers.restore_settings(self.saved)
		site_workers.delete_topology(self.queue, self.exchange)

	# --- workers ------------------------------------------------------------------------------------

	def start(self, index=None):
		log_name = f"{self.prefix}-worker-{len(self.workers)}.log"
		worker = site_workers.start_worker(self.queue, self.exchange, log_name)
		if index is None:
			self.workers.append(worker)
		else:
			self.workers[index] = worker
		wanted = sum(1 for w in self.workers if w.poll() is None)
		wait_for(lambda: self.consumers() >= wanted, 90, f"{wanted} workers consuming")

	def stop(self, index, sig=signal.SIGTERM):
		stop_process(self.workers[index], sig)

	def consumers(self):
		return site_workers.consumers(self.queue)

	# --- producing and reconciling ------------------------------------------------------------------

	def publish_twice(self, count, sleep=0.01):
		"""Each message sent twice in a row, straight to the exchange: the two copies sit next to each
		other in the queue, so the two workers tend to take one each at the same moment."""
		messages = [Message("fault.item", {"n": n, "sleep": sleep}) for n in range(1, count + 1)]
		connection = pika.BlockingConnection(pika.URLParameters(broker_url()))
		channel = connection.channel()
		channel.confirm_delivery()
		properties = pika.BasicProperties(content_type="application/json", delivery_mode=2)
		for message in messages:
			for _ in range(2):
				channel.basic_publish(self.exchange, "fault.item", encode(message), properties)
		connection.close()
		return {m.id for m in messages}

	def outcomes(self):
		return site_workers.outcomes(self.queue)

	def settle(self, ids, timeout=300):
		wait_for(
			lambda: all(self.outcomes().get(i) == "Processed" for i in ids),
			timeout,
			"every message processed",
		)

	def assert_once(self, ids):
		self.settle(ids)
		todos = site_workers.todos()
		self.assertEqual([i for i in ids if todos[i] != 1], [], "a message applied twice or never")

	# --- the scenarios ------------------------------------------------------------------------------

	def test_two_workers_on_one_queue_apply_each_message_once(self):
		self.start()
		self.start()
		self.assertEqual(self.consumers(), 2)
		ids = self.publish_twice(150)
		self.assert_once(ids)

	def test_a_worker_sigkilled_mid_stream_leaves_the_other_to_finish_once(self):
		self.start()
		self.start()
		ids = self.publish_twice(150, sleep=0.02)
		wait_for(
			lambda: sum(1 for s in self.outcomes().values() if s == "Processed") >= 30, 90, "30 processed"
		)
		self.stop(0, signal.SIGKILL)
		self.assert_once(ids)
		self.start(0)
		self.assertEqual(self.consumers(), 2)
