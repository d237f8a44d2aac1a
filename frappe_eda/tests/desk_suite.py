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
HOSTILE_ERROR = "<script>window.__eda_pwned=2</script><b>bold?</b>"


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
			headers={"x-eda-attempt": 3, "x-note": HOSTILE},
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
	return {"messages": len(records), "queue": QUEUE, "operator": OPERATOR, "plain": PLAIN}


def clean() -> None:
	import frappe

	from frappe_eda.messaging.connection import BrokerConnection
	from frappe_eda.messaging.errors import BrokerUnavailable
	from frappe_eda.messaging.topology import dead_letter_queue
	from frappe_eda.settings import load_settings

	frappe.db.delete("EDA Error", {"queue": QUEUE})
	frappe.db.delete("EDA Message", {"queue": QUEUE})
	frappe.db.delete("EDA Message", {"message_type": f"{TAG}.tracked"})
	frappe.db.delete("ToDo", {"description": f"{TAG} tracked document"})
	frappe.db.commit()
	try:
		with BrokerConnection(load_settings().broker) as connection:
			channel = connection.channel()
			for name in (QUEUE, dead_letter_queue(QUEUE)):
				channel.queue_delete(name)
	except BrokerUnavailable:
		pass


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
		page.wait_for_selector(".list-row-container", timeout=30000)
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
		if local.strftime("%H:%M:%S") not in text:
			raise AssertionError(f"Created At is not shown in {zone} ({local:%H:%M:%S}): {text[:300]}")
		if zone != "UTC" and utc.strftime("%H:%M:%S") in text:
			raise AssertionError(f"Created At is shown in UTC ({utc:%H:%M:%S})")
		groups = page.evaluate("() => cur_list.list_sidebar.list_group_by.group_by_fields")
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
		page.wait_for_selector(".list-row-container", timeout=30000)
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
		if not page.locator(".eda-document-messages a[href^='/app/eda-message/']").count():
			raise AssertionError("the messages are not linked")
		section.scroll_into_view_if_needed()
		suite.shot(page, "document-messages")
		return text[:100]

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


def main() -> int:
	parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
	parser.add_argument("base", help="the site's URL, e.g. http://mysite.localhost:8000")
	parser.add_argument("--shots", type=Path, help="folder for PNG screenshots of the main screens")
	args = parser.parse_args()
	sys.path.insert(0, str(Path(__file__).resolve().parent))
	from desk_browser import desk_page

	suite = Suite(args.base, args.shots)
	with desk_page(suite.base, OPERATOR, SUITE_PASSWORD) as (page, problems):
		operator_steps(suite, page, problems)
	with desk_page(suite.base, PLAIN, SUITE_PASSWORD) as (page, problems):
		plain_user_steps(suite, page, problems)
	print(json.dumps({"failed": suite.failed}))
	return len(suite.failed)


if __name__ == "__main__":
	sys.exit(main())
