# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE
"""Capture of the changes that do not go through a plain save, between real sites with real workers.

Issue #14: a Data Import of a few hundred documents arrives in full (and a rule that skips imports sends
none of it), a ``db_set`` arrives (also one that keeps ``modified``), and a rename arrives, after which
updates of the new name land on the renamed copy. Run on the source site, naming the peers (sites of the
same bench on the source's broker vhost, frappe_eda installed, ``eda_enabled`` set); only the first peer
is used::

    cd sites && EDA_PEER_SITES=wh1.localhost,wh2.localhost CI=1 ../env/bin/python -m \\
        frappe.utils.bench_helper frappe --site head.localhost run-tests --app frappe_eda \\
        --module frappe_eda.tests.test_two_sites_capture

Without ``EDA_PEER_SITES`` the tests are skipped. No ``eda worker`` may run on those sites: the test starts
its own on the source and the first peer, and stops them. Everything of this test has its own names (the
destination ``EDA Cap wh1``, routing keys ``cap1.{type}``, the subscription ``EDA Cap wh1 Items``), so no
other test's rules or subscriptions see its messages. The DocTypes are those of ``two_sites`` (created when
missing, with ``allow_rename`` set on ``EDA Test Item`` for the rename); the tear-down removes what the run
made on every site. The tests commit: the workers run in other processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time

import frappe

from frappe_eda.tests import two_sites
from frappe_eda.tests.two_sites import ITEM, PEERS_VARIABLE, TEST_DOCTYPES, Peer, queue_of, wait_for

DESTINATION = "EDA Cap wh1"
SUBSCRIPTION = "EDA Cap wh1 Items"
ROUTING_KEY = "cap1.{type}"
PATTERN = "cap1.eda_test_item.*"
SKIP_WAREHOUSE = "CAP-SKIP"  # rows only the rule with Skip Imports covers
IMPORTED, SKIPPED = 300, 20
TIMEOUT = 90
IMPORT_TIMEOUT = 300


def set_allow_rename(value: int) -> int:
	"""Run on a site (``bench execute``): set ``allow_rename`` of EDA Test Item; the value it had."""
	before = frappe.db.get_value("DocType", ITEM, "allow_rename")
	frappe.db.set_value("DocType", ITEM, "allow_rename", int(value))
	frappe.db.commit()
	frappe.clear_cache(doctype=ITEM)
	return int(before or 0)


class TestTwoSitesCapture(two_sites.PeerSitesTestCase):
	skip_reason = (
		f"set {PEERS_VARIABLE}=wh1.localhost,wh2.localhost (other sites of this bench on this "
		"site's broker vhost) to run the two-site capture tests (Data Import, db_set, rename)"
	)
	log_prefix = "two-sites-capture"
	code_prefix = "CAP"

	# --- set-up and tear-down -------------------------------------------------------------------------

	@classmethod
	def _set_up(cls):
		cls.started = frappe.utils.now_datetime()
		cls.pids: dict[str, list[int]] = {}
		cls.wh1 = None
		cls.created: dict[str, list[str]] = {}
		cls.allow_rename_before: dict[str, int] = {}
		cls.imports: list[str] = []
		cls.files: list[str] = []
		cls.wh1 = Peer(cls.wh1_site, cls.sites_path, cls._log(f"{cls.wh1_site}-helper"))
		cls.created[cls.head] = two_sites.ensure_doctypes()
		cls.created[cls.wh1_site] = cls.wh1.ensure_doctypes()
		cls._refuse_other_replication()
		for site in (cls.head, cls.wh1_site):
			cls.allow_rename_before[site] = cls._set_allow_rename(site, 1)
		if not frappe.db.exists("EDA Destination", DESTINATION):
			frappe.get_doc(
				{
					"doctype": "EDA Destination",
					"destination_name": DESTINATION,
					"routing_key": ROUTING_KEY,
					"target_servers": cls.wh1_site,
					"request_receipts": 0,
				}
			).insert()
		rules = [
			("on_update", f"doc.warehouse != '{SKIP_WAREHOUSE}'", 0),
			("on_update", f"doc.warehouse == '{SKIP_WAREHOUSE}'", 1),  # Skip Imports
			("on_change", "", 0),
			("after_rename", "", 0),
		]
		for event, condition, skip_imports in rules:
			frappe.get_doc(
				{
					"doctype": "EDA Event Rule",
					"document_type": ITEM,
					"event": event,
					"destination": DESTINATION,
					"condition": condition,
					"skip_imports": skip_imports,
				}
			).insert()
		frappe.db.commit()
		from frappe_eda.outbox.rules import clear_rules_cache

		clear_rules_cache()
		cls.wh1.upsert_subscription(
			name=SUBSCRIPTION,
			values={
				"source_doctype": ITEM,
				"source": cls.head,
				"routing_key_patterns": PATTERN,
				# strict: a copy that looks changed on wh1 (a rename that moved its modified) is not
				# overwritten but recorded as a Conflict, which the tests would see
				"conflict_policy": "Skip and Record",
				"link_policy": "Wait and Retry",
			},
		)
		for site in (cls.wh1_site, cls.head):
			cls._start_worker(site)
		wait_for(lambda: cls._consumed(queue_of(SUBSCRIPTION)), TIMEOUT, f"a consumer of {SUBSCRIPTION}")

	@classmethod
	def _refuse_other_replication(cls):
		"""Another run's (or a leftover's) rules or subscriptions on EDA Test Item would write the same
		documents: refuse rather than mix."""
		rules = frappe.get_all(
			"EDA Event Rule",
			filters={"document_type": ITEM, "enabled": 1, "destination": ["!=", DESTINATION]},
			pluck="name",
		)
		subscriptions = [
			s["name"]
			for s in cls.wh1.get_all(
				doctype="EDA Subscription", filters={"source_doctype": ITEM, "enabled": 1}
			)
			if s["name"] != SUBSCRIPTION
		]
		if rules or subscriptions:
			raise AssertionError(
				f"other replication of {ITEM} is configured (rules on {cls.head}: {rules}; subscriptions "
				f"on {cls.wh1_site}: {subscriptions}): remove it first"
			)

	@classmethod
	def _tear_down(cls):
		cls._stop_workers()
		frappe.db.rollback()
		problems = []
		queue = queue_of(SUBSCRIPTION)
		if cls.wh1 is not None:
			try:
				cls.wh1.cleanup(subscriptions=[SUBSCRIPTION], queues=[queue])
				cls.wh1.delete(doctype="Comment", filters={"reference_doctype": ITEM})
				for pid in cls.pids.get(cls.wh1_site, []):
					cls.wh1.delete(
						doctype="EDA Worker", filters={"pid": pid, "creation": [">=", cls.started]}
					)
			except Exception as e:
				problems.append(f"{cls.wh1_site}: {e}")
		try:
			for name in cls.imports:
				frappe.delete_doc("Data Import", name, force=True, ignore_missing=True)  # and its log
			for name in cls.files:
				frappe.delete_doc("File", name, force=True, ignore_missing=True)
			frappe.db.delete("EDA Event Rule", {"destination": DESTINATION})
			frappe.db.delete("EDA Message", {"routing_key": ["like", "cap1.%"]})
			frappe.db.delete("Comment", {"reference_doctype": ITEM})
			two_sites.cleanup(subscriptions=[], queues=[])
			frappe.delete_doc("EDA Destination", DESTINATION, force=True, ignore_missing=True)
			for pid in cls.pids.get(cls.head, []):
				frappe.db.delete("EDA Worker", {"pid": pid, "creation": [">=", cls.started]})
			frappe.db.commit()
			from frappe_eda.outbox.rules import clear_rules_cache

			clear_rules_cache()
		except Exception as e:
			problems.append(f"{cls.head}: {e}")
		for site in (cls.head, cls.wh1_site):
			try:
				cls._restore_doctypes(site)
			except Exception as e:
				problems.append(f"{site}: {e}")
		cls._delete_queues([queue])
		if cls.wh1 is not None:
			cls.wh1.close()
		if problems:
			print("clean-up problems:\n" + "\n".join(problems))

	@classmethod
	def _restore_doctypes(cls, site):
		"""Drop the test DocTypes this run created on ``site``; otherwise put ``allow_rename`` back."""
		created = cls.created.get(site, [])
		if set(created) == set(TEST_DOCTYPES) and not os.environ.get("EDA_KEEP_TEST_DOCTYPES"):
			if site == cls.head:
				two_sites.drop_doctypes()
			else:
				cls.wh1.drop_doctypes()
		elif site in cls.allow_rename_before:
			cls._set_allow_rename(site, cls.allow_rename_before[site])

	@classmethod
	def _set_allow_rename(cls, site, value):
		if site == cls.head:
			return set_allow_rename(value)
		done = subprocess.run(
			two_sites.bench(
				site,
				"execute",
				f"{__name__}.set_allow_rename",
				"--kwargs",
				json.dumps({"value": value}),
			),
			cwd=cls.sites_path,
			capture_output=True,
			text=True,
		)
		if done.returncode != 0:
			raise AssertionError(f"set_allow_rename on {site} failed:\n{done.stdout}\n{done.stderr}")
		return int((done.stdout.strip().splitlines() or ["0"])[-1])

	# --- workers and the broker ------------------------------------------------------------------------

	@classmethod
	def _start_worker(cls, site):
		worker = super()._start_worker(site)
		cls.pids.setdefault(site, []).append(worker.pid)
		return worker

	def assert_alone(self, seen=None):
		"""Only this test's wh1 worker consumes the queue: a worker someone else started on wh1 would
		consume this subscription too, competing for its messages."""
		seen = self._consumers(queue_of(SUBSCRIPTION)) if seen is None else seen
		self.assertLessEqual(
			seen,
			1,
			f"{seen} consumers on {queue_of(SUBSCRIPTION)}: an eda worker this test did not start "
			f"runs on {self.wh1_site}",
		)

	# --- on the source ---------------------------------------------------------------------------------

	def setUp(self):
		super().setUp()
		self.assert_alone()

	def outgoing(self, name):
		frappe.db.rollback()
		return two_sites.messages(
			{"direction": "Outgoing", "reference_doctype": ITEM, "reference_name": name}
		)

	def sent_payload(self, message_id):
		body = frappe.db.get_value("EDA Message", {"message_id": message_id}, "payload")
		return json.loads(body)["payload"]

	# --- on the peer -----------------------------------------------------------------------------------

	def wait_doc(self, name, check=lambda d: True, what=""):
		return wait_for(
			lambda: (lambda d: d if d and check(d) else None)(self.wh1.get_doc(doctype=ITEM, name=name)),
			TIMEOUT,
			f"{ITEM} {name} on {self.wh1_site} {what}",
		)

	def wait_replica(self, name, status, check=lambda r: True):
		return wait_for(
			lambda: (lambda r: r if r and r["status"] == status and check(r) else None)(
				self.wh1.replica(subscription=SUBSCRIPTION, source_name=name)
			),
			TIMEOUT,
			f"the EDA Replica of {name} on {self.wh1_site} to be {status}",
		)

	def incoming(self, message_ids):
		return self.wh1.messages(filters={"direction": "Incoming", "message_id": ["in", message_ids]})

	def assert_processed(self, sent):
		ids = [m["message_id"] for m in sent]
		received = wait_for(
			lambda: (
				lambda r: r if len(r) == len(ids) and {m["status"] for m in r} == {"Processed"} else None
			)(self.incoming(ids)),
			TIMEOUT,
			f"{len(ids)} message(s) processed on {self.wh1_site}",
		)
		self.assertEqual({m["queue"] for m in received}, {queue_of(SUBSCRIPTION)})
		return received

	# --- a) Data Import ---------------------------------------------------------------------------------

	def test_a_data_import_arrives_in_full_and_skip_imports_sends_none(self):
		from frappe.core.doctype.data_import.data_import import start_import

		rows, imported, skipped = [], [], []
		for n in range(IMPORTED + SKIPPED):
			if n % 16 == 7 and len(skipped) < SKIPPED:  # spread through the file
				code, warehouse = self.code(f"skip{len(skipped):02d}"), SKIP_WAREHOUSE
				skipped.append(code)
			else:
				code, warehouse = self.code(f"imp{len(imported):03d}"), "WH1"
				imported.append(code)
			rows.append(f"{code},Imported {code},{warehouse}")
		while len(imported) < IMPORTED:
			code = self.code(f"imp{len(imported):03d}")
			imported.append(code)
			rows.append(f"{code},Imported {code},WH1")
		self.assertEqual((len(imported), len(skipped)), (IMPORTED, SKIPPED))
		content = "Item Code,Item Name,Warehouse\n" + "\n".join(rows) + "\n"
		file = frappe.get_doc(
			{
				"doctype": "File",
				"file_name": f"eda-cap-{self.marker}.csv",
				"content": content,
				"is_private": 1,
			}
		).insert(ignore_permissions=True)
		self.files.append(file.name)
		data_import = frappe.get_doc(
			{
				"doctype": "Data Import",
				"reference_doctype": ITEM,
				"import_type": "Insert New Records",
				"import_file": file.file_url,
			}
		).insert()
		self.imports.append(data_import.name)
		frappe.db.commit()

		applied = lambda: self.wh1.count(  # noqa: E731
			doctype="EDA Replica",
			filters={"subscription": SUBSCRIPTION, "source_name": ["in", imported], "status": "Applied"},
		)
		consumers = [self._consumers(queue_of(SUBSCRIPTION))]
		samples: list[tuple[float, int]] = []  # (time, copies applied on wh1)
		importing = threading.Event()
		importing.set()
		problems: list[BaseException] = []

		def watch():  # wh1 while the import runs: its applied count, and the queue's consumers
			try:
				while importing.is_set():
					samples.append((time.monotonic(), applied()))
					if len(samples) % 8 == 0:
						consumers.append(self._consumers(queue_of(SUBSCRIPTION)))
					time.sleep(0.25)
			except BaseException as e:
				problems.append(e)

		begin = time.monotonic()
		watcher = threading.Thread(target=watch, daemon=True)
		watcher.start()
		try:
			start_import(data_import.name)  # what the background job runs (Importer.import_data)
		finally:
			imported_at = time.monotonic()
			importing.clear()
			watcher.join(TIMEOUT)
		self.assertEqual(problems, [])
		self.assertFalse(frappe.flags.in_import)
		data_import.reload()
		self.assertEqual(data_import.status, "Success", data_import.template_warnings)
		self.assertEqual(frappe.db.count(ITEM, {"name": ["in", imported + skipped]}), IMPORTED + SKIPPED)
		at_import_end = samples[-1][1] if samples else 0
		while time.monotonic() - imported_at < IMPORT_TIMEOUT:
			samples.append((time.monotonic(), applied()))
			if samples[-1][1] >= IMPORTED:
				break
			if len(samples) % 8 == 0:
				consumers.append(self._consumers(queue_of(SUBSCRIPTION)))
			time.sleep(0.25)
		arrived = [t for t, n in samples if n >= IMPORTED]
		first = next((t for t, n in samples if n > 0), None)
		print(
			f"\nData Import of {IMPORTED + SKIPPED} rows on {self.head}: {imported_at - begin:.1f} s "
			f"({(IMPORTED + SKIPPED) / (imported_at - begin):.0f} rows/s); first copy on {self.wh1_site} "
			f"at +{(first - begin) if first else float('nan'):.1f} s; {at_import_end} of {IMPORTED} "
			"copies there when the import ended; "
			+ (
				f"the last at +{arrived[0] - begin:.1f} s ({arrived[0] - imported_at:.1f} s after the import)"
				if arrived
				else f"only {samples[-1][1]} after {IMPORT_TIMEOUT} s more"
			)
		)
		self.assert_alone(max(consumers))
		self.assertTrue(arrived, f"only {samples[-1][1] if samples else 0} of {IMPORTED} applied on wh1")

		# each imported row published once, by the rule without Skip Imports, and was applied once
		frappe.db.rollback()
		sent = frappe.get_all(
			"EDA Message",
			filters={"direction": "Outgoing", "reference_doctype": ITEM, "reference_name": ["in", imported]},
			fields=["message_id", "reference_name", "message_type", "routing_key"],
		)
		self.assertEqual(sorted(m["reference_name"] for m in sent), sorted(imported))
		self.assertEqual({m["message_type"] for m in sent}, {"eda_test_item.on_update"})
		self.assertEqual({m["routing_key"] for m in sent}, {"cap1.eda_test_item.on_update"})
		replicas = self.wh1.get_all(
			doctype="EDA Replica",
			filters={"subscription": SUBSCRIPTION, "source_name": ["in", imported]},
			fields=["source_name", "local_name", "status", "last_event"],
		)
		self.assertEqual(sorted(r["source_name"] for r in replicas), sorted(imported))
		self.assertEqual({(r["status"], r["last_event"]) for r in replicas}, {("Applied", "on_update")})
		self.assertTrue(all(r["local_name"] == r["source_name"] for r in replicas))
		copies = self.wh1.get_all(
			doctype=ITEM, filters={"name": ["in", imported]}, fields=["name", "item_name", "warehouse"]
		)
		self.assertEqual(len(copies), IMPORTED)
		self.assertTrue(all(c["item_name"] == f"Imported {c['name']}" for c in copies), copies[:3])
		self.assert_processed(sent)

		# the rule with Skip Imports sent nothing of the import, but does send a user's insert
		control = self.make_item("skip-control", warehouse=SKIP_WAREHOUSE, item_name="typed in")
		self.wait_doc(control.name)
		self.wait_replica(control.name, "Applied")  # later on the same queue than any import message
		frappe.db.rollback()
		leaked = frappe.get_all(
			"EDA Message",
			filters={"reference_doctype": ITEM, "reference_name": ["in", skipped]},
			fields=["message_id", "reference_name", "status"],
		)
		self.assertEqual(leaked, [])
		self.assertEqual(self.wh1.count(doctype=ITEM, filters={"name": ["in", skipped]}), 0)
		self.assertEqual(
			self.wh1.count(
				doctype="EDA Replica", filters={"subscription": SUBSCRIPTION, "source_name": ["in", skipped]}
			),
			0,
		)
		self.assertEqual([w for w in self.workers.values() if w.poll() is not None], [], "a worker exited")

	# --- b) db_set --------------------------------------------------------------------------------------

	def test_b_db_set_arrives_as_on_change_also_keeping_modified(self):
		item = self.make_item("dbset", item_name="before db_set", notes="kept")
		self.wait_replica(item.name, "Applied")

		doc = frappe.get_doc(ITEM, item.name)
		doc.db_set("item_name", "changed by db_set")
		frappe.db.commit()
		copy = self.wait_doc(item.name, lambda d: d["item_name"] == "changed by db_set", "after db_set")
		self.assertEqual(copy["notes"], "kept")
		first = self.wait_replica(item.name, "Applied", lambda r: r["last_event"] == "on_change")
		sent = self.outgoing(item.name)
		self.assertEqual(
			[m["message_type"] for m in sent], ["eda_test_item.on_update", "eda_test_item.on_change"]
		)
		self.assertEqual(sent[-1]["routing_key"], "cap1.eda_test_item.on_change")
		self.assertEqual(first["last_message"], sent[-1]["message_id"])
		self.assertEqual(self.sent_payload(sent[-1]["message_id"])["_eda_changed"], ["item_name"])
		received = self.assert_processed(sent)
		self.assertEqual(
			[m["message_type"] for m in received], ["eda_test_item.on_update", "eda_test_item.on_change"]
		)

		# update_modified=False: the same modified as the change before, applied anyway (a repair)
		modified = frappe.db.get_value(ITEM, item.name, "modified")
		doc = frappe.get_doc(ITEM, item.name)
		doc.db_set("item_name", "db_set keeping modified", update_modified=False)
		frappe.db.commit()
		self.assertEqual(frappe.db.get_value(ITEM, item.name, "modified"), modified)
		self.wait_doc(
			item.name, lambda d: d["item_name"] == "db_set keeping modified", "after the 2nd db_set"
		)
		sent = self.outgoing(item.name)
		self.assertEqual(len(sent), 3, sent)
		second = self.wait_replica(
			item.name, "Applied", lambda r: r["last_message"] == sent[-1]["message_id"]
		)
		self.assertEqual(second["source_version"], first["source_version"])
		self.assertEqual(second["last_event"], "on_change")
		self.assert_processed(sent)

		# and a save after it still lands (the copy is not seen as changed on wh1)
		self.update_item(item.name, notes="saved after db_set")
		copy = self.wait_doc(item.name, lambda d: d["notes"] == "saved after db_set", "after the save")
		self.assertEqual(copy["item_name"], "db_set keeping modified")
		self.wait_replica(item.name, "Applied", lambda r: r["last_event"] == "on_update")

	# --- c) rename --------------------------------------------------------------------------------------

	def test_c_rename_arrives_and_later_updates_land_on_the_renamed_copy(self):
		old, new = self.code("ren-old"), self.code("ren-new")
		self.make_item("ren-old", item_name="to be renamed")
		self.wait_doc(old)
		self.wait_replica(old, "Applied")

		renamed = frappe.rename_doc(ITEM, old, new, rebuild_search=False)
		frappe.db.commit()
		self.assertEqual(renamed, new)
		# Frappe renames Dynamic Links too: the insert's outbox row now names the new document
		self.assertEqual(self.outgoing(old), [])
		sent = self.outgoing(new)
		self.assertEqual(
			[m["message_type"] for m in sent], ["eda_test_item.on_update", "eda_test_item.after_rename"], sent
		)
		self.assertEqual(sent[-1]["routing_key"], "cap1.eda_test_item.after_rename")
		self.assertEqual(
			self.sent_payload(sent[-1]["message_id"])["_eda_rename"], {"old": old, "new": new, "merge": False}
		)
		wait_for(
			lambda: self.wh1.exists(doctype=ITEM, name=new) and not self.wh1.exists(doctype=ITEM, name=old),
			TIMEOUT,
			f"the copy renamed to {new} on {self.wh1_site}",
		)
		moved = self.wait_replica(new, "Applied")
		self.assertEqual(moved["local_name"], new)
		self.assertEqual(moved["last_event"], "after_rename")
		self.assertIn(f"renamed from {old}", moved["detail"])
		tombstone = self.wh1.replica(subscription=SUBSCRIPTION, source_name=old)
		self.assertEqual(tombstone["status"], "Deleted")
		self.assertIn(f"renamed to {new}", tombstone["detail"])

		# a db_set keeping modified right after the rename: the same modified the rename carried
		doc = frappe.get_doc(ITEM, new)
		doc.db_set("notes", "db_set after the rename", update_modified=False)
		frappe.db.commit()
		self.wait_doc(new, lambda d: d["notes"] == "db_set after the rename", "after a db_set")
		self.wait_replica(new, "Applied", lambda r: r["last_event"] == "on_change")

		self.update_item(new, item_name="updated after the rename")
		copy = self.wait_doc(new, lambda d: d["item_name"] == "updated after the rename", "updated")
		self.assertEqual(copy["item_code"], new)  # Frappe renames the field the name came from too
		replica = self.wait_replica(new, "Applied", lambda r: r["last_event"] == "on_update")
		self.assertEqual(replica["local_name"], new)
		self.assertFalse(self.wh1.exists(doctype=ITEM, name=old))
		self.assertEqual(self.wh1.count(doctype=ITEM, filters={"item_code": ["in", [old, new]]}), 1)
		rows = self.wh1.get_all(
			doctype="EDA Replica",
			filters={"subscription": SUBSCRIPTION, "source_name": ["in", [old, new]]},
			fields=["source_name", "status"],
		)
		self.assertEqual(
			sorted((r["source_name"], r["status"]) for r in rows), [(new, "Applied"), (old, "Deleted")]
		)
		self.assertEqual(self.wh1.replica(subscription=SUBSCRIPTION, source_name=old)["status"], "Deleted")
		sent = self.outgoing(new)
		self.assertEqual(len(sent), 4, sent)
		self.assert_processed(sent)
