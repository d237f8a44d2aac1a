# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE
"""The operator's desk in a real browser, end to end (issue #10 item 6): run by hand, like the bench tests.

What it needs: a site with built assets served (``bench start``, or ``bench --site SITE serve``), a
background worker for the replay jobs (``bench --site SITE worker``; ``bench start`` runs one), the
site's broker, and Playwright for Python driving Debian's Chromium (``pip install playwright``, no
browser download: ``/usr/bin/chromium``). Then::

    bench --site SITE execute frappe_eda.tests.desk_suite.seed
    python frappe_eda/tests/desk_suite.py http://SITE:8000 [--shots docs/desk]
    bench --site SITE execute frappe_eda.tests.desk_suite.clean

``seed`` makes two users (an operator with the *EDA Manager* role and a plain desk user, both with the
password ``SUITE_PASSWORD``), declares the suite's queue on the site's broker, and stores Dead messages
with their errors and ``.dead`` copies: one each for Replay, Edit and Replay and Mark Resolved, a batch
for the list's bulk Replay, a failure group for the report's Replay Group, and one full of hostile
strings. Each step prints PASS or FAIL with what it saw; any page error, console error or failed
request fails the step it happened in; the exit status is the number of failed steps.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TAG = "eda-suite"
QUEUE = f"{TAG}.work"
OPERATOR = f"{TAG}-operator@example.com"
PLAIN = f"{TAG}-plain@example.com"
SUITE_PASSWORD = "eda-Suite-7c1f-password"  # test users of a test site only
BULK = 600  # enough for the job to report progress before its summary
GROUP = 6
HOSTILE = '<img src=x onerror="window.__eda_pwned=1">'
SENDER = "wh2.example.com"
TRY_CONDITION = f'strip_html(doc.description).startswith("{TAG} WH1:")'
TRY_TODO = f'<div class="ql-editor read-mode"><p>{TAG} WH1: count the chairs</p></div>'

HOSTILE_ERROR = "<script>window.__eda_pwned=2</script><b>bold?</b>"
# Replication (issue #11/#14): text from another server, in a replica's conflict, a reconciliation and a
# receipt. An alert() that fires is caught by the page's dialog handler and fails the step.
HOSTILE_ALERT = "<img src=x onerror=alert(1)>"
HOSTILE_SCRIPT = "<script>alert(2);window.__eda_pwned=3</script>"
SUBSCRIPTION = f"{TAG}-todos"
SOURCE = f"source.{TAG}.invalid"  # no such server: a reconciliation's digest goes nowhere
REPLICA_COPY = f"{TAG} replica copy"
RECEIPT_SERVERS = (f"wh1.{TAG}.localhost", f"wh2.{TAG}.localhost")
APPLIED_DOCUMENT = "TODO-WH1-0042"
# A list's document rows (v16 wraps its header row in .list-row-container too).
ROWS = ".list-row-container .list-row"


# --- the site side: bench --site SITE execute frappe_eda.tests.desk_suite.seed / clean -----------------


def seed() -> dict[str, Any]:
	import frappe

	from frappe_eda.messaging.connection import BrokerConnection
	from frappe_eda.messaging.envelope import Message, encode
	from frappe_eda.messaging.publisher import Envelope, Publisher
	from frappe_eda.messaging.store import Direction, ErrorRecord, MessageRecord, Status
	from frappe_eda.messaging.topology import Queue, Topology, TopologyDeclarer, dead_letter_queue
	from frappe_eda.settings import load_settings
	from frappe_eda.stores.doctype_store import DocTypeStore

	clean()
	_user(OPERATOR, "EDA Suite Operator", ["EDA Manager", "Desk User"])
	_user(PLAIN, "EDA Suite Plain", ["Desk User"])
	store = DocTypeStore(commit=False)
	records, errors = [], []

	def dead(kind: str, n: int, fingerprint: str, routing_key: str = "", error: str = "") -> MessageRecord:
		message = Message(type=f"{TAG}.{kind}", payload={"kind": kind, "n": n, "note": "<b>not bold</b>"})
		key = routing_key or f"{TAG}.{kind}.{n}"
		record = MessageRecord(
			message_id=message.id,
			direction=Direction.INCOMING,
			status=Status.DEAD,
			routing_key=key,
			body=encode(message).decode(),
			exchange=f"{TAG}.events",
			queue=QUEUE,
			handler=f"{TAG}.handlers.{kind}",
			message_type=message.type,
			# the broker-proven sender (Verified Sender in the list); a user name is text, shown as text
			headers={
				"x-eda-attempt": 3,
				"x-note": HOSTILE,
				"x-eda-sender": HOSTILE if kind == "hostile" else SENDER,
			},
			attempts=3,
			last_error=error or f"ValueError: {kind} {n} failed",
		)
		records.append(record)
		for attempt in (1, 2, 3) if kind != "bulk" else (3,):
			errors.append(
				ErrorRecord(
					message_id=message.id,
					direction=Direction.INCOMING,
					exception_type="ValueError",
					error=error or f"{kind} {n} failed",
					fingerprint=fingerprint,
					attempt=attempt,
					queue=QUEUE,
					handler=record.handler,
					traceback=f'Traceback (most recent call last):\n  File "handlers.py", line {attempt}\nValueError: {kind}',
				)
			)
		return record

	dead("single", 1, f"{TAG}-single")
	dead("edit", 1, f"{TAG}-edit")
	dead("resolve", 1, f"{TAG}-resolve")
	for n in range(BULK):
		dead("bulk", n, f"{TAG}-bulk")
	for n in range(GROUP):
		dead("group", n, f"{TAG}-group")
	dead("hostile", 1, f"{TAG}-hostile", routing_key=f"{TAG}.{HOSTILE}", error=HOSTILE_ERROR)
	todo = frappe.get_doc(
		{"doctype": "ToDo", "description": f"{TAG} tracked document", "allocated_to": OPERATOR}
	).insert()
	for direction, status, queue in (
		(Direction.OUTGOING, Status.PUBLISHED, ""),
		(Direction.INCOMING, Status.DEAD, QUEUE),
	):
		tracked = Message(type=f"{TAG}.tracked", payload={"name": todo.name})
		records.append(
			MessageRecord(
				message_id=tracked.id,
				direction=direction,
				status=status,
				routing_key=f"{TAG}.todo.after_insert",
				body=encode(tracked).decode(),
				exchange=f"{TAG}.events",
				queue=queue,
				message_type=tracked.type,
				reference_doctype="ToDo",
				reference_name=todo.name,
				last_error="ValueError: could not apply" if queue else "",
			)
		)
	store.save(records)
	for error in errors:
		store.add_error(error)
	_seed_replication(records[-2].message_id)
	# Try Condition: a disabled rule (it publishes nothing) and a desk-style ToDo whose text is HTML.
	frappe.get_doc(
		{
			"doctype": "EDA Event Rule",
			"document_type": "ToDo",
			"event": "after_insert",
			"enabled": 0,
			"condition": TRY_CONDITION,
			"exchange": f"{TAG}.events",
			"send_fields": "description",
		}
	).insert(ignore_permissions=True)
	# the operator's own ToDo: Try Condition needs read permission on the document it tries
	todo = frappe.get_doc({"doctype": "ToDo", "description": TRY_TODO, "allocated_to": OPERATOR})
	todo.insert(ignore_permissions=True)
	frappe.db.set_value("ToDo", todo.name, "owner", OPERATOR)
	frappe.db.commit()

	with BrokerConnection(load_settings().broker) as connection:
		declarer = TopologyDeclarer(connection)
		declarer.declare(Topology((), (Queue(QUEUE), Queue(dead_letter_queue(QUEUE)))))
		declarer.close()
		publisher = Publisher(connection)
		report = publisher.send(
			[
				Envelope(
					message_id=r.message_id,
					exchange="",
					routing_key=dead_letter_queue(QUEUE),
					body=r.body.encode(),
					headers={"x-eda-attempt": 3},
				)
				for r in records
			]
		)
		publisher.close()
		if report.failed:
			report.raise_first()
	return {
		"messages": len(records),
		"queue": QUEUE,
		"operator": OPERATOR,
		"plain": PLAIN,
		"subscription": SUBSCRIPTION,
	}


def _seed_replication(outgoing_id: str) -> None:
	"""An EDA Subscription with field rules and a reconciliation's figures, its EDA Replica rows (one a
	Conflict with hostile text) and two EDA Receipts of the outgoing message ``outgoing_id``, each
	written by the code that writes them for real (the figures as ``save_state`` writes them)."""
	import frappe

	from frappe_eda.messaging.context import HandlerContext, handler_context
	from frappe_eda.messaging.envelope import Message, utcnow
	from frappe_eda.messaging.replication.receipts import RECEIPT_TYPE, Receipt, ReceiptOutcome
	from frappe_eda.messaging.replication.versions import DocVersion
	from frappe_eda.replication import replicas
	from frappe_eda.replication.receipts import record_receipt
	from frappe_eda.stores.doctype_store import DocTypeStore

	frappe.get_doc(
		{
			"doctype": "EDA Subscription",
			"subscription_name": SUBSCRIPTION,
			"enabled": 1,
			"description": f"{TAG}: ToDos from a server that does not exist",
			"source_doctype": "ToDo",
			"document_type": "ToDo",
			"source": SOURCE,
			"routing_key_patterns": f"{TAG}.todo.*\n{TAG}.replica.*",
			"match_by": "Source Name",
			"conflict_policy": "Skip and Record",
			"link_policy": "Ignore",
			"reconcile_every": "Never",
			"field_rules": [
				{"action": "Map", "source_field": "description", "target_field": "description"},
				{"action": "Skip", "source_field": "color"},
				{"action": "Default", "target_field": "priority", "value": "Medium"},
				{"action": "Constant", "target_field": "status", "value": "Open"},
			],
		}
	).insert()
	now = frappe.utils.now_datetime()
	frappe.db.set_value(
		"EDA Subscription",
		SUBSCRIPTION,
		{
			"last_reconciled_at": now,
			"last_reconcile_differed": 7,
			"last_reconcile_healed": 5,
			"last_reconcile_unhealed": 2,
			"reconcile_runs_with_drift": 1,
			"last_reconcile_why": f"SRC-0004: Conflict: {HOSTILE_ALERT}\nSRC-0005: not sent by the source: {HOSTILE_SCRIPT}",
		},
		update_modified=False,
	)
	copies = [
		frappe.get_doc({"doctype": "ToDo", "description": f"{REPLICA_COPY} {n}"}).insert() for n in range(4)
	]
	version = DocVersion.of(now, "on_update")
	for n, (status, event, detail) in enumerate(
		(
			("Applied", "on_update", ""),
			("Applied", "after_insert", ""),
			("Skipped", "on_update", "stale: an older version than the one applied"),
			(
				"Conflict",
				"on_update",
				f"changed here since the subscription wrote it: {HOSTILE_ALERT} {HOSTILE_SCRIPT}",
			),
			("Deleted", "on_trash", ""),
		)
	):
		replicas.record(
			None,
			subscription=SUBSCRIPTION,
			source=SOURCE,
			source_doctype="ToDo",
			source_name=f"SRC-{n + 1:04d}" + (f" {HOSTILE_ALERT}" if status == "Conflict" else ""),
			document_type="ToDo",
			local_name=copies[n].name if n < len(copies) else "",
			status=status,
			message_id=frappe.generate_hash(length=32),
			event=event,
			detail=detail,
			version=version if status == "Applied" else None,
			local_modified=copies[n].modified if status == "Applied" else None,
			source_hash=frappe.generate_hash(length=16) if status == "Applied" else None,
		)
	for server, outcome, detail, document in (
		(RECEIPT_SERVERS[0], ReceiptOutcome.APPLIED, "", APPLIED_DOCUMENT),
		(RECEIPT_SERVERS[1], ReceiptOutcome.REFUSED, f"ApplyRefused: {HOSTILE_ALERT} {HOSTILE_SCRIPT}", ""),
	):
		receipt = Receipt(
			message_id=outgoing_id,
			server=server,
			subscription=SUBSCRIPTION,
			outcome=outcome,
			detail=detail,
			document=document,
			at=utcnow().isoformat(),
		)
		# As the worker runs it: the broker-proven sender is the server that answers.
		context = HandlerContext(QUEUE, RECEIPT_TYPE, 1, False, DocTypeStore(commit=False), sender=server)
		with handler_context(context):
			if not record_receipt(Message(type=RECEIPT_TYPE, payload=receipt.payload())):
				raise AssertionError(f"the receipt from {server} was dropped")


def clean() -> None:
	import frappe

	from frappe_eda.messaging.connection import BrokerConnection
	from frappe_eda.messaging.errors import BrokerUnavailable
	from frappe_eda.messaging.topology import dead_letter_queue
	from frappe_eda.replication.reconcile import DIGEST_TYPE, request_key
	from frappe_eda.replication.subscriptions import default_queue
	from frappe_eda.settings import load_settings

	frappe.db.delete("EDA Receipt", {"subscription": SUBSCRIPTION})
	frappe.db.delete("EDA Replica", {"subscription": SUBSCRIPTION})
	if frappe.db.exists("EDA Subscription", SUBSCRIPTION):
		frappe.delete_doc("EDA Subscription", SUBSCRIPTION, force=True, ignore_permissions=True)
	# What Reconcile Now sent to the source that does not exist.
	frappe.db.delete("EDA Message", {"message_type": DIGEST_TYPE, "routing_key": request_key(SOURCE)})
	frappe.db.delete("ToDo", {"description": ["like", f"{REPLICA_COPY} %"]})
	frappe.db.delete("EDA Error", {"queue": QUEUE})
	frappe.db.delete("EDA Message", {"queue": QUEUE})
	frappe.db.delete("EDA Message", {"message_type": f"{TAG}.tracked"})
	frappe.db.delete("ToDo", {"description": f"{TAG} tracked document"})
	frappe.db.delete("EDA Event Rule", {"condition": TRY_CONDITION})
	frappe.db.delete("ToDo", {"description": TRY_TODO})
	frappe.db.commit()
	try:
		with BrokerConnection(load_settings().broker) as connection:
			channel = connection.channel()
			for name in (QUEUE, dead_letter_queue(QUEUE)):
				channel.queue_delete(name)
			# A worker of the site may still consume the subscription's queue: then it stays.
			channel.queue_delete(default_queue(SUBSCRIPTION), if_unused=True)
	except BrokerUnavailable:
		pass
	except Exception as e:  # the queue is in use (the channel is closed with PRECONDITION_FAILED)
		print(f"left the queue {default_queue(SUBSCRIPTION)}: {e}")


def _user(email: str, name: str, roles: list[str]) -> None:
	import frappe
	from frappe.utils.password import update_password

	if not frappe.db.exists("User", email):
		frappe.get_doc(
			{"doctype": "User", "email": email, "first_name": name, "send_welcome_email": 0}
		).insert(ignore_permissions=True)
	user = frappe.get_doc("User", email)
	user.add_roles(*roles)
	update_password(email, SUITE_PASSWORD)


# --- the browser side --------------------------------------------------------------------------------


class Suite:
	def __init__(self, base: str, shots: Path | None) -> None:
		self.base = base.rstrip("/")
		self.shots = shots
		self.failed: list[str] = []

	def step(self, name: str, problems: list[str], check: Callable[[], str]) -> None:
		"""Run one step; it fails on an exception or on a page problem seen meanwhile."""
		del problems[:]
		try:
			detail = check()
			if problems:
				raise AssertionError("; ".join(problems[:5]))
			print(f"PASS {name}: {detail}")
		except Exception as e:  # report every step, then exit with the count
			self.failed.append(name)
			print(f"FAIL {name}: {type(e).__name__}: {e}")

	def shot(self, page: Any, name: str) -> None:
		if self.shots:
			self.shots.mkdir(parents=True, exist_ok=True)
			page.screenshot(path=str(self.shots / f"{name}.png"))


def _call(page: Any, method: str, **args: Any) -> Any:
	"""A whitelisted method, called from the page with the logged-in user's session."""
	return page.evaluate("([m, a]) => frappe.xcall(m, a)", [method, args])


def _messages(page: Any, kind: str, fields: list[str] | None = None) -> list[dict[str, Any]]:
	return _call(
		page,
		"frappe.client.get_list",
		doctype="EDA Message",
		filters={"queue": QUEUE, "message_type": f"{TAG}.{kind}"},
		fields=fields or ["name", "status", "resolved", "replay_count"],
		limit_page_length=5000,
	)


def _wait(check: Callable[[], Any], what: str, timeout: float = 90) -> Any:
	deadline = time.monotonic() + timeout
	while time.monotonic() < deadline:
		value = check()
		if value:
			return value
		time.sleep(0.5)
	raise AssertionError(f"timed out waiting for {what}")


def _open(page: Any, base: str, route: str) -> None:
	page.goto(f"{base}{route}", wait_until="networkidle")
	page.wait_for_timeout(500)


def _menu(page: Any, group: str, item: str) -> None:
	page.locator(f".page-actions button:has-text('{group}'):visible").first.click()
	page.locator(
		f".dropdown-menu.show a:has-text('{item}'), .dropdown-menu.show .dropdown-item:has-text('{item}')"
	).first.click()


def _confirm(page: Any) -> None:
	page.locator(".modal.show .btn-primary:visible").last.click()


def operator_steps(suite: Suite, page: Any, problems: list[str]) -> None:
	base = suite.base
	page.set_viewport_size({"width": 1280, "height": 800})  # screenshots small enough for the README
	# A stored string that runs alert() (hostile text of another server) fails the step it ran in.
	page.on("dialog", lambda d: (problems.append(f"dialog {d.type}: {d.message}"), d.dismiss()))

	def workspace() -> str:
		_open(page, base, "/app/eda")
		page.wait_for_selector(".number-card, .widget", timeout=30000)
		page.wait_for_timeout(1500)  # the cards and the chart load after the page
		if page.locator(".modal.show:has-text('Error')").count():
			raise AssertionError("a server error dialog is open")
		suite.shot(page, "workspace")
		return f"{page.locator('.widget').count()} widgets"

	def dead_list() -> str:
		_open(page, base, f"/app/eda-message?status=Dead&queue={QUEUE}")
		page.wait_for_selector(ROWS, timeout=30000)
		red = page.locator(".list-row-container .indicator-pill.red:has-text('Dead')").count()
		if not red:
			raise AssertionError("no Dead row shows a red indicator")
		if not page.locator(".list-row-container:has-text('failed')").count():
			raise AssertionError("the last error is not on the list")
		suite.shot(page, "dead-list")
		return f"{red} Dead rows in red"

	def report_view_times() -> str:
		from datetime import datetime
		from zoneinfo import ZoneInfo

		[message] = _messages(page, "resolve", ["name", "created_at"])
		_open(page, base, f"/app/eda-message/view/report?queue={QUEUE}&message_type={TAG}.resolve")
		page.wait_for_selector(".dt-row", timeout=30000)
		page.wait_for_timeout(1000)
		text = page.locator(".dt-scrollable").inner_text()
		zone = page.evaluate("() => frappe.boot.time_zone.system")
		utc = datetime.fromisoformat(message["created_at"]).replace(tzinfo=ZoneInfo("UTC"))
		local = utc.astimezone(ZoneInfo(zone))
		# The site's time format: HH:mm:ss (v15's default) or HH:mm (v16's wizard for some countries).
		time_format = page.evaluate("() => frappe.boot.sysdefaults.time_format || 'HH:mm:ss'")
		clock = "%H:%M:%S" if "ss" in time_format else "%H:%M"
		if local.strftime(clock) not in text:
			raise AssertionError(f"Created At is not shown in {zone} ({local.strftime(clock)}): {text[:300]}")
		if zone != "UTC" and utc.strftime(clock) in text:
			raise AssertionError(f"Created At is shown in UTC ({utc.strftime(clock)})")
		if page.evaluate("() => !!(cur_list.list_sidebar && cur_list.list_sidebar.list_group_by)"):
			groups = page.evaluate("() => cur_list.list_sidebar.list_group_by.group_by_fields")
		else:  # v16: no list sidebar; the triage fields are the list's standard filters
			groups = [
				f
				for f in ("exception_type", "fingerprint")
				if page.locator(f".standard-filter-section [data-fieldname='{f}']").count()
			]
		if not {"exception_type", "fingerprint"} <= set(groups):
			raise AssertionError(f"the sidebar does not group by exception type and fingerprint: {groups}")
		return f"{utc:%H:%M:%S} UTC shown as {local:%H:%M:%S} ({zone}); sidebar groups {groups}"

	def form_replay() -> str:
		[message] = _messages(page, "single")
		_open(page, base, f"/app/eda-message/{message['name']}")
		page.wait_for_selector(".eda-json", timeout=30000)
		if '"kind": "single"' not in page.locator(".eda-json").first.inner_text():
			raise AssertionError("the envelope is not shown re-indented")
		page.wait_for_selector(".eda-error", timeout=30000)
		suite.shot(page, "message-form")
		page.locator(".page-actions .primary-action:has-text('Replay')").click()
		_wait(lambda: _messages(page, "single")[0]["status"] == "Received", "the replay to reach the queue")
		return "Dead -> Received, replay #1"

	def edit_and_replay() -> str:
		[message] = _messages(page, "edit")
		_open(page, base, f"/app/eda-message/{message['name']}")
		_menu(page, "Actions", "Edit and Replay")
		page.wait_for_function(
			"() => frappe.ui.open_dialogs.length && cur_dialog && cur_dialog.fields_dict.payload",
			timeout=15000,
		)
		page.evaluate(
			"""() => cur_dialog.set_value("payload", JSON.stringify({kind: "edit", n: 1, fixed: true}, null, 2))"""
		)
		page.locator(".modal.show .btn-primary:has-text('Send Copy')").click()
		page.wait_for_url(lambda u: message["name"] not in u, timeout=90000)
		copies = _call(
			page,
			"frappe.client.get_list",
			doctype="EDA Message",
			filters={
				"replay_of": _call(
					page,
					"frappe.client.get_value",
					doctype="EDA Message",
					filters=message["name"],
					fieldname="message_id",
				)["message_id"]
			},
			fields=["name", "payload"],
		)
		if len(copies) != 1 or '"fixed":true' not in copies[0]["payload"].replace(" ", ""):
			raise AssertionError(f"expected one corrected copy, found {len(copies)}")
		if not [m for m in _messages(page, "edit") if m["name"] == message["name"] and m["resolved"]]:
			raise AssertionError("the original is not marked resolved")
		return f"copy {copies[0]['name']} sent, original resolved"

	def mark_resolved() -> str:
		[message] = _messages(page, "resolve")
		_open(page, base, f"/app/eda-message/{message['name']}")
		_menu(page, "Actions", "Mark Resolved")
		_wait(lambda: _messages(page, "resolve")[0]["resolved"], "the message to be resolved")
		return "resolved"

	def bulk_replay() -> str:
		dead = _call(
			page,
			"frappe.client.get_count",
			doctype="EDA Message",
			filters={"queue": QUEUE, "status": "Dead"},
		)
		_open(page, base, f"/app/eda-message?status=Dead&queue={QUEUE}")
		page.wait_for_selector(ROWS, timeout=30000)
		page.locator(".list-row-head .list-check-all:visible").first.click()
		_menu(page, "Actions", "Replay")
		# More match the filters than the page shows: the desk offers all of them.
		page.locator(".modal.show .btn-primary:has-text('All')").click()
		try:  # the job may finish between two polls: progress is reported, the summary is required
			page.wait_for_selector(".modal.show .progress", timeout=15000)
			seen_progress = True
		except Exception:
			seen_progress = False
		summary = page.wait_for_selector(".modal.show .eda-job-summary", timeout=180000)
		text = " ".join(summary.inner_text().split())
		suite.shot(page, "bulk-replay")
		replayed = [m for m in _messages(page, "bulk") if m["status"] == "Received"]
		if len(replayed) != BULK:
			raise AssertionError(
				f"{len(replayed)} of the {BULK} bulk messages were replayed; summary: {text}"
			)
		if f"{dead} sent of {dead}" not in text:
			raise AssertionError(f"the summary does not say all {dead} Dead were sent: {text}")
		page.locator(".modal.show .btn-modal-close").first.click()
		return f"progress shown: {seen_progress}; summary: {text[:120]}"

	def group_replay() -> str:
		_open(page, base, "/app/query-report/EDA Failure Groups")
		button = page.locator(f"[data-eda-fingerprint='{TAG}-group']")
		button.wait_for(timeout=30000)
		button.click()
		_confirm(page)
		summary = page.wait_for_selector(".modal.show .eda-job-summary", timeout=120000)
		if f"{GROUP} sent of {GROUP}" not in " ".join(summary.inner_text().split()):
			raise AssertionError(f"the summary says {summary.inner_text()!r}")
		suite.shot(page, "failure-groups")
		statuses = {m["status"] for m in _messages(page, "group")}
		if statuses != {"Received"}:
			raise AssertionError(f"group statuses after replay: {statuses}")
		return f"{GROUP} replayed"

	def hostile_inert() -> str:
		[message] = _messages(page, "hostile")
		for route in (
			f"/app/eda-message?queue={QUEUE}&message_type={TAG}.hostile",
			f"/app/eda-message/{message['name']}",
			"/app/eda-error?fingerprint=eda-suite-hostile",
		):
			_open(page, base, route)
			page.wait_for_timeout(1500)
			if page.evaluate("() => window.__eda_pwned"):
				raise AssertionError(f"a stored string ran as script on {route}")
			if page.locator("b:has-text('bold?'), img[src='x']").count():
				raise AssertionError(f"a stored string rendered as HTML on {route}")
		_open(page, base, f"/app/eda-message/{message['name']}")
		page.wait_for_timeout(1500)
		if "onerror" not in page.inner_text("body"):
			raise AssertionError("the hostile routing key is not shown as text on its form")
		return "no script ran, no markup rendered, on the list, the form and the errors"

	def document_messages() -> str:
		[todo] = _call(
			page,
			"frappe.client.get_list",
			doctype="ToDo",
			filters={"description": f"{TAG} tracked document"},
			fields=["name"],
		)
		_open(page, base, f"/app/todo/{todo['name']}")
		section = page.wait_for_selector(".eda-document-messages", timeout=30000)
		text = " ".join(section.inner_text().split())
		for expected in ("Messages", "Outgoing", "Published", "Incoming", "Dead", QUEUE):
			if expected not in text:
				raise AssertionError(f"{expected!r} is not in the document's Messages section: {text[:200]}")
		if not page.locator(".eda-document-messages a[href*='/eda-message/']").count():
			raise AssertionError("the messages are not linked")
		section.scroll_into_view_if_needed()
		suite.shot(page, "document-messages")
		return text[:100]

	def inert(route: str, scope: str = "body") -> None:
		"""No stored string ran (no alert, no flag) or rendered as markup on the page."""
		if page.evaluate("() => window.__eda_pwned"):
			raise AssertionError(f"a stored string ran as script on {route}")
		injected = page.evaluate(
			"""(scope) => [...document.querySelectorAll(scope)].reduce((n, el) => n
				+ el.querySelectorAll("img[src='x']").length
				+ [...el.querySelectorAll("b")].filter((b) => b.textContent === "bold?").length
				+ [...el.querySelectorAll("script")].filter((s) => /alert|__eda_pwned/.test(s.textContent)).length, 0)""",
			scope,
		)
		if injected:
			raise AssertionError(f"{injected} injected element(s) in {scope} on {route}")

	def subscription_form() -> str:
		route = f"/app/eda-subscription/{SUBSCRIPTION}"
		_open(page, base, route)
		page.wait_for_function(
			f"() => window.cur_frm && cur_frm.doc.name === {json.dumps(SUBSCRIPTION)} && !cur_frm.is_dirty()",
			timeout=30000,
		)
		if page.locator(".modal.show:has-text('Error')").count():
			raise AssertionError("a server error dialog is open")
		body = page.locator(".form-layout").first
		for label in ("Which Messages", "How To Apply", "Field Mapping", "Reconciliation"):
			if not body.locator(f".section-head:has-text('{label}')").count():
				raise AssertionError(f"no {label!r} section")
		rules = page.locator("[data-fieldname='field_rules'] .grid-body .grid-row").count()
		if rules != 4:
			raise AssertionError(f"{rules} field rules shown, 4 seeded")
		buttons = {
			label: page.locator(f".page-actions button:has-text('{label}'):visible").count()
			for label in ("Copies", "Messages", "Reconcile Now")
		}
		if not all(buttons.values()):
			raise AssertionError(f"buttons missing: {buttons}")
		section = page.locator(".section-head:has-text('Reconciliation')").first
		if "collapsed" in (section.get_attribute("class") or ""):
			section.click()
		figures = {}
		for fieldname in (
			"last_reconciled_at",
			"last_reconcile_differed",
			"last_reconcile_healed",
			"last_reconcile_unhealed",
			"reconcile_runs_with_drift",
			"last_reconcile_why",
		):
			field = page.locator(f".frappe-control[data-fieldname='{fieldname}']:visible").first
			field.wait_for(timeout=10000)
			figures[fieldname] = " ".join(field.inner_text().split())
		for fieldname, number in (
			("last_reconcile_differed", "7"),
			("last_reconcile_healed", "5"),
			("last_reconcile_unhealed", "2"),
		):
			if number not in figures[fieldname]:
				raise AssertionError(f"{fieldname} shows {figures[fieldname]!r}, not {number}")
		if not any(c.isdigit() for c in figures["last_reconciled_at"]):
			raise AssertionError(f"Last Reconciled At shows {figures['last_reconciled_at']!r}")
		why = figures["last_reconcile_why"]
		if "onerror=alert(1)" not in why or "<script>" not in why:
			raise AssertionError(f"the reconciliation's why is not shown as text: {why!r}")
		inert(route)
		page.locator("[data-fieldname='last_reconcile_why']:visible").first.scroll_into_view_if_needed()
		suite.shot(page, "subscription-form")
		return f"buttons {list(buttons)}; {rules} field rules; figures {figures['last_reconcile_differed']} / {figures['last_reconcile_healed']} / {figures['last_reconcile_unhealed']}"

	def trust_views() -> str:
		_open(page, base, f"/app/eda-message?queue={QUEUE}")
		page.wait_for_selector(ROWS, timeout=30000)
		if not page.locator(".list-row-head:has-text('Verified Sender')").count():
			raise AssertionError("the EDA Message list has no Verified Sender column")
		if not page.locator(f".list-row-container:has-text('{SENDER}')").count():
			raise AssertionError(f"no row shows its verified sender {SENDER}")
		_open(page, base, "/app/eda-settings")
		page.wait_for_function("() => window.cur_frm && cur_frm.doctype === 'EDA Settings'", timeout=30000)
		warning = page.locator("text=Trust between servers:")
		warning.first.wait_for(timeout=15000)
		settings_text = " ".join(warning.first.inner_text().split())
		inert("/app/eda-settings")
		suite.shot(page, "settings-trust-warning")
		_open(page, base, "/app/eda-subscription/new")
		page.wait_for_function(
			"() => window.cur_frm && cur_frm.doctype === 'EDA Subscription'", timeout=30000
		)
		default = page.evaluate("() => cur_frm.doc.sender_check")
		if default != "Proven Sender":
			raise AssertionError(f"a new subscription's Sender Check is {default!r}")
		page.evaluate("() => cur_frm.set_value('sender_check', 'Trusted Network')")
		page.locator(
			"text=Trusted Network: this subscription applies messages from any sender"
		).first.wait_for(timeout=15000)
		inert("/app/eda-subscription/new")
		suite.shot(page, "subscription-trusted-network")
		return f"list column and sender; settings: {settings_text[:80]}; new subscription warns when trusted"

	def try_condition() -> str:
		[rule] = _call(
			page,
			"frappe.client.get_list",
			doctype="EDA Event Rule",
			filters={"condition": TRY_CONDITION},
			fields=["name"],
		)
		[todo] = _call(
			page, "frappe.client.get_list", doctype="ToDo", filters={"description": TRY_TODO}, fields=["name"]
		)
		route = f"/app/eda-event-rule/{rule['name']}"
		_open(page, base, route)
		page.locator(".page-actions button:has-text('Try Condition'):visible").first.click()
		page.wait_for_function("() => window.cur_dialog && cur_dialog.fields_dict.docname", timeout=15000)
		page.evaluate(f"() => cur_dialog.set_value('docname', {json.dumps(todo['name'])})")
		page.wait_for_timeout(500)
		page.locator(".modal.show .modal-title").first.click()  # closes the Link field's suggestions
		page.wait_for_timeout(300)
		page.locator(".modal.show .btn-primary:visible").first.click()
		result = page.locator(".modal.show .eda-try-result")
		result.wait_for(timeout=15000)
		text = " ".join(result.inner_text().split())
		for expected in (
			"The condition holds",
			f"{TAG}.events",
			"todo.after_insert",
			"<div class=",  # the payload as JSON text: the description's HTML shown, not rendered
			"WH1: count the chairs",
		):
			if expected not in text:
				raise AssertionError(f"{expected!r} is not in the result: {text[:300]}")
		inert(route)
		suite.shot(page, "try-condition")
		page.keyboard.press("Escape")
		return text[:120]

	def reconcile_now() -> str:
		route = f"/app/eda-subscription/{SUBSCRIPTION}"
		_open(page, base, route)
		button = page.locator(".page-actions button:has-text('Reconcile Now'):visible").first
		button.wait_for(timeout=30000)
		with page.expect_response(lambda r: "reconcile_now" in r.url, timeout=30000) as response:
			button.click()
		reply = response.value.json()
		alert = page.wait_for_selector("#alert-container .alert:has-text('Digest of')", timeout=15000)
		text = " ".join(alert.inner_text().split())
		page.wait_for_timeout(500)
		if page.locator(".modal.show:has-text('Error'), .modal.show:has-text('Traceback')").count():
			raise AssertionError("a server error dialog is open")
		suite.shot(page, "subscription-reconcile-now")
		run = (reply.get("message") or {}).get("run")
		state = _call(
			page,
			"frappe.client.get_value",
			doctype="EDA Subscription",
			filters=SUBSCRIPTION,
			fieldname="reconcile_state",
		)["reconcile_state"]
		if not run or run not in (state or ""):
			raise AssertionError(f"no run recorded: {reply} / {state!r:.200}")
		return f"{text} (run {run})"

	def replica_list() -> str:
		_open(page, base, f"/app/eda-subscription/{SUBSCRIPTION}")
		page.locator(".page-actions button:has-text('Copies'):visible").first.click()
		# /app/ on v15, /desk/ on v16
		page.wait_for_url(lambda u: "/app/eda-replica" in u or "/desk/eda-replica" in u, timeout=30000)
		page.wait_for_selector(ROWS, timeout=30000)
		page.wait_for_timeout(1000)
		rows = page.locator(ROWS).count()
		if rows != 5:
			raise AssertionError(f"{rows} copies listed for the subscription, 5 seeded")
		for status in ("Applied", "Deleted", "Skipped", "Conflict"):
			if not page.locator(f".list-row-container .indicator-pill:has-text('{status}')").count():
				raise AssertionError(f"no {status} row")
		for fieldname in ("subscription", "status"):
			if not page.locator(f".standard-filter-section [data-fieldname='{fieldname}']").count():
				raise AssertionError(f"no standard filter on {fieldname}")
		route = "/app/eda-replica (the subscription's copies)"
		inert(route)
		conflict = " ".join(
			page.locator(".list-row-container:has-text('Conflict')").first.inner_text().split()
		)
		if "SRC-0004 <img src=x onerror=alert(1)>" not in conflict:
			raise AssertionError(f"the Conflict's source name is not shown as text: {conflict!r}")
		suite.shot(page, "replica-list")
		_open(page, base, f"/app/eda-replica?subscription={SUBSCRIPTION}&status=Conflict")
		page.wait_for_selector(ROWS, timeout=30000)
		page.wait_for_timeout(1000)
		conflicts = page.locator(ROWS).count()
		if conflicts != 1:
			raise AssertionError(f"the status filter shows {conflicts} rows, not the one Conflict")
		inert("/app/eda-replica?status=Conflict")
		return f"{rows} copies (Applied, Deleted, Skipped, Conflict); filtered to Conflict: {conflicts}"

	def replica_form() -> str:
		[row] = _call(
			page,
			"frappe.client.get_list",
			doctype="EDA Replica",
			filters={"subscription": SUBSCRIPTION, "status": "Conflict"},
			fields=["name"],
		)
		route = f"/app/eda-replica/{row['name']}"
		_open(page, base, route)
		page.wait_for_function(
			f"() => window.cur_frm && cur_frm.docname === {json.dumps(row['name'])}", timeout=30000
		)
		detail = page.locator(".frappe-control[data-fieldname='detail']:visible").first
		detail.wait_for(timeout=10000)
		text = " ".join(detail.inner_text().split())
		if "onerror=alert(1)" not in text or "<script>" not in text:
			raise AssertionError(f"the conflict's detail is not shown as text: {text!r}")
		source_name = page.locator(".frappe-control[data-fieldname='source_name']:visible").first.inner_text()
		if "onerror=alert(1)" not in source_name:
			raise AssertionError(f"the source name is not shown as text: {source_name!r}")
		inert(route)
		suite.shot(page, "replica-form")
		return text[:100]

	def receipt_texts(scope: str) -> str:
		section = page.wait_for_selector(scope, timeout=30000)
		text = " ".join(section.inner_text().split())
		for expected in (
			"Applied",
			"Refused",
			*RECEIPT_SERVERS,
			APPLIED_DOCUMENT,
			"ApplyRefused: <img src=x onerror=alert(1)>",
			"<script>alert(2)",
			SUBSCRIPTION,
		):
			if expected not in text:
				raise AssertionError(f"{expected!r} is not in the receipts: {text[:300]}")
		if "&lt;" in text or "&amp;" in text:
			raise AssertionError(f"the receipts show entities, not text: {text[:300]}")
		return text

	def tracked_outgoing() -> dict[str, Any]:
		[message] = _call(
			page,
			"frappe.client.get_list",
			doctype="EDA Message",
			filters={"message_type": f"{TAG}.tracked", "direction": "Outgoing"},
			fields=["name", "reference_name"],
		)
		return message

	def message_receipts() -> str:
		message = tracked_outgoing()
		route = f"/app/eda-message/{message['name']}"
		_open(page, base, route)
		text = receipt_texts(".eda-message-receipts")
		receipts = page.locator(".eda-message-receipts .eda-receipt").count()
		if receipts != 2:
			raise AssertionError(f"{receipts} receipts shown, 2 seeded")
		pills = page.locator(
			".eda-message-receipts .indicator-pill.green:has-text('Applied'), .eda-message-receipts .indicator-pill.red:has-text('Refused')"
		).count()
		if pills != 2:
			raise AssertionError("the outcomes are not shown green (Applied) and red (Refused)")
		inert(route, ".eda-message-receipts")
		inert(route)
		page.locator(".eda-message-receipts").first.scroll_into_view_if_needed()
		suite.shot(page, "message-receipts")
		return text[:160]

	def document_receipts() -> str:
		message = tracked_outgoing()
		route = f"/app/todo/{message['reference_name']}"
		_open(page, base, route)
		page.wait_for_selector(".eda-document-messages", timeout=30000)
		text = receipt_texts(".eda-document-messages .eda-receipts")
		receipts = page.locator(".eda-document-messages .eda-receipts .eda-receipt").count()
		if receipts != 2:
			raise AssertionError(f"{receipts} receipts under the message, 2 seeded")
		# Under the outgoing message's row, not the incoming one's.
		above = page.evaluate(
			"""() => { const r = document.querySelector(".eda-document-messages .eda-receipts");
				return r && r.previousElementSibling ? r.previousElementSibling.innerText : ""; }"""
		)
		if "Outgoing" not in above:
			raise AssertionError(f"the receipts are not under the outgoing message: {above!r}")
		inert(route, ".eda-document-messages")
		inert(route)
		page.locator(".eda-document-messages").first.scroll_into_view_if_needed()
		suite.shot(page, "document-receipts")
		return text[:160]

	for name, check in (
		("workspace loads", workspace),
		("a document's Messages section", document_messages),
		("Dead list", dead_list),
		("report view: times in the system zone, groups by failure", report_view_times),
		("form and Replay", form_replay),
		("Edit and Replay", edit_and_replay),
		("Mark Resolved", mark_resolved),
		("Replay Group from the report", group_replay),
		("bulk Replay of all matching from the list, to the end", bulk_replay),
		("hostile strings inert", hostile_inert),
		("EDA Subscription form: sections, field rules, buttons, Reconciliation figures", subscription_form),
		("Reconcile Now on a subscription whose source does not exist", reconcile_now),
		("Try Condition on a rule: holds for an HTML ToDo, shows what would be sent", try_condition),
		("EDA Replica list: the subscription's copies, statuses, filters, hostile text inert", replica_list),
		("EDA Replica form: the Conflict's detail as text", replica_form),
		("EDA Message form: its receipts as plain text", message_receipts),
		("a document's Messages section: receipts under its message", document_receipts),
		# last: it leaves an unsaved new form behind
		(
			"trust: Verified Sender in the list, the settings' warning, Sender Check on a new subscription",
			trust_views,
		),
	):
		suite.step(name, problems, check)


def plain_user_steps(suite: Suite, page: Any, problems: list[str]) -> None:
	def refused() -> str:
		_open(page, suite.base, "/app/eda-message")
		page.wait_for_timeout(1000)
		listed = page.evaluate(
			f"""async () => {{
				try {{
					const rows = await frappe.xcall("frappe.client.get_list",
						{{doctype: "EDA Message", filters: {{queue: "{QUEUE}"}}, fields: ["name"]}});
					return rows.length;
				}} catch (e) {{ return "refused"; }}
			}}"""
		)
		if listed not in (0, "refused"):
			raise AssertionError(f"a plain user reads {listed} EDA Messages of the suite")
		replay = page.evaluate(
			"""async () => {
				try { await frappe.xcall("frappe_eda.desk.api.replay_messages", {names: ["x"]}); return "allowed"; }
				catch (e) { return "refused"; }
			}"""
		)
		if replay != "refused":
			raise AssertionError("a plain user could call replay")
		problems.clear()  # the refused calls show as errors (403, console) on purpose
		return f"EDA Messages: {listed}; replay: {replay}"

	suite.step("a plain user is refused", problems, refused)


def no_worker_steps(suite: Suite, page: Any, problems: list[str]) -> None:
	"""Run with the site served and no background worker (``--no-worker``): a Replay says that nobody will
	run it and what to start, instead of waiting."""

	def replay_without_worker() -> str:
		[message] = _messages(page, "single")
		_open(page, suite.base, f"/app/eda-message/{message['name']}")
		page.wait_for_selector(".eda-json", timeout=30000)
		page.locator(".page-actions .primary-action:has-text('Replay')").click()
		dialog = page.locator(".modal.show:has-text('No background worker')")
		dialog.wait_for(timeout=20000)
		text = " ".join(dialog.inner_text().split())
		if "bench worker" not in text:
			raise AssertionError(f"the dialog does not say what to start: {text[:200]}")
		suite.shot(page, "no-worker")
		if _messages(page, "single")[0]["status"] != "Dead":
			raise AssertionError("the message changed although no worker ran the job")
		return text[:120]

	suite.step("Replay with no background worker says what to start", problems, replay_without_worker)


def main() -> int:
	parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
	parser.add_argument("base", help="the site's URL, e.g. http://mysite.localhost:8000")
	parser.add_argument("--shots", type=Path, help="folder for PNG screenshots of the main screens")
	parser.add_argument(
		"--no-worker",
		action="store_true",
		help="only the step that needs the site served WITHOUT a background worker (stop it first)",
	)
	args = parser.parse_args()
	sys.path.insert(0, str(Path(__file__).resolve().parent))
	from desk_browser import desk_page

	suite = Suite(args.base, args.shots)
	if args.no_worker:
		with desk_page(suite.base, OPERATOR, SUITE_PASSWORD) as (page, problems):
			no_worker_steps(suite, page, problems)
		print(json.dumps({"failed": suite.failed}))
		return len(suite.failed)
	with desk_page(suite.base, OPERATOR, SUITE_PASSWORD) as (page, problems):
		operator_steps(suite, page, problems)
	with desk_page(suite.base, PLAIN, SUITE_PASSWORD) as (page, problems):
		plain_user_steps(suite, page, problems)
	print(json.dumps({"failed": suite.failed}))
	return len(suite.failed)


if __name__ == "__main__":
	sys.exit(main())
