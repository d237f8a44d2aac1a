# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE
"""Reconciliation (anti-entropy) between two real sites with real workers and the real broker.

Runs on head.localhost (``EDA_HEAD_SITE`` names another) with ``EDA_PEER_SITES`` naming the peer first,
e.g. wh1.localhost (skipped otherwise). Everything
lives on its own DocType (``EDA Test Reconcile``), exchange (``rc.test``), destination, rule and
subscription, so other tests' workers on the same sites never see these messages. What the workers
must see is committed, and removed afterwards.
"""

from __future__ import annotations

import html
import json
import os
import subprocess
import time
import unittest
from typing import Any

import frappe
from frappe.tests.utils import FrappeTestCase

from frappe_eda.consumer import stop_process
from frappe_eda.tests import doctypes, two_sites
from frappe_eda.tests.two_sites import Peer, bench, wait_for

DOCTYPE = "EDA Test Reconcile"
EXCHANGE = "rc.test"
DESTINATION = "rc-test-destination"
SUBSCRIPTION = "rc-test-subscription"
# The peer is the first of EDA_PEER_SITES; the source is head.localhost unless EDA_HEAD_SITE names
# another (a bench whose sites are named head, wh1: EDA_HEAD_SITE=head EDA_PEER_SITES=wh1,wh2). Read at
# import, in the test's process and in the peer's (which inherits the environment).
PEER = (two_sites.peer_sites() or ["wh1.localhost"])[0]
HEAD = os.environ.get("EDA_HEAD_SITE") or "head.localhost"
DEFINITIONS = [
	doctypes.doctype(
		DOCTYPE,
		[doctypes.field("title", reqd=1, unique=1), doctypes.field("description", "Small Text")],
		autoname="field:title",
	)
]


# --- run on either site (the peer through ``two_sites.serve``) ------------------------------------------


def ensure_doctype() -> None:
	doctypes.ensure_doctypes(DEFINITIONS)


def cleanup() -> None:
	for doctype, field in (
		("EDA Replica", "subscription"),
		("EDA Message", "queue"),
		("EDA Error", "queue"),
	):
		frappe.db.delete(doctype, {field: ["like", "%rc%test%"]})
	frappe.db.delete("EDA Message", {"exchange": EXCHANGE})
	frappe.db.delete("EDA Message", {"reference_doctype": DOCTYPE})
	frappe.db.delete("EDA Replica", {"document_type": DOCTYPE})
	frappe.db.delete("EDA Event Rule", {"document_type": DOCTYPE})
	frappe.db.delete("EDA Destination", {"name": DESTINATION})
	if frappe.db.exists("EDA Subscription", SUBSCRIPTION):
		frappe.delete_doc("EDA Subscription", SUBSCRIPTION, force=True, ignore_permissions=True)
	frappe.db.delete("Notification Log", {"document_type": "EDA Subscription", "document_name": SUBSCRIPTION})
	if frappe.db.table_exists(DOCTYPE):
		frappe.db.delete(DOCTYPE)
	frappe.db.commit()
	from frappe_eda.outbox.rules import clear_rules_cache

	clear_rules_cache()


def drop_doctype() -> None:
	doctypes.drop_doctypes([DOCTYPE])


def make_subscription(source: str) -> None:
	doc = frappe.new_doc("EDA Subscription")
	doc.update(
		{
			"subscription_name": SUBSCRIPTION,
			"enabled": 1,
			"source_doctype": DOCTYPE,
			"document_type": DOCTYPE,
			"source": source,
			"sender_check": "Trusted Network",  # the test's sites share one broker user
			"routing_key_patterns": "rc.eda_test_reconcile.*",
			"exchange": EXCHANGE,
			"match_by": "Source Name",
			"follow_deletes": 1,
			"copy_unlisted": 1,
			"link_policy": "Ignore",
		}
	)
	doc.insert(ignore_permissions=True)


def get_value(doctype: str, name: str, field: str) -> Any:
	return frappe.db.get_value(doctype, name, field)


def exists(doctype: str, name: str) -> bool:
	return bool(frappe.db.exists(doctype, name))


def delete(doctype: str, name: str) -> None:
	frappe.db.delete(doctype, {"name": name})


def applied(names: list[str]) -> int:
	return frappe.db.count(
		"EDA Replica", {"subscription": SUBSCRIPTION, "source_name": ["in", names], "status": "Applied"}
	)


def subscription_outcome() -> dict:
	row = frappe.db.get_value(
		"EDA Subscription",
		SUBSCRIPTION,
		[
			"last_reconciled_at",
			"last_reconcile_differed",
			"last_reconcile_healed",
			"last_reconcile_unhealed",
			"last_reconcile_why",
			"reconcile_runs_with_drift",
			"reconcile_state",
		],
		as_dict=True,
	)
	row["state"] = json.loads(row.pop("reconcile_state") or "{}")
	return row


def alerts() -> int:
	return frappe.db.count(
		"Notification Log", {"document_type": "EDA Subscription", "document_name": SUBSCRIPTION}
	)


def rows(n: int) -> list[tuple[str, str]]:
	return [(f"rc-{i:06d}", f"row {i} of the reconciliation benchmark") for i in range(n)]


def bulk_fill(n: int, replicas_of: str | None = None, skip: int = 0, wrong: int = 0) -> dict:
	"""``n`` rows by bulk SQL (no events); with ``replicas_of`` (the source) also their EDA Replica rows
	with the source's content hash, leaving out the copies of the first ``skip`` names and giving the
	next ``wrong`` ones another hash: ``skip + wrong`` documents out of step."""
	from frappe_eda.replication.content import content_hash, hashed_columns
	from frappe_eda.replication.replicas import replica_name

	now = frappe.utils.now_datetime()
	data = rows(n)
	copies = data[skip:] if replicas_of else data
	frappe.db.bulk_insert(
		DOCTYPE,
		["name", "title", "description", "creation", "modified", "owner", "modified_by", "docstatus", "idx"],
		[(t, t, d, now, now, "Administrator", "Administrator", 0, 0) for t, d in copies],
		chunk_size=5000,
	)
	if replicas_of:
		columns = hashed_columns(DOCTYPE)
		values = []
		for i, (title, description) in enumerate(data):
			content = content_hash({"title": title, "description": description}, columns)
			if skip <= i < skip + wrong:
				content = "0" * 24
			values.append(
				(
					replica_name(SUBSCRIPTION, replicas_of, title),
					SUBSCRIPTION,
					"Applied",
					replicas_of,
					DOCTYPE,
					title,
					DOCTYPE,
					title,
					content,
					"on_update",
					now,
					now,
					now,
					"Administrator",
					"Administrator",
				)
			)
		frappe.db.bulk_insert(
			"EDA Replica",
			[
				"name",
				"subscription",
				"status",
				"source",
				"source_doctype",
				"source_name",
				"document_type",
				"local_name",
				"source_hash",
				"last_event",
				"applied_at",
				"creation",
				"modified",
				"owner",
				"modified_by",
			],
			values,
			chunk_size=5000,
		)
	frappe.db.commit()
	return {"rows": len(copies)}


def clear_rows() -> None:
	frappe.db.delete(DOCTYPE)
	frappe.db.delete("EDA Replica", {"document_type": DOCTYPE})
	frappe.db.commit()


# --- the tests -------------------------------------------------------------------------------------------


@unittest.skipUnless(
	PEER in two_sites.peer_sites(), "needs EDA_PEER_SITES naming a second real site, e.g. wh1.localhost"
)
class TestReconcile(FrappeTestCase):
	@classmethod
	def setUpClass(cls):
		super().setUpClass()
		if frappe.local.site != HEAD:
			raise unittest.SkipTest(f"runs on {HEAD}")
		cls.sites_path = os.path.abspath(frappe.local.sites_path)
		cls.logs = os.path.join(cls.sites_path, "..", "logs")
		cls.peer = Peer(PEER, cls.sites_path, os.path.join(cls.logs, "rc-peer.log"), module=__name__)
		cls.workers: list[subprocess.Popen] = []
		frappe.db.rollback()
		# head takes the peer's requests although both share one broker user (a trusted network)
		cls.saved_trusted_network = frappe.db.get_single_value("EDA Settings", "trusted_network")
		frappe.db.set_single_value("EDA Settings", "trusted_network", 1)
		cleanup()
		cls.peer.cleanup()
		ensure_doctype()
		cls.peer.ensure_doctype()
		frappe.get_doc(
			{
				"doctype": "EDA Destination",
				"destination_name": DESTINATION,
				"exchange": EXCHANGE,
				"routing_key": "rc.{type}",
				"target_servers": PEER,
			}
		).insert(ignore_permissions=True)
		frappe.get_doc(
			{
				"doctype": "EDA Event Rule",
				"document_type": DOCTYPE,
				"event": "on_update",
				"destination": DESTINATION,
			}
		).insert(ignore_permissions=True)
		frappe.db.commit()
		from frappe_eda.outbox.rules import clear_rules_cache

		clear_rules_cache()
		cls.peer.make_subscription(HEAD)
		for site in (HEAD, PEER):
			log_path = os.path.join(cls.logs, f"rc-worker-{site}.log")
			open(log_path, "w").close()
			cls.workers.append(two_sites.spawn_worker(site, cls.sites_path, log_path))
			wait_for(
				lambda p=log_path: "eda.reconcile." in open(p).read(), 90, f"the {site} worker to consume"
			)
		cls.names = []
		for i in range(5):
			doc = frappe.get_doc({"doctype": DOCTYPE, "title": f"rc-doc-{i}", "description": f"first {i}"})
			doc.insert(ignore_permissions=True)
			cls.names.append(doc.name)
		frappe.db.commit()
		wait_for(lambda: cls.peer.applied(cls.names) == 5, 60, "the copies on wh1")

	@classmethod
	def tearDownClass(cls):
		for worker in cls.workers:
			stop_process(worker)
		frappe.db.rollback()
		cleanup()
		drop_doctype()
		frappe.db.set_single_value("EDA Settings", "trusted_network", cls.saved_trusted_network or 0)
		frappe.db.commit()
		cls.peer.cleanup()
		cls.peer.drop_doctype()
		cls.peer.close()
		cls.delete_queues()
		super().tearDownClass()

	@classmethod
	def delete_queues(cls):
		"""The subscription's queue and both reconciliation queues, with their retry and dead queues."""
		from frappe_eda.replication import reconcile
		from frappe_eda.settings import load_settings

		settings = load_settings()
		two_sites.delete_queues(
			settings.broker.url,
			[
				two_sites.queue_of(SUBSCRIPTION),
				reconcile._queue(reconcile.KEY_PREFIX, HEAD, EXCHANGE, settings.exchange),
				reconcile._queue(reconcile.REPLY_PREFIX, PEER, EXCHANGE, settings.exchange),
			],
		)

	def reconcile(self, *args: str, timeout: int = 90) -> tuple[str, dict]:
		done = subprocess.run(
			bench(PEER, "eda", "reconcile", DOCTYPE, "--wait", "--timeout", str(timeout), *args),
			cwd=self.sites_path,
			capture_output=True,
			text=True,
			timeout=420,
		)
		self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
		return done.stdout, self.peer.subscription_outcome()

	def test_1_a_raw_sql_update_on_the_source_is_found_and_healed(self):
		name = self.names[1]
		frappe.db.sql(f"update `tab{DOCTYPE}` set description=%s where name=%s", ("changed by SQL", name))
		frappe.db.commit()
		out, outcome = self.reconcile()
		self.assertIn("resent 1, gone 0", out)
		self.assertIn("healed 1, not healed 0", out)
		self.assertEqual(self.peer.get_value(DOCTYPE, name, "description"), "changed by SQL")
		self.assertEqual(
			(
				outcome["last_reconcile_differed"],
				outcome["last_reconcile_healed"],
				outcome["last_reconcile_unhealed"],
			),
			(1, 1, 0),
		)
		self.assertTrue(outcome["last_reconciled_at"])
		state = outcome["state"]
		self.assertEqual((state["differing"], state["resends"], state["subscriber_messages"]), (1, 1, 2))
		print(f"\nraw SQL update healed:\n{out}")

	def test_2_a_copy_deleted_by_hand_comes_back(self):
		name = self.names[2]
		self.peer.delete(DOCTYPE, name)
		self.assertFalse(self.peer.exists(DOCTYPE, name))
		out, outcome = self.reconcile()
		self.assertIn("resent 1, gone 0", out)
		self.assertTrue(self.peer.exists(DOCTYPE, name))
		self.assertEqual(self.peer.get_value(DOCTYPE, name, "description"), "first 2")
		self.assertEqual((outcome["last_reconcile_healed"], outcome["last_reconcile_unhealed"]), (1, 0))

	def test_3_nothing_differs_sends_only_the_digest(self):
		out, outcome = self.reconcile()
		self.assertIn("differing 0", out)
		self.assertIn("resent 0, gone 0", out)
		state = outcome["state"]
		self.assertEqual((state["subscriber_messages"], state["resends"]), (1, 0))
		self.assertEqual(state["source_messages"], 1)  # the one empty listing that closes the run
		self.assertEqual((outcome["last_reconcile_differed"], outcome["reconcile_runs_with_drift"]), (0, 0))
		print(f"\nnothing differs:\n{out}")

	def test_4_a_document_gone_at_the_source_is_deleted_here(self):
		name = self.names[3]
		frappe.db.sql(f"delete from `tab{DOCTYPE}` where name=%s", name)  # no on_trash event
		frappe.db.commit()
		out, _outcome = self.reconcile()
		self.assertIn("resent 0, gone 1 (deleted 1)", out)
		self.assertFalse(self.peer.exists(DOCTYPE, name))

	def test_5_drift_in_two_runs_in_a_row_alerts(self):
		for i, name in enumerate(self.names[:1]):
			frappe.db.sql(f"update `tab{DOCTYPE}` set description=%s where name=%s", (f"drift {i}", name))
		frappe.db.commit()
		before = self.peer.subscription_outcome()["reconcile_runs_with_drift"] or 0
		self.reconcile()
		frappe.db.sql(f"update `tab{DOCTYPE}` set description='drift again' where name=%s", self.names[0])
		frappe.db.commit()
		_out, outcome = self.reconcile()
		self.assertEqual(outcome["reconcile_runs_with_drift"], before + 2)
		self.assertGreaterEqual(outcome["reconcile_runs_with_drift"], 2)
		self.assertGreaterEqual(self.peer.alerts(), 1)

	def test_6_a_hostile_digest_is_dead_lettered_and_nothing_is_resent(self):
		from frappe_eda.outbox import publish
		from frappe_eda.replication.reconcile import DIGEST_TYPE, request_key

		sent = publish(
			DIGEST_TYPE,
			{
				"run": "x" * 10,
				"subscription": SUBSCRIPTION,
				"server": HEAD,
				"doctype": DOCTYPE,
				"buckets": "many",
				"digest": [1, 2],
			},
			exchange=EXCHANGE,
			routing_key=request_key(HEAD),
		)
		frappe.db.commit()

		def dead():
			frappe.db.rollback()
			return frappe.db.get_value(
				"EDA Message",
				{"message_id": sent.id, "direction": "Incoming", "status": "Dead"},
				["last_error", "exception_type"],
				as_dict=True,
			)

		row = wait_for(dead, 60, "the hostile digest dead-lettered")
		self.assertIn("'buckets' is 'many', not a whole number", html.unescape(row.last_error))
		self.assertIn("InvalidReconcileMessage", row.exception_type)
		self.assertFalse(frappe.db.exists("EDA Message", {"direction": "Outgoing", "causation_id": sent.id}))

	def test_7_cost_for_100000_documents_with_10_out_of_step(self):
		n = int(os.environ.get("EDA_RECONCILE_ROWS", "100000"))
		frappe.db.delete(DOCTYPE)
		frappe.db.commit()
		self.peer.clear_rows()
		started = time.monotonic()
		bulk_fill(n)
		self.peer.bulk_fill(n, HEAD, 5, 5)  # 5 copies missing, 5 with another content
		filled = time.monotonic() - started
		# other agents' wh1 workers may compete for the queue: a deadlock between two of them is retried
		# after 1, 5, 30 and 120 s (EDA Settings), so wait long enough for the retries
		out, outcome = self.reconcile(timeout=300)
		state = outcome["state"]
		print(f"\n{n} documents, 10 out of step (filled in {filled:.0f}s):\n{out}")
		print(
			json.dumps(
				{
					k: state[k]
					for k in (
						"local_documents",
						"buckets",
						"compared",
						"differing",
						"listed",
						"resends",
						"subscriber_messages",
						"subscriber_bytes",
						"source_messages",
						"source_bytes",
					)
				}
			)
		)
		self.assertIn("resent 10, gone 0", out)
		self.assertIn("healed 10, not healed 0", out)
		self.assertEqual(state["local_documents"], n - 5)
		self.peer.clear_rows()
		frappe.db.delete(DOCTYPE)
		frappe.db.commit()
