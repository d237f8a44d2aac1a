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

import frappe
import pymysql
from frappe.tests.utils import FrappeTestCase

import frappe_eda
from frappe_eda.consumer import stop_process
from frappe_eda.tests import site_workers
from frappe_eda.tests.site_workers import wait_for


class TestSiteFaults(FrappeTestCase):
	def setUp(self):
		self.prefix = f"site-fault-{frappe.generate_hash(length=6)}"
		self.queue, self.exchange = f"{self.prefix}.work", f"{self.prefix}.events"
		self.saved = site_workers.use_broker()
		self.worker = None
		self.logs = []

	def tearDown(self):
		self.stop_worker()
		frappe.db.rollback()
		site_workers.delete_records(self.queue, self.exchange)
		site_workers.restore_settings(self.saved)
		subprocess.run(["rabbitmqctl", "-q", "start_app"], capture_output=True)
		site_workers.delete_topology(self.queue, self.exchange)

	# --- the worker process -------------------------------------------------------------------------

	def start_worker(self):
		log_name = f"{self.prefix}-worker-{len(self.logs)}.log"
		self.logs.append(frappe.get_site_path("logs", log_name))
		self.worker = site_workers.start_worker(self.queue, self.exchange, log_name)
		wait_for(self.queue_exists, 60, "the worker to declare its queue")

	def stop_worker(self, sig=signal.SIGTERM):
		worker, self.worker = self.worker, None
		if worker is not None:
			stop_process(worker, sig)

	def queue_exists(self):
		# Consumers start after the bindings exist; the queue alone may not be bound yet.
		return site_workers.consumers(self.queue) > 0

	# --- producing and reconciling ------------------------------------------------------------------

	def publish(self, count, payload=lambda n: {"n": n}):
		ids = [
			frappe_eda.publish("fault.item", payload(n), exchange=self.exchange).id
			for n in range(1, count + 1)
		]
		frappe.db.commit()
		return set(ids)

	def outcomes(self):
		return site_workers.outcomes(self.queue)

	def settle(self, ids, timeout=180):
		wait_for(
			lambda: all(self.outcomes().get(i) in ("Processed", "Dead") for i in ids),
			timeout,
			"every message",
		)

	def reconcile(self, ids, expected_dead=0):
		outcomes = self.outcomes()
		todos = site_workers.todos()
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

	# --- the scenarios ------------------------------------------------------------------------------

	def test_broker_restart_mid_stream_loses_nothing(self):
		self.start_worker()
		ids = self.publish(120, lambda n: {"n": n, "sleep": 0.02})
		wait_for(lambda: self.processed_count() >= 20, 60, "the first messages")
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
		wait_for(lambda: self.processed_count() >= 10, 60, "the first messages")
		self.stop_worker(signal.SIGKILL)
		self.start_worker()
		self.settle(ids)
		self.reconcile(ids)

	def test_database_lockout_acks_nothing_unrecorded_and_resumes(self):
		self.start_worker()
		ids = self.publish(80, lambda n: {"n": n, "sleep": 0.02})
		wait_for(lambda: self.processed_count() >= 10, 60, "the first messages")
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
