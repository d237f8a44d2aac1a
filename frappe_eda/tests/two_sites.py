# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE
"""Helpers of ``test_two_sites``: the test DocTypes, and functions run on a peer site.

A peer (``wh1.localhost``, ``wh2.localhost``) is driven through a ``Peer``: one long-lived
``bench --site PEER execute frappe_eda.tests.two_sites.serve`` process that reads one JSON request a line
on stdin (``{"fn": "get_doc", "kwargs": {...}}``), runs that function of this module in a fresh
transaction (rolled back first, so it sees what the worker committed; committed after) and writes the
result as one JSON line. A request costs a millisecond or two where a ``bench execute`` per call costs
seconds, so the tests can poll peers with a deadline. Every function here also works on the test's own
site, called directly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import traceback
from typing import Any

import frappe

GROUP, ITEM, PRICE, ORDER = "EDA Test Group", "EDA Test Item", "EDA Test Item Price", "EDA Test Order"
TEST_DOCTYPES = (ORDER, ITEM, PRICE, GROUP)  # in the order they can be dropped
REPLY = "@@eda-two-sites@@"
PERMS = [{"role": "System Manager", "read": 1, "write": 1, "create": 1, "delete": 1}]


# --- the test DocTypes ------------------------------------------------------------------------------


def _doctype(name: str, fields: list[dict], **extra: Any) -> dict:
	return {
		"doctype": "DocType",
		"name": name,
		"module": "Custom",
		"custom": 1,
		"fields": fields,
		"permissions": []
		if extra.get("istable")
		else [dict(p, submit=1, cancel=1) for p in PERMS]
		if extra.get("is_submittable")
		else PERMS,
		**extra,
	}


DEFINITIONS = [
	_doctype(
		GROUP,
		[{"fieldname": "group_name", "fieldtype": "Data", "label": "Group Name", "reqd": 1, "unique": 1}],
		autoname="field:group_name",
	),
	_doctype(
		PRICE,
		[
			{"fieldname": "price_list", "fieldtype": "Data", "label": "Price List", "in_list_view": 1},
			{"fieldname": "rate", "fieldtype": "Float", "label": "Rate", "in_list_view": 1},
		],
		istable=1,
	),
	_doctype(
		ITEM,
		[
			{"fieldname": "item_code", "fieldtype": "Data", "label": "Item Code", "reqd": 1, "unique": 1},
			{"fieldname": "item_name", "fieldtype": "Data", "label": "Item Name"},
			{"fieldname": "description", "fieldtype": "Small Text", "label": "Description"},
			{"fieldname": "notes", "fieldtype": "Data", "label": "Notes"},
			{"fieldname": "origin_label", "fieldtype": "Data", "label": "Origin Label"},
			{"fieldname": "item_group", "fieldtype": "Link", "label": "Item Group", "options": GROUP},
			{"fieldname": "warehouse", "fieldtype": "Data", "label": "Warehouse"},
			{"fieldname": "prices", "fieldtype": "Table", "label": "Prices", "options": PRICE},
		],
		autoname="field:item_code",
	),
	_doctype(
		ORDER,
		[
			{"fieldname": "item", "fieldtype": "Link", "label": "Item", "options": ITEM, "reqd": 1},
			{"fieldname": "qty", "fieldtype": "Float", "label": "Qty"},
			{"fieldname": "warehouse", "fieldtype": "Data", "label": "Warehouse"},
			{
				"fieldname": "amended_from",
				"fieldtype": "Link",
				"label": "Amended From",
				"options": ORDER,
				"read_only": 1,
				"no_copy": 1,
			},
		],
		autoname="hash",
		is_submittable=1,
	),
]


def ensure_doctypes() -> list[str]:
	"""Create the test DocTypes that this site lacks; the names created."""
	created = []
	for definition in DEFINITIONS:
		if not frappe.db.exists("DocType", definition["name"]):
			frappe.get_doc(json.loads(json.dumps(definition))).insert(ignore_permissions=True)
			created.append(definition["name"])
	frappe.db.commit()
	frappe.clear_cache()
	return created


def drop_doctypes() -> list[str]:
	"""Drop the test DocTypes and their tables, and the EDA records that point at them."""
	dropped = []
	for doctype in TEST_DOCTYPES:
		for table, field in (
			("EDA Replica", "document_type"),
			("EDA Event Rule", "document_type"),
			("EDA Message", "reference_doctype"),
		):
			if frappe.db.table_exists(table):
				frappe.db.delete(table, {field: doctype})
		if frappe.db.exists("DocType", doctype):
			frappe.db.delete(doctype)  # rows first: delete_doc refuses a DocType that has documents
			frappe.delete_doc("DocType", doctype, force=True, ignore_permissions=True)
			dropped.append(doctype)
	frappe.db.commit()
	frappe.clear_cache()
	return dropped


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
	"""Create or replace the EDA Subscription ``name`` (its field rules too)."""
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


def serve() -> None:
	"""Answer requests on stdin until it closes (see the module); run by ``bench execute``."""
	out = sys.stdout
	for line in sys.stdin:
		if not line.strip():
			continue
		try:
			request = json.loads(line)
			frappe.db.rollback()
			frappe.local.document_cache = {}
			result = globals()[request["fn"]](**request.get("kwargs", {}))
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
	"""A peer site driven through ``serve`` (see the module)."""

	def __init__(self, site: str, sites_path: str, log_path: str) -> None:
		self.site = site
		self.log = open(log_path, "ab")
		self._lock = threading.Lock()
		self.process = subprocess.Popen(
			bench(site, "execute", "frappe_eda.tests.two_sites.serve"),
			cwd=sites_path,
			stdin=subprocess.PIPE,
			stdout=subprocess.PIPE,
			stderr=self.log,
		)

	def call(self, fn: str, **kwargs: Any) -> Any:
		with self._lock:
			if self.process.poll() is not None:
				raise PeerError(f"the {self.site} helper process exited ({self.process.returncode})")
			self.process.stdin.write((json.dumps({"fn": fn, "kwargs": kwargs}, default=str) + "\n").encode())
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
		return lambda **kwargs: self.call(fn, **kwargs)

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
