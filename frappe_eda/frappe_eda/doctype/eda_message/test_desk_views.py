# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE
"""What the operator's list views and form read from the server (issue #10, items 1 and 2).

The list columns, standard filters and time labels are DocType metadata, checked through the synced
meta of the real site; ``related_messages`` is checked against messages written by the DocType store
(escaped columns, compact envelopes), as a manager and as an EDA User who may read only some of them.
The browser side (pretty envelope, time zone, red Dead, group-by) is ``frappe_eda/tests/desk_views_check.py``.
"""

from __future__ import annotations

import uuid

import frappe
from frappe.tests.utils import FrappeTestCase

from frappe_eda.frappe_eda.doctype.eda_message.eda_message import related_messages
from frappe_eda.messaging.envelope import Message, encode
from frappe_eda.messaging.store import Direction, MessageRecord, Status
from frappe_eda.stores.doctype_columns import escape
from frappe_eda.stores.doctype_store import DIRECTION_LABELS, DocTypeStore

HOSTILE = '<img src=x onerror="x">_%'
TAG = "eda-desk-views-test"


def stored(message: Message, **fields) -> str:
	"""Write ``message`` as the store does and return its EDA Message name."""
	record = MessageRecord(
		message_id=message.id,
		direction=fields.pop("direction", Direction.OUTGOING),
		status=fields.pop("status", Status.PUBLISHED),
		routing_key=f"{TAG}.{message.type}",
		body=encode(message).decode(),
		message_type=message.type,
		**fields,
	)
	store = DocTypeStore(commit=False)
	with store.transaction():
		store.save([record])
	return frappe.db.get_value(
		"EDA Message",
		{"message_id": escape(record.message_id), "direction": DIRECTION_LABELS[record.direction]},
	)


def make_user(email: str) -> str:
	"""A desk user with the EDA User role only."""
	if not frappe.db.exists("User", email):
		frappe.get_doc(
			{"doctype": "User", "email": email, "first_name": "Views", "send_welcome_email": 0}
		).insert(ignore_permissions=True)
	user = frappe.get_doc("User", email)
	user.set("roles", [])
	user.add_roles("EDA User")
	return email


def names(rows: list[dict]) -> list[str]:
	return [row["name"] for row in rows]


class TestListMeta(FrappeTestCase):
	def test_message_list_shows_what_failed(self):
		meta = frappe.get_meta("EDA Message")
		in_list = {f.fieldname for f in meta.fields if f.in_list_view}
		self.assertTrue({"last_error", "queue", "attempts", "created_at"} <= in_list, in_list)
		filters = {f.fieldname for f in meta.fields if f.in_standard_filter}
		self.assertTrue({"status", "queue", "routing_key", "direction", "message_id"} <= filters, filters)

	def test_error_list_filters_by_failure(self):
		meta = frappe.get_meta("EDA Error")
		in_list = {f.fieldname for f in meta.fields if f.in_list_view}
		self.assertTrue({"exception_type", "fingerprint", "queue", "attempt", "occurred_at"} <= in_list)
		filters = {f.fieldname for f in meta.fields if f.in_standard_filter}
		self.assertTrue({"exception_type", "fingerprint", "queue"} <= filters, filters)

	def test_no_utc_label_contradicting_the_shown_time_zone(self):
		# The desk converts these UTC values to the system time zone (frappe_eda.utc_to_system).
		for doctype, fieldnames in (
			("EDA Message", ("created_at", "updated_at")),
			("EDA Error", ("occurred_at",)),
		):
			for fieldname in fieldnames:
				label = frappe.get_meta(doctype).get_field(fieldname).label
				self.assertNotIn("UTC", label, f"{doctype}.{fieldname}")

	def test_form_has_readable_envelope_and_headers_fields(self):
		meta = frappe.get_meta("EDA Message")
		for fieldname in ("payload_html", "headers_html", "related_html"):
			self.assertEqual(meta.get_field(fieldname).fieldtype, "HTML", fieldname)
		self.assertEqual(meta.get_field("payload").fieldtype, "Code")  # the exact body stays as stored
		self.assertTrue(meta.get_field("headers_section").collapsible)


class TestRelatedMessages(FrappeTestCase):
	def setUp(self):
		self.run_id = f"{HOSTILE}-{uuid.uuid4().hex[:8]}"
		self.root = Message(type="order.placed", id=f"{self.run_id}-root", payload={"n": 1})
		self.child = self.root.caused("invoice.created", id=f"{self.run_id}-child")
		self.grandchild = self.child.caused("mail.sent", id=f"{self.run_id}-grandchild")
		self.other = Message(type="order.placed", id=f"{self.run_id}-other", payload={"note": self.root.id})
		self.replayed = Message(type="order.placed", id=f"{self.run_id}-copy")
		self.names = {
			"root": stored(self.root),
			"child": stored(self.child),
			"grandchild": stored(self.grandchild, status=Status.DEAD, direction=Direction.INCOMING),
			"other": stored(self.other),
			"copy": stored(self.replayed, replay_of=self.root.id),
		}

	def tearDown(self):
		frappe.set_user("Administrator")
		frappe.db.rollback()

	def test_cause_effect_correlation_and_replays(self):
		n = self.names
		root = related_messages(n["root"])
		self.assertEqual(names(root["caused"]), [n["child"]])
		self.assertEqual(names(root["replayed_as"]), [n["copy"]])
		self.assertEqual(root["caused_by"], [])
		# Mentioning an id in the payload is not being caused by it.
		self.assertNotIn(n["other"], names(root["caused"]) + names(root["correlated"]))

		child = related_messages(n["child"])
		self.assertEqual(names(child["caused_by"]), [n["root"]])
		self.assertEqual(names(child["caused"]), [n["grandchild"]])

		grandchild = related_messages(n["grandchild"])
		self.assertEqual(names(grandchild["caused_by"]), [n["child"]])
		self.assertEqual(names(grandchild["correlation_root"]), [n["root"]])
		self.assertEqual(grandchild["correlated"], [])  # the child is listed once, as its cause
		self.assertEqual(names(related_messages(n["root"])["correlated"]), [n["grandchild"]])

		self.assertEqual(names(related_messages(n["copy"])["replay_of"]), [n["root"]])

	def test_unrelated_message_has_nothing(self):
		related = related_messages(self.names["other"])
		for key in ("replay_of", "replayed_as", "caused_by", "caused", "correlation_root", "correlated"):
			self.assertEqual(related[key], [], key)

	def test_like_wildcards_in_ids_match_only_themselves(self):
		# "_" and "%" in an id are literal, not LIKE wildcards, and case counts (the collation ignores it).
		look_alike = Message(type="x", id=self.root.id.replace("_", "Z").upper(), payload={})
		stored(look_alike.caused("y", id=f"{self.run_id}-look-alike-child"))
		self.assertEqual(names(related_messages(self.names["root"])["caused"]), [self.names["child"]])

	def test_user_without_access_to_the_message_is_refused(self):
		frappe.set_user(make_user("eda-desk-views@example.com"))
		with self.assertRaises(frappe.PermissionError):
			related_messages(self.names["child"])  # no reference document: managers only

	def test_reader_sees_only_related_messages_of_documents_they_may_read(self):
		user = make_user("eda-desk-views-reader@example.com")
		mine = frappe.get_doc({"doctype": "ToDo", "description": "views mine", "allocated_to": user}).insert()
		hidden = frappe.get_doc({"doctype": "ToDo", "description": "views hidden"}).insert()
		order = Message(type="order", id=f"{self.run_id}-r-order")
		seen = order.caused("seen", id=f"{self.run_id}-r-seen")
		unseen = order.caused("unseen", id=f"{self.run_id}-r-unseen")
		n_order = stored(order, reference_doctype="ToDo", reference_name=mine.name)
		n_seen = stored(seen, reference_doctype="ToDo", reference_name=mine.name)
		stored(unseen, reference_doctype="ToDo", reference_name=hidden.name)
		frappe.set_user(user)
		self.assertEqual(names(related_messages(n_order)["caused"]), [n_seen])
		self.assertEqual(names(related_messages(n_seen)["caused_by"]), [n_order])

	def test_bad_name_is_a_validation_error(self):
		for bad in ("", "x" * 200, None, ["a"]):
			with self.assertRaises((frappe.ValidationError, TypeError)):  # FrappeTypeError: a TypeError
				related_messages(bad)
		# a missing name is answered as one the user may not read (desk.access.readable_message)
		with self.assertRaises(frappe.PermissionError):
			related_messages("no-such-eda-message")


class TestChainIdColumns(FrappeTestCase):
	"""The related messages read indexed correlation/causation columns, not every body (a LIKE over all
	payloads on each form opening); ids the columns cannot hold are left out, never fail the save."""

	def tearDown(self):
		frappe.db.rollback()

	def columns(self, name):
		return frappe.db.get_value("EDA Message", name, ["correlation_id", "causation_id"])

	def test_the_store_keeps_the_envelope_ids_escaped_and_drops_what_cannot_be_held(self):
		root = Message(type="order.placed", id=f"{HOSTILE}-{uuid.uuid4().hex[:8]}")
		child = root.caused("invoice.created")
		self.assertEqual(self.columns(stored(child)), (escape(root.id), escape(root.id)))
		long_cause = Message(type="x", causation_id="c" * 300, correlation_id="ok-" + uuid.uuid4().hex)
		self.assertEqual(self.columns(stored(long_cause)), (long_cause.correlation_id, None))
		odd = Message(type="x", causation_id="a\x00b", correlation_id="line\nbreak")
		self.assertEqual(self.columns(stored(odd)), (None, None))

	def test_case_differences_are_not_the_same_cause(self):
		root = Message(type="order.placed", id=f"root-{uuid.uuid4().hex[:8]}")
		root_name = stored(root)
		stored(root.caused("invoice.created"))
		stored(Message(type="x", causation_id=root.id.upper()))
		self.assertEqual(len(related_messages(root_name)["caused"]), 1)

	def test_the_patch_fills_messages_stored_before_the_columns(self):
		from frappe_eda.patches import message_chain_ids

		root = Message(type="order.placed", id=f"root-{uuid.uuid4().hex[:8]}")
		name = stored(root.caused("invoice.created"))
		frappe.db.set_value(
			"EDA Message", name, {"correlation_id": None, "causation_id": None}, update_modified=False
		)
		commits = []
		frappe.db.commit, saved = (
			(lambda: commits.append(1)),
			frappe.db.commit,
		)  # stay in the test's transaction
		try:
			message_chain_ids.execute()
		finally:
			frappe.db.commit = saved
		self.assertEqual(self.columns(name), (root.id, root.id))
