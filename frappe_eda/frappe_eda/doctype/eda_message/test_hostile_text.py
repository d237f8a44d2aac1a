# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE
"""Producer text in the desk: stored inert, read back exact, and what the columns can hold.

Frappe renders Data, Small Text and Text values as raw HTML, and the store writes rows with raw
INSERTs, so a routing key or an error quoting ``<img src=x onerror=...>`` ran script in the desk. These
tests go through the real site database and Frappe's own formatters; the browser side (form, list,
report view, the report, the bell) is ``frappe_eda/tests/desk_xss_check.py``.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import frappe
from frappe.tests.utils import FrappeTestCase

from frappe_eda.desk import notifications
from frappe_eda.desk.notifications import DeskNotifier, digest_rows
from frappe_eda.frappe_eda.report.eda_failure_groups.eda_failure_groups import execute as failure_groups
from frappe_eda.messaging.errors import UnstorableMessage
from frappe_eda.messaging.notify import DEAD_LETTERED, FailureNotice
from frappe_eda.messaging.store import Direction, MessageFilter, Status
from frappe_eda.stores import doctype_columns
from frappe_eda.stores.doctype_columns import TRUNCATED, escape
from frappe_eda.stores.doctype_store import DocTypeStore
from frappe_eda.testing.store_contract import error, incoming

HOSTILE = "<img src=x onerror=\"window.__eda_xss=1\"> & 'q' <script>alert(1)</script>"
MESSAGE_FIELDS = ("message_id", "routing_key", "exchange", "queue", "handler", "message_type", "replay_of")
ERROR_FIELDS = ("message_id", "queue", "handler", "exception_type", "fingerprint")


def at_limit(store: DocTypeStore, field: str, prefix: str = HOSTILE) -> str:
	"""``prefix`` padded so that its stored (escaped) length is exactly the field's limit."""
	limit = store.limits.key_chars[field]
	value = prefix + "x" * (limit - store.stored_length(field, prefix))
	assert store.stored_length(field, value) == limit, field
	return value


def hostile_message(store: DocTypeStore, **fields):
	values = {name: at_limit(store, name, f"{name}.{HOSTILE}") for name in MESSAGE_FIELDS}
	values.update(fields)
	return incoming(
		values.pop("message_id"),
		values.pop("queue"),
		body='{"id": "<img src=x onerror=\\"window.__eda_xss=1\\">", "payload": {"k": "</script>&"}}',
		headers={"x-note": HOSTILE},
		last_error=f"DuplicateKey: key {HOSTILE!r} appears twice in the envelope",
		status=Status.DEAD,
		**values,
	)


class TestStoredProducerText(FrappeTestCase):
	def setUp(self):
		frappe.db.rollback()
		self.store = DocTypeStore(commit=False)

	def tearDown(self):
		frappe.db.rollback()

	# --- what the store declares -------------------------------------------------------------------

	def test_limits_are_the_columns_of_the_doctypes(self):
		limits = self.store.limits
		for field in ("message_id", "routing_key", "exchange", "queue", "message_type", "replay_of"):
			self.assertEqual(limits.key_chars[field], 255, field)
		self.assertEqual(limits.key_chars["fingerprint"], frappe.db.VARCHAR_LEN)  # Data without a length
		self.assertEqual(limits.key_chars["reference_name"], frappe.db.VARCHAR_LEN)
		if frappe.db.db_type == "mariadb":
			self.assertEqual(limits.key_chars["handler"], 65_535 // 4)  # Small Text = TEXT, 65,535 bytes
			self.assertEqual(limits.text_chars["last_error"], 65_535 // 4)
			self.assertEqual(limits.text_chars["traceback"], 4 * 1024 * 1024 // 4)  # Code = LONGTEXT, capped
			self.assertEqual(limits.min_time, datetime(1000, 1, 1, tzinfo=timezone.utc))
			self.assertEqual(limits.max_time, datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc))

	def test_stored_length_counts_the_escaped_text(self):
		self.assertEqual(self.store.stored_length("routing_key", "a<b"), len("a&lt;b"))
		self.assertEqual(self.store.stored_length("headers", '{"a": "<"}'), len('{"a": "<"}'))

	# --- round trips at the limits -----------------------------------------------------------------

	def test_hostile_identifiers_at_their_limits_round_trip_through_every_read(self):
		record = hostile_message(self.store)
		self.store.save([record])
		got = self.store.get(record.message_id, Direction.INCOMING, record.queue)
		self.assertIsNotNone(got)
		for name in (*MESSAGE_FIELDS, "body", "headers", "last_error"):
			self.assertEqual(getattr(got, name), getattr(record, name), name)
		[found] = self.store.find(MessageFilter(message_ids=(record.message_id,), queue=record.queue))
		self.assertEqual(found.message_id, record.message_id)
		[by_key] = self.store.find(MessageFilter(routing_key=record.routing_key))
		self.assertEqual(by_key.routing_key, record.routing_key)
		head = record.routing_key.split(".")[0]
		[by_pattern] = self.store.find(MessageFilter(routing_key=f"{head}.#"))
		self.assertEqual(by_pattern.message_id, record.message_id)
		self.store.save([record])  # an update finds the row by its key
		self.assertEqual(sum(self.store.counts().values()), 1)
		processed = hostile_message(self.store, message_id=at_limit(self.store, "message_id", "p" + HOSTILE))
		processed.status = Status.PROCESSED
		self.store.save([processed])
		self.assertEqual(
			self.store.processed_ids(record.queue, [record.message_id, processed.message_id]),
			{processed.message_id},
		)
		self.store.set_status(Direction.INCOMING, [record.message_id], Status.FAILED, record.queue, HOSTILE)
		got = self.store.get(record.message_id, Direction.INCOMING, record.queue)
		self.assertEqual((got.status, got.last_error), (Status.FAILED, HOSTILE))

	def test_hostile_error_fields_at_their_limits_round_trip(self):
		record = hostile_message(self.store)
		self.store.save([record])
		failure = error(
			record.message_id,
			record.queue,
			handler=record.handler,
			exception_type=at_limit(self.store, "exception_type"),
			fingerprint=at_limit(self.store, "fingerprint", "<f>&"),
			error=f"handler raised: {HOSTILE}",
			traceback=f'Traceback (most recent call last):\n  File "<string>", line 1\n{HOSTILE}',
		)
		self.store.add_error(failure)
		[got] = self.store.errors(record.message_id, record.queue)
		for name in (*ERROR_FIELDS, "error", "traceback"):
			self.assertEqual(getattr(got, name), getattr(failure, name), name)
		linked = frappe.db.get_value("EDA Error", {"fingerprint": escape(failure.fingerprint)}, "eda_message")
		self.assertTrue(linked)

	def test_times_at_the_limits_of_the_database_round_trip(self):
		limits = self.store.limits
		for n, moment in enumerate((limits.min_time, limits.max_time)):
			self.store.save([incoming(f"t-{n}", "q", created_at=moment)])
			self.store.add_error(error(f"t-{n}", "q", occurred_at=moment))
			self.assertEqual(self.store.get(f"t-{n}", Direction.INCOMING, "q").created_at, moment)
			self.assertEqual(self.store.errors(f"t-{n}", "q")[0].occurred_at, moment)

	# --- refusals and truncation -------------------------------------------------------------------

	def test_an_identifier_over_its_limit_is_refused_before_the_database(self):
		for name in MESSAGE_FIELDS:
			with self.subTest(field=name):
				value = at_limit(self.store, name) + "<"  # one character, four stored characters more
				record = hostile_message(self.store, **{name: value})
				with self.assertRaises(UnstorableMessage) as refused:
					self.store.check_storable(record)
				self.assertEqual(refused.exception.field, name)
				self.assertIn("as the store writes it", str(refused.exception))
				with self.assertRaises(UnstorableMessage):
					self.store.save([record])
		for value in ("id\ud800", "id\x00"):
			with self.assertRaises(UnstorableMessage):
				self.store.check_storable(incoming(value, "q"))
		with self.assertRaises(UnstorableMessage):
			self.store.add_error(error("m", "q", fingerprint="f" * (frappe.db.VARCHAR_LEN + 1)))

	def test_a_time_the_database_cannot_hold_is_refused_and_filters_are_clamped(self):
		plus_14 = timezone(timedelta(hours=14))
		for moment in (
			datetime(1, 1, 1, 5, tzinfo=plus_14),
			datetime(9999, 12, 31, 20, tzinfo=timezone(-timedelta(hours=14))),
		):
			with self.assertRaises(UnstorableMessage) as refused:
				self.store.save([incoming("m", "q", created_at=moment)])
			self.assertEqual(refused.exception.field, "created_at")
		self.store.save([incoming("m", "q")])
		edge = MessageFilter(
			since=datetime(1, 1, 1, tzinfo=plus_14), until=datetime.max.replace(tzinfo=timezone.utc)
		)
		self.assertEqual([r.message_id for r in self.store.find(edge)], ["m"])

	def test_display_text_over_its_column_is_truncated_with_a_marker(self):
		size = doctype_columns.capacity("EDA Message", "last_error")[0]
		if size > 10_000_000:
			self.skipTest("this database's text columns are too large to overflow in a test")
		for text in (HOSTILE * (size // len(HOSTILE) + 1), "😀" * (size // 2), "\ud800" + "x" * size):
			with self.subTest(text=text[:12]):
				self.store.save([incoming("long", "q", last_error=text)])
				got = self.store.get("long", Direction.INCOMING, "q")
				self.assertTrue(got.last_error.endswith(TRUNCATED))
				stored = frappe.db.get_value("EDA Message", {"message_id": "long"}, "last_error")
				self.assertLessEqual(len(stored.encode()), size)
				self.store.set_status(Direction.INCOMING, ["long"], Status.DEAD, "q", last_error=text)
				self.store.add_error(error("long", "q", error=text))
		self.assertTrue(all(e.error.endswith(TRUNCATED) for e in self.store.errors("long", "q")))

	# --- what the desk shows -------------------------------------------------------------------------

	def test_every_text_field_is_stored_escaped_and_the_body_byte_for_byte(self):
		record = hostile_message(self.store)
		self.store.save([record])
		self.store.add_error(error(record.message_id, record.queue, error=HOSTILE, exception_type=HOSTILE))
		row = frappe.db.get_value("EDA Message", {"message_id": escape(record.message_id)}, "*", as_dict=True)
		for name in (*MESSAGE_FIELDS, "last_error"):
			self.assertEqual(row[name], escape(getattr(record, name)), name)
		self.assertEqual(row.payload, record.body)
		self.assertIn(HOSTILE.replace('"', '\\"'), row.headers)  # JSON, shown by the Code formatter
		err = frappe.db.get_value("EDA Error", {"message_id": escape(record.message_id)}, "*", as_dict=True)
		for name in ("message_id", "queue", "handler", "exception_type", "error"):
			self.assertNotIn("<", err[name], name)

	def test_frappes_formatters_render_every_field_inert(self):
		record = hostile_message(self.store)
		self.store.save([record])
		self.store.add_error(error(record.message_id, record.queue, error=HOSTILE, exception_type=HOSTILE))
		for doctype in ("EDA Message", "EDA Error"):
			name = frappe.db.get_value(doctype, {"message_id": escape(record.message_id)}, "name")
			doc = frappe.get_doc(doctype, name)
			for df in doc.meta.fields:
				if df.fieldtype == "Code":
					# Stored as sent (payload, headers, traceback): the desk's Code formatter and the
					# print format escape it themselves.
					continue
				shown = frappe.format(doc.get(df.fieldname), df, doc=doc)
				with self.subTest(doctype=doctype, field=df.fieldname):
					self.assertNotIn("<img", str(shown))
					self.assertNotIn("<script", str(shown))

	def test_the_failure_groups_report_shows_text_escaped(self):
		record = hostile_message(self.store)
		self.store.save([record])
		self.store.add_error(error(record.message_id, record.queue, error=HOSTILE, exception_type=HOSTILE))
		columns, rows = failure_groups({})
		text_columns = [c["fieldname"] for c in columns if c["fieldtype"] == "Data"]
		[row] = [r for r in rows if r.queue == escape(record.queue)]
		for name in text_columns:
			self.assertNotIn("<", str(row.get(name) or ""), name)
		self.assertEqual(row.sample_error, escape(HOSTILE))

	def test_the_digest_email_shows_stored_and_older_raw_text_escaped_once(self):
		self.store.add_error(error("new", "q<1>", exception_type=HOSTILE, fingerprint="new"))
		frappe.get_doc(  # a row from before the store escaped: raw, as the old store wrote it
			{"doctype": "EDA Error", "message_id": "old", "direction": "Incoming", "queue": "q<2>"}
			| {"exception_type": HOSTILE, "fingerprint": "old", "error": HOSTILE}
		).db_insert()
		html = digest_rows([g for g in notifications.failure_groups() if g.fingerprint in ("new", "old")])
		self.assertEqual(html.count(escape(HOSTILE)), 2)
		self.assertNotIn("<img", html)
		self.assertNotIn("&amp;lt;", html)
		self.assertIn("q&lt;1&gt;", html)
		self.assertIn("q&lt;2&gt;", html)

	def test_the_bell_subject_is_escaped_and_links_the_hostile_message(self):
		record = hostile_message(self.store)
		self.store.save([record])
		notice = FailureNotice(
			kind=DEAD_LETTERED,
			message_id=record.message_id,
			routing_key=record.routing_key,
			exception_type=f"x.{HOSTILE}",
			error=HOSTILE,
			fingerprint="f",
			queue=record.queue,
		)
		name = frappe.db.get_value("EDA Message", {"message_id": escape(record.message_id)})
		try:
			DeskNotifier("System Manager").notify(notice)  # commits, as it does in the worker
			logs = frappe.get_all(
				"Notification Log", filters={"document_name": name}, fields=["subject", "email_content"]
			)
			self.assertTrue(logs, "the notice links the message by its hostile id")
			for log in logs:
				self.assertNotIn("<", log.subject)
				self.assertIn(escape(HOSTILE.rsplit(".", 1)[-1]), log.subject)
				self.assertNotIn("<img", log.email_content or "")
		finally:
			frappe.db.delete("Notification Log", {"document_name": name})
			frappe.db.delete("EDA Message", {"name": name})
			frappe.db.commit()

	# --- rows from before escaping -------------------------------------------------------------------

	def test_the_patch_escapes_rows_written_before_escaping_once(self):
		from frappe_eda.patches import escape_stored_producer_text

		raw = {
			"message_id": f"old-{HOSTILE}",
			"routing_key": f"old.{HOSTILE}",
			"queue": "q",
			"handler": HOSTILE,
		}
		frappe.get_doc(
			{
				"doctype": "EDA Message",
				"direction": "Incoming",
				"status": "Dead",
				"last_error": HOSTILE,
				**raw,
			}
		).db_insert()
		frappe.get_doc(
			{
				"doctype": "EDA Error",
				"direction": "Incoming",
				"exception_type": HOSTILE,
				"error": HOSTILE,
				**raw,
			}
		).db_insert()
		self.store.save([incoming("new", "q", last_error=HOSTILE)])  # already escaped: left alone
		escape_stored_producer_text.execute()
		escape_stored_producer_text.execute()
		row = frappe.db.get_value(
			"EDA Message", {"routing_key": escape(raw["routing_key"])}, "*", as_dict=True
		)
		self.assertEqual((row.message_id, row.last_error), (escape(raw["message_id"]), escape(HOSTILE)))
		got = self.store.get(raw["message_id"], Direction.INCOMING, "q")
		self.assertEqual(
			(got.routing_key, got.handler, got.last_error), (raw["routing_key"], HOSTILE, HOSTILE)
		)
		[failure] = self.store.errors(raw["message_id"], "q")
		self.assertEqual((failure.exception_type, failure.error), (HOSTILE, HOSTILE))
		self.assertEqual(self.store.get("new", Direction.INCOMING, "q").last_error, HOSTILE)
