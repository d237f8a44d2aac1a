# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE
"""Issue #10 item 2: an operator filters and groups the EDA Message list by exception type and
fingerprint. The store writes the latest failure onto the message with each EDA Error; a patch fills
the messages stored before."""

import frappe
from frappe.tests.utils import FrappeTestCase

from frappe_eda.messaging.store import Direction, ErrorRecord, Status
from frappe_eda.patches import message_last_failure
from frappe_eda.stores.doctype_store import DocTypeStore
from frappe_eda.testing.store_contract import incoming


def _error(message_id, queue, exception_type, fingerprint, attempt):
	return ErrorRecord(
		message_id=message_id,
		direction=Direction.INCOMING,
		exception_type=exception_type,
		error="no",
		fingerprint=fingerprint,
		attempt=attempt,
		queue=queue,
	)


class TestLastFailure(FrappeTestCase):
	def setUp(self):
		self.store = DocTypeStore(commit=False)
		self.queue = f"last-failure-{frappe.generate_hash(length=8)}"

	def tearDown(self):
		frappe.db.rollback()

	def row(self, message_id):
		return frappe.db.get_value(
			"EDA Message", {"message_id": message_id, "queue": self.queue}, ["exception_type", "fingerprint"]
		)

	def test_each_error_sets_the_message_latest_failure_and_the_list_filters_by_it(self):
		record = incoming("m-1", self.queue, status=Status.FAILED)
		self.store.save([record])
		self.store.add_error(_error("m-1", self.queue, "ValueError", "fp-one", 1))
		self.assertEqual(self.row("m-1"), ("ValueError", "fp-one"))
		self.store.add_error(_error("m-1", self.queue, "<b>KeyError</b>", "fp-two", 2))
		self.assertEqual(self.row("m-1"), ("&lt;b&gt;KeyError&lt;/b&gt;", "fp-two"))  # stored escaped
		names = frappe.get_list(
			"EDA Message", filters={"fingerprint": "fp-two", "queue": self.queue}, pluck="name"
		)
		self.assertEqual(len(names), 1)
		other = incoming("m-1", f"{self.queue}.other", status=Status.DEAD)
		self.store.save([other])
		self.assertEqual(
			frappe.db.get_value("EDA Message", {"queue": f"{self.queue}.other"}, "fingerprint"), None
		)

	def test_the_patch_fills_failed_and_dead_messages_from_their_latest_error(self):
		self.store.save(
			[
				incoming("m-2", self.queue, status=Status.DEAD),
				incoming("m-3", self.queue, status=Status.PROCESSED),
			]
		)
		for n, fp in enumerate(("fp-a", "fp-b"), 1):
			self.store.add_error(_error("m-2", self.queue, "ValueError", fp, n))
		self.store.add_error(_error("m-3", self.queue, "ValueError", "fp-c", 1))
		frappe.db.sql(
			"update `tabEDA Message` set exception_type=null, fingerprint=null where queue=%s", self.queue
		)
		message_last_failure.execute()
		self.assertEqual(self.row("m-2"), ("ValueError", "fp-b"))
		self.assertEqual(self.row("m-3"), (None, None))
