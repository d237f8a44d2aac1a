# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE
"""``eda backfill``: existing documents through the outbox, one message per target, resumable, throttled.

A backfill commits batch by batch, so these tests commit what they make (ToDos with a unique marker in
their description, rules whose condition names that marker, so other tests' ToDos never match) and
delete it afterwards. EDA is enabled for this process through ``frappe.conf`` (what ``eda_enabled`` in
site_config.json sets); the command in a child process needs it in EDA Settings, committed and restored.
"""

import json
import os
import subprocess
from unittest.mock import patch

import frappe
from frappe.tests.utils import FrappeTestCase

from frappe_eda.consumer import eda_command
from frappe_eda.outbox.payload import document_payload
from frappe_eda.outbox.rules import clear_rules_cache
from frappe_eda.replication.backfill import (
	CHECKPOINT_PARENT,
	BackfillError,
	BackfillStalled,
	backfill,
	checkpoint_key,
)
from frappe_eda.replication.content import HASH_KEY


class Crash(Exception):
	"""Stands for the process dying between two batches."""


def _no_sleep(_seconds):
	pass


class BackfillCase(FrappeTestCase):
	def setUp(self):
		frappe.db.rollback()
		self.marker = f"eda-backfill-{frappe.generate_hash(length=10)}"
		self.enabled_before = frappe.conf.get("eda_enabled")
		frappe.conf["eda_enabled"] = 1
		self.rules: list[str] = []
		self.destinations: list[str] = []
		clear_rules_cache()

	def tearDown(self):
		frappe.db.rollback()
		if self.enabled_before is None:
			frappe.conf.pop("eda_enabled", None)
		else:
			frappe.conf["eda_enabled"] = self.enabled_before
		names = self.todo_names()
		if names:
			frappe.db.delete("EDA Message", {"reference_doctype": "ToDo", "reference_name": ["in", names]})
			frappe.db.delete("ToDo", {"name": ["in", names]})
		if self.rules:
			frappe.db.delete("EDA Event Rule", {"name": ["in", self.rules]})
		if self.destinations:
			frappe.db.delete("EDA Destination", {"name": ["in", self.destinations]})
		frappe.db.delete(
			"DefaultValue", {"parent": CHECKPOINT_PARENT, "defvalue": ["like", f"%{self.marker}%"]}
		)
		frappe.db.commit()
		clear_rules_cache()

	# --- what the tests make -------------------------------------------------------------------

	def todos(self, *priorities: str) -> list[str]:
		"""ToDos made before any rule, so their own saves publish nothing; their names in backfill order."""
		for i, priority in enumerate(priorities):
			frappe.get_doc(
				{"doctype": "ToDo", "description": f"{self.marker} #{i}", "priority": priority}
			).insert()
		return self.todo_names()

	def todo_names(self) -> list[str]:
		return frappe.get_all(
			"ToDo", filters={"description": ["like", f"%{self.marker}%"]}, pluck="name", order_by="name asc"
		)

	def rule(self, condition: str = "", **values) -> str:
		"""An on_update rule for ToDo; its condition always also requires this test's marker."""
		mine = f"{self.marker!r} in (doc.description or '')"
		doc = frappe.get_doc(
			{
				"doctype": "EDA Event Rule",
				"document_type": "ToDo",
				"event": "on_update",
				"condition": f"{mine} and ({condition})" if condition else mine,
				**values,
			}
		).insert()
		self.rules.append(doc.name)
		frappe.db.commit()  # before clearing the cache: a process that reloads it now sees the rule
		clear_rules_cache()
		return doc.name

	def destination(self, suffix: str, **values) -> str:
		doc = frappe.get_doc(
			{"doctype": "EDA Destination", "destination_name": f"{self.marker}-{suffix}", **values}
		).insert()
		self.destinations.append(doc.name)
		return doc.name

	def mine(self) -> dict:
		return {"description": ["like", f"%{self.marker}%"]}

	def backfill(self, **kwargs):
		kwargs.setdefault("filters", self.mine())
		kwargs.setdefault("max_pending", 0)  # other tests' Pending messages must not hold these up
		kwargs.setdefault("sleep", _no_sleep)
		return backfill("ToDo", **kwargs)

	def messages(self, names: list[str]) -> list[frappe._dict]:
		return frappe.get_all(
			"EDA Message",
			filters={"reference_doctype": "ToDo", "reference_name": ["in", names], "direction": "Outgoing"},
			fields=["reference_name", "status", "message_type", "routing_key", "exchange", "payload"],
			order_by="reference_name asc",
		)

	def sent_counts(self, names: list[str]) -> dict[str, int]:
		counts = dict.fromkeys(names, 0)
		for message in self.messages(names):
			counts[message.reference_name] += 1
		return counts


class TestBackfillSends(BackfillCase):
	def test_every_matching_document_gets_one_pending_backfill_message_without_its_secrets(self):
		names = self.todos("High", "Low", "Medium")
		self.rule(exchange="erp.backfill")
		real_hooks = frappe.get_hooks

		def hooks(name=None, *args, **kwargs):
			if name == "eda_sensitive_fields":
				return {"ToDo": ["description"]}
			return real_hooks(name, *args, **kwargs)

		with patch.object(frappe, "get_hooks", hooks):
			report = self.backfill(batch_size=2)
			expected = {name: document_payload(frappe.get_doc("ToDo", name)) for name in names}
		messages = self.messages(names)
		self.assertEqual([m.reference_name for m in messages], names)
		for message in messages:
			self.assertEqual(
				(message.status, message.message_type, message.routing_key, message.exchange),
				("Pending", "todo.backfill", "todo.backfill", "erp.backfill"),
			)
			payload = json.loads(message.payload)["payload"]
			self.assertTrue(payload.pop(HASH_KEY))  # what reconciliation compares, as a save sends it
			self.assertEqual(payload, expected[message.reference_name])
			self.assertNotIn("description", payload)
			self.assertNotIn(self.marker, json.dumps(payload))
		self.assertEqual(
			(report.total, report.documents, report.messages, report.skipped, report.batches),
			(3, 3, 3, 0, 2),
		)
		self.assertIsNone(report.resumed_from)

	def test_one_message_per_distinct_target_with_the_key_rendered_for_backfill(self):
		names = self.todos("High", "Low")
		self.rule(exchange="erp.a")
		self.rule(exchange="erp.a", event="after_insert")  # same target as the first: still one message
		self.rule(exchange="erp.b", routing_key="{doctype}.{event}.copy", send_fields="priority")
		report = self.backfill()
		self.assertEqual(report.messages, 4)
		self.assertEqual(len(report.targets), 2)
		by_exchange: dict[str, list] = {}
		for message in self.messages(names):
			by_exchange.setdefault(message.exchange, []).append(message)
		self.assertEqual(sorted(m.reference_name for m in by_exchange["erp.a"]), names)
		self.assertEqual(sorted(m.reference_name for m in by_exchange["erp.b"]), names)
		copy = by_exchange["erp.b"][0]
		self.assertEqual(copy.routing_key, "todo.backfill.copy")
		payload = json.loads(copy.payload)["payload"]
		self.assertIn("priority", payload)
		self.assertNotIn("description", payload)  # only the fields the rule sends

	def test_rules_of_one_target_send_each_document_the_fields_of_the_rules_that_accept_it(self):
		names = self.todos("High", "Low")
		self.rule("doc.priority == 'High'", exchange="erp.same", send_fields="priority")
		self.rule("doc.priority == 'Low'", exchange="erp.same", event="after_insert", send_fields="status")
		self.assertEqual(self.backfill().messages, 2)
		for message in self.messages(names):
			payload = json.loads(message.payload)["payload"]
			wanted = (
				"priority" if frappe.db.get_value("ToDo", payload["name"], "priority") == "High" else "status"
			)
			other = {"priority", "status"} - {wanted}
			self.assertIn(wanted, payload)
			self.assertFalse(other & set(payload), payload)

	def test_filters_choose_the_documents(self):
		names = self.todos("High", "Low", "High")
		self.rule()
		high = [n for n in names if frappe.db.get_value("ToDo", n, "priority") == "High"]
		report = self.backfill(filters={**self.mine(), "priority": "High"})
		self.assertEqual(self.sent_counts(names), {n: int(n in high) for n in names})
		self.assertEqual((report.total, report.messages), (2, 2))
		low = [["description", "like", f"%{self.marker}%"], ["priority", "=", "Low"]]
		self.assertEqual(self.backfill(filters=low).messages, 1)
		self.assertEqual(self.sent_counts(names), dict.fromkeys(names, 1))

	def test_a_rule_condition_keeps_out_the_documents_it_excludes(self):
		names = self.todos("High", "Low", "Low", "High")
		self.rule("doc.priority == 'High'")
		report = self.backfill(batch_size=3)
		high = {n for n in names if frappe.db.get_value("ToDo", n, "priority") == "High"}
		self.assertEqual(self.sent_counts(names), {n: int(n in high) for n in names})
		self.assertEqual((report.documents, report.messages, report.skipped), (4, 2, 2))

	def test_to_a_destination_sends_every_matching_document_there(self):
		names = self.todos("High", "Low")
		target = self.destination("dest", exchange="erp.replica", routing_key="replica.{type}")
		report = self.backfill(to=target)  # no rule needed
		self.assertEqual(report.messages, 2)
		messages = self.messages(names)
		self.assertEqual([m.reference_name for m in messages], names)
		self.assertEqual(
			{(m.exchange, m.routing_key, m.message_type) for m in messages},
			{("erp.replica", "replica.todo.backfill", "todo.backfill")},
		)


class TestBackfillResumes(BackfillCase):
	def crash_after(self, documents: int):
		def progress(done, total):
			if done >= documents:
				raise Crash(f"died after {done} of {total}")

		return progress

	def test_a_crash_loses_nothing_and_the_rerun_sends_each_document_exactly_once(self):
		names = self.todos(*["Medium"] * 5)
		self.rule()
		with self.assertRaises(Crash):
			self.backfill(batch_size=2, progress=self.crash_after(4))
		frappe.db.rollback()  # what a new process would see
		self.assertEqual(self.sent_counts(names), {n: int(i < 4) for i, n in enumerate(names)})
		seen = []
		report = self.backfill(batch_size=2, progress=lambda done, total: seen.append((done, total)))
		self.assertEqual(self.sent_counts(names), dict.fromkeys(names, 1))
		self.assertEqual((report.resumed_from, report.already_done), (names[3], 4))
		self.assertEqual((report.documents, report.messages, report.batches), (1, 1, 1))
		self.assertEqual(seen, [(4, 5), (5, 5)])
		key = checkpoint_key("ToDo", self.mine(), None)
		self.assertFalse(frappe.db.exists("DefaultValue", {"parent": CHECKPOINT_PARENT, "defkey": key}))

	def test_restart_starts_over(self):
		names = self.todos(*["Medium"] * 3)
		self.rule()
		with self.assertRaises(Crash):
			self.backfill(batch_size=2, progress=self.crash_after(2))
		report = self.backfill(batch_size=2, restart=True)
		self.assertIsNone(report.resumed_from)
		self.assertEqual(report.messages, 3)
		self.assertEqual(self.sent_counts(names), {n: 2 if i < 2 else 1 for i, n in enumerate(names)})

	def test_a_checkpoint_belongs_to_its_filters_and_target(self):
		names = self.todos(*["Medium"] * 3)
		self.rule()
		with self.assertRaises(Crash):
			self.backfill(batch_size=2, progress=self.crash_after(2))
		other = {**self.mine(), "status": "Open"}  # other filters: a run of its own, from the start
		self.assertIsNone(self.backfill(filters=other).resumed_from)
		self.assertEqual(self.backfill().resumed_from, names[1])


class TestBackfillThrottles(BackfillCase):
	def pending(self) -> int:
		frappe.db.commit()
		return frappe.db.count("EDA Message", {"direction": "Outgoing", "status": "Pending"})

	def test_a_full_outbox_stops_the_backfill_until_the_relay_drains_it(self):
		names = self.todos(*["Medium"] * 4)
		self.rule()
		limit = self.pending() + 1  # room for one more Pending message: the first batch of two goes
		lines, polls = [], []
		with self.assertRaises(BackfillStalled) as stalled:
			self.backfill(
				batch_size=2,
				max_pending=limit,
				max_wait=3,
				poll_interval=1,
				echo=lines.append,
				sleep=polls.append,
			)
		self.assertIn("is a relay running", str(stalled.exception))
		self.assertEqual(polls, [1, 1, 1])  # waited max_wait, in polls, then gave up
		self.assertTrue(any(line.startswith("waiting for the relay") for line in lines), lines)
		frappe.db.rollback()
		self.assertEqual(self.sent_counts(names), {n: int(i < 2) for i, n in enumerate(names)})

		def relay(_seconds):  # the relay sends what is Pending while the backfill waits
			frappe.db.set_value(
				"EDA Message",
				{"reference_doctype": "ToDo", "reference_name": ["in", names], "status": "Pending"},
				"status",
				"Published",
			)
			frappe.db.commit()

		report = self.backfill(batch_size=2, max_pending=limit, max_wait=30, poll_interval=1, sleep=relay)
		self.assertEqual(self.sent_counts(names), dict.fromkeys(names, 1))
		self.assertEqual(report.resumed_from, names[1])
		self.assertGreater(report.waited, 0)

	def test_rate_spaces_the_batches(self):
		self.todos(*["Medium"] * 4)
		self.rule()
		sleeps = []
		report = self.backfill(batch_size=2, rate=1, sleep=sleeps.append)
		self.assertEqual(report.messages, 4)
		self.assertEqual(len(sleeps), 2)  # after each full batch; the empty third page ends the run
		self.assertTrue(all(0 < s <= 4 for s in sleeps), sleeps)


class TestBackfillRefuses(BackfillCase):
	def assertRefused(self, text: str, doctype: str = "ToDo", **kwargs):
		kwargs.setdefault("filters", self.mine())
		with self.assertRaises(BackfillError) as refused:
			backfill(doctype, **kwargs)
		self.assertIsInstance(refused.exception, frappe.ValidationError)
		self.assertIn(text, str(refused.exception))

	def test_what_cannot_be_backfilled_is_refused_before_anything_is_written(self):
		names = self.todos("High")
		self.rule()
		self.assertRefused("does not exist", "No Such DocType")
		self.assertRefused("is a child table", "Has Role")
		self.assertRefused("EDA's own DocTypes", "EDA Message")
		self.assertRefused("is a Single", "System Settings")
		self.assertRefused("Unknown column", filters={"no_such_field": "x"})
		# Frappe's own reason differs by major ("Operator must be one of", "Invalid simple filter format")
		self.assertRefused(
			'[["priority", "bogus", "x"]] do not work on ToDo', filters=[["priority", "bogus", "x"]]
		)
		self.assertRefused("is not [field, operator, value]", filters=["priority"])
		self.assertRefused("does not exist", to=f"{self.marker}-nowhere")
		self.assertRefused("is disabled", to=self.destination("off", enabled=0))
		self.assertRefused("batch size", batch_size=0)
		self.assertEqual(self.sent_counts(names), {names[0]: 0})

	def test_no_rule_and_no_destination_says_what_to_add(self):
		self.assertRefused("no enabled publishing rule", "Note", filters=None)
		self.assertRefused("--to", "Note", filters=None)

	def test_a_disabled_outbox_is_refused(self):
		self.todos("High")
		self.rule()
		frappe.conf["eda_enabled"] = 0
		self.assertRefused("EDA is not enabled")


class TestBackfillCommand(BackfillCase):
	"""``bench --site SITE eda backfill`` in a child process, which reads EDA Settings from the database."""

	def setUp(self):
		super().setUp()
		self.settings_before = frappe.db.get_single_value("EDA Settings", "enabled")
		frappe.db.set_single_value("EDA Settings", "enabled", 1)
		frappe.db.commit()
		frappe.clear_document_cache("EDA Settings", "EDA Settings")

	def tearDown(self):
		super().tearDown()
		frappe.db.set_single_value("EDA Settings", "enabled", self.settings_before or 0)
		frappe.db.commit()
		frappe.clear_document_cache("EDA Settings", "EDA Settings")

	def bench(self, *args: str) -> subprocess.CompletedProcess:
		return subprocess.run(
			eda_command("backfill", *args),
			cwd=os.path.abspath(frappe.local.sites_path),
			capture_output=True,
			text=True,
			timeout=180,
		)

	def test_the_command_publishes_and_prints_its_report(self):
		names = self.todos("High", "Low", "High")
		self.rule("doc.priority == 'High'")
		frappe.db.commit()
		done = self.bench("ToDo", "--filters", json.dumps(self.mine()), "--batch-size", "2")
		self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
		self.assertIn("backfill of ToDo: 3 matching documents", done.stdout)
		self.assertIn("3/3 documents", done.stdout)  # not a terminal: progress lines, not a bar
		self.assertIn("3 documents seen, 2 messages written, 1 skipped by condition", done.stdout)
		self.assertIn("2 batches", done.stdout)
		frappe.db.rollback()
		self.assertEqual(sum(self.sent_counts(names).values()), 2)

	def test_bad_input_exits_1_with_one_clear_line(self):
		self.todos("High")
		for args, text in (
			(("ToDo", "--filters", "{not json"), "--filters is not JSON"),
			(("ToDo", "--filters", '"High"'), "--filters must be a JSON object or list"),
			(("ToDo", "--to", f"{self.marker}-nowhere"), "does not exist"),
			(("No Such DocType",), "DocType 'No Such DocType' does not exist"),
			(("ToDo", "--filters", '{"no_such_field": 1}'), "do not work on ToDo"),
		):
			with self.subTest(args=args):
				done = self.bench(*args)
				self.assertEqual(done.returncode, 1, done.stdout + done.stderr)
				self.assertIn(text, done.stderr)
				self.assertNotIn("Traceback", done.stderr)
