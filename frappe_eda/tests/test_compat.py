# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE
"""The compatibility seam (``frappe_eda.compat``) does what the rest of the app relies on, on the Frappe
major this site runs (v15 and v16 alike): run it on a site of each."""

from __future__ import annotations

import threading

import frappe
from frappe.tests.utils import FrappeTestCase

from frappe_eda import compat
from frappe_eda.stores.doctype_store import DocTypeStore
from frappe_eda.testing.store_contract import incoming


class TestCompat(FrappeTestCase):
	def tearDown(self):
		frappe.db.rollback()

	def test_the_major_is_the_running_frappe(self):
		self.assertEqual(compat.FRAPPE_MAJOR, int(frappe.__version__.split(".")[0]))
		self.assertIn(compat.FRAPPE_MAJOR, (15, 16))

	def test_release_local_gives_a_fresh_local_that_init_fills_again(self):
		"""What the worker does before each batch (``consumer.fresh_site_state``), in a thread of its
		own as the worker's handler thread is, so this test's own ``frappe.local`` is left alone."""
		site, sites_path = frappe.local.site, frappe.local.sites_path
		seen: dict = {}

		def run():
			try:
				frappe.init(site=site, sites_path=sites_path)
				frappe.connect()
				db = frappe.local.db
				frappe.local.eda_compat_marker = 1
				compat.release_local()
				seen["marker_gone"] = getattr(frappe.local, "eda_compat_marker", None) is None
				frappe.init(site=site, sites_path=sites_path)
				frappe.local.db = db
				seen["site"] = frappe.local.site
				seen["query"] = frappe.db.sql("select 1")[0][0]
				db.close()
			except Exception as e:  # reported to the test's thread
				seen["error"] = repr(e)

		thread = threading.Thread(target=run)
		thread.start()
		thread.join(60)
		self.assertNotIn("error", seen)
		self.assertEqual(seen, {"marker_gone": True, "site": site, "query": 1})

	def test_count_field_counts_in_get_list_and_get_all(self):
		store = DocTypeStore(commit=False)
		store.save([incoming(f"compat-{i}", queue="eda.compat") for i in range(3)])
		filters = {"queue": "eda.compat"}
		for get in (frappe.get_all, frappe.get_list):
			[row] = get("EDA Message", filters=filters, fields=[compat.count_field("n")])
			self.assertEqual(int(row.n), 3)

	def test_grouped_counts(self):
		store = DocTypeStore(commit=False)
		store.save([incoming(f"compat-g-{i}", queue="eda.compat.g") for i in range(2)])
		rows = compat.grouped_counts("EDA Message", {"queue": "eda.compat.g"}, ["direction", "status"])
		self.assertEqual(
			[(r.direction, r.status, int(r.count)) for r in rows], [("Incoming", "Processed", 2)]
		)
