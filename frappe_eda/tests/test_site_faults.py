# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE
"""Fault scenarios against a real site: a real ``bench eda worker`` process, the machine's RabbitMQ and
the site's MariaDB. Evidence is what an operator would look at: EDA Message and EDA Error records, and
the handler's own side effect (one ToDo per message id).

These tests commit (the worker runs in another process) and clean up after themselves.
"""

import signal
import subprocess
import time
from collections import Counter

import frappe
import pymysql
from frappe.tests.utils import FrappeTestCase
from frappe.utils.password import get_decrypted_password, set_encrypted_password

import frappe_eda
from frappe_eda.consumer import spawn_worker
from frappe_eda.messaging.connection import BrokerConnection, BrokerSettings

BROKER = "amqp://guest:guest@127.0.0.1:5672/%2F"


class TestSiteFaults(FrappeTestCase):
	def setUp(self):
		self.prefix = f"site-fault-{frappe.generate_hash(length=6)}"
		self.queue, self.exchange = f"{self.prefix}.work", f"{self.prefix}.events"
		self.saved = frappe.get_single("EDA Settings").as_dict()
		self.saved_url = get_decrypted_password("EDA Settings", "EDA Settings", "amqp_url", False)
		frappe.db.set_single_value("EDA Settings", "enabled", 1)
		set_encrypted_password("EDA Settings", "EDA Settings", BROKER, "amqp_url")  # a Password field
		frappe.db.commit()
		frappe.clear_document_cache("EDA Settings", "EDA Settings")
		self.worker = None
		self.logs = []

	def tearDown(self):
		self.stop_worker()
		frappe.db.rollback()
		ids = frappe.get_all("EDA Message", filters={"queue": self.queue}, pluck="message_id")
		frappe.db.delete("EDA Error", {"queue": self.queue})
		frappe.db.delete("EDA Message", {"queue": self.queue})
		frappe.db.delete("EDA Message", {"exchange": self.exchange})
		for message_id in ids:
			frappe.db.delete("ToDo", {"description": f"eda-fault {message_id}"})
		frappe.db.set_single_value("EDA Settings", "enabled", self.saved.enabled or 0)
		if self.saved_url:
			set_encrypted_password("EDA Settings", "EDA Settings", self.saved_url, "amqp_url")
		else:
			frappe.db.delete("__Auth", {"doctype": "EDA Settings", "fieldname": "amqp_url"})
		frappe.db.commit()
		frappe.clear_document_cache("EDA Settings", "EDA Settings")
		subprocess.run(["rabbitmqctl", "-q", "start_app"], capture_output=True)
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

	# --- the worker process -------------------------------------------------------------------------

	def start_worker(self):
		# Kept for a failure's post-mortem, in the site's own logs folder (not the bench's sites/).
		log = open(frappe.get_site_path("logs", f"{self.prefix}-worker-{len(self.logs)}.log"), "wb")
		self.logs.append(log.name)
		env = {
			"EDA_HANDLER_MODULES": "frappe_eda.tests.site_fault_handlers",
			"EDA_SITE_FAULT_QUEUE": self.queue,
			"EDA_SITE_FAULT_EXCHANGE": self.exchange,
		}
		self.worker = spawn_worker(env, log)
		self.wait_for(self.queue_exists, 60, "the worker to declare its queue")

	def stop_worker(self, sig=signal.SIGTERM):
		worker, self.worker = self.worker, None
		if worker is not None and worker.poll() is None:
			worker.send_signal(sig)
			try:
				worker.wait(timeout=60)
			except subprocess.TimeoutExpired:
				worker.kill()
				worker.wait()

	def queue_exists(self):
		import pika

		connection = pika.BlockingConnection(pika.URLParameters(BROKER))
		try:
			# Consumers start after the bindings exist; the queue alone may not be bound yet.
			return connection.channel().queue_declare(self.queue, passive=True).method.consumer_count > 0
		except pika.exceptions.ChannelClosedByBroker:
			return False
		finally:
			if connection.is_open:
				connection.close()

	# --- producing and reconciling ------------------------------------------------------------------

	def publish(self, count, payload=lambda n: {"n": n}):
		ids = [
			frappe_eda.publish("fault.item", payload(n), exchange=self.exchange).id
			for n in range(1, count + 1)
		]
		frappe.db.commit()
		return set(ids)

	def outcomes(self):
		frappe.db.rollback()  # a fresh snapshot: the worker commits on its own connection
		rows = frappe.get_all("EDA Message", filters={"queue": self.queue}, fields=["message_id", "status"])
		return {r.message_id: r.status for r in rows}

	def settle(self, ids, timeout=180):
		self.wait_for(
			lambda: all(self.outcomes().get(i) in ("Processed", "Dead") for i in ids),
			timeout,
			"every message",
		)

	def reconcile(self, ids, expected_dead=0):
		outcomes = self.outcomes()
		todos = Counter(
			d.replace("eda-fault ", "")
			for d in frappe.get_all(
				"ToDo", filters={"description": ["like", "eda-fault %"]}, pluck="description"
			)
		)
		processed = {i for i in ids if outcomes.get(i) == "Processed"}
		dead = {i for i in ids if outcomes.get(i) == "Dead"}
		self.assertEqual(ids - processed - dead, set(), "lost messages")
		self.assertEqual([i for i in ids if todos[i] > 1], [], "side effects run twice")
		self.assertEqual({i for i in ids if todos[i]}, processed, "a ToDo exactly for each Processed message")
		self.assertEqual(len(dead), expected_dead)
		for message_id in dead:
			self.assertTrue(frappe.db.exists("EDA Error", {"message_id": message_id, "queue": self.queue}))
		return processed, dead

	def processed_count(self):
		return sum(1 for status in self.outcomes().values() if status == "Processed")

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

	def test_broker_restart_mid_stream_loses_nothing(self):
		self.start_worker()
		ids = self.publish(120, lambda n: {"n": n, "sleep": 0.02})
		self.wait_for(lambda: self.processed_count() >= 20, 60, "the first messages")
		subprocess.run(["rabbitmqctl", "-q", "stop_app"], check=True, capture_output=True)
		time.sleep(2)
		subprocess.run(["rabbitmqctl", "-q", "start_app"], check=True, capture_output=True)
		subprocess.run(["rabbitmqctl", "-q", "await_startup"], check=True, capture_output=True)
		more = self.publish(30)  # published right after the broker came back: the relay catches up
		self.settle(ids | more)
		self.reconcile(ids | more)

	def test_worker_killed_mid_handler_processes_each_message_once_after_restart(self):
		self.start_worker()
		ids = self.publish(80, lambda n: {"n": n, "sleep": 0.05})
		self.wait_for(lambda: self.processed_count() >= 10, 60, "the first messages")
		self.stop_worker(signal.SIGKILL)
		self.start_worker()
		self.settle(ids)
		self.reconcile(ids)

	def test_database_lockout_acks_nothing_unrecorded_and_resumes(self):
		self.start_worker()
		ids = self.publish(80, lambda n: {"n": n, "sleep": 0.02})
		self.wait_for(lambda: self.processed_count() >= 10, 60, "the first messages")
		user, own = frappe.conf.db_name, frappe.db.sql("select connection_id()")[0][0]
		root = pymysql.connect(host="127.0.0.1", user="root", password="", autocommit=True)
		try:
			with root.cursor() as cursor:
				# The site's user may be scoped to any host ('%', 'localhost', '127.0.0.1'): lock each.
				cursor.execute("SELECT host FROM mysql.user WHERE user = %s", (user,))
				accounts = [f"'{user}'@'{host}'" for (host,) in cursor.fetchall()]
				self.assertTrue(accounts, f"no MariaDB account for {user}")
				try:
					for account in accounts:
						cursor.execute(f"ALTER USER {account} ACCOUNT LOCK")
					cursor.execute(
						"SELECT id FROM information_schema.processlist WHERE user = %s AND id != %s",
						(user, own),
					)
					for (connection_id,) in cursor.fetchall():
						cursor.execute(f"KILL {int(connection_id)}")
					time.sleep(3)
				finally:
					for account in accounts:
						cursor.execute(f"ALTER USER {account} ACCOUNT UNLOCK")
		finally:
			root.close()
		self.settle(ids)
		self.reconcile(ids)

	def test_transient_failures_recover_and_permanent_ones_are_dead_with_errors(self):
		self.start_worker()

		def payload(n):
			if n % 10 == 0:
				return {"n": n, "permanent": True}
			if n % 7 == 0:
				return {"n": n, "fail_times": 5}
			return {"n": n, "fail_times": 1 if n % 3 == 0 else 0}

		ids = self.publish(60, payload)
		self.settle(ids)
		_processed, dead = self.reconcile(ids, expected_dead=6 + 8)
		retried = frappe.get_all(
			"EDA Error",
			filters={"queue": self.queue, "exception_type": "RuntimeError", "attempt": 1},
			pluck="message_id",
		)
		self.assertTrue(set(retried) - dead, "transient failures were recorded and then recovered")
