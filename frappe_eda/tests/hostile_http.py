# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE
"""Hostile desk users over HTTP against a real, served site: what each may read and do.

Run by hand, like the browser suite (a served site; no background worker needed)::

    bench --site SITE execute frappe_eda.tests.hostile_http.seed \
        | python apps/frappe_eda/frappe_eda/tests/hostile_http.py http://SITE:8000
    bench --site SITE execute frappe_eda.tests.hostile_http.clean

``seed`` makes three users (no EDA role, *EDA User*, *EDA Manager*; password ``PASSWORD``) and records
that carry markers: an outgoing message about the EDA User's own ToDo (``VISIBLE``), one about
Administrator's ToDo (``HIDDEN``), and an incoming message sharing the visible one's id (a site that
consumes its own events) with an error whose traceback holds ``HIDDEN``. It returns the app's
whitelisted methods, found by Frappe's own registry, so a new endpoint joins the suite by itself.

As Guest, each user and the manager, with hostile arguments (other users' names, SQL in filters,
subqueries in fields, a huge string), the suite calls every whitelisted method of the app, every REST
resource of EDA's DocTypes (read and write) and Frappe's generic read endpoints, and checks:

- ``HIDDEN`` never comes back to anyone but the manager, by any path (counts included);
- nothing is written: every write, replay, resolve, edit and reconcile of a non-manager is refused;
- "does not exist" and "not yours" get the same answer;
- the manager does read what is there (the suite is not passing because nothing answers).

Exit status: the number of failed checks.
"""

from __future__ import annotations

import http.cookiejar
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

TAG = "eda-hostile"
PASSWORD = "eda-Hostile-4d2e-password"  # test users of a test site only
USERS = {
	"plain": f"{TAG}-plain@example.com",
	"eda_user": f"{TAG}-user@example.com",
	"manager": f"{TAG}-manager@example.com",
}
VISIBLE = f"{TAG}-VISIBLE-payload"
HIDDEN = f"{TAG}-HIDDEN-secret"
EDA_DOCTYPES = (
	"EDA Message",
	"EDA Error",
	"EDA Receipt",
	"EDA Replica",
	"EDA Worker",
	"EDA Subscription",
	"EDA Destination",
	"EDA Event Rule",
	"EDA Settings",
)
# What the app's methods do when called by someone who may not: refused, never a success.
REFUSED = (401, 403, 417)
HOSTILE_VALUES = (
	"Administrator",
	"' or 1=1 -- ",
	'{"name": ["like", "%"]}',
	'[["payload", "like", "%HIDDEN%"]]',
	"x" * 100_000,
)


# --- the site side (bench execute) ---------------------------------------------------------------------


def seed() -> dict[str, Any]:
	import frappe
	from frappe.utils.password import update_password

	from frappe_eda.messaging.envelope import Message, encode
	from frappe_eda.messaging.store import Direction, ErrorRecord, MessageRecord, Status
	from frappe_eda.stores.doctype_store import DocTypeStore

	clean()
	for key, email in USERS.items():
		if not frappe.db.exists("User", email):
			frappe.get_doc(
				{"doctype": "User", "email": email, "first_name": key, "send_welcome_email": 0}
			).insert(ignore_permissions=True)
		roles = {"plain": [], "eda_user": ["EDA User"], "manager": ["EDA Manager"]}[key]
		frappe.get_doc("User", email).add_roles("Desk User", *roles)
		update_password(email, PASSWORD)
	mine = frappe.get_doc(
		{"doctype": "ToDo", "description": f"{TAG} mine", "allocated_to": USERS["eda_user"]}
	)
	mine.insert(ignore_permissions=True)
	frappe.db.set_value("ToDo", mine.name, "owner", USERS["eda_user"])
	theirs = frappe.get_doc({"doctype": "ToDo", "description": f"{TAG} theirs"}).insert(
		ignore_permissions=True
	)

	def record(text: str, direction: Direction, todo: str, message_id: str | None = None) -> MessageRecord:
		message = Message(type=f"{TAG}.todo", payload={"text": text})
		return MessageRecord(
			message_id=message_id or message.id,
			direction=direction,
			status=Status.DEAD,
			routing_key=f"{TAG}.todo",
			body=encode(message).decode(),
			queue="" if direction is Direction.OUTGOING else f"{TAG}.work",
			reference_doctype="ToDo",
			reference_name=todo,
			last_error=f"ValueError: {text}",
		)

	visible = record(VISIBLE, Direction.OUTGOING, mine.name)
	hidden = record(HIDDEN, Direction.OUTGOING, theirs.name)
	received = record(HIDDEN, Direction.INCOMING, mine.name, message_id=visible.message_id)
	store = DocTypeStore(commit=False)
	store.save([visible, hidden, received])
	for rec in (visible, hidden, received):
		store.add_error(
			ErrorRecord(
				message_id=rec.message_id,
				direction=rec.direction,
				exception_type="ValueError",
				error="failed" if rec is visible else HIDDEN,
				fingerprint=f"{TAG}-fp",
				queue=rec.queue,
				traceback=f"Traceback: {VISIBLE if rec is visible else HIDDEN}",
			)
		)
	frappe.db.commit()
	names = {
		"visible": frappe.db.get_value(
			"EDA Message", {"message_id": visible.message_id, "direction": "Outgoing"}
		),
		"hidden": frappe.db.get_value("EDA Message", {"message_id": hidden.message_id}),
		"received": frappe.db.get_value(
			"EDA Message", {"message_id": visible.message_id, "direction": "Incoming"}
		),
	}
	_import_the_app()  # frappe.whitelisted holds what was imported: all of the app's modules
	methods = sorted(
		f"{fn.__module__}.{fn.__qualname__}"
		for fn in frappe.whitelisted
		if fn.__module__.startswith("frappe_eda.") and ".tests." not in fn.__module__
	)
	return {
		"names": names,
		"methods": methods,
		"guest_methods": sorted(
			f"{fn.__module__}.{fn.__qualname__}"
			for fn in frappe.guest_methods
			if fn.__module__.startswith("frappe_eda.")
		),
	}


def _import_the_app() -> None:
	import importlib
	import pkgutil

	import frappe_eda

	for module in pkgutil.walk_packages(frappe_eda.__path__, "frappe_eda."):
		if ".tests" in module.name or module.name.endswith((".benchmark", "__main__")):
			continue
		try:
			importlib.import_module(module.name)
		except Exception:  # a module that needs what this process lacks: its methods are not reachable either
			continue


def clean() -> None:
	import frappe

	frappe.db.delete("EDA Error", {"fingerprint": f"{TAG}-fp"})
	frappe.db.delete("EDA Message", {"routing_key": f"{TAG}.todo"})
	frappe.db.delete("ToDo", {"description": ["like", f"{TAG} %"]})
	frappe.db.commit()


# --- the HTTP side ----------------------------------------------------------------------------------------


class Client:
	def __init__(self, base: str, user: str | None) -> None:
		self.base = base.rstrip("/")
		self.opener = urllib.request.build_opener(
			urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
		)
		if user:
			status, body = self.call("POST", "/api/method/login", {"usr": user, "pwd": PASSWORD})
			if status != 200:
				raise SystemExit(f"cannot log in as {user}: {status} {body[:200]}")

	def call(self, method: str, path: str, data: dict[str, Any] | None = None) -> tuple[int, str]:
		encoded = urllib.parse.urlencode(
			{k: v if isinstance(v, str) else json.dumps(v) for k, v in (data or {}).items()}
		)
		url = self.base + path
		body = None
		if method == "GET" and encoded:
			url += ("&" if "?" in url else "?") + encoded
		elif encoded:
			body = encoded.encode()
		request = urllib.request.Request(url, data=body, method=method)
		request.add_header("Accept", "application/json")
		try:
			with self.opener.open(request, timeout=60) as response:
				return response.status, response.read().decode("utf-8", "replace")
		except urllib.error.HTTPError as e:
			return e.code, e.read().decode("utf-8", "replace")


class Checks:
	def __init__(self) -> None:
		self.failed: list[str] = []
		self.count = 0

	def expect(self, ok: bool, what: str) -> None:
		self.count += 1
		if not ok:
			self.failed.append(what)
			print(f"FAIL {what}")


def run(base: str, seeded: dict[str, Any]) -> Checks:
	checks = Checks()
	names, methods = seeded["names"], seeded["methods"]
	checks.expect(
		not seeded["guest_methods"], f"no method of the app allows Guest: {seeded['guest_methods']}"
	)
	clients = {"guest": Client(base, None), **{key: Client(base, email) for key, email in USERS.items()}}
	missing = "eda-hostile-no-such-message"
	for who, client in clients.items():
		manager = who == "manager"
		# 1. every whitelisted method of the app, with hostile arguments (the manager: the read-only ones;
		# what a manager may change is the other suites' business)
		for method in methods if not manager else [m for m in methods if _read_only(m)]:
			for value in HOSTILE_VALUES:
				arguments = {
					"name": value,
					"names": [names["hidden"], value],
					"filters": value,
					"doctype": "EDA Message",
					"job_id": value,
					"rule": value,
					"docname": value,
					"subscription": value,
					"payload": value,
				}
				status, body = client.call("POST", f"/api/method/{method}", arguments)
				checks.expect(HIDDEN not in body or manager, f"{who}: {method} leaked the hidden marker")
				checks.expect(
					status != 200 or manager or _read_only(method),
					f"{who}: {method} succeeded ({value[:30]!r})",
				)
		# 2. REST resources: read, then write
		for doctype in EDA_DOCTYPES:
			path = f"/api/resource/{urllib.parse.quote(doctype)}"
			status, body = client.call("GET", path, {"fields": ["*"], "limit_page_length": 0})
			checks.expect(HIDDEN not in body or manager, f"{who}: GET {doctype} leaked the hidden marker")
			status, body = client.call(
				"GET",
				path,
				{"fields": ["name", "(select password from __Auth limit 1) as x"], "limit_page_length": 1},
			)
			checks.expect(status != 200 or '"x"' not in body, f"{who}: a subquery in fields of {doctype} ran")
			if manager:
				continue  # writes are refused to the others only
			status, _ = client.call("POST", path, {"data": {"doctype": doctype, "message_id": "x"}})
			checks.expect(status != 200, f"{who}: POST {doctype} was accepted")
		for key in ("visible", "hidden", "received") if not manager else ():
			path = f"/api/resource/EDA%20Message/{urllib.parse.quote(names[key])}"
			status, body = client.call("PUT", path, {"data": {"resolved": 1}})
			checks.expect(status != 200 or manager, f"{who}: PUT EDA Message {key} was accepted")
			status, body = client.call("DELETE", path)
			checks.expect(
				(status != 202 and status != 200) or manager, f"{who}: DELETE EDA Message {key} was accepted"
			)
		# 3. Frappe's generic read paths, EDA Error and EDA Message by the hidden marker
		for doctype, field in (
			("EDA Message", "payload"),
			("EDA Error", "traceback"),
			("EDA Error", "error"),
		):
			filters = {field: ["like", f"%{HIDDEN}%"]}
			for method, args in (
				("frappe.client.get_count", {"doctype": doctype, "filters": filters}),
				("frappe.client.get_list", {"doctype": doctype, "filters": filters, "fields": ["*"]}),
				("frappe.client.get_value", {"doctype": doctype, "filters": filters, "fieldname": field}),
				("frappe.desk.reportview.get_count", {"doctype": doctype, "filters": filters}),
				("frappe.desk.reportview.get", {"doctype": doctype, "filters": filters, "fields": ["*"]}),
				(
					"frappe.desk.reportview.get_group_by_count",
					{"doctype": doctype, "current_filters": filters, "field": "owner"},
				),
			):
				status, body = client.call("POST", f"/api/method/{method}", args)
				if manager:
					continue
				counted = _count(body)
				checks.expect(HIDDEN not in body, f"{who}: {method} on {doctype} returned the hidden marker")
				checks.expect(
					not counted, f"{who}: {method} counted {counted} {doctype} rows by the hidden {field}"
				)
			if not manager:  # link search: the hidden message's name is never offered
				_status, body = client.call(
					"POST", "/api/method/frappe.desk.search.search_link", {"doctype": doctype, "txt": ""}
				)
				checks.expect(names["hidden"] not in body, f"{who}: search_link offered the hidden {doctype}")
		# 4. the same answer for a missing name and one that is not yours
		if not manager:
			for method in (
				"frappe_eda.desk.api.message_errors",
				"frappe_eda.desk.api.message_receipts",
				"frappe_eda.frappe_eda.doctype.eda_message.eda_message.related_messages",
			):
				hidden = client.call("POST", f"/api/method/{method}", {"name": names["hidden"]})
				absent = client.call("POST", f"/api/method/{method}", {"name": missing})
				checks.expect(
					hidden[0] == absent[0]
					and _message(hidden[1]).replace(names["hidden"], "?")
					== _message(absent[1]).replace(missing, "?"),
					f"{who}: {method} tells a hidden name ({hidden[0]}) from a missing one ({absent[0]})",
				)
	# 5. what each may read: the EDA User its own message, the manager everything
	for who, expected in (("eda_user", (True, False)), ("manager", (True, True))):
		_status, body = clients[who].call(
			"GET",
			"/api/resource/EDA%20Message",
			{"fields": ["payload"], "filters": {"routing_key": f"{TAG}.todo"}},
		)
		checks.expect(
			(VISIBLE in body, HIDDEN in body) == expected, f"{who} reads (visible, hidden) = {expected}"
		)
		_status, body = clients[who].call(
			"GET",
			"/api/resource/EDA%20Error",
			{"fields": ["traceback"], "filters": {"fingerprint": f"{TAG}-fp"}},
		)
		checks.expect(
			(VISIBLE in body, HIDDEN in body) == expected,
			f"{who} reads errors (visible, hidden) = {expected}",
		)
	return checks


def _read_only(method: str) -> bool:
	"""Methods any desk user may call (they return only what the caller may read)."""
	return method.endswith(
		(
			".document_messages",
			".message_errors",
			".message_receipts",
			".related_messages",
			".replay_job_state",
			".get_count",  # ours: counts only what the caller may read (checked in section 3)
		)
	)


def _count(body: str) -> int:
	try:
		answer = json.loads(body).get("message")
	except (ValueError, AttributeError):
		return 0
	if isinstance(answer, int) and not isinstance(answer, bool):
		return answer
	if isinstance(answer, list):
		return len(answer)
	if isinstance(answer, dict):
		return len(answer.get("values") or answer.get("result") or [])
	return 0


def _message(body: str) -> str:
	"""The error an answer carries, without the per-request id v16 adds (``__frappe_exc_id``)."""
	try:
		answer = json.loads(body)
	except ValueError:
		return body[:200]
	text = str(answer.get("exception") or answer.get("_server_messages") or answer.get("message"))
	return re.sub(r'__frappe_exc_id\\*":\\*"[0-9a-f]+', "__frappe_exc_id", text)


def main() -> int:
	if len(sys.argv) != 2:
		raise SystemExit(__doc__)
	seeded = json.loads(sys.stdin.read().strip().splitlines()[-1])  # what seed printed
	checks = run(sys.argv[1], seeded)
	print(json.dumps({"checks": checks.count, "failed": len(checks.failed)}))
	return len(checks.failed)


if __name__ == "__main__":
	sys.exit(main())
