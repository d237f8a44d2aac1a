# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE

import threading
from datetime import datetime, timedelta, timezone
from unittest.mock import patch

import frappe
from frappe.tests.utils import FrappeTestCase

from frappe_eda.messaging.errors import TransactionLost
from frappe_eda.messaging.store import Direction, MessageFilter, Status
from frappe_eda.stores import doctype_store
from frappe_eda.stores.doctype_store import DocTypeStore
from frappe_eda.testing.store_contract import StoreContract, error, incoming, outgoing


class TestDocTypeStoreContract(StoreContract, FrappeTestCase):
	"""The core's store contract, on EDA Message / EDA Error in this site.

	The store runs with ``commit=False`` (the test owns the transaction) and every test is rolled back.
	"""

	def make_store(self):
		frappe.db.rollback()
		return DocTypeStore(commit=False)

	def cleanup_store(self, store):
		frappe.db.rollback()

	def claim_elsewhere(self):
		"""A second relay is another process with its own site connection: a thread that connects."""
		site, sites_path, granted = frappe.local.site, frappe.local.sites_path, []

		def attempt():
			frappe.init(site=site, sites_path=sites_path)
			frappe.connect()
			try:
				with DocTypeStore(commit=True).relay_claim() as held:
					granted.append(held)
			finally:
				frappe.destroy()

		thread = threading.Thread(target=attempt)
		thread.start()
		thread.join(timeout=30)
		self.assertEqual(len(granted), 1, "the claim must answer at once, never wait")
		return granted[0]


class TestDocTypeStore(FrappeTestCase):
	"""What the contract cannot see: who commits, lost savepoints, the SQL behind find and retention."""

	def setUp(self):
		frappe.db.rollback()
		self.store = DocTypeStore(commit=False)

	def tearDown(self):
		frappe.db.rollback()

	def test_the_worker_store_commits_its_outermost_transaction_and_nothing_nested(self):
		store = DocTypeStore(commit=True)
		with patch.object(frappe.db, "commit") as commit:
			with store.transaction():
				with store.transaction():
					store.save([incoming("m", "q")])
				commit.assert_not_called()
			commit.assert_called_once()
		self.assertIsNotNone(store.get("m", Direction.INCOMING, "q"))

	def test_the_worker_store_rolls_everything_back_on_error(self):
		store = DocTypeStore(commit=True)
		with patch.object(frappe.db, "commit") as commit, self.assertRaises(RuntimeError):
			with store.transaction():
				store.save([incoming("m", "q")])
				raise RuntimeError("batch failed")
		commit.assert_not_called()
		self.assertIsNone(store.get("m", Direction.INCOMING, "q"))

	def test_a_request_store_never_commits_the_request(self):
		with patch.object(frappe.db, "commit") as commit, patch.object(frappe.db, "rollback") as rollback:
			self.store.save([outgoing("m")])
			with self.assertRaises(ValueError), self.store.transaction():
				raise ValueError
		commit.assert_not_called()
		self.assertFalse([c for c in rollback.call_args_list if not c.kwargs.get("save_point")])

	def test_a_transaction_ended_under_a_savepoint_is_not_committed_half(self):
		store = DocTypeStore(commit=True)
		with patch.object(frappe.db, "commit") as commit, self.assertRaises(TransactionLost):
			with store.transaction():
				store.save([incoming("earlier", "q")])
				with self.assertRaises(ValueError), store.transaction():
					frappe.db.sql("rollback")  # what a deadlock does to the whole transaction
					raise ValueError("deadlock")
				store.save([incoming("later", "q")])
		commit.assert_not_called()
		self.assertEqual(store.processed_ids("q", ["earlier", "later"]), set())

	def test_save_with_one_key_twice_keeps_the_last(self):
		self.store.save([incoming("m", "q", status=Status.FAILED), incoming("m", "q", attempts=2)])
		got = self.store.get("m", Direction.INCOMING, "q")
		self.assertEqual((got.status, got.attempts), (Status.PROCESSED, 2))
		self.assertEqual(frappe.db.count("EDA Message", {"message_id": "m"}), 1)

	def test_records_are_ordinary_documents_in_the_desk(self):
		self.store.save([outgoing("m", reference_doctype="User", reference_name="Administrator")])
		self.store.add_error(error("m"))
		name = frappe.db.get_value("EDA Message", {"message_id": "m"})
		doc = frappe.get_doc("EDA Message", name)
		self.assertEqual((doc.direction, doc.status, doc.queue), ("Outgoing", "Pending", ""))
		self.assertEqual(frappe.db.get_value("EDA Error", {"message_id": "m"}, "eda_message"), name)

	def test_topic_patterns_treat_sql_wildcards_as_literals(self):
		self.store.save(
			[
				outgoing("a", routing_key="sales_order.created"),
				outgoing("b", routing_key="salesXorder.created"),
				outgoing("c", routing_key="100%.created"),
				outgoing("d", routing_key="1000.created"),
			]
		)
		ids = lambda key: [r.message_id for r in self.store.find(MessageFilter(routing_key=key))]  # noqa: E731
		self.assertEqual(ids("sales_order.*"), ["a"])
		self.assertEqual(ids("100%.#"), ["c"])
		self.assertEqual(ids("*.created"), ["a", "b", "c", "d"])

	def test_topic_patterns_page_through_keys_until_the_limit(self):
		t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
		keys = ["x.skip", "a.hit", "b.skip", "c.hit", "d.skip", "e.hit", "f.hit"]
		self.store.save(
			[
				outgoing(f"m{n}", routing_key=key, created_at=t0 + timedelta(seconds=n))
				for n, key in enumerate(keys)
			]
		)
		with patch.object(doctype_store, "PATTERN_PAGE", 2):
			found = self.store.find(MessageFilter(routing_key="*.hit", limit=3))
		self.assertEqual([r.message_id for r in found], ["m1", "m3", "m5"])

	def test_retention_deletes_in_chunks_with_the_errors_of_what_it_deletes(self):
		old = datetime(2020, 1, 1, tzinfo=timezone.utc)
		self.store.save(
			[incoming(f"m{n}", "q") for n in range(5)] + [incoming("dead", "q", status=Status.DEAD)]
		)
		for message_id in ("m0", "m4", "dead"):
			self.store.add_error(error(message_id, "q"))
		frappe.db.set_value("EDA Message", {"queue": "q"}, "updated_at", old.replace(tzinfo=None))
		with patch.object(doctype_store, "DELETE_CHUNK", 2):
			self.assertEqual(self.store.delete_finished(before=old + timedelta(days=1)), 5)
		self.assertEqual(frappe.get_all("EDA Message", filters={"queue": "q"}, pluck="message_id"), ["dead"])
		self.assertEqual(frappe.get_all("EDA Error", filters={"queue": "q"}, pluck="message_id"), ["dead"])


class TestEDAMessage(FrappeTestCase):
	def tearDown(self):
		frappe.db.rollback()

	def test_the_message_key_is_unique(self):
		values = {
			"doctype": "EDA Message",
			"message_id": "dup-1",
			"direction": "Incoming",
			"status": "Processed",
			"queue": "q",
		}
		frappe.get_doc(values).db_insert()
		frappe.get_doc({**values, "queue": "other"}).db_insert()
		with self.assertRaises(frappe.UniqueValidationError):
			frappe.get_doc(values).db_insert()

	def test_log_settings_retention_keeps_failed_and_dead(self):
		from frappe.core.doctype.log_settings.log_settings import _supports_log_clearing

		from frappe_eda.frappe_eda.doctype.eda_message.eda_message import EDAMessage

		self.assertIn("EDA Message", frappe.get_hooks("default_log_clearing_doctypes"))
		self.assertTrue(_supports_log_clearing("EDA Message"))
		old = "2020-01-01 00:00:00"
		for status in ("Processed", "Published", "Dead", "Failed"):
			frappe.get_doc(
				{
					"doctype": "EDA Message",
					"message_id": f"old-{status}",
					"direction": "Incoming",
					"status": status,
					"queue": "q",
					"updated_at": old,
					"created_at": old,
				}
			).db_insert()
		with patch.dict(frappe.local.conf, {"eda_retention_days": 36500}):  # EDA Settings keeps longer: wins
			self.assertEqual(EDAMessage.clear_old_logs(days=30), 0)
		self.assertEqual(EDAMessage.clear_old_logs(days=30), 2)
		left = frappe.get_all("EDA Message", filters={"message_id": ["like", "old-%"]}, pluck="status")
		self.assertEqual(sorted(left), ["Dead", "Failed"])
