# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE
"""Two ``bench eda worker`` processes on one queue of a real site (issue #12 item 4): each message is
applied once (one ToDo per id) although both workers consume, every message is sent twice (the copies
reach both workers at once), and one worker is SIGKILLed mid-stream.

These tests commit (the workers run in other processes) and clean up after themselves.
"""

import signal
import subprocess
import time
from collections import Counter

import frappe
import pika
from frappe.tests.utils import FrappeTestCase
from frappe.utils.password import get_decrypted_password, set_encrypted_password

from frappe_eda.consumer import spawn_worker
from frappe_eda.messaging.connection import BrokerConnection, BrokerSettings
from frappe_eda.messaging.envelope import Message, encode

BROKER = "amqp://guest:guest@127.0.0.1:5672/%2F"


class TestCompetingWorkers(FrappeTestCase):
	def setUp(self):
		self.prefix = f"competing-{frappe.generate_hash(length=6)}"
		self.queue, self.exchange = f"{self.prefix}.work", f"{self.prefix}.events"
		self.saved = frappe.get_single("EDA Settings").as_dict()
		self.saved_url = get_decrypted_password("EDA Settings", "EDA Settings", "amqp_url", False)
		frappe.db.set_single_value("EDA Settings", "enabled", 1)
		# A node list whose first node is down: each worker connects to the next one.
		set_encrypted_password("EDA Settings", "EDA Settings", BROKER, "amqp_url")
		frappe.db.set_single_value("EDA Settings", "broker_nodes", "127.0.0.1:1")
		frappe.db.commit()
		frappe.clear_document_cache("EDA Settings", "EDA Settings")
		self.workers = []

	def tearDown(self):
		for index in range(len(self.workers)):
			self.stop(index)
		frappe.db.rollback()
		ids = frappe.get_all("EDA Message", filters={"queue": self.queue}, pluck="message_id")
		frappe.db.delete("EDA Error", {"queue": self.queue})
		frappe.db.delete("EDA Message", {"queue": self.queue})
		for message_id in ids:
			frappe.db.delete("ToDo", {"description": f"eda-fault {message_id}"})
		frappe.db.set_single_value("EDA Settings", "enabled", self.saved.enabled or 0)
		frappe.db.set_single_value("EDA Settings", "broker_nodes", self.saved.get("broker_nodes") or "")
		if self.saved_url:
			set_encrypted_password("EDA Settings", "EDA Settings", self.saved_url, "amqp_url")
		else:
			frappe.db.delete("__Auth", {"doctype": "EDA Settings", "fieldname": "amqp_url"})
		frappe.db.commit()
		frappe.clear_document_cache("EDA Settings", "EDA Settings")
		with BrokerConnection(BrokerSettings(url=BROKER)) as connection:
			channel = connection.channel()
			for name in (
				self.queue,
				f"{self.queue}.dead",
				f"{self.queue}.retry.200ms",
				f"{self.queue}.retry.500ms",
			):
				channel.queue_delete(name)
			channel.exchange_delete(self.exchange)

	# --- workers ------------------------------------------------------------------------------------

	def start(self, index=None):
		log = open(frappe.get_site_path("logs", f"{self.prefix}-worker-{len(self.workers)}.log"), "wb")
		env = {
			"EDA_HANDLER_MODULES": "frappe_eda.tests.site_fault_handlers",
			"EDA_SITE_FAULT_QUEUE": self.queue,
			"EDA_SITE_FAULT_EXCHANGE": self.exchange,
		}
		worker = spawn_worker(env, log)
		if index is None:
			self.workers.append(worker)
		else:
			self.workers[index] = worker
		wanted = sum(1 for w in self.workers if w.poll() is None)
		self.wait_for(lambda: self.consumers() >= wanted, 90, f"{wanted} workers consuming")

	def stop(self, index, sig=signal.SIGTERM):
		worker = self.workers[index]
		if worker.poll() is None:
			worker.send_signal(sig)
			try:
				worker.wait(timeout=60)
			except subprocess.TimeoutExpired:
				worker.kill()
				worker.wait()

	def consumers(self):
		connection = pika.BlockingConnection(pika.URLParameters(BROKER))
		try:
			return connection.channel().queue_declare(self.queue, passive=True).method.consumer_count
		except pika.exceptions.ChannelClosedByBroker:
			return 0
		finally:
			if connection.is_open:
				connection.close()

	# --- producing and reconciling ------------------------------------------------------------------

	def publish_twice(self, count, sleep=0.01):
		"""Each message sent twice in a row, straight to the exchange: the two copies sit next to each
		other in the queue, so the two workers tend to take one each at the same moment."""
		messages = [Message("fault.item", {"n": n, "sleep": sleep}) for n in range(1, count + 1)]
		connection = pika.BlockingConnection(pika.URLParameters(BROKER))
		channel = connection.channel()
		channel.confirm_delivery()
		properties = pika.BasicProperties(content_type="application/json", delivery_mode=2)
		for message in messages:
			for _ in range(2):
				channel.basic_publish(self.exchange, "fault.item", encode(message), properties)
		connection.close()
		return {m.id for m in messages}

	def outcomes(self):
		frappe.db.rollback()
		rows = frappe.get_all("EDA Message", filters={"queue": self.queue}, fields=["message_id", "status"])
		return {r.message_id: r.status for r in rows}

	def settle(self, ids, timeout=300):
		self.wait_for(
			lambda: all(self.outcomes().get(i) == "Processed" for i in ids),
			timeout,
			"every message processed",
		)

	def todos(self):
		return Counter(
			d.replace("eda-fault ", "")
			for d in frappe.get_all(
				"ToDo", filters={"description": ["like", "eda-fault %"]}, pluck="description"
			)
		)

	def assert_once(self, ids):
		self.settle(ids)
		todos = self.todos()
		self.assertEqual([i for i in ids if todos[i] != 1], [], "a message applied twice or never")

	@staticmethod
	def wait_for(condition, timeout, what):
		deadline = time.monotonic() + timeout
		while time.monotonic() < deadline:
			try:
				if condition():
					return
			except Exception:
				pass
			time.sleep(0.2)
		raise AssertionError(f"timed out after {timeout}s waiting for {what}")

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
		self.wait_for(
			lambda: sum(1 for s in self.outcomes().values() if s == "Processed") >= 30, 90, "30 processed"
		)
		self.stop(0, signal.SIGKILL)
		self.assert_once(ids)
		self.start(0)
		self.assertEqual(self.consumers(), 2)
