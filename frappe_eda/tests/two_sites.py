# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE
"""Helpers of ``test_two_sites`` and ``test_two_sites_capture``: the test DocTypes, functions run on a
peer site, and ``PeerSitesTestCase``, the set-up both test cases share (peers, workers, the broker).

A peer (``wh1.localhost``, ``wh2.localhost``) is driven through a ``Peer``: one long-lived
``bench --site PEER execute frappe_eda.tests.two_sites.serve`` process that reads one JSON request a line
on stdin (``{"fn": "get_doc", "kwargs": {...}}``), runs that function of this module in a fresh
transaction (rolled back first, so it sees what the worker committed; committed after) and writes the
result as one JSON line. A request costs a millisecond or two where a ``bench execute`` per call costs
seconds, so the tests can poll peers with a deadline. Every function here also works on the test's own
site, called directly.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import threading
import time
import traceback
import unittest
from typing import Any

import frappe
from frappe.tests.utils import FrappeTestCase

from frappe_eda.consumer import stop_process
from frappe_eda.settings import load_settings
from frappe_eda.tests import doctypes

GROUP, ITEM, PRICE, ORDER = "EDA Test Group", "EDA Test Item", "EDA Test Item Price", "EDA Test Order"
TEST_DOCTYPES = (ORDER, ITEM, PRICE, GROUP)  # in the order they can be dropped
REPLY = "@@eda-two-sites@@"
PEERS_VARIABLE = "EDA_PEER_SITES"


# --- the test DocTypes ------------------------------------------------------------------------------

DEFINITIONS = doctypes.item_doctypes(
	GROUP,
	ITEM,
	PRICE,
	ORDER,
	item_naming={"autoname": "field:item_code"},
	item_fields=(doctypes.field("warehouse"),),
	price_fields={"in_list_view": 1},
	order_fields=(doctypes.field("warehouse"),),
)


def ensure_doctypes() -> list[str]:
	"""Create the test DocTypes that this site lacks; the names created."""
	return doctypes.ensure_doctypes(DEFINITIONS)


def drop_doctypes() -> list[str]:
	"""Drop the test DocTypes and their tables, and the EDA records that point at them."""
	return doctypes.drop_doctypes(TEST_DOCTYPES)


# --- reading and writing on a site -------------------------------------------------------------------


def get_doc(doctype: str, name: str) -> dict | None:
	if not frappe.db.exists(doctype, name):
		return None
	return frappe.get_doc(doctype, name).as_dict(convert_dates_to_str=True)


def exists(doctype: str, name: str) -> bool:
	return bool(frappe.db.exists(doctype, name))


def get_all(doctype: str, filters: Any = None, fields: Any = None, order_by: str | None = None) -> list:
	return frappe.get_all(doctype, filters=filters, fields=fields or ["name"], order_by=order_by)


def count(doctype: str, filters: Any = None) -> int:
	return frappe.db.count(doctype, filters)


def insert(doc: dict) -> str:
	return frappe.get_doc(doc).insert(ignore_permissions=True).name


def set_values(doctype: str, name: str, values: dict) -> str:
	"""A user's edit on this site (``save``, so ``modified`` moves)."""
	doc = frappe.get_doc(doctype, name)
	doc.update(values)
	doc.save(ignore_permissions=True)
	return str(doc.modified)


def delete(doctype: str, filters: Any) -> None:
	frappe.db.delete(doctype, filters)


def upsert_subscription(name: str, values: dict) -> str:
	"""Create or replace the EDA Subscription ``name`` (its field rules too). Unless ``values`` say
	otherwise, it is in a trusted network: the replication tests' sites share one broker user."""
	values = {"sender_check": "Trusted Network", **values}
	if frappe.db.exists("EDA Subscription", name):
		doc = frappe.get_doc("EDA Subscription", name)
		doc.set("field_rules", [])
	else:
		doc = frappe.new_doc("EDA Subscription")
		doc.subscription_name = name
	doc.update(values)
	doc.save(ignore_permissions=True)
	return doc.name


def delete_subscriptions(names: list[str]) -> None:
	for name in names:
		if frappe.db.exists("EDA Subscription", name):
			frappe.delete_doc("EDA Subscription", name, force=True, ignore_permissions=True)


def replica(subscription: str, source_name: str) -> dict | None:
	rows = frappe.get_all(
		"EDA Replica",
		filters={"subscription": subscription, "source_name": source_name},
		fields=["name", "status", "local_name", "source_version", "last_message", "last_event", "detail"],
	)
	return rows[0] if rows else None


def messages(filters: dict) -> list[dict]:
	return frappe.get_all(
		"EDA Message",
		filters=filters,
		fields=[
			"name",
			"message_id",
			"direction",
			"status",
			"message_type",
			"routing_key",
			"queue",
			"handler",
			"attempts",
			"exception_type",
			"last_error",
			"reference_doctype",
			"reference_name",
			"created_at",
			"verified_sender",
		],
		order_by="created_at asc",
	)


def settings(values: dict | None = None) -> dict:
	"""EDA Settings' retry fields now; with ``values``, set them first (a worker reads them at start)."""
	if values:
		for field, value in values.items():
			frappe.db.set_single_value("EDA Settings", field, value)
		frappe.clear_document_cache("EDA Settings", "EDA Settings")
	doc = frappe.get_single("EDA Settings")
	return {"retry_delays": doc.retry_delays, "max_attempts": doc.max_attempts}


def cleanup(subscriptions: list[str], queues: list[str]) -> None:
	"""What a run left on this site: its subscriptions, replicas, messages, errors and documents."""
	for doctype in (ORDER, ITEM, GROUP):
		if frappe.db.table_exists(doctype):
			if doctype == ITEM:
				frappe.db.delete(PRICE)
			frappe.db.delete(doctype)
	frappe.db.delete("EDA Replica", {"subscription": ["in", subscriptions or ["-"]]})
	frappe.db.delete("EDA Message", {"queue": ["in", queues or ["-"]]})
	frappe.db.delete("EDA Error", {"queue": ["in", queues or ["-"]]})
	frappe.db.delete("EDA Message", {"message_type": "eda.receipt"})
	for doctype in (ORDER, ITEM, GROUP):
		frappe.db.delete("EDA Message", {"reference_doctype": doctype})
	for key in ("wh1.eda_test_%", "wh2.eda_test_%"):
		frappe.db.delete("EDA Message", {"routing_key": ["like", key]})
	if frappe.db.table_exists("EDA Receipt"):
		frappe.db.delete("EDA Receipt", {"subscription": ["in", subscriptions or ["-"]]})
	delete_subscriptions(subscriptions)


# --- the peer process ----------------------------------------------------------------------------------


def serve(module: str | None = None) -> None:
	"""Answer requests on stdin until it closes (see the module); run by ``bench execute``. The functions
	are this module's, or those of ``module`` (a dotted name): a test with helpers of its own to run on a
	peer (``test_reconcile``) needs no server of its own."""
	functions = vars(importlib.import_module(module)) if module else globals()
	out = sys.stdout
	for line in sys.stdin:
		if not line.strip():
			continue
		try:
			request = json.loads(line)
			frappe.db.rollback()
			frappe.local.document_cache = {}
			result = functions[request["fn"]](*request.get("args", []), **request.get("kwargs", {}))
			frappe.db.commit()
			reply = {"ok": result}
		except Exception:
			frappe.db.rollback()
			reply = {"error": traceback.format_exc()}
		out.write(REPLY + json.dumps(reply, default=str) + "\n")
		out.flush()


class PeerError(Exception):
	pass


class Peer:
	"""A peer site driven through ``serve`` (see the module), running the functions of ``module``
	(this one by default): ``peer.get_doc(doctype=..., name=...)``."""

	def __init__(self, site: str, sites_path: str, log_path: str, module: str | None = None) -> None:
		self.site = site
		self.log = open(log_path, "ab")
		self._lock = threading.Lock()
		command = bench(site, "execute", f"{__name__}.serve")
		if module:
			command += ["--kwargs", json.dumps({"module": module})]
		self.process = subprocess.Popen(
			command,
			cwd=sites_path,
			stdin=subprocess.PIPE,
			stdout=subprocess.PIPE,
			stderr=self.log,
		)

	def call(self, fn: str, *args: Any, **kwargs: Any) -> Any:
		request = {"fn": fn, "args": args, "kwargs": kwargs}
		with self._lock:
			if self.process.poll() is not None:
				raise PeerError(f"the {self.site} helper process exited ({self.process.returncode})")
			self.process.stdin.write((json.dumps(request, default=str) + "\n").encode())
			self.process.stdin.flush()
			while True:
				line = self.process.stdout.readline()
				if not line:
					raise PeerError(f"the {self.site} helper process closed its output")
				text = line.decode()
				if text.startswith(REPLY):
					reply = json.loads(text[len(REPLY) :])
					break
		if "error" in reply:
			raise PeerError(f"{fn} on {self.site}:\n{reply['error']}")
		return reply["ok"]

	def __getattr__(self, fn: str) -> Any:
		if fn.startswith("_"):
			raise AttributeError(fn)
		return lambda *args, **kwargs: self.call(fn, *args, **kwargs)

	def close(self) -> None:
		if self.process.poll() is None:
			self.process.stdin.close()
			try:
				self.process.wait(timeout=30)
			except subprocess.TimeoutExpired:
				self.process.kill()
				self.process.wait()
		self.log.close()


def bench(site: str, *args: str) -> list[str]:
	"""``bench --site SITE ARGS`` as a child process runs it (``bench_helper``, which works as root)."""
	return [sys.executable, "-m", "frappe.utils.bench_helper", "frappe", "--site", site, *args]


def spawn_worker(site: str, sites_path: str, log_path: str) -> subprocess.Popen:
	"""A real ``bench --site SITE eda worker`` (relaying that site's outbox too)."""
	return subprocess.Popen(
		bench(site, "eda", "worker"),
		cwd=sites_path,
		env={**os.environ, "PYTHONUNBUFFERED": "1"},
		stdout=open(log_path, "ab"),
		stderr=subprocess.STDOUT,
	)


def wait_for(condition: Any, timeout: float, what: str, every: float = 0.2) -> Any:
	"""Poll ``condition`` until it returns something truthy; its value, or ``AssertionError``."""
	deadline = time.monotonic() + timeout
	last: Any = None
	while time.monotonic() < deadline:
		try:
			last = condition()
			if last:
				return last
		except PeerError:
			raise
		except Exception as e:
			last = e
		time.sleep(every)
	raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})"[:3000])


# --- what the two-site test cases share -------------------------------------------------------------------


def peer_sites() -> list[str]:
	"""The peers ``EDA_PEER_SITES`` names (comma-separated), in order."""
	return [s.strip() for s in os.environ.get(PEERS_VARIABLE, "").split(",") if s.strip()]


def queue_of(subscription: str) -> str:
	from frappe_eda.replication.subscriptions import default_queue

	return default_queue(subscription)


def consumers(broker_url: str, queue: str) -> int:
	"""The consumers of ``queue`` now (0 while no one has declared it), on a connection of its own."""
	import pika

	connection = pika.BlockingConnection(pika.URLParameters(broker_url))
	try:
		return connection.channel().queue_declare(queue, passive=True).method.consumer_count
	except pika.exceptions.ChannelClosedByBroker:
		return 0
	finally:
		if connection.is_open:
			connection.close()


def delete_queues(broker_url: str, queues: list[str]) -> None:
	"""``queues`` with their dead-letter and retry queues (every queue named ``QUEUE.*``)."""
	import pika

	try:
		vhost = pika.URLParameters(broker_url).virtual_host
		listed = subprocess.run(
			["rabbitmqctl", "-q", "list_queues", "-p", vhost, "name"], capture_output=True, text=True
		).stdout.split()
		connection = pika.BlockingConnection(pika.URLParameters(broker_url))
	except Exception as e:
		print(f"could not delete the test queues: {e}")
		return
	try:
		channel = connection.channel()
		for queue in listed:
			if any(queue == q or queue.startswith(q + ".") for q in queues):
				channel.queue_delete(queue)
	finally:
		if connection.is_open:
			connection.close()


class PeerSitesTestCase(FrappeTestCase):
	"""The part of a test between this site (the source) and peer sites that is the same for each:

	- skipped (``skip_reason``) unless ``EDA_PEER_SITES`` names ``peers_needed`` peers;
	- refused while an ``eda worker`` runs on one of the sites: it would compete for the test's messages;
	- ``_set_up`` and ``_tear_down`` of the subclass, the tear-down also when the set-up fails (unittest
	  skips ``tearDownClass`` then, which would leave workers running);
	- workers of its own, logged under the source's logs (``log_prefix``), and the broker's queues;
	- items made on the source, coded ``code_prefix-MARKER-label`` to keep runs apart.
	"""

	peers_needed = 1
	skip_reason = ""
	log_prefix = "two-sites"
	code_prefix = "EDA"
	wait_timeout = 90  # seconds a peer gets to show what the test waits for
	# The source takes receipts and reconciliation requests from any member: the sites share one broker
	# user (test_two_sites_trust gives each its own and turns this off).
	trusted_network = True

	@classmethod
	def setUpClass(cls):
		super().setUpClass()
		peers = peer_sites()
		if len(peers) < cls.peers_needed:
			raise unittest.SkipTest(cls.skip_reason)
		cls.head = frappe.local.site
		cls.sites_path = frappe.local.sites_path
		cls.marker = frappe.generate_hash(length=6).upper()
		# read once: a watcher thread has no site to read the settings from
		cls.broker_url = load_settings().broker.url
		cls.workers: dict[str, subprocess.Popen] = {}
		cls.logs: dict[str, str] = {}
		cls.peer_sites = peers
		cls.wh1_site = peers[0]
		stray = cls._stray_workers([cls.head, *peers])
		if stray:
			raise AssertionError(f"stop the eda workers running on these sites first:\n{stray}")
		cls.saved_trusted_network = frappe.db.get_single_value("EDA Settings", "trusted_network")
		frappe.db.set_single_value("EDA Settings", "trusted_network", int(cls.trusted_network))
		frappe.db.commit()
		try:
			cls._set_up()
		except BaseException:
			cls._tear_down()
			cls._restore_trusted_network()
			raise

	@classmethod
	def tearDownClass(cls):
		cls._tear_down()
		cls._restore_trusted_network()
		super().tearDownClass()

	@classmethod
	def _restore_trusted_network(cls):
		frappe.db.set_single_value("EDA Settings", "trusted_network", cls.saved_trusted_network or 0)
		frappe.db.commit()

	@classmethod
	def _set_up(cls):
		raise NotImplementedError

	@classmethod
	def _tear_down(cls):
		raise NotImplementedError

	# --- workers and the broker ------------------------------------------------------------------------

	@classmethod
	def _log(cls, name):
		return os.path.join(cls.sites_path, cls.head, "logs", f"{cls.log_prefix}-{name}.log")

	@classmethod
	def _start_worker(cls, site):
		cls.logs[site] = cls._log(f"{site}-worker")
		open(cls.logs[site], "w").close()
		cls.workers[site] = spawn_worker(site, cls.sites_path, cls.logs[site])
		return cls.workers[site]

	@classmethod
	def _stop_worker(cls, site):
		worker = cls.workers.pop(site, None)
		if worker is not None:
			stop_process(worker)

	@classmethod
	def _stop_workers(cls):
		for site in list(cls.workers):
			cls._stop_worker(site)

	@staticmethod
	def _stray_workers(sites):
		found = subprocess.run(["pgrep", "-af", "eda worker"], capture_output=True, text=True).stdout
		return "\n".join(line for line in found.splitlines() if any(f"--site {s} " in line for s in sites))

	@classmethod
	def _broker(cls):
		import pika

		return pika.BlockingConnection(pika.URLParameters(cls.broker_url))

	@classmethod
	def _consumers(cls, queue):
		return consumers(cls.broker_url, queue)

	@classmethod
	def _consumed(cls, queue):
		return cls._consumers(queue) > 0

	@classmethod
	def _delete_queues(cls, queues):
		delete_queues(cls.broker_url, queues)

	# --- on the source ---------------------------------------------------------------------------------

	def worker_reloads(self, site):
		"""How many times ``site``'s worker has started consuming (its start-up, then each reload)."""
		with open(self.logs[site]) as log:
			return log.read().count("  consuming ")

	def outgoing(self, doctype, name):
		"""The source's outgoing EDA Messages about one document (a fresh read: the relay commits)."""
		frappe.db.rollback()
		return messages({"direction": "Outgoing", "reference_doctype": doctype, "reference_name": name})

	def wait_doc(self, peer, doctype, name, check=lambda d: True, what=""):
		"""The document on ``peer`` once it exists and ``check`` holds, within ``wait_timeout`` seconds."""
		return wait_for(
			lambda: (lambda d: d if d and check(d) else None)(peer.get_doc(doctype=doctype, name=name)),
			self.wait_timeout,
			f"{doctype} {name} on {peer.site} {what}",
		)

	def code(self, label):
		return f"{self.code_prefix}-{self.marker}-{label}"

	def make_item(self, label, warehouse="WH1", **values):
		doc = frappe.get_doc(
			{"doctype": ITEM, "item_code": self.code(label), "warehouse": warehouse, **values}
		).insert()
		frappe.db.commit()
		return doc

	def update_item(self, name, **values):
		doc = frappe.get_doc(ITEM, name)
		doc.update(values)
		doc.save()
		frappe.db.commit()
		return doc
