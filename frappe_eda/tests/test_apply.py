# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE
"""An EDA Subscription applying documents another server publishes (``replication.apply``), on one site.

No broker and no worker: each test calls ``apply_message`` with a message as a source sends it (the
document as its payload, ``_eda_hash``, the addressing headers) and a spec read from an EDA Subscription
the test inserts, and looks at what an operator would: the local copy and its EDA Replica row. The
set-up creates (and the tear-down drops) the custom DocTypes ``EDA Apply Group``, ``EDA Apply Item``
(child table ``EDA Apply Item Price``, renamable) and the submittable ``EDA Apply Order``; each test
rolls back what it wrote.
"""

from __future__ import annotations

import json

import frappe
from frappe.tests.utils import FrappeTestCase

from frappe_eda.messaging.envelope import Message
from frappe_eda.messaging.errors import InvalidMessage, PermanentFailure
from frappe_eda.messaging.replication.addressing import NotAddressedHere
from frappe_eda.messaging.replication.events import UnknownEvent
from frappe_eda.messaging.replication.versions import InvalidDocumentVersion
from frappe_eda.outbox.rules import clear_rules_cache
from frappe_eda.replication import replicas
from frappe_eda.replication.apply import (
	ApplyRefused,
	InvalidReplicatedDocument,
	MissingLink,
	WrongSource,
	apply_message,
)
from frappe_eda.replication.subscriptions import spec_of
from frappe_eda.tests import doctypes

GROUP, ITEM, PRICE, ORDER = "EDA Apply Group", "EDA Apply Item", "EDA Apply Item Price", "EDA Apply Order"
DOCTYPES = (ORDER, ITEM, PRICE, GROUP)  # in the order they can be dropped
SOURCE = "head.example"
HASH = "0123456789abcdef01234567"
HASH_KEY = "_eda_hash"
T1, T2, T3 = "2020-01-01 10:00:00.000001", "2020-01-02 10:00:00.000002", "2020-01-03 10:00:00.000003"
FUTURE = "2099-01-01 00:00:00.000000"
DEFINITIONS = doctypes.item_doctypes(
	GROUP,
	ITEM,
	PRICE,
	ORDER,
	item_naming={"autoname": "hash", "allow_rename": 1},
	order_fields=(doctypes.field("remarks", "Small Text", allow_on_submit=1),),
)


def item(name, modified=T1, **fields):
	"""An EDA Apply Item as the source sends it."""
	return {
		"doctype": ITEM,
		"name": name,
		"modified": modified,
		"docstatus": 0,
		"owner": "someone@head.example",
		"creation": "2019-12-31 09:00:00.000000",
		"item_code": name,
		"item_name": f"{name} name",
		HASH_KEY: HASH,
		**fields,
	}


def message(event, payload, headers=None, source=SOURCE, doctype=ITEM):
	return Message(
		type=f"{frappe.scrub(doctype)}.{event}", source=source, payload=payload, headers=headers or {}
	)


def replica(subscription, source_name, source=SOURCE):
	return frappe.db.get_value(
		"EDA Replica",
		replicas.replica_name(subscription, source, source_name),
		["status", "local_name", "source_version", "source_hash", "detail", "last_event"],
		as_dict=True,
	)


class TestApply(FrappeTestCase):
	@classmethod
	def setUpClass(cls):
		super().setUpClass()
		doctypes.ensure_doctypes(DEFINITIONS)

	@classmethod
	def tearDownClass(cls):
		frappe.db.rollback()
		doctypes.drop_doctypes(DOCTYPES)
		super().tearDownClass()

	def setUp(self):
		frappe.db.rollback()
		self.here = frappe.local.site
		self.enabled_before = frappe.conf.get("eda_enabled")
		clear_rules_cache()

	def tearDown(self):
		frappe.db.rollback()
		for flag in ("eda_applying", "eda_applying_publishes", "eda_origin"):
			frappe.local.flags.pop(flag, None)
		if self.enabled_before is None:
			frappe.conf.pop("eda_enabled", None)
		else:
			frappe.conf["eda_enabled"] = self.enabled_before
		clear_rules_cache()

	# --- helpers ------------------------------------------------------------------------------------

	def spec(self, source_doctype=ITEM, **values):
		doc = frappe.get_doc(
			{
				"doctype": "EDA Subscription",
				"subscription_name": f"EDA Apply Test {frappe.generate_hash(length=8)}",
				"source_doctype": source_doctype,
				"routing_key_patterns": f"{frappe.scrub(source_doctype)}.*",
				# apply_message is called directly here; the sender check is the worker's (test_trust)
				"sender_check": "Trusted Network",
				**values,
			}
		).insert()
		return spec_of(frappe.get_doc("EDA Subscription", doc.name), "eda.events")

	def local_edit(self, doctype, name, **values):
		"""A change made on this site, after the subscription wrote the copy (a later ``modified``)."""
		doc = frappe.get_doc(doctype, name)
		doc.update(values)
		doc.save()
		return doc

	def outgoing(self, doctype=ITEM):
		return frappe.get_all(
			"EDA Message",
			filters={"reference_doctype": doctype, "direction": "Outgoing"},
			fields=["name", "message_type", "payload", "reference_name"],
		)

	# --- create, update, order ------------------------------------------------------------------------

	def test_create_copies_the_document_under_the_sources_name(self):
		spec = self.spec()
		apply_message(
			spec, message("on_update", item("SRC-1", notes="n", prices=[{"price_list": "A", "rate": 2}]))
		)
		copy = frappe.get_doc(ITEM, "SRC-1")
		self.assertEqual((copy.item_code, copy.item_name, copy.notes), ("SRC-1", "SRC-1 name", "n"))
		self.assertEqual([(p.price_list, p.rate) for p in copy.prices], [("A", 2)])
		self.assertNotEqual(copy.owner, "someone@head.example")  # the source's bookkeeping is never copied
		row = replica(spec.name, "SRC-1")
		self.assertEqual(
			(row.status, row.local_name, row.source_version, row.source_hash),
			("Applied", "SRC-1", f"{T1}|0", HASH),
		)

	def test_a_newer_version_updates_the_copy(self):
		spec = self.spec()
		apply_message(spec, message("after_insert", item("SRC-2")))
		apply_message(
			spec, message("on_update", item("SRC-2", T2, item_name="renamed", **{HASH_KEY: "ab" * 12}))
		)
		self.assertEqual(frappe.db.get_value(ITEM, "SRC-2", "item_name"), "renamed")
		row = replica(spec.name, "SRC-2")
		self.assertEqual((row.status, row.source_version, row.source_hash), ("Applied", f"{T2}|0", "ab" * 12))
		self.assertEqual(frappe.db.count(ITEM, {"item_code": "SRC-2"}), 1)

	def test_an_older_version_is_skipped_as_stale(self):
		spec = self.spec()
		apply_message(spec, message("on_update", item("SRC-3", T2, item_name="newer")))
		apply_message(spec, message("on_update", item("SRC-3", T1, item_name="older")))
		self.assertEqual(frappe.db.get_value(ITEM, "SRC-3", "item_name"), "newer")
		row = replica(spec.name, "SRC-3")
		self.assertEqual((row.status, row.source_version), ("Applied", f"{T2}|0"))

	def test_the_same_version_is_skipped_unless_reconcile_or_on_change_repairs_it(self):
		spec = self.spec()
		apply_message(spec, message("after_insert", item("SRC-4", item_name="first")))
		apply_message(spec, message("on_update", item("SRC-4", item_name="same version, other text")))
		self.assertEqual(frappe.db.get_value(ITEM, "SRC-4", "item_name"), "first")
		# a change that bypassed hooks kept ``modified``: reconciliation (or a db_set) sends it again
		apply_message(spec, message("reconcile", item("SRC-4", item_name="repaired")))
		self.assertEqual(frappe.db.get_value(ITEM, "SRC-4", "item_name"), "repaired")
		apply_message(spec, message("on_change", item("SRC-4", notes="db_set")))
		self.assertEqual(frappe.db.get_value(ITEM, "SRC-4", "notes"), "db_set")
		self.assertEqual(replica(spec.name, "SRC-4").status, "Applied")

	def test_a_delete_removes_the_copy(self):
		frappe.clear_cache()  # the cached list of DocTypes linking to EDA Apply Item
		spec = self.spec()
		apply_message(spec, message("on_update", item("SRC-5")))
		apply_message(spec, message("on_trash", item("SRC-5")))
		self.assertFalse(frappe.db.exists(ITEM, "SRC-5"))
		row = replica(spec.name, "SRC-5")
		self.assertEqual((row.status, row.source_version), ("Deleted", f"{T1}|2"))
		# the update it followed, redelivered, does not bring the document back
		apply_message(spec, message("on_update", item("SRC-5")))
		self.assertFalse(frappe.db.exists(ITEM, "SRC-5"))

	def test_a_delete_of_a_copy_this_site_never_had_does_nothing(self):
		spec = self.spec()
		apply_message(spec, message("on_trash", item("SRC-NEVER")))
		self.assertFalse(frappe.db.exists(ITEM, "SRC-NEVER"))
		row = replica(spec.name, "SRC-NEVER")
		self.assertEqual((row.status, row.source_version), ("Deleted", f"{T1}|2"))
		self.assertIn("no local copy to delete", row.detail)
		# the update the delete followed, arriving late (it waited for a missing link), is stale
		apply_message(spec, message("on_update", item("SRC-NEVER")))
		self.assertFalse(frappe.db.exists(ITEM, "SRC-NEVER"))
		# a document the source makes again under that name later arrives
		apply_message(spec, message("on_update", item("SRC-NEVER", T2)))
		self.assertTrue(frappe.db.exists(ITEM, "SRC-NEVER"))

	def test_a_delete_of_a_copy_deleted_by_hand_still_moves_the_version(self):
		frappe.clear_cache()
		spec = self.spec()
		apply_message(spec, message("on_update", item("SRC-HAND")))
		frappe.delete_doc(ITEM, "SRC-HAND")
		apply_message(spec, message("on_trash", item("SRC-HAND")))
		self.assertEqual(replica(spec.name, "SRC-HAND").status, "Deleted")
		# a db_set's message redelivered (applied again at the same version) does not bring it back
		apply_message(spec, message("on_change", item("SRC-HAND")))
		self.assertFalse(frappe.db.exists(ITEM, "SRC-HAND"))

	def test_follow_deletes_off_keeps_the_copy(self):
		spec = self.spec(follow_deletes=0)
		apply_message(spec, message("on_update", item("SRC-KEEP")))
		apply_message(spec, message("on_trash", item("SRC-KEEP")))
		self.assertTrue(frappe.db.exists(ITEM, "SRC-KEEP"))

	# --- matching and mapping ---------------------------------------------------------------------------

	def test_key_field_matches_the_local_document_by_its_value(self):
		local = frappe.get_doc({"doctype": ITEM, "item_code": "KEY-1", "item_name": "local"}).insert()
		spec = self.spec(match_by="Key Field", key_field="item_code")
		apply_message(spec, message("on_update", item("SRC-K1", item_code="KEY-1", item_name="from source")))
		self.assertFalse(frappe.db.exists(ITEM, "SRC-K1"))
		self.assertEqual(frappe.db.get_value(ITEM, local.name, "item_name"), "from source")
		self.assertEqual(replica(spec.name, "SRC-K1").local_name, local.name)
		# a key this site does not have: a new document, named the local way
		apply_message(spec, message("on_update", item("SRC-K2", item_code="KEY-2")))
		created = frappe.db.get_value(ITEM, {"item_code": "KEY-2"}, "name")
		self.assertTrue(created)
		self.assertNotEqual(created, "SRC-K2")
		self.assertEqual(replica(spec.name, "SRC-K2").local_name, created)
		# the next change of SRC-K1 lands on the same local document
		apply_message(spec, message("on_update", item("SRC-K1", T2, item_code="KEY-1", item_name="again")))
		self.assertEqual(frappe.db.get_value(ITEM, local.name, "item_name"), "again")
		self.assertEqual(frappe.db.count(ITEM, {"item_code": "KEY-1"}), 1)

	def test_a_missing_key_value_is_refused(self):
		spec = self.spec(match_by="Key Field", key_field="item_code")
		with self.assertRaises(ApplyRefused):
			apply_message(spec, message("on_update", item("SRC-K3", item_code="")))

	def test_field_rules_map_skip_default_and_constant_in_child_rows(self):
		spec = self.spec(
			field_rules=[
				{"action": "Map", "source_field": "item_name", "target_field": "description"},
				{"action": "Skip", "source_field": "notes"},
				{"action": "Default", "target_field": "origin_label", "value": "from head"},
				{
					"action": "Constant",
					"target_field": "price_list",
					"value": "LOCAL",
					"child_table": "prices",
				},
			]
		)
		apply_message(
			spec,
			message(
				"on_update",
				item("SRC-M", item_name="Widget", notes="secret", prices=[{"price_list": "SRC", "rate": 5}]),
			),
		)
		copy = frappe.get_doc(ITEM, "SRC-M")
		self.assertEqual(copy.description, "Widget")
		self.assertFalse(copy.item_name)  # renamed, not copied under its own name as well
		self.assertFalse(copy.notes)
		self.assertEqual(copy.origin_label, "from head")
		self.assertEqual([(p.price_list, p.rate) for p in copy.prices], [("LOCAL", 5)])
		# a Default gives way to what the source sends
		apply_message(spec, message("on_update", item("SRC-M", T2, origin_label="sent")))
		self.assertEqual(frappe.db.get_value(ITEM, "SRC-M", "origin_label"), "sent")

	# --- conflicts -------------------------------------------------------------------------------------

	def test_source_wins_overwrites_a_local_edit(self):
		spec = self.spec(conflict_policy="Source Wins")
		apply_message(spec, message("on_update", item("SRC-C1", item_name="v1")))
		self.local_edit(ITEM, "SRC-C1", item_name="edited here")
		apply_message(spec, message("on_update", item("SRC-C1", T2, item_name="v2")))
		self.assertEqual(frappe.db.get_value(ITEM, "SRC-C1", "item_name"), "v2")
		self.assertEqual(replica(spec.name, "SRC-C1").status, "Applied")

	def test_newer_modified_wins_keeps_a_newer_local_edit(self):
		spec = self.spec(conflict_policy="Newer Modified Wins")
		apply_message(spec, message("on_update", item("SRC-C2", item_name="v1")))
		self.local_edit(ITEM, "SRC-C2", item_name="edited here")  # now, after T2
		apply_message(spec, message("on_update", item("SRC-C2", T2, item_name="v2")))
		self.assertEqual(frappe.db.get_value(ITEM, "SRC-C2", "item_name"), "edited here")
		row = replica(spec.name, "SRC-C2")
		self.assertEqual((row.status, row.source_version), ("Conflict", f"{T1}|0"))
		self.assertIn("newer modified wins", row.detail)
		# a source change newer than the local edit wins
		apply_message(spec, message("on_update", item("SRC-C2", FUTURE, item_name="v3")))
		self.assertEqual(frappe.db.get_value(ITEM, "SRC-C2", "item_name"), "v3")
		self.assertEqual(replica(spec.name, "SRC-C2").status, "Applied")

	def test_skip_and_record_keeps_the_local_edit_and_says_why(self):
		spec = self.spec(conflict_policy="Skip and Record")
		apply_message(spec, message("on_update", item("SRC-C3", item_name="v1")))
		self.local_edit(ITEM, "SRC-C3", item_name="edited here")
		apply_message(spec, message("on_update", item("SRC-C3", T2, item_name="v2")))
		self.assertEqual(frappe.db.get_value(ITEM, "SRC-C3", "item_name"), "edited here")
		row = replica(spec.name, "SRC-C3")
		self.assertEqual(row.status, "Conflict")
		self.assertIn("skip and record", row.detail)

	def test_skip_and_record_refuses_to_overwrite_a_document_that_existed_before(self):
		frappe.get_doc({"doctype": ITEM, "item_code": "SRC-C4", "item_name": "mine"}).insert(
			set_name="SRC-C4"
		)
		spec = self.spec(conflict_policy="Skip and Record")
		apply_message(spec, message("on_update", item("SRC-C4", item_name="theirs")))
		self.assertEqual(frappe.db.get_value(ITEM, "SRC-C4", "item_name"), "mine")
		row = replica(spec.name, "SRC-C4")
		self.assertEqual(row.status, "Conflict")
		self.assertIn("existed before", row.detail)

	# --- links -----------------------------------------------------------------------------------------

	def test_a_missing_link_waits_and_retries(self):
		spec = self.spec(link_policy="Wait and Retry")
		with self.assertRaises(MissingLink) as caught:
			apply_message(spec, message("on_update", item("SRC-L1", item_group="G-MISSING")))
		self.assertNotIsInstance(caught.exception, PermanentFailure)  # retried: it may arrive
		self.assertEqual((caught.exception.doctype, caught.exception.name), (GROUP, "G-MISSING"))
		self.assertFalse(frappe.db.exists(ITEM, "SRC-L1"))
		self.assertIsNone(replica(spec.name, "SRC-L1"))
		# once it exists, the same message applies
		frappe.get_doc({"doctype": GROUP, "group_name": "G-MISSING"}).insert()
		apply_message(spec, message("on_update", item("SRC-L1", item_group="G-MISSING")))
		self.assertEqual(frappe.db.get_value(ITEM, "SRC-L1", "item_group"), "G-MISSING")

	def test_a_missing_link_is_created_from_the_documents_sent_along(self):
		spec = self.spec(link_policy="Create From Sent Documents")
		sent = [{"doctype": GROUP, "name": "G-SENT", "group_name": "G-SENT", "modified": T1, "docstatus": 0}]
		apply_message(spec, message("on_update", item("SRC-L2", item_group="G-SENT", _eda_links=sent)))
		self.assertTrue(frappe.db.exists(GROUP, "G-SENT"))
		self.assertEqual(frappe.db.get_value(ITEM, "SRC-L2", "item_group"), "G-SENT")
		# a link the source did not send still waits
		with self.assertRaises(MissingLink):
			apply_message(spec, message("on_update", item("SRC-L3", item_group="G-UNSENT", _eda_links=sent)))

	def test_a_user_sent_along_is_never_created_and_a_dependency_brings_no_child_rows(self):
		"""A source could otherwise make itself an administrator here: a ToDo assigned to a user it
		sends along, with the System Manager role in the user's rows."""
		spec = self.spec(source_doctype="ToDo", link_policy="Create From Sent Documents")
		intruder = f"intruder-{frappe.generate_hash(length=6)}@head.example"
		sent = [
			{
				"doctype": "User",
				"name": intruder,
				"email": intruder,
				"first_name": "Intruder",
				"roles": [{"role": "System Manager"}],
			}
		]
		todo = {
			"doctype": "ToDo",
			"name": f"SRC-U-{frappe.generate_hash(length=6)}",
			"modified": T1,
			"docstatus": 0,
			"description": "assigned to someone the source made up",
			"allocated_to": intruder,
			"_eda_links": sent,
		}
		with self.assertRaises(MissingLink) as caught:
			apply_message(spec, message("on_update", todo, doctype="ToDo"))
		self.assertEqual(caught.exception.doctype, "User")
		self.assertFalse(frappe.db.exists("User", intruder))
		# an allowed DocType is created with its own fields only
		group = {"doctype": GROUP, "name": "G-ROWS", "group_name": "G-ROWS", "modified": T1, "docstatus": 0}
		apply_message(
			spec_item := self.spec(link_policy="Create From Sent Documents"),
			message("on_update", item("SRC-L5", item_group="G-ROWS", _eda_links=[group])),
		)
		self.assertTrue(frappe.db.exists(GROUP, "G-ROWS"))
		self.assertEqual(replica(spec_item.name, "SRC-L5").status, "Applied")

	def test_ignore_writes_the_link_as_it_is(self):
		spec = self.spec(link_policy="Ignore")
		apply_message(spec, message("on_update", item("SRC-L4", item_group="G-NOWHERE")))
		self.assertEqual(frappe.db.get_value(ITEM, "SRC-L4", "item_group"), "G-NOWHERE")
		self.assertFalse(frappe.db.exists(GROUP, "G-NOWHERE"))
		apply_message(spec, message("on_update", item("SRC-L4", T2, item_group="G-ELSEWHERE")))
		self.assertEqual(frappe.db.get_value(ITEM, "SRC-L4", "item_group"), "G-ELSEWHERE")

	# --- submit, cancel --------------------------------------------------------------------------------

	def order(self, name, modified, docstatus=0, **fields):
		return {
			"doctype": ORDER,
			"name": name,
			"modified": modified,
			"docstatus": docstatus,
			"item": "SRC-FOR-ORDER",
			"qty": 3,
			"remarks": "",
			HASH_KEY: HASH,
			**fields,
		}

	def test_submit_update_after_submit_and_cancel_follow_the_source(self):
		frappe.get_doc({"doctype": ITEM, "item_code": "SRC-FOR-ORDER"}).insert(set_name="SRC-FOR-ORDER")
		spec = self.spec(source_doctype=ORDER)
		apply_message(spec, message("on_update", self.order("ORD-1", T1), doctype=ORDER))
		self.assertEqual(frappe.db.get_value(ORDER, "ORD-1", "docstatus"), 0)
		apply_message(spec, message("on_submit", self.order("ORD-1", T2, 1), doctype=ORDER))
		self.assertEqual(frappe.db.get_value(ORDER, "ORD-1", "docstatus"), 1)
		# after submit only allow_on_submit fields change
		apply_message(
			spec,
			message(
				"on_update_after_submit", self.order("ORD-1", T3, 1, remarks="late", qty=99), doctype=ORDER
			),
		)
		self.assertEqual(frappe.db.get_value(ORDER, "ORD-1", ["remarks", "qty"]), ("late", 3))
		apply_message(spec, message("on_cancel", self.order("ORD-1", FUTURE, 2), doctype=ORDER))
		self.assertEqual(frappe.db.get_value(ORDER, "ORD-1", "docstatus"), 2)
		self.assertEqual(replica(spec.name, "ORD-1").source_version, f"{FUTURE}|0")

	def test_a_submitted_document_arriving_first_is_created_submitted(self):
		frappe.get_doc({"doctype": ITEM, "item_code": "SRC-FOR-ORDER"}).insert(set_name="SRC-FOR-ORDER")
		spec = self.spec(source_doctype=ORDER)
		apply_message(spec, message("on_submit", self.order("ORD-2", T1, 1), doctype=ORDER))
		self.assertEqual(frappe.db.get_value(ORDER, "ORD-2", "docstatus"), 1)

	def test_follow_docstatus_off_keeps_a_draft(self):
		frappe.get_doc({"doctype": ITEM, "item_code": "SRC-FOR-ORDER"}).insert(set_name="SRC-FOR-ORDER")
		spec = self.spec(source_doctype=ORDER, follow_docstatus=0)
		apply_message(spec, message("on_submit", self.order("ORD-3", T1, 1), doctype=ORDER))
		self.assertEqual(frappe.db.get_value(ORDER, "ORD-3", "docstatus"), 0)

	# --- rename ----------------------------------------------------------------------------------------

	def test_after_rename_renames_the_copy_and_later_changes_land_on_it(self):
		spec = self.spec()
		apply_message(spec, message("on_update", item("R-OLD", item_name="before")))
		renamed = item(
			"R-NEW", item_code="R-OLD", _eda_rename={"old": "R-OLD", "new": "R-NEW", "merge": False}
		)
		apply_message(spec, message("after_rename", renamed))
		self.assertFalse(frappe.db.exists(ITEM, "R-OLD"))
		self.assertTrue(frappe.db.exists(ITEM, "R-NEW"))
		old = replica(spec.name, "R-OLD")  # a tombstone at the rename's version
		self.assertEqual((old.status, old.local_name, old.source_version), ("Deleted", "", f"{T1}|1"))
		row = replica(spec.name, "R-NEW")  # at the document's version: a db_set keeping T1 still applies
		self.assertEqual((row.status, row.local_name, row.source_version), ("Applied", "R-NEW", f"{T1}|0"))
		# a db_set that kept the source's modified (T1, as the rename's) is not older than the rename
		apply_message(spec, message("on_change", item("R-NEW", T1, item_code="R-OLD", item_name="db_set")))
		self.assertEqual(frappe.db.get_value(ITEM, "R-NEW", "item_name"), "db_set")
		apply_message(spec, message("on_update", item("R-NEW", T2, item_code="R-OLD", item_name="after")))
		self.assertEqual(frappe.db.get_value(ITEM, "R-NEW", "item_name"), "after")
		self.assertEqual(frappe.db.count(ITEM, {"item_code": "R-OLD"}), 1)
		# the old name's last update, redelivered, does not bring a second copy back
		apply_message(spec, message("on_update", item("R-OLD", T1, item_name="before")))
		self.assertFalse(frappe.db.exists(ITEM, "R-OLD"))

	def test_a_rename_with_a_key_field_keeps_the_local_name_and_rekeys_the_replica(self):
		local = frappe.get_doc({"doctype": ITEM, "item_code": "RK-1"}).insert()
		spec = self.spec(match_by="Key Field", key_field="item_code")
		apply_message(spec, message("on_update", item("RK-OLD", item_code="RK-1")))
		apply_message(
			spec,
			message(
				"after_rename",
				item(
					"RK-NEW", item_code="RK-1", _eda_rename={"old": "RK-OLD", "new": "RK-NEW", "merge": False}
				),
			),
		)
		self.assertTrue(frappe.db.exists(ITEM, local.name))
		self.assertEqual(replica(spec.name, "RK-NEW").local_name, local.name)
		apply_message(spec, message("on_update", item("RK-NEW", T2, item_code="RK-1", item_name="moved")))
		self.assertEqual(frappe.db.get_value(ITEM, local.name, "item_name"), "moved")

	def test_an_after_rename_without_its_names_is_invalid(self):
		spec = self.spec()
		for rename in (None, {"old": "A"}, {"old": "A", "new": "not-the-name"}, {"old": "", "new": "B"}):
			with self.subTest(rename=rename), self.assertRaises(InvalidReplicatedDocument):
				apply_message(spec, message("after_rename", item("B", _eda_rename=rename)))

	# --- addressing and input ------------------------------------------------------------------------

	def test_a_message_addressed_to_another_server_is_refused(self):
		spec = self.spec()
		with self.assertRaises(NotAddressedHere) as caught:
			apply_message(spec, message("on_update", item("SRC-A1"), headers={"eda-to": ["wh9.example"]}))
		self.assertIsInstance(caught.exception, PermanentFailure)
		self.assertFalse(frappe.db.exists(ITEM, "SRC-A1"))
		apply_message(
			spec, message("on_update", item("SRC-A1"), headers={"eda-to": [self.here, "wh9.example"]})
		)
		self.assertTrue(frappe.db.exists(ITEM, "SRC-A1"))

	def test_a_change_that_started_here_is_not_applied_again(self):
		spec = self.spec()
		apply_message(spec, message("on_update", item("SRC-ECHO"), headers={"eda-origin": self.here}))
		self.assertFalse(frappe.db.exists(ITEM, "SRC-ECHO"))
		self.assertIsNone(replica(spec.name, "SRC-ECHO"))

	def test_a_message_from_another_source_is_refused(self):
		spec = self.spec(source=SOURCE)
		with self.assertRaises(WrongSource) as caught:
			apply_message(spec, message("on_update", item("SRC-W"), source="other.example"))
		self.assertIsInstance(caught.exception, PermanentFailure)
		self.assertFalse(frappe.db.exists(ITEM, "SRC-W"))
		apply_message(spec, message("on_update", item("SRC-W")))
		self.assertTrue(frappe.db.exists(ITEM, "SRC-W"))

	def test_invalid_payloads_are_invalid_messages(self):
		spec = self.spec()
		cases = {
			"not a dict": ["SRC-X"],
			"a string": "SRC-X",
			"another doctype": item("SRC-X", doctype="ToDo"),
			"no doctype": {k: v for k, v in item("SRC-X").items() if k != "doctype"},
			"name too long": item("X" * 141),
			"name not text": item(12345),
			"blank name": item("   "),
			"docstatus 7": item("SRC-X", docstatus=7),
			"docstatus true": item("SRC-X", docstatus=True),
			"docstatus text": item("SRC-X", docstatus="1"),
			"modified garbage": item("SRC-X", modified="yesterday-ish"),
			"modified missing": item("SRC-X", modified=None),
			"modified nul": item("SRC-X", modified="2020-01-01 10:00:00\x00"),
		}
		for case, payload in cases.items():
			with self.subTest(case), self.assertRaises(InvalidMessage):
				apply_message(spec, message("on_update", payload))
		with self.assertRaises(InvalidDocumentVersion):
			apply_message(spec, message("on_update", item("SRC-X", modified="garbage")))
		with self.assertRaises(InvalidReplicatedDocument):
			apply_message(spec, message("on_update", item("SRC-X", docstatus=7)))
		with self.assertRaises(UnknownEvent):
			apply_message(spec, message("validate", item("SRC-X")))
		self.assertFalse(frappe.db.exists(ITEM, "SRC-X"))

	def test_a_change_the_local_doctype_refuses_is_apply_refused(self):
		spec = self.spec()
		with self.assertRaises(ApplyRefused) as caught:
			apply_message(spec, message("on_update", item("SRC-R", item_code=None)))
		self.assertIsInstance(caught.exception, PermanentFailure)
		self.assertIn("item_code", str(caught.exception).lower().replace(" ", "_"))
		self.assertFalse(frappe.db.exists(ITEM, "SRC-R"))

	# --- no echo ------------------------------------------------------------------------------------------

	def publishing_rules(self):
		frappe.conf["eda_enabled"] = 1
		for event in ("after_insert", "on_update", "after_rename"):
			frappe.get_doc({"doctype": "EDA Event Rule", "document_type": ITEM, "event": event}).insert()
		clear_rules_cache()

	def test_a_copy_written_by_a_subscription_publishes_nothing(self):
		self.publishing_rules()
		spec = self.spec()
		apply_message(spec, message("on_update", item("SRC-E1")))
		apply_message(spec, message("on_update", item("SRC-E1", T2, item_name="changed")))
		apply_message(
			spec, message("after_rename", item("SRC-E2", T2, _eda_rename={"old": "SRC-E1", "new": "SRC-E2"}))
		)
		self.assertEqual(frappe.db.get_value(ITEM, "SRC-E2", "item_name"), "changed")
		self.assertEqual(self.outgoing(), [])
		# the same DocType saved here (after the subscription applied) publishes, as from this site
		frappe.get_doc({"doctype": ITEM, "item_code": "LOCAL-E"}).insert()
		messages = self.outgoing()
		self.assertEqual(
			{m.message_type for m in messages}, {"eda_apply_item.after_insert", "eda_apply_item.on_update"}
		)
		for m in messages:
			self.assertEqual(json.loads(m.payload)["headers"]["eda-origin"], self.here)

	def test_publish_applied_publishes_the_copy_keeping_the_changes_origin(self):
		self.publishing_rules()
		spec = self.spec(publish_applied=1)
		apply_message(spec, message("on_update", item("SRC-P1"), headers={"eda-origin": "shop.example"}))
		messages = self.outgoing()
		self.assertEqual(
			{m.message_type for m in messages}, {"eda_apply_item.after_insert", "eda_apply_item.on_update"}
		)
		for m in messages:
			self.assertEqual(json.loads(m.payload)["headers"]["eda-origin"], "shop.example")
		# without eda-origin the change started at the message's source
		apply_message(spec, message("on_update", item("SRC-P2")))
		origins = {
			json.loads(m.payload)["headers"]["eda-origin"]
			for m in self.outgoing()
			if m.reference_name == "SRC-P2"
		}
		self.assertEqual(origins, {SOURCE})

	def test_a_rename_published_onwards_keeps_the_changes_origin(self):
		self.publishing_rules()
		spec = self.spec(publish_applied=1)
		apply_message(spec, message("on_update", item("SRC-P3"), headers={"eda-origin": "shop.example"}))
		apply_message(
			spec,
			message(
				"after_rename",
				item("SRC-P4", _eda_rename={"old": "SRC-P3", "new": "SRC-P4"}),
				headers={"eda-origin": "shop.example"},
			),
		)
		[renamed] = [m for m in self.outgoing() if m.message_type == "eda_apply_item.after_rename"]
		body = json.loads(renamed.payload)
		self.assertEqual(body["headers"]["eda-origin"], "shop.example")
		self.assertEqual(body["payload"]["_eda_rename"], {"old": "SRC-P3", "new": "SRC-P4", "merge": False})

	def test_the_applying_flags_do_not_outlive_the_message(self):
		spec = self.spec(publish_applied=1)
		apply_message(spec, message("on_update", item("SRC-F"), headers={"eda-origin": "shop.example"}))
		self.assertFalse(frappe.local.flags.eda_applying)
		self.assertFalse(frappe.local.flags.eda_origin)
