# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE
"""EDA Worker rows: a real bench worker (in this process, on the machine's RabbitMQ and the site's
database) records its run at start, beats while it runs and says it stopped; a row not seen for a while
shows stale; old rows are pruned at the next start; and a beat commits nothing but its own row.

The worker and its heartbeat commit on their own connections, so these tests commit too and delete
what they made.
"""

import os
import time
from datetime import datetime, timedelta, timezone

import frappe
from frappe.tests.utils import FrappeTestCase

from frappe_eda.consumer import build_worker
from frappe_eda.consumer.heartbeats import SiteHeartbeats, record, worker_beat
from frappe_eda.desk.broker_view import workers
from frappe_eda.messaging.connection import BrokerConnection
from frappe_eda.messaging.heartbeat import WorkerBeat
from frappe_eda.messaging.publisher import Publisher
from frappe_eda.messaging.registry import default_registry
from frappe_eda.messaging.topology import TopologyDeclarer, topology_for
from frappe_eda.settings import load_settings

WORKER = "EDA Worker"


def beat(worker_id, *, age=0.0, stopped=False, heartbeat_every=15.0, processed=0):
	seen = datetime.now(timezone.utc) - timedelta(seconds=age)
	return WorkerBeat(
		worker_id=worker_id,
		host="test-host",
		pid=4242,
		queues=("q.one", "q.<two>"),
		started_at=seen - timedelta(minutes=1),
		last_seen=seen,
		processed=processed,
		heartbeat_every=heartbeat_every,
		stopped=stopped,
	)


class HeartbeatCase(FrappeTestCase):
	def setUp(self):
		self.prefix = f"eda-w-{frappe.generate_hash(length=8)}"
		self.saved = frappe.db.get_single_value("EDA Settings", "enabled")
		frappe.db.set_single_value("EDA Settings", "enabled", 1)
		frappe.db.commit()
		frappe.clear_document_cache("EDA Settings", "EDA Settings")

	def tearDown(self):
		frappe.db.rollback()
		frappe.db.delete(WORKER, {"worker_id": ["like", f"%{self.prefix}%"]})
		frappe.db.delete(WORKER, {"queues": ["like", f"%{self.prefix}%"]})
		frappe.db.delete("EDA Message", {"queue": ["like", f"{self.prefix}%"]})
		frappe.db.delete("ToDo", {"description": ["like", f"{self.prefix}%"]})
		frappe.db.set_single_value("EDA Settings", "enabled", self.saved)
		frappe.db.commit()
		frappe.clear_document_cache("EDA Settings", "EDA Settings")

	def row(self, name):
		frappe.db.rollback()  # a fresh snapshot: the heartbeat committed on its own connection
		return frappe.db.get_value(WORKER, name, "*", as_dict=True)


class TestWorkerHeartbeats(HeartbeatCase):
	def test_a_running_worker_writes_its_row_at_start_updates_it_and_marks_it_stopped(self):
		queue, exchange = f"{self.prefix}.work", f"{self.prefix}.events"
		handled = []
		default_registry.subscribe("job.*", queue=queue, exchange=exchange)(lambda m: handled.append(m.id))
		self.addCleanup(default_registry.remove, queue)
		seen = {}

		def watch(stats, worker):
			"""Runs on the loop thread between turns: read the row as the desk would, meanwhile."""
			row = self.row(worker.ticks.worker_id)
			if row and "first" not in seen:
				seen["first"] = row
			if (
				row
				and stats.processed >= 2
				and row.processed >= 2
				and row.last_heartbeat > seen["first"].last_heartbeat
			):
				seen["later"] = row
				return True
			return False

		settings = load_settings()
		with BrokerConnection(settings.broker) as connection:
			worker = build_worker(connection, [queue], heartbeat_every=0.2)
			try:
				worker.declare()
				publisher = Publisher(connection, exchange=exchange, source="tests")
				publisher.publish("job.1", {"n": 1})
				publisher.publish("job.2", {"n": 2})
				publisher.close()
				deadline = time.monotonic() + 30
				worker.run(until=lambda s: watch(s, worker) or time.monotonic() > deadline)
			finally:
				worker.close()
				declarer = TopologyDeclarer(connection)
				declarer.delete(topology_for(worker.subscriptions, settings.retry))
				declarer.close()

		worker_id = worker.ticks.worker_id
		self.assertEqual(len(handled), 2)
		first, later, last = seen["first"], seen["later"], self.row(worker_id)
		self.assertEqual(first.name, worker_id)
		self.assertEqual((first.pid, first.stopped, first.queues), (os.getpid(), 0, queue))
		self.assertEqual(first.host, worker.ticks.host)
		self.assertEqual(later.stopped, 0, "a running worker's row says it runs")
		self.assertGreater(later.last_heartbeat, first.last_heartbeat, "each beat moves last_heartbeat on")
		self.assertEqual(later.started_at, first.started_at)
		self.assertEqual((later.processed, later.dead), (2, 0))
		self.assertEqual(worker_beat(later).state(), "alive")
		self.assertEqual(last.stopped, 1, "the last beat says the worker stopped")
		self.assertEqual(worker_beat(last).state(), "stopped")
		# last_heartbeat is naive UTC, as every EDA datetime: within seconds of now in UTC
		now = datetime.now(timezone.utc).replace(tzinfo=None)
		self.assertLess(abs((now - last.last_heartbeat).total_seconds()), 30)
		self.assertEqual(float(last.heartbeat_every), 0.2)


class TestWorkerRows(HeartbeatCase):
	def test_a_row_not_seen_for_three_beats_is_stale_and_a_stopped_one_stopped(self):
		heartbeats = SiteHeartbeats()
		self.addCleanup(heartbeats.close)
		heartbeats(beat(f"{self.prefix}-alive", age=1))
		heartbeats(beat(f"{self.prefix}-stale", age=61))  # 3 beats of 15 s, but at least 60 s
		heartbeats(beat(f"{self.prefix}-slow", age=61, heartbeat_every=30.0))  # under 3 beats of 30 s
		heartbeats(beat(f"{self.prefix}-stopped", age=3600, stopped=True))
		frappe.db.rollback()

		states = {w["worker_id"]: w["state"] for w in workers(limit=1000) if self.prefix in w["worker_id"]}
		self.assertEqual(
			states,
			{
				f"{self.prefix}-alive": "alive",
				f"{self.prefix}-stale": "stale",
				f"{self.prefix}-slow": "alive",
				f"{self.prefix}-stopped": "stopped",
			},
		)
		[shown] = [w for w in workers(limit=1000) if w["worker_id"] == f"{self.prefix}-alive"]
		self.assertEqual(shown["queues"], ["q.one", "q.<two>"], "stored escaped, read back as written")
		stored = frappe.db.get_value(WORKER, f"{self.prefix}-alive", "queues")
		self.assertNotIn("<", stored, "producer text is stored HTML-escaped, as the store does")

	def test_a_long_host_name_still_gets_one_row_that_every_beat_finds(self):
		"""An FQDN of 200 characters, made longer by escaping, was over the 140 a name holds: every beat
		failed with "Data too long" and the worker showed as never seen."""
		from dataclasses import replace

		from frappe_eda.consumer.heartbeats import row_name

		host = "<b>" + "h" * 200 + ".example.com"
		first = replace(beat(f"{host}:4242:{self.prefix}"), host=host)
		heartbeats = SiteHeartbeats()
		self.addCleanup(heartbeats.close)
		heartbeats(first)
		heartbeats(replace(first, processed=5, last_seen=datetime.now(timezone.utc)))
		name = row_name(first.worker_id)
		self.assertLessEqual(len(name), 140)
		self.assertIn("~", name)
		row = self.row(name)
		self.assertEqual((row.processed, len(row.host) <= 140), (5, True))
		frappe.db.delete(WORKER, name)
		frappe.db.commit()

	def test_the_first_beat_prunes_rows_last_seen_over_a_week_ago(self):
		old, recent = f"{self.prefix}-old", f"{self.prefix}-recent"
		record(beat(old, age=8 * 86400))
		record(beat(recent, age=86400, stopped=True))
		frappe.db.commit()
		heartbeats = SiteHeartbeats()
		self.addCleanup(heartbeats.close)
		heartbeats(beat(f"{self.prefix}-new"))
		frappe.db.rollback()
		self.assertFalse(frappe.db.exists(WORKER, old))
		self.assertTrue(frappe.db.exists(WORKER, recent))
		self.assertTrue(frappe.db.exists(WORKER, f"{self.prefix}-new"))

	def test_a_beat_commits_its_row_only_never_the_threads_pending_work(self):
		frappe.get_doc({"doctype": "ToDo", "description": f"{self.prefix} pending"}).insert()
		heartbeats = SiteHeartbeats()
		self.addCleanup(heartbeats.close)
		heartbeats(beat(f"{self.prefix}-own", processed=7))
		self.assertTrue(frappe.db.exists("ToDo", {"description": f"{self.prefix} pending"}))
		frappe.db.rollback()
		self.assertFalse(
			frappe.db.exists("ToDo", {"description": f"{self.prefix} pending"}),
			"the heartbeat did not commit the loop thread's transaction",
		)
		self.assertEqual(frappe.db.get_value(WORKER, f"{self.prefix}-own", "processed"), 7)
		# and the thread's own connection is back in place
		self.assertIsNot(frappe.local.db, heartbeats._db)
