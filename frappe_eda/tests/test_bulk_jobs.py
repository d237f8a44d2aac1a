# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE
"""Bulk replay and bulk resolve as background jobs, at 5,000 messages, against the machine's RabbitMQ.

The job functions run here as a worker runs them (the job taken off the queue first); the "twice at
once" case runs two jobs in two processes, each with its own site connection and broker connection
(one broker connection per process: ``BrokerConnection._claim_process_slot``). Timings are printed,
not asserted. Records are committed (the jobs commit) and deleted afterwards, as are the queues.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from unittest.mock import patch

import frappe
import pika
from frappe.tests.utils import FrappeTestCase

from frappe_eda import compat
from frappe_eda.desk import api, replay
from frappe_eda.frappe_eda.doctype.eda_message.test_desk_api import take_job
from frappe_eda.messaging.connection import BrokerConnection
from frappe_eda.messaging.store import Status
from frappe_eda.settings import load_settings
from frappe_eda.stores.doctype_store import DocTypeStore
from frappe_eda.testing.store_contract import incoming

N = 5000
SAVE_CHUNK = 500
RQ_QUEUE = "eda-test-bulk-jobs"
ERROR_FIELDS = (
	*("name", "message_id", "direction", "queue", "exception_type", "fingerprint", "attempt", "resolved"),
	*("error", "occurred_at", "creation", "modified", "owner", "modified_by"),
)


class BulkCase(FrappeTestCase):
	def setUp(self):
		frappe.db.rollback()
		frappe.set_user("Administrator")
		self.prefix = f"bulk-{frappe.generate_hash(length=8)}"
		self.queue = f"{self.prefix}.work"
		self.dead = f"{self.queue}.dead"
		with self.broker() as connection:
			channel = connection.channel()
			channel.queue_declare(self.queue, durable=True)
			channel.queue_declare(self.dead, durable=True)
		self.addCleanup(self.cleanup)

	def cleanup(self):
		frappe.db.rollback()
		frappe.db.delete("EDA Error", {"queue": ["like", f"{self.prefix}%"]})
		frappe.db.delete("EDA Message", {"queue": ["like", f"{self.prefix}%"]})
		frappe.db.commit()
		with self.broker() as connection:
			channel = connection.channel()
			for queue in (self.queue, self.dead):
				channel.queue_delete(queue)

	def queued(self, call):
		"""``call()``'s job, really queued in RQ but on a queue of this test's that no bench worker takes
		(the bench's workers share one Redis: another site's worker would run it at once), then removed."""
		from frappe.utils.background_jobs import get_queues_timeout

		rq_queue = RQ_QUEUE
		# Frappe caches the queue list it read first (lru_cache): read it again with the test's queue,
		# and again afterwards without it, whatever ran before in this process.
		get_queues_timeout.cache_clear()
		try:
			with (
				patch.dict(frappe.local.conf, {"workers": {rq_queue: {}}}),
				patch.object(replay, "QUEUE", rq_queue),
			):
				answer = call()
		finally:
			get_queues_timeout.cache_clear()
		job = take_job(answer["job_id"])
		self.assertIsNotNone(job, "not queued")
		return answer, job.kwargs["kwargs"]

	def broker(self):
		return BrokerConnection(load_settings().broker)

	def seed(self, n, errors=False):
		"""``n`` Dead incoming messages of the work queue, committed, each with its copy in ``.dead``."""
		started = time.monotonic()
		ids = [f"{self.prefix}-{i:05d}" for i in range(n)]
		store = DocTypeStore(commit=False)
		for start in range(0, n, SAVE_CHUNK):
			store.save(
				[
					incoming(i, self.queue, status=Status.DEAD, routing_key="bulk.test", attempts=1)
					for i in ids[start : start + SAVE_CHUNK]
				]
			)
		if errors:
			now = frappe.utils.now_datetime()
			stamps = (now, now, now, "Administrator", "Administrator")
			frappe.db.bulk_insert(
				"EDA Error",
				[*ERROR_FIELDS],
				[
					(
						f"{i}-e",
						i,
						"Incoming",
						self.queue,
						"RuntimeError",
						f"{self.prefix}-fp",
						1,
						0,
						"boom",
						*stamps,
					)
					for i in ids
				],
			)
		frappe.db.commit()
		with self.broker() as connection:
			channel = connection.channel()
			channel.confirm_delivery()
			for i in ids:
				channel.basic_publish(
					"",
					self.dead,
					json.dumps({"id": i}).encode(),
					pika.BasicProperties(message_id=i, delivery_mode=2),
				)
		names = frappe.get_all(
			"EDA Message", filters={"queue": self.queue}, pluck="name", order_by="message_id asc"
		)
		self.assertEqual(len(names), n)
		self.assertEqual(self.depth(self.dead), n)
		print(f"\n  seeded {n} Dead messages and {n} dead copies in {time.monotonic() - started:.1f}s")
		return ids, names

	def depth(self, queue):
		with self.broker() as connection:
			return connection.channel().queue_declare(queue, passive=True).method.message_count

	def delivered_ids(self, expected):
		"""Every message id in the work queue (taken off it), with repeats."""
		ids = []
		with self.broker() as connection:
			channel = connection.channel()
			channel.basic_qos(prefetch_count=1000)
			channel.basic_consume(
				self.queue,
				lambda ch, method, properties, body: ids.append(properties.message_id),
				auto_ack=True,
			)
			deadline = time.monotonic() + 60
			while time.monotonic() < deadline:
				before = len(ids)
				connection.process_events(time_limit=0.5)
				if len(ids) >= expected and len(ids) == before:
					break
		return ids

	def statuses(self):
		return dict(
			frappe.get_all(
				"EDA Message",
				filters={"queue": self.queue},
				fields=["status", compat.count_field("n")],
				group_by="status",
				as_list=True,
			)
		)


def recording_states():
	"""The job states written, in order (``_set_state`` still writes them)."""
	states = []
	real = replay._set_state

	def record(job_id, **state):
		states.append(state)
		real(job_id, **state)

	return states, patch.object(replay, "_set_state", record)


class TestBulkReplay(BulkCase):
	def test_replaying_5000_by_filters_sends_each_once_cleans_dead_and_shows_progress(self):
		ids, _names = self.seed(N)
		answer, kwargs = self.queued(
			lambda: api.replay_messages(filters=json.dumps({"queue": self.queue, "status": ["Dead"]}))
		)
		self.assertEqual(answer["queued"], N)
		self.assertEqual(kwargs["filters"], {"queue": self.queue, "status": ["Dead"]})

		states, recording = recording_states()
		started = time.monotonic()
		with recording:
			outcome = replay.replay_job(**kwargs)  # eda_job_id, filters
		elapsed = time.monotonic() - started
		print(f"  replayed {N} in {elapsed:.1f}s (job says {outcome['summary']['seconds']}s)")

		self.assertEqual(
			outcome["summary"],
			{
				"total": N,
				"sent": N,
				"refused": {},
				"dead_copies_removed": N,
				"dead_copies_kept": {},
				"seconds": outcome["summary"]["seconds"],
			},
		)
		self.assertEqual(self.depth(self.dead), 0)
		delivered = self.delivered_ids(N)
		self.assertEqual(len(delivered), N, "each message sent once")
		self.assertEqual(sorted(delivered), ids)
		frappe.db.rollback()
		self.assertEqual(self.statuses(), {"Received": N})
		self.assertEqual(
			frappe.db.count("EDA Message", {"queue": self.queue, "replay_count": 1}), N, "one replay each"
		)

		percents = [s["progress"]["percent"] for s in states if "progress" in s]
		self.assertGreaterEqual(len(percents), N // replay.CHUNK)
		self.assertEqual(percents, sorted(percents), "progress only goes up")
		self.assertEqual(percents[-1], 100.0)
		state = api.replay_job_state(answer["job_id"])  # what the desk polls
		self.assertEqual((state["status"], state["summary"]["sent"]), ("finished", N))
		self.assertTrue(state["results_truncated"])
		self.assertEqual(len(state["results"]), replay.RESULTS_KEPT)

		# Again: nothing is Dead any more, so nothing goes twice; each refusal says why.
		again = replay.replay_selection(_names, job_id=None)
		self.assertEqual(
			(again["summary"]["sent"], again["summary"]["refused"]),
			(0, {"already being replayed (Received)": N}),
		)
		self.assertEqual(self.depth(self.queue), 0)

	def test_two_jobs_at_once_send_every_message_once(self):
		ids, names = self.seed(N)
		jobs = [replay.new_job_id("replay") for _ in range(2)]
		with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
			json.dump(names, f)
		self.addCleanup(os.unlink, f.name)
		script = (
			"import json, sys, frappe\n"
			"frappe.init(site=sys.argv[1], sites_path='.')\n"
			"frappe.connect()\n"
			"frappe.set_user('Administrator')\n"
			"from frappe_eda.desk import replay\n"
			"replay.replay_job(sys.argv[2], names=json.load(open(sys.argv[3])))\n"
			"frappe.db.commit()\n"
			"frappe.destroy()\n"
		)
		started = time.monotonic()
		processes = [
			subprocess.Popen(
				[sys.executable, "-c", script, frappe.local.site, job, f.name],
				cwd=frappe.utils.get_bench_path() + "/sites",
				stdout=subprocess.PIPE,
				stderr=subprocess.STDOUT,
			)
			for job in jobs
		]
		for process in processes:
			output, _ = process.communicate(timeout=600)
			self.assertEqual(process.returncode, 0, output.decode()[-3000:])
		print(f"  two concurrent jobs over the same {N} took {time.monotonic() - started:.1f}s")

		summaries = [replay.job_state(job)["summary"] for job in jobs]
		print(f"  job A: {summaries[0]}\n  job B: {summaries[1]}")
		self.assertEqual(sum(s["sent"] for s in summaries), N)
		for summary in summaries:
			self.assertEqual(summary["total"], N)
			refused = summary["refused"]
			self.assertEqual(set(refused) - {"already being replayed (Received)"}, set(), refused)
			self.assertEqual(summary["sent"] + sum(refused.values()), N)
			self.assertEqual(summary["dead_copies_removed"], summary["sent"])
		delivered = self.delivered_ids(N)
		self.assertEqual(len(delivered), N, "nothing sent twice")
		self.assertEqual(sorted(delivered), ids)
		self.assertEqual(self.depth(self.dead), 0)
		frappe.db.rollback()
		self.assertEqual(frappe.db.count("EDA Message", {"queue": self.queue, "replay_count": 1}), N)

	def test_a_refused_send_puts_the_record_back_and_is_counted_by_reason(self):
		_ids, names = self.seed(20)
		processed = names[:5]
		frappe.db.set_value("EDA Message", {"name": ["in", processed]}, "status", "Processed")
		frappe.db.commit()
		with self.broker() as connection:
			connection.channel().queue_delete(self.queue)  # unroutable: the broker returns them
		outcome = replay.replay_selection(names)
		self.assertEqual(outcome["summary"]["sent"], 0)
		self.assertEqual(outcome["summary"]["refused"], {"broker refused": 15, "already Processed": 5})
		self.assertEqual(outcome["summary"]["dead_copies_removed"], 0)
		frappe.db.rollback()
		self.assertEqual(self.statuses(), {"Dead": 15, "Processed": 5}, "put back: replayable again")
		self.assertEqual(self.depth(self.dead), 20)


class TestBulkResolve(BulkCase):
	def test_resolving_5000_resolves_records_and_errors_and_removes_their_dead_copies(self):
		_ids, names = self.seed(N, errors=True)
		answer, kwargs = self.queued(lambda: api.mark_resolved(json.dumps(names)))
		self.assertEqual((answer["queued"], kwargs["names"]), (N, names))
		states, recording = recording_states()
		started = time.monotonic()
		with recording:
			outcome = replay.resolve_job(answer["job_id"], names=names)
		print(
			f"  resolved {N} (and their errors, and removed their dead copies) in {time.monotonic() - started:.1f}s"
		)
		self.assertEqual(outcome["status"], "finished")
		summary = outcome["summary"]
		self.assertEqual(
			(
				summary["resolved"],
				summary["refused"],
				summary["dead_copies_removed"],
				summary["dead_copies_kept"],
			),
			(N, {}, N, {}),
		)
		frappe.db.rollback()
		self.assertEqual(frappe.db.count("EDA Message", {"queue": self.queue, "resolved": 1}), N)
		self.assertEqual(frappe.db.count("EDA Error", {"queue": self.queue, "resolved": 1}), N)
		self.assertEqual(self.depth(self.dead), 0)
		percents = [s["progress"]["percent"] for s in states if "progress" in s]
		self.assertEqual(percents, sorted(percents))
		self.assertEqual(percents[-1], 100.0)

	def test_with_the_broker_away_records_are_resolved_and_the_summary_says_the_copies_stay(self):
		_ids, names = self.seed(30)
		with patch.dict(frappe.local.conf, {"eda_amqp_url": "amqp://guest:guest@127.0.0.1:1/%2F"}):
			outcome = replay.resolve_job(replay.new_job_id("resolve"), names=names)
		self.assertEqual(outcome["status"], "finished")
		summary = outcome["summary"]
		self.assertEqual((summary["resolved"], summary["dead_copies_removed"]), (30, 0))
		[(reason, kept)] = summary["dead_copies_kept"].items()
		self.assertEqual(kept, 30)
		self.assertIn("unreachable", reason)
		self.assertNotIn("guest:guest", reason)
		frappe.db.rollback()
		self.assertEqual(frappe.db.count("EDA Message", {"queue": self.queue, "resolved": 1}), 30)
		self.assertEqual(self.depth(self.dead), 30)


class TestBulkInputs(FrappeTestCase):
	def tearDown(self):
		frappe.set_user("Administrator")
		frappe.db.rollback()

	def test_a_plain_user_is_refused(self):
		from frappe_eda.frappe_eda.doctype.eda_message.test_eda_message_access import make_user

		frappe.set_user(make_user("eda-plain-bulk@example.com", "System Manager"))
		for call in (
			lambda: api.replay_messages(filters={"status": "Dead"}),
			lambda: api.mark_resolved(filters={"status": "Dead"}),
			lambda: api.replay_messages(["x"]),
			lambda: api.mark_resolved(["x"]),
			lambda: api.replay_failure_group("f" * 16),
		):
			with self.assertRaises(frappe.PermissionError):
				call()

	def test_bad_filters_are_validation_errors(self):
		for names, filters in (
			(None, "{not json"),
			(None, "[]"),
			(None, {"name": "x"}),
			(None, {"status": "Gone"}),
			(None, {"status": []}),
			(None, {"direction": "Sideways"}),
			(None, {"resolved": "maybe"}),
			(None, {"queue": ""}),
			(None, {"queue": "x" * 500}),
			(None, {"queue": "no-such-queue-at-all"}),  # matches nothing
			(["x"], {"status": "Dead"}),  # both
		):
			for method in (api.replay_messages, api.mark_resolved):
				with self.subTest(filters=str(filters), method=method.__name__):
					with self.assertRaises(frappe.ValidationError):
						method(names=names, filters=filters)
