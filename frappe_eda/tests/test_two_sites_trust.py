"""Trust between real sites: each server connects with its own broker user, made by ``bench eda
broker-user --write-config`` from its own configuration, and a hostile warehouse (wh2, with only the
credentials its site is configured with) tries what the issue tried.

Run on the source site, like ``test_two_sites`` (three sites of one bench on one broker vhost)::

    cd sites && EDA_PEER_SITES=wh1.localhost,wh2.localhost CI=1 ../env/bin/python -m \\
        frappe.utils.bench_helper frappe --site head.localhost run-tests --app frappe_eda \\
        --module frappe_eda.tests.test_two_sites_trust

It needs RabbitMQ's management API as an administrator (``EDA_MANAGEMENT_URL``, by default
``http://guest:guest@127.0.0.1:15672``). The set-up points each site's ``eda_amqp_url`` at its new user;
the tear-down puts the old URL back and deletes the users.
"""

from __future__ import annotations

import json
import os
import subprocess

import frappe
from frappe.installer import update_site_config

from frappe_eda.messaging.envelope import Message, decode, encode
from frappe_eda.messaging.replication import addressing
from frappe_eda.messaging.replication.receipts import RECEIPT_TYPE, Receipt, ReceiptOutcome
from frappe_eda.messaging.trust.broker_users import ManagementApi
from frappe_eda.replication import reconcile
from frappe_eda.tests import two_sites
from frappe_eda.tests.two_sites import ITEM, PEERS_VARIABLE, Peer, queue_of, wait_for

DEST = "EDA Trust wh1"
SUB_WH1, SUB_WH2 = "EDA Trust wh1 Items", "EDA Trust wh2 Items"
MANAGEMENT_URL = os.environ.get("EDA_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672")
TIMEOUT = 90


class TestTwoSitesTrust(two_sites.PeerSitesTestCase):
	peers_needed = 2
	trusted_network = False
	log_prefix = "two-sites-trust"
	code_prefix = "EDAT"
	skip_reason = f"set {PEERS_VARIABLE}=wh1.localhost,wh2.localhost to run the trust tests between sites"

	@classmethod
	def _set_up(cls):
		cls.peers = {}
		cls.saved_urls: dict[str, str | None] = {}
		cls.wh2_site = cls.peer_sites[1]
		for site in (cls.wh1_site, cls.wh2_site):
			cls.peers[site] = Peer(site, cls.sites_path, cls._log(f"{site}-helper"))
		cls.wh1, cls.wh2 = cls.peers[cls.wh1_site], cls.peers[cls.wh2_site]
		two_sites.ensure_doctypes()
		cls.wh1.ensure_doctypes()
		cls.wh2.ensure_doctypes()
		if not frappe.db.exists("EDA Destination", DEST):
			frappe.get_doc(
				{
					"doctype": "EDA Destination",
					"destination_name": DEST,
					"routing_key": "wh1.{type}",
					"target_servers": cls.wh1_site,
					"request_receipts": 1,
				}
			).insert()
		frappe.get_doc(
			{"doctype": "EDA Event Rule", "document_type": ITEM, "event": "on_update", "destination": DEST}
		).insert()
		frappe.db.commit()
		from frappe_eda.outbox.rules import clear_rules_cache

		clear_rules_cache()
		for peer, name, key in ((cls.wh1, SUB_WH1, "wh1"), (cls.wh2, SUB_WH2, "wh2")):
			peer.upsert_subscription(
				name=name,
				values={
					"source_doctype": ITEM,
					"source": cls.head,
					"sender_check": "Proven Sender",
					"routing_key_patterns": f"{key}.eda_test_item.*",
				},
			)
		cls.management = ManagementApi(MANAGEMENT_URL)
		for site in (cls.head, cls.wh1_site, cls.wh2_site):
			cls.saved_urls[site] = cls._config(site).get("eda_amqp_url")
			# The operator's command, from the site's own configuration; the password goes to its config.
			done = subprocess.run(
				two_sites.bench(
					site, "eda", "broker-user", "--management-url", MANAGEMENT_URL, "--write-config"
				),
				cwd=cls.sites_path,
				capture_output=True,
				text=True,
				timeout=300,
			)
			if done.returncode != 0:
				raise AssertionError(f"eda broker-user on {site} failed:\n{done.stdout}\n{done.stderr}")
		for site in (cls.wh1_site, cls.wh2_site, cls.head):
			cls._start_worker(site)
		for subscription in (SUB_WH1, SUB_WH2):
			wait_for(
				lambda s=subscription: cls._consumed(queue_of(s)), TIMEOUT, f"a consumer of {subscription}"
			)

	@classmethod
	def _tear_down(cls):
		cls._stop_workers()
		frappe.db.rollback()
		for site, url in getattr(cls, "saved_urls", {}).items():
			path = os.path.join(cls.sites_path, site, "site_config.json")
			update_site_config("eda_amqp_url", url if url is not None else "None", site_config_path=path)
			if hasattr(cls, "management"):
				cls.management.delete_user(site)
		for peer, name in ((getattr(cls, "wh1", None), SUB_WH1), (getattr(cls, "wh2", None), SUB_WH2)):
			if peer is not None:
				peer.cleanup(subscriptions=[name], queues=[queue_of(name)])
				if not os.environ.get("EDA_KEEP_TEST_DOCTYPES"):
					peer.drop_doctypes()
		frappe.db.delete("EDA Event Rule", {"destination": DEST})
		frappe.db.delete("EDA Receipt", {"server": ["in", [cls.wh1_site, getattr(cls, "wh2_site", "")]]})
		two_sites.cleanup(subscriptions=[], queues=[])
		frappe.delete_doc("EDA Destination", DEST, force=True, ignore_missing=True)
		frappe.db.commit()
		if not os.environ.get("EDA_KEEP_TEST_DOCTYPES"):
			two_sites.drop_doctypes()
		from frappe_eda.outbox.rules import clear_rules_cache

		clear_rules_cache()
		cls._delete_queues([queue_of(SUB_WH1), queue_of(SUB_WH2)])
		for peer in getattr(cls, "peers", {}).values():
			peer.close()

	@classmethod
	def _config(cls, site):
		with open(os.path.join(cls.sites_path, site, "site_config.json")) as f:
			return json.load(f)

	# --- helpers ---------------------------------------------------------------------------------------

	def as_wh2(self):
		"""A raw connection with exactly the credentials wh2's site is configured with."""
		import pika

		return pika.BlockingConnection(pika.URLParameters(self._config(self.wh2_site)["eda_amqp_url"]))

	def refused(self, operation):
		import pika.exceptions

		connection = self.as_wh2()
		try:
			channel = connection.channel()
			channel.confirm_delivery()
			with self.assertRaises(pika.exceptions.ChannelClosedByBroker) as refused:
				operation(channel)
			return f"{refused.exception.reply_code} {refused.exception.reply_text}"
		finally:
			if connection.is_open:
				connection.close()

	def publish_as_wh2(self, exchange, key, message, **headers):
		import pika

		connection = self.as_wh2()
		try:
			channel = connection.channel()
			channel.confirm_delivery()
			props = pika.BasicProperties(
				content_type="application/json",
				message_id=message.id,
				user_id=self.wh2_site,
				headers=headers or None,
			)
			channel.basic_publish(exchange, key, encode(message), props, mandatory=True)
		finally:
			connection.close()

	def genuine(self, label, text):
		"""An Item applied on wh1, and the message head sent for it."""
		item = self.make_item(label, item_name=text)
		self.wait_doc(self.wh1, ITEM, item.name)
		sent = self.outgoing(ITEM, item.name)[0]
		body = frappe.db.get_value("EDA Message", sent["name"], "payload")
		return item, sent, decode(body.encode())

	def dead_on(self, peer, message_id):
		return wait_for(
			lambda: [
				m
				for m in peer.messages(filters={"direction": "Incoming", "message_id": message_id})
				if m["status"] == "Dead"
			],
			TIMEOUT,
			f"{message_id} dead on {peer.site}",
		)

	# --- the tests -------------------------------------------------------------------------------------

	def test_a_honest_flow_is_proven_and_receipted(self):
		_item, sent, _ = self.genuine("a", "genuine")
		[incoming] = self.wh1.messages(filters={"direction": "Incoming", "message_id": sent["message_id"]})
		self.assertEqual((incoming["status"], incoming["verified_sender"]), ("Processed", self.head))

		def receipt():
			frappe.db.rollback()
			return frappe.get_all(
				"EDA Receipt", filters={"message_id": sent["message_id"]}, fields=["server", "outcome"]
			)

		receipts = wait_for(receipt, TIMEOUT, "wh1's receipt on head")
		self.assertEqual([(r.server, r.outcome) for r in receipts], [(self.wh1_site, "Applied")])

	def test_b_impersonation_is_refused_by_the_broker_and_by_wh1(self):
		item, sent, genuine = self.genuine("b", "genuine")
		forged = Message(
			type=genuine.type,
			payload={**genuine.payload, "item_name": "FORGED by wh2"},
			source=self.head,
			headers=genuine.headers,
		)
		text = self.refused(
			lambda ch: ch.basic_publish(
				"eda.events",
				sent["routing_key"],
				encode(forged),
				self.properties(user_id=self.head),
			)
		)
		self.assertTrue(text.startswith("406") or text.startswith("403"), text)
		self.assertIn(
			"access to topic", self.refused(lambda ch: self.publish_on(ch, sent["routing_key"], forged))
		)
		# Straight into wh1's queue through the default exchange, under wh2's own (valid) user.
		self.publish_as_wh2("", queue_of(SUB_WH1), forged, **{"x-eda-routing-key": sent["routing_key"]})
		[dead] = self.dead_on(self.wh1, forged.id)
		self.assertTrue(dead["exception_type"].endswith("WrongSender"), dead)
		self.assertEqual(dead["verified_sender"], self.wh2_site)
		self.assertEqual(self.wh1.get_doc(doctype=ITEM, name=item.name)["item_name"], "genuine")

	@staticmethod
	def properties(**values):
		import pika

		return pika.BasicProperties(**values)

	def publish_on(self, channel, key, message):
		import pika

		channel.basic_publish("eda.events", key, encode(message), pika.BasicProperties(user_id=self.wh2_site))

	def test_c_wh2_can_neither_bind_wh1s_keys_nor_read_its_queue(self):
		own = queue_of(SUB_WH2)
		self.assertIn(
			"access to topic",
			self.refused(lambda ch: ch.queue_bind(own, "eda.events", "wh1.eda_test_item.*")),
		)
		self.assertIn("access to topic", self.refused(lambda ch: ch.queue_bind(own, "eda.events", "#")))
		self.assertTrue(self.refused(lambda ch: ch.basic_get(queue_of(SUB_WH1))).startswith("403"))

	def forget_refused(self, queue, message_id):
		"""After the test: the refused message's record on head and its copy in ``queue``.dead."""

		def forget():
			from frappe_eda.messaging.connection import BrokerConnection
			from frappe_eda.messaging.deadletters import remove_dead_copies
			from frappe_eda.settings import load_settings

			frappe.db.rollback()
			frappe.db.delete("EDA Message", {"message_id": message_id, "direction": "Incoming"})
			frappe.db.delete("EDA Error", {"message_id": message_id})
			frappe.db.commit()
			with BrokerConnection(load_settings().broker) as connection:
				# the worker parks the copy just after it records the refusal: wait for it
				wait_for(
					lambda: remove_dead_copies(connection, queue, [message_id]).removed,
					TIMEOUT,
					f"the refused copy in {queue}.dead",
				)

		self.addCleanup(forget)

	def test_d_a_receipt_forged_for_wh1_is_refused_on_head(self):
		_item, sent, _ = self.genuine("d", "genuine")
		forged = Message(
			type=RECEIPT_TYPE,
			source=self.wh1_site,
			payload=Receipt(
				message_id=sent["message_id"],
				server=self.wh1_site,
				subscription=SUB_WH1,
				outcome=ReceiptOutcome.REFUSED,
				detail="FORGED by wh2",
			).payload(),
		)
		self.publish_as_wh2("eda.events", addressing.receipt_key_for(self.head), forged)
		from frappe_eda.replication.receipts import receipt_queue

		self.forget_refused(receipt_queue(self.head), forged.id)
		dead = wait_for(
			lambda: (
				frappe.db.rollback()
				or two_sites.messages({"direction": "Incoming", "message_id": forged.id, "status": "Dead"})
			),
			TIMEOUT,
			"head to refuse the forged receipt",
		)
		self.assertTrue(dead[0]["exception_type"].endswith("ForgedReceipt"), dead)
		self.assertFalse(
			frappe.db.exists("EDA Receipt", {"message_id": sent["message_id"], "outcome": "Refused"})
		)

	def test_e_a_reconciliation_request_naming_wh1_is_refused_on_head(self):
		forged = Message(
			type=reconcile.DIGEST_TYPE,
			source=self.wh1_site,
			payload={
				"run": frappe.generate_hash(length=16),
				"subscription": SUB_WH1,
				"server": self.wh1_site,
				"doctype": ITEM,
				"buckets": 1,
				"digest": [],
			},
		)
		self.publish_as_wh2("eda.events", reconcile.request_key(self.head), forged)
		self.forget_refused(
			reconcile._queue(reconcile.KEY_PREFIX, self.head, "eda.events", "eda.events"), forged.id
		)
		dead = wait_for(
			lambda: (
				frappe.db.rollback()
				or two_sites.messages({"direction": "Incoming", "message_id": forged.id, "status": "Dead"})
			),
			TIMEOUT,
			"head to refuse the forged request",
		)
		self.assertTrue(dead[0]["exception_type"].endswith("ForgedReconcileMessage"), dead)

	def test_f_reconciliation_heals_within_each_servers_least_privilege(self):
		"""wh1's digest to head, head's listing and re-sent document back: every hop on the keys that
		``eda broker-user`` granted, under the proven-sender checks."""
		item, _sent, _ = self.genuine("f", "genuine")
		frappe.db.sql(f"update `tab{ITEM}` set item_name=%s where name=%s", ("changed by SQL", item.name))
		frappe.db.commit()
		done = subprocess.run(
			two_sites.bench(
				self.wh1_site,
				"eda",
				"reconcile",
				ITEM,
				"--subscription",
				SUB_WH1,
				"--wait",
				"--timeout",
				"60",
			),
			cwd=self.sites_path,
			capture_output=True,
			text=True,
			timeout=300,
		)
		self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
		self.wait_doc(self.wh1, ITEM, item.name, lambda d: d["item_name"] == "changed by SQL", "healed")

	def resubscribe(self, keys):
		"""wh1's subscription with ``keys`` as its Source Public Keys, once its worker has reloaded it."""
		reloads = self.worker_reloads(self.wh1_site)
		self.wh1.upsert_subscription(
			name=SUB_WH1,
			values={
				"source_doctype": ITEM,
				"source": self.head,
				"sender_check": "Proven Sender",
				"routing_key_patterns": "wh1.eda_test_item.*",
				"source_public_keys": keys,
			},
		)

		wait_for(
			lambda: self.worker_reloads(self.wh1_site) > reloads,
			TIMEOUT,
			"wh1's worker to reload its subscriptions",
		)
		wait_for(lambda: self._consumed(queue_of(SUB_WH1)), TIMEOUT, "wh1's queue consumed again")

	def test_g_head_signs_and_wh1_applies_only_what_its_key_verifies(self):
		from frappe_eda.messaging.trust import SigningKey

		key, other = SigningKey.generate(), SigningKey.generate()
		settings = frappe.get_single("EDA Settings")
		settings.signing_key = key.text
		settings.save(ignore_permissions=True)
		frappe.db.commit()
		try:
			self.resubscribe(f"{other.public.text}\n{key.public.text}")  # both, as during a rotation
			_item, sent, _ = self.genuine("g", "signed")
			[incoming] = self.wh1.messages(
				filters={"direction": "Incoming", "message_id": sent["message_id"]}
			)
			self.assertEqual(incoming["status"], "Processed")

			self.resubscribe(other.public.text)  # head's key no longer trusted
			item = self.make_item("g2", item_name="signed by a key wh1 does not trust")
			sent = wait_for(lambda: self.outgoing(ITEM, item.name), TIMEOUT, "head's message")[0]
			[dead] = self.dead_on(self.wh1, sent["message_id"])
			self.assertTrue(dead["exception_type"].endswith("BadSignature"), dead)
			self.assertFalse(self.wh1.exists(doctype=ITEM, name=item.name))
		finally:
			frappe.db.set_single_value("EDA Settings", {"signing_key": "", "public_key": ""})
			frappe.db.commit()
			self.resubscribe("")
