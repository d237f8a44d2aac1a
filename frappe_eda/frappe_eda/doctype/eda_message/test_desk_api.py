# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE
"""The whitelisted desk methods: validated inputs, replays queued as jobs, nothing committed early.

The jobs are queued on the site's real Redis queue; the tests take them off again and run the job
function themselves, as a worker would, against the machine's RabbitMQ.
"""

import json
import time
from unittest.mock import patch

import frappe
from frappe.tests.utils import FrappeTestCase
from frappe.utils.background_jobs import get_job

from frappe_eda.desk import api, replay
from frappe_eda.messaging.connection import BrokerConnection
from frappe_eda.messaging.store import Status
from frappe_eda.settings import load_settings
from frappe_eda.stores.doctype_store import DocTypeStore
from frappe_eda.testing.store_contract import error, incoming


def take_job(job_id):
	"""The queued RQ job (as proof it was queued), removed so no worker runs it too."""
	job = get_job(job_id)
	if job is not None:
		job.cancel()
		job.delete()
	return job


class TestInputs(FrappeTestCase):
	def tearDown(self):
		frappe.db.rollback()

	def test_bad_names_are_validation_errors(self):
		too_many = json.dumps([f"n{i}" for i in range(api.MAX_NAMES + 1)])
		for names in (
			[],
			"[]",
			"",
			"[not json",
			5,
			{"a": 1},
			[None],
			[""],
			["x" * 500],
			too_many,
			["no-such-msg"],
		):
			for method in (api.replay_messages, api.mark_resolved):
				with self.subTest(names=str(names)[:40], method=method.__name__):
					with self.assertRaises(frappe.ValidationError):
						method(names)

	def test_bad_flags_payloads_fingerprints_and_job_ids_are_validation_errors(self):
		DocTypeStore(commit=False).save([incoming("api-in-1", "api.q", status=Status.DEAD)])
		name = frappe.db.get_value("EDA Message", {"message_id": "api-in-1"})
		calls = [
			lambda: api.replay_messages([name], force="yes"),
			lambda: api.edit_and_replay(name, "{not json"),
			lambda: api.edit_and_replay(name, "[" * 100000 + "]" * 100000),
			lambda: api.edit_and_replay(name, 5),
			lambda: api.edit_and_replay("no-such-msg", "{}"),
			lambda: api.edit_and_replay(json.dumps([name, name]), "{}"),
			lambda: api.edit_and_replay(name, {"pad": "x" * (api.MAX_PAYLOAD_BYTES + 1)}),
			lambda: api.replay_failure_group(""),
			lambda: api.replay_failure_group("f" * 1000),
			lambda: api.replay_failure_group("no-such-group"),
			lambda: api.replay_job_state("../../etc"),
			lambda: api.failure_groups(include_resolved="maybe"),
		]
		for n, call in enumerate(calls):
			with self.subTest(call=n), self.assertRaises(frappe.ValidationError):
				call()

	def test_mark_resolved_resolves_only_the_errors_of_that_messages_queue(self):
		store = DocTypeStore(commit=False)
		store.save(
			[
				incoming("api-two", "api.a", status=Status.DEAD),
				incoming("api-two", "api.b", status=Status.DEAD),
			]
		)
		store.add_error(error("api-two", "api.a"))
		store.add_error(error("api-two", "api.b"))
		name_a = frappe.db.get_value("EDA Message", {"message_id": "api-two", "queue": "api.a"})
		answer = api.mark_resolved([name_a])  # queued: the job (resolve_selection) commits, so not run here
		self.assertEqual(take_job(answer["job_id"]).kwargs["kwargs"]["names"], [name_a])
		self.assertEqual(replay.mark_resolved([name_a]), 1)  # what the job does, chunk by chunk
		resolved = dict(
			frappe.get_all(
				"EDA Error", filters={"message_id": "api-two"}, fields=["queue", "resolved"], as_list=True
			)
		)
		self.assertEqual(resolved, {"api.a": 1, "api.b": 0})

	def test_a_failure_group_larger_than_one_job_takes_is_refused_before_anything_is_queued(self):
		store = DocTypeStore(commit=False)
		store.save([incoming(f"api-group-{n}", "api.g", status=Status.DEAD) for n in range(3)])
		for n in range(3):
			store.add_error(error(f"api-group-{n}", "api.g", fingerprint="api-big-group"))
		with patch.object(api, "MAX_MATCHES", 2), self.assertRaises(frappe.ValidationError) as refused:
			api.replay_failure_group("api-big-group")
		self.assertIn("at most 2 at a time", str(refused.exception))


class TestQueuedReplay(FrappeTestCase):
	"""Committed records (the job commits, as a worker does); deleted afterwards."""

	def setUp(self):
		frappe.db.rollback()
		self.prefix = f"api-{frappe.generate_hash(length=8)}"
		self.queue = f"{self.prefix}.q"
		DocTypeStore(commit=False).save(
			[incoming(f"{self.prefix}-m", self.queue, status=Status.DEAD, routing_key="api.replayed")]
		)
		frappe.db.commit()
		self.name = frappe.db.get_value("EDA Message", {"message_id": f"{self.prefix}-m"})

	def tearDown(self):
		frappe.db.rollback()
		frappe.db.delete("EDA Message", {"queue": ["like", f"{self.prefix}%"]})
		frappe.db.delete("ToDo", {"description": ["like", f"{self.prefix}%"]})
		frappe.db.commit()

	def test_a_replay_request_returns_a_queued_job_and_commits_nothing(self):
		frappe.get_doc({"doctype": "ToDo", "description": f"{self.prefix} uncommitted"}).insert()
		started = time.monotonic()
		answer = api.replay_messages(json.dumps([self.name]))
		elapsed = time.monotonic() - started
		frappe.db.rollback()
		self.assertFalse(frappe.db.exists("ToDo", {"description": f"{self.prefix} uncommitted"}))
		self.assertEqual(frappe.db.get_value("EDA Message", self.name, "status"), "Dead")
		self.assertLess(elapsed, 2)
		self.assertEqual(answer["queued"], 1)
		job = take_job(answer["job_id"])
		self.assertIsNotNone(job, "the replay was not queued")
		self.assertEqual(job.kwargs["kwargs"]["names"], [self.name])
		self.assertEqual(api.replay_job_state(answer["job_id"])["status"], "queued")

	def test_the_job_replays_and_leaves_its_outcome_for_the_desk(self):
		with BrokerConnection(load_settings().broker) as connection:
			connection.channel().queue_declare(self.queue)
		try:
			answer = api.replay_messages([self.name])
			take_job(answer["job_id"])
			replay.replay_job(answer["job_id"], [self.name])  # what the worker runs
		finally:
			with BrokerConnection(load_settings().broker) as connection:
				channel = connection.channel()
				_method, _properties, body = channel.basic_get(self.queue, auto_ack=True)
				channel.queue_delete(self.queue)
		self.assertEqual(json.loads(body)["id"], f"{self.prefix}-m")
		state = api.replay_job_state(answer["job_id"])
		self.assertEqual(state["status"], "finished")
		self.assertEqual([(r["name"], r["sent"]) for r in state["results"]], [(self.name, True)])

	def test_with_the_broker_away_the_job_fails_fast_with_a_clear_message(self):
		answer = api.replay_messages([self.name])
		take_job(answer["job_id"])
		started = time.monotonic()
		with patch.dict(frappe.local.conf, {"eda_amqp_url": "amqp://guest:guest@127.0.0.1:1/%2F"}):
			replay.replay_job(answer["job_id"], [self.name])
		self.assertLess(time.monotonic() - started, 10)
		state = api.replay_job_state(answer["job_id"])
		self.assertEqual(state["status"], "failed")
		self.assertIn("unreachable", state["error"])
		self.assertNotIn("guest:guest", state["error"])
		frappe.db.rollback()
		self.assertEqual(frappe.db.get_value("EDA Message", self.name, "status"), "Dead")

	def test_only_the_user_who_queued_a_job_reads_its_outcome(self):
		from frappe_eda.frappe_eda.doctype.eda_message.test_eda_message_access import make_user

		answer = api.replay_messages([self.name])
		take_job(answer["job_id"])
		frappe.set_user(make_user("eda-other-manager@example.com", "EDA Manager"))
		try:
			self.assertIn("EDA Manager", frappe.get_roles())
			self.assertIsNotNone(replay.job_state(answer["job_id"]))
			with self.assertRaises(frappe.PermissionError):
				api.replay_job_state(answer["job_id"])
		finally:
			frappe.set_user("Administrator")
