# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE
"""No-code replication between real sites of one bench, through the real broker and real workers.

Run on the source site, naming the two peers (sites of the same bench, sharing the source's broker
vhost through ``eda_amqp_url``, with frappe_eda installed and ``eda_enabled`` set)::

    cd sites && EDA_PEER_SITES=wh1.localhost,wh2.localhost CI=1 ../env/bin/python -m \\
        frappe.utils.bench_helper frappe --site head.localhost run-tests --app frappe_eda \\
        --module frappe_eda.tests.test_two_sites

Without ``EDA_PEER_SITES`` the tests are skipped. No ``eda worker`` may run on the three sites: the
test starts its own (one per site) and stops them. The set-up creates the custom DocTypes ``EDA Test
Group``, ``EDA Test Item`` (child table ``EDA Test Item Price``) and the submittable ``EDA Test Order``
on every site, EDA Destinations and Event Rules on the source, EDA Subscriptions on the peers; the
tear-down deletes all of it (``EDA_KEEP_TEST_DOCTYPES=1`` keeps the DocTypes). The tests commit: the
workers run in other processes.

Evidence is what an operator would look at: the peer's documents, its EDA Replica rows and EDA
Messages, the source's EDA Receipts; always polled with a deadline.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time

import frappe

import frappe_eda
from frappe_eda.tests import two_sites
from frappe_eda.tests.two_sites import GROUP, ITEM, ORDER, PEERS_VARIABLE, Peer, queue_of, wait_for

SOURCE_WINS, SKIP = "Source Wins", "Skip and Record"
DEST_WH1, DEST_WH2 = "EDA Test wh1", "EDA Test wh2"
SUB_ITEMS, SUB_ORDERS, SUB_WH2_ITEMS = "EDA Test wh1 Items", "EDA Test wh1 Orders", "EDA Test wh2 Items"
WH1_SUBSCRIPTIONS, WH2_SUBSCRIPTIONS = [SUB_ITEMS, SUB_ORDERS], [SUB_WH2_ITEMS]
RETRY = {"retry_delays": "2,2,2,2,2,2", "max_attempts": 7}  # a missing link is retried for ~12 s
TIMEOUT = 90


class TestTwoSites(two_sites.PeerSitesTestCase):
	peers_needed = 2
	skip_reason = (
		f"set {PEERS_VARIABLE}=wh1.localhost,wh2.localhost (two other sites of this bench on this "
		"site's broker vhost) to run the two-site replication tests"
	)

	# --- set-up and tear-down -------------------------------------------------------------------------

	@classmethod
	def _set_up(cls):
		cls.peers: dict[str, Peer] = {}
		cls.wh2_site = cls.peer_sites[1]
		for site in (cls.wh1_site, cls.wh2_site):
			cls.peers[site] = Peer(site, cls.sites_path, cls._log(f"{site}-helper"))
		cls.wh1, cls.wh2 = cls.peers[cls.wh1_site], cls.peers[cls.wh2_site]
		two_sites.ensure_doctypes()
		cls.wh1.ensure_doctypes()
		cls.wh2.ensure_doctypes()
		cls.saved_retry = cls.wh1.settings()
		cls.wh1.settings(values=RETRY)
		cls._source_config()
		cls.wh1.upsert_subscription(name=SUB_ITEMS, values=cls._items_subscription(SKIP))
		cls.wh1.upsert_subscription(
			name=SUB_ORDERS,
			values={
				"source_doctype": ORDER,
				"source": cls.head,
				"routing_key_patterns": "wh1.eda_test_order.*",
				"conflict_policy": SOURCE_WINS,
			},
		)
		cls.wh2.upsert_subscription(
			name=SUB_WH2_ITEMS,
			values={
				"source_doctype": ITEM,
				"source": cls.head,
				"routing_key_patterns": "wh2.eda_test_item.*",
				"link_policy": "Create From Sent Documents",
				"field_rules": [
					{"action": "Map", "source_field": "item_name", "target_field": "description"},
					{"action": "Skip", "source_field": "notes"},
					{"action": "Constant", "target_field": "origin_label", "value": "from head"},
					{
						"action": "Constant",
						"target_field": "price_list",
						"value": "WH2",
						"child_table": "prices",
					},
				],
			},
		)
		for site in (cls.wh1_site, cls.wh2_site, cls.head):
			cls._start_worker(site)
		for subscription in (SUB_ITEMS, SUB_ORDERS, SUB_WH2_ITEMS):
			wait_for(
				lambda s=subscription: cls._consumed(queue_of(s)), TIMEOUT, f"a consumer of {subscription}"
			)

	@classmethod
	def _items_subscription(cls, policy):
		return {
			"source_doctype": ITEM,
			"source": cls.head,
			"routing_key_patterns": "wh1.eda_test_item.*",
			"conflict_policy": policy,
			"link_policy": "Wait and Retry",
		}

	@classmethod
	def _source_config(cls):
		"""On the source: two destinations, each for one warehouse, and the rules that feed them."""
		for name, server in ((DEST_WH1, cls.wh1_site), (DEST_WH2, cls.wh2_site)):
			if not frappe.db.exists("EDA Destination", name):
				frappe.get_doc(
					{
						"doctype": "EDA Destination",
						"destination_name": name,
						"routing_key": ("wh1" if name == DEST_WH1 else "wh2") + ".{type}",
						"target_servers": server,
						"request_receipts": 1,
					}
				).insert()
		rules = [(ITEM, event, DEST_WH1, "doc.warehouse == 'WH1'", 0) for event in ("on_update", "on_trash")]
		rules += [(ITEM, event, DEST_WH2, "doc.warehouse == 'WH2'", 1) for event in ("on_update", "on_trash")]
		rules += [
			(ORDER, event, DEST_WH1, "", 0) for event in ("on_update", "on_submit", "on_cancel", "on_trash")
		]
		for doctype, event, destination, condition, linked in rules:
			frappe.get_doc(
				{
					"doctype": "EDA Event Rule",
					"document_type": doctype,
					"event": event,
					"destination": destination,
					"condition": condition,
					"send_linked": linked,
				}
			).insert()
		frappe.db.commit()
		from frappe_eda.outbox.rules import clear_rules_cache

		clear_rules_cache()

	@classmethod
	def _tear_down(cls):
		cls._stop_workers()
		frappe.db.rollback()
		problems = []
		for site, peer in cls.peers.items():
			subscriptions = WH1_SUBSCRIPTIONS if site == cls.wh1_site else WH2_SUBSCRIPTIONS
			try:
				peer.cleanup(subscriptions=subscriptions, queues=[queue_of(s) for s in subscriptions])
				if site == cls.wh1_site and getattr(cls, "saved_retry", None):
					peer.settings(values=cls.saved_retry)
				if not os.environ.get("EDA_KEEP_TEST_DOCTYPES"):
					peer.drop_doctypes()
			except Exception as e:
				problems.append(f"{site}: {e}")
		try:
			frappe.db.delete("EDA Event Rule", {"destination": ["in", [DEST_WH1, DEST_WH2]]})
			frappe.db.delete("EDA Receipt", {"server": ["in", [cls.wh1_site, cls.wh2_site]]})
			two_sites.cleanup(subscriptions=[], queues=[])
			for name in (DEST_WH1, DEST_WH2):
				frappe.delete_doc("EDA Destination", name, force=True, ignore_missing=True)
			frappe.db.commit()
			if not os.environ.get("EDA_KEEP_TEST_DOCTYPES"):
				two_sites.drop_doctypes()
			from frappe_eda.outbox.rules import clear_rules_cache

			clear_rules_cache()
		except Exception as e:
			problems.append(f"{cls.head}: {e}")
		cls._delete_queues([queue_of(s) for s in WH1_SUBSCRIPTIONS + WH2_SUBSCRIPTIONS])
		for peer in cls.peers.values():
			peer.close()
		if problems:
			print("clean-up problems:\n" + "\n".join(problems))

	# --- workers ----------------------------------------------------------------------------------------

	# --- on a peer -------------------------------------------------------------------------------------

	def wait_replica(self, peer, subscription, name, status):
		return wait_for(
			lambda: (lambda r: r if r and r["status"] == status else None)(
				peer.replica(subscription=subscription, source_name=name)
			),
			TIMEOUT,
			f"the EDA Replica of {name} on {peer.site} to be {status}",
		)

	def incoming(self, peer, message_id):
		return peer.messages(filters={"direction": "Incoming", "message_id": message_id})

	# --- a) create and update ---------------------------------------------------------------------------

	def test_a_create_then_update_reaches_the_peer_with_child_rows(self):
		self.wh1.insert(doc={"doctype": GROUP, "group_name": f"G-{self.marker}-a"})
		frappe.get_doc({"doctype": GROUP, "group_name": f"G-{self.marker}-a"}).insert()
		item = self.make_item(
			"a",
			item_name="Widget",
			item_group=f"G-{self.marker}-a",
			prices=[{"price_list": "Retail", "rate": 10.5}, {"price_list": "Trade", "rate": 8}],
		)
		copy = self.wait_doc(self.wh1, ITEM, item.name)
		self.assertEqual(copy["item_name"], "Widget")
		self.assertEqual(copy["item_group"], f"G-{self.marker}-a")
		self.assertEqual(
			[(p["price_list"], p["rate"]) for p in copy["prices"]], [("Retail", 10.5), ("Trade", 8)]
		)

		item.reload()
		item.item_name = "Widget Mk2"
		item.prices[0].rate = 11
		item.append("prices", {"price_list": "Export", "rate": 7.25})
		item.save()
		frappe.db.commit()
		copy = self.wait_doc(self.wh1, ITEM, item.name, lambda d: d["item_name"] == "Widget Mk2", "updated")
		self.assertEqual(
			[(p["price_list"], p["rate"]) for p in copy["prices"]],
			[("Retail", 11), ("Trade", 8), ("Export", 7.25)],
		)
		replica = self.wait_replica(self.wh1, SUB_ITEMS, item.name, "Applied")
		self.assertEqual(replica["local_name"], item.name)
		self.assertEqual(replica["last_event"], "on_update")
		sent = self.outgoing(ITEM, item.name)
		self.assertEqual(len(sent), 2, sent)
		self.assertEqual(replica["last_message"], sent[-1]["message_id"])
		for message in sent:
			received = self.incoming(self.wh1, message["message_id"])
			self.assertEqual([m["status"] for m in received], ["Processed"], received)
			self.assertEqual(received[0]["queue"], queue_of(SUB_ITEMS))
		self.assertFalse(self.wh2.exists(doctype=ITEM, name=item.name))

	# --- b) field rules ---------------------------------------------------------------------------------

	def test_b_field_rules_map_skip_and_constant(self):
		item = self.make_item(
			"b",
			warehouse="WH2",
			item_name="Gadget",
			notes="secret",
			prices=[{"price_list": "Retail", "rate": 3}],
		)
		copy = self.wait_doc(self.wh2, ITEM, item.name)
		self.assertEqual(copy["description"], "Gadget")  # Map item_name -> description
		self.assertFalse(copy["item_name"])  # a mapped field is not also copied under its own name
		self.assertFalse(copy["notes"])  # Skip
		self.assertEqual(copy["origin_label"], "from head")  # Constant
		self.assertEqual([(p["price_list"], p["rate"]) for p in copy["prices"]], [("WH2", 3)])  # in rows
		self.wait_replica(self.wh2, SUB_WH2_ITEMS, item.name, "Applied")

	# --- c) submit, cancel, delete ----------------------------------------------------------------------

	def test_c_submit_cancel_and_delete_follow_the_source(self):
		item = self.make_item("c", item_name="For orders")
		self.wait_doc(self.wh1, ITEM, item.name)
		order = frappe.get_doc({"doctype": ORDER, "item": item.name, "qty": 3}).insert()
		frappe.db.commit()
		self.wait_doc(self.wh1, ORDER, order.name, lambda d: d["docstatus"] == 0 and d["qty"] == 3)
		order.submit()
		frappe.db.commit()
		self.wait_doc(self.wh1, ORDER, order.name, lambda d: d["docstatus"] == 1, "submitted")
		order.reload()
		order.cancel()
		frappe.db.commit()
		self.wait_doc(self.wh1, ORDER, order.name, lambda d: d["docstatus"] == 2, "cancelled")
		replica = self.wait_replica(self.wh1, SUB_ORDERS, order.name, "Applied")
		self.assertEqual(replica["last_event"], "on_cancel")

		draft = frappe.get_doc({"doctype": ORDER, "item": item.name, "qty": 1}).insert()
		frappe.db.commit()
		self.wait_doc(self.wh1, ORDER, draft.name)
		frappe.delete_doc(ORDER, draft.name)
		frappe.db.commit()
		wait_for(lambda: not self.wh1.exists(doctype=ORDER, name=draft.name), TIMEOUT, "the draft deleted")
		self.wait_replica(self.wh1, SUB_ORDERS, draft.name, "Deleted")

	# --- d) conflicts -----------------------------------------------------------------------------------

	def test_d_conflict_skip_and_record_then_source_wins(self):
		item = self.make_item("d", item_name="v1")
		self.wait_doc(self.wh1, ITEM, item.name)
		self.wait_replica(self.wh1, SUB_ITEMS, item.name, "Applied")
		self.wh1.set_values(doctype=ITEM, name=item.name, values={"item_name": "edited on wh1"})
		self.update_item(item.name, item_name="v2 from head")
		replica = self.wait_replica(self.wh1, SUB_ITEMS, item.name, "Conflict")
		self.assertIn("skip and record", replica["detail"])
		self.assertEqual(self.wh1.get_doc(doctype=ITEM, name=item.name)["item_name"], "edited on wh1")

		reloads = self.worker_reloads(self.wh1_site)
		try:
			self.wh1.upsert_subscription(name=SUB_ITEMS, values=self._items_subscription(SOURCE_WINS))
			wait_for(lambda: self.worker_reloads(self.wh1_site) > reloads, TIMEOUT, "wh1's worker to reload")
			wait_for(lambda: self._consumed(queue_of(SUB_ITEMS)), TIMEOUT, "wh1's items queue consumed")
			self.update_item(item.name, item_name="v3 from head")
			self.wait_doc(
				self.wh1, ITEM, item.name, lambda d: d["item_name"] == "v3 from head", "overwritten"
			)
			self.wait_replica(self.wh1, SUB_ITEMS, item.name, "Applied")
		finally:
			reloads = self.worker_reloads(self.wh1_site)
			self.wh1.upsert_subscription(name=SUB_ITEMS, values=self._items_subscription(SKIP))
			wait_for(lambda: self.worker_reloads(self.wh1_site) > reloads, TIMEOUT, "wh1's worker to reload")
			wait_for(lambda: self._consumed(queue_of(SUB_ITEMS)), TIMEOUT, "wh1's items queue consumed")

	# --- e) order ---------------------------------------------------------------------------------------

	def test_e_replaying_an_older_message_does_not_overwrite_a_newer_state(self):
		item = self.make_item("e", item_name="old")
		self.wait_doc(self.wh1, ITEM, item.name)
		self.update_item(item.name, item_name="new")
		self.wait_doc(self.wh1, ITEM, item.name, lambda d: d["item_name"] == "new")
		newer = self.wait_replica(self.wh1, SUB_ITEMS, item.name, "Applied")
		first = self.outgoing(ITEM, item.name)[0]["message_id"]
		wait_for(lambda: self.incoming(self.wh1, first), TIMEOUT, "the first message recorded on wh1")
		replayed = subprocess.run(
			two_sites.bench(self.wh1_site, "eda", "replay", first, "--force"),
			cwd=self.sites_path,
			capture_output=True,
			text=True,
		)
		self.assertIn("1 of 1 replayed", replayed.stdout, replayed.stdout + replayed.stderr)
		wait_for(
			lambda: [m["status"] for m in self.incoming(self.wh1, first)] == ["Processed"],
			TIMEOUT,
			"the replayed message processed again",
		)
		self.assertEqual(self.wh1.get_doc(doctype=ITEM, name=item.name)["item_name"], "new")
		after = self.wh1.replica(subscription=SUB_ITEMS, source_name=item.name)
		self.assertEqual(after["source_version"], newer["source_version"])
		self.assertEqual(after["status"], "Applied")

	# --- f) missing links -------------------------------------------------------------------------------

	def test_f_missing_link_waits_and_applies_once_the_link_exists(self):
		group = f"G-{self.marker}-f"
		frappe.get_doc({"doctype": GROUP, "group_name": group}).insert()
		item = self.make_item("f", item_name="Needs a group", item_group=group)
		message_id = self.outgoing(ITEM, item.name)[0]["message_id"]
		failed = wait_for(
			lambda: [m for m in self.incoming(self.wh1, message_id) if m["status"] == "Failed"],
			TIMEOUT,
			"wh1 to retry the message for its missing group",
		)
		self.assertTrue(failed[0]["exception_type"].endswith(".MissingLink"), failed)
		self.assertFalse(self.wh1.exists(doctype=ITEM, name=item.name))
		self.wh1.insert(doc={"doctype": GROUP, "group_name": group})  # the link arrives
		copy = self.wait_doc(self.wh1, ITEM, item.name, what="after a retry")
		self.assertEqual(copy["item_group"], group)
		self.assertEqual([m["status"] for m in self.incoming(self.wh1, message_id)], ["Processed"])
		self.wait_replica(self.wh1, SUB_ITEMS, item.name, "Applied")

	def test_f_missing_link_created_from_the_documents_sent_along(self):
		group = f"G-{self.marker}-f2"
		frappe.get_doc({"doctype": GROUP, "group_name": group}).insert()
		item = self.make_item("f2", warehouse="WH2", item_name="Brings its group", item_group=group)
		copy = self.wait_doc(self.wh2, ITEM, item.name)
		self.assertEqual(copy["item_group"], group)
		self.assertEqual(self.wh2.get_doc(doctype=GROUP, name=group)["group_name"], group)
		self.wait_replica(self.wh2, SUB_WH2_ITEMS, item.name, "Applied")

	# --- g) segregation ---------------------------------------------------------------------------------

	def test_g_each_warehouse_gets_only_its_own_documents(self):
		one = self.make_item("g1", warehouse="WH1", item_name="for wh1")
		two = self.make_item("g2", warehouse="WH2", item_name="for wh2")
		after = self.make_item("g3", warehouse="WH1", item_name="sent after")  # wh1's queue is in order
		self.wait_doc(self.wh1, ITEM, one.name)
		self.wait_doc(self.wh2, ITEM, two.name)
		self.wait_doc(self.wh1, ITEM, after.name)
		self.assertFalse(self.wh1.exists(doctype=ITEM, name=two.name))
		self.assertFalse(self.wh2.exists(doctype=ITEM, name=one.name))
		self.assertFalse(self.wh2.exists(doctype=ITEM, name=after.name))
		for message in self.outgoing(ITEM, two.name):
			self.assertEqual(self.incoming(self.wh1, message["message_id"]), [])
		for message in self.outgoing(ITEM, one.name):
			self.assertEqual(self.incoming(self.wh2, message["message_id"]), [])
		self.assertIsNone(self.wh1.replica(subscription=SUB_ITEMS, source_name=two.name))

	def test_g_a_message_for_wh2_on_wh1s_routing_key_is_refused(self):
		name = self.code("g-hostile")
		payload = {
			"doctype": ITEM,
			"name": name,
			"item_code": name,
			"item_name": "misrouted",
			"warehouse": "WH2",
			"modified": "2026-01-01 10:00:00.000000",
			"docstatus": 0,
		}
		message = frappe_eda.publish(
			"eda_test_item.on_update",
			payload,
			routing_key="wh1.eda_test_item.on_update",
			headers={"eda-to": [self.wh2_site]},
		)
		frappe.db.commit()
		dead = wait_for(
			lambda: [m for m in self.incoming(self.wh1, message.id) if m["status"] == "Dead"],
			TIMEOUT,
			"wh1 to refuse the misrouted message",
		)
		self.assertTrue(dead[0]["exception_type"].endswith(".NotAddressedHere"), dead)
		self.assertEqual(dead[0]["attempts"], 1)
		self.assertFalse(self.wh1.exists(doctype=ITEM, name=name))
		self.assertIsNone(self.wh1.replica(subscription=SUB_ITEMS, source_name=name))

	# --- h) receipts ------------------------------------------------------------------------------------

	def test_h_the_source_gets_a_receipt(self):
		item = self.make_item("h", item_name="receipted")
		self.wait_doc(self.wh1, ITEM, item.name)
		sent = self.outgoing(ITEM, item.name)[0]

		def receipt():
			frappe.db.rollback()
			return frappe.get_all(
				"EDA Receipt",
				filters={"message_id": sent["message_id"]},
				fields=["eda_message", "server", "subscription", "outcome", "document"],
			)

		receipts = wait_for(receipt, TIMEOUT, "a receipt from wh1 on the source")
		self.assertEqual(len(receipts), 1, receipts)
		self.assertEqual(receipts[0]["server"], self.wh1_site)
		self.assertEqual(receipts[0]["outcome"], "Applied")
		self.assertEqual(receipts[0]["subscription"], SUB_ITEMS)
		self.assertEqual(receipts[0]["eda_message"], sent["name"])
		self.assertEqual(receipts[0]["document"], item.name)

	# --- i) a broker restart ----------------------------------------------------------------------------

	def test_i_broker_restart_mid_stream_applies_each_document_once(self):
		count = 50
		codes = [self.code(f"i{n:03d}") for n in range(count)]
		applied = lambda: self.wh1.count(  # noqa: E731
			doctype="EDA Replica",
			filters={
				"subscription": SUB_ITEMS,
				"source_name": ["like", self.code("i%")],
				"status": "Applied",
			},
		)
		restarted = threading.Event()
		failure = []

		def restart_broker():
			try:
				wait_for(lambda: applied() >= 5, TIMEOUT, "the first documents")
				subprocess.run(["rabbitmqctl", "-q", "stop_app"], check=True, capture_output=True)
				time.sleep(3)
			except Exception as e:
				failure.append(e)
			finally:
				subprocess.run(["rabbitmqctl", "-q", "start_app"], capture_output=True)
				subprocess.run(["rabbitmqctl", "-q", "await_startup"], capture_output=True)
				restarted.set()

		thread = threading.Thread(target=restart_broker, daemon=True)
		thread.start()
		try:
			for n, code in enumerate(codes):
				frappe.get_doc(
					{"doctype": ITEM, "item_code": code, "warehouse": "WH1", "item_name": f"n{n}"}
				).insert()
				frappe.db.commit()
				time.sleep(0.05)
		finally:
			thread.join(TIMEOUT)
		self.assertTrue(restarted.is_set())
		self.assertEqual(failure, [])
		wait_for(lambda: applied() == count, 180, f"all {count} documents applied on wh1")
		self.assertEqual(self.wh1.count(doctype=ITEM, filters={"name": ["in", codes]}), count)
		replicas = self.wh1.get_all(
			doctype="EDA Replica",
			filters={"subscription": SUB_ITEMS, "source_name": ["in", codes]},
			fields=["source_name", "status"],
		)
		self.assertEqual(sorted(r["source_name"] for r in replicas), sorted(codes))
		frappe.db.rollback()
		ids = [m["message_id"] for c in codes for m in self.outgoing(ITEM, c)]
		self.assertEqual(len(ids), count)
		received = self.wh1.messages(filters={"direction": "Incoming", "message_id": ["in", ids]})
		self.assertEqual(sorted(m["message_id"] for m in received), sorted(ids), "one record per message")
		self.assertEqual({m["status"] for m in received}, {"Processed"})
		self.assertEqual([w for w in self.workers.values() if w.poll() is not None], [], "a worker exited")
