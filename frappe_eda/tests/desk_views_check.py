# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE
"""The operator's list views and form in a real browser (issue #10, items 1 and 2).

Run by hand like ``desk_xss_check.py`` (seeding needs the site's Python, the browser needs Playwright
with the system Chromium)::

    bench --site SITE execute frappe_eda.tests.desk_views_check.seed
    python frappe_eda/tests/desk_views_check.py http://127.0.0.1:8000 --password admin [--shots DIR]
    bench --site SITE execute frappe_eda.tests.desk_views_check.clean

``seed`` writes a caused chain (order -> invoice -> mail), a Dead message with two errors, and a
replayed copy through ``DocTypeStore``. The check fails on a page error or console error, when the
envelope is not shown re-indented, when Dead is not red, when the list lacks the error, queue,
attempts and age columns, or when a time is not the system time zone's.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

TAG = "eda-views-check"


def seed() -> dict[str, str]:
	import frappe

	from frappe_eda.messaging.envelope import Message, encode
	from frappe_eda.messaging.store import Direction, ErrorRecord, MessageRecord, Status
	from frappe_eda.stores.doctype_columns import escape
	from frappe_eda.stores.doctype_store import DocTypeStore

	clean()
	at = datetime(2026, 11, 30, 22, 30, tzinfo=timezone.utc)  # the day before in Asia/Kolkata: 04:00
	order = Message(
		type=f"{TAG}.order.placed",
		payload={
			"order": "SO-1",
			"total": 12345678901234567890,
			"lines": [{"sku": "A", "qty": 1.0}],
			"empty": {},
		},
		created_at=at,
	)
	invoice = order.caused(f"{TAG}.invoice.created", payload={"invoice": "INV-1"})
	mail = invoice.caused(f"{TAG}.mail.sent", payload={"to": "a@example.com"})
	copy = Message(type=order.type, payload=order.payload)

	def record(message, status, direction=Direction.OUTGOING, queue="", **fields):
		return MessageRecord(
			message_id=message.id,
			direction=direction,
			status=status,
			routing_key=message.type,
			body=encode(message).decode(),
			message_type=message.type,
			queue=queue,
			headers={"x-tenant": "acme", "x-trace": {"span": 1}},
			created_at=at,
			updated_at=at,
			**fields,
		)

	records = [
		record(order, Status.PUBLISHED),
		record(
			invoice,
			Status.PROCESSED,
			Direction.INCOMING,
			f"{TAG}.billing",
			attempts=1,
			handler="billing.on_order",
		),
		record(
			mail,
			Status.DEAD,
			Direction.INCOMING,
			f"{TAG}.mailer",
			attempts=5,
			handler="mailer.send",
			last_error="SMTPServerDisconnected: Connection unexpectedly closed\nwhile sending to a@example.com",
		),
		record(copy, Status.PUBLISHED, replay_of=order.id),
	]
	errors = [
		ErrorRecord(
			message_id=mail.id,
			direction=Direction.INCOMING,
			exception_type="smtplib.SMTPServerDisconnected",
			error="Connection unexpectedly closed",
			fingerprint=f"{TAG}-smtp",
			attempt=n,
			queue=f"{TAG}.mailer",
			handler="mailer.send",
			traceback="Traceback (most recent call last):\n  ...",
			occurred_at=at + timedelta(minutes=n),
		)
		for n in (1, 2)
	]
	store = DocTypeStore(commit=True)
	with store.transaction():
		store.save(records)
		for e in errors:
			store.add_error(e)
	frappe.db.commit()
	names = {
		r.message_type.split(".", 1)[1] + ("-copy" if r.replay_of else ""): frappe.db.get_value(
			"EDA Message",
			{
				"message_id": escape(r.message_id),
				"direction": "Incoming" if r.direction == Direction.INCOMING else "Outgoing",
			},
		)
		for r in records
	}
	print(json.dumps(names))
	return names


def clean() -> None:
	import frappe

	frappe.db.delete("EDA Error", {"queue": ["like", f"{TAG}.%"]})
	frappe.db.delete("EDA Message", {"routing_key": ["like", f"{TAG}.%"]})
	frappe.db.commit()


def check(base: str, user: str, password: str, shots: Path) -> int:
	try:
		from frappe_eda.tests.desk_browser import desk_page
	except ImportError:  # run as a script by the Python that has Playwright, not the app: a sibling
		from desk_browser import desk_page  # type: ignore[no-redef]

	shots.mkdir(parents=True, exist_ok=True)
	failures: list[str] = []
	with desk_page(base, user, password) as (page, problems):
		names = page.evaluate(
			"""async () => Object.fromEntries((await frappe.xcall("frappe.client.get_list", {
				doctype: "EDA Message", filters: {routing_key: ["like", "eda-views-check.%"]},
				fields: ["name", "routing_key", "replay_of"], limit_page_length: 10,
			})).map((m) => [m.routing_key.split(".").slice(1).join(".") + (m.replay_of ? "-copy" : ""), m.name]))"""
		)
		if len(names) < 4:
			print(
				"FAILED: not seeded; run `bench --site SITE execute frappe_eda.tests.desk_views_check.seed`"
			)
			return 1

		def visit(label: str, path: str) -> str:
			problems.clear()
			page.goto(f"{base}{path}", wait_until="networkidle")
			page.wait_for_selector(".page-container, .layout-main", timeout=30000)
			page.wait_for_timeout(2000)
			page.screenshot(path=str(shots / f"{label}.png"), full_page=True)
			for problem in problems:
				failures.append(f"{label}: {problem[:300]}")
			return page.inner_text(".page-container:visible")

		def clear_filters() -> None:
			page.evaluate("cur_list.filter_area.clear()")
			page.wait_for_timeout(1500)

		def expect(label: str, ok: bool, what: str) -> None:
			print(f"{'ok  ' if ok else 'FAIL'} {label:14} {what}")
			if not ok:
				failures.append(f"{label}: {what}")

		text = visit(
			"message-list", "/app/eda-message?routing_key=%5B%22like%22%2C%22eda-views-check.%25%22%5D"
		)
		headers = page.inner_text(".list-row-head")
		for column in ("Last Error", "Queue", "Attempts", "Created At"):
			expect("message list", column in headers, f"column {column!r}")
		expect(
			"message list",
			"SMTPServerDisconnected: Connection unexpectedly closed" in text and "while sending" not in text,
			"last error's first line",
		)
		expect("message list", "ago" in text or "day" in text, "age is relative")
		red = page.locator(".indicator-pill.red", has_text="Dead").count()
		expect("message list", red >= 1, "Dead indicator is red")
		sidebar = page.inner_text(".list-sidebar")
		expect("message list", "Queue" in sidebar, "group-by Queue in the sidebar")
		clear_filters()  # lists remember their filters: leave none behind for the next check

		text = visit("message-form", f"/app/eda-message/{names['order.placed']}")
		pre = page.locator("pre.eda-json").first.inner_text()
		expect("message form", '\n  "payload": {\n    "order": "SO-1",' in pre, "envelope re-indented")
		expect(
			"message form",
			"12345678901234567890" in pre and '"qty": 1.0' in pre and '"empty": {}' in pre,
			"numbers kept as stored",
		)
		created = page.evaluate(
			"cur_frm.get_field('created_at').$wrapper.find('.control-value').text().trim()"
		)
		system = page.evaluate("frappe.boot.time_zone.system")
		expect("message form", system == "UTC" or "04:00" in created, f"created_at {created!r} in {system}")
		expect("message form", "Caused" in text and "Replayed as" in text, "related messages linked")
		text = visit("dead-form", f"/app/eda-message/{names['mail.sent']}")
		expect("dead form", "Caused by" in text and "Started by" in text, "cause and correlation root linked")
		expect(
			"dead form",
			"UTC" not in page.inner_text("[data-fieldname=errors_html]"),
			"errors panel without a UTC label",
		)
		text = visit("error-list", "/app/eda-error?queue=eda-views-check.mailer")
		headers = page.inner_text(".list-row-head")
		for column in ("Fingerprint", "Queue", "Attempt", "Occurred At"):
			expect("error list", column in headers, f"column {column!r}")
		sidebar = page.inner_text(".list-sidebar")
		expect(
			"error list", "Exception Type" in sidebar and "Fingerprint" in sidebar, "group-by in the sidebar"
		)
		clear_filters()
	for failure in failures:
		print("FAIL", failure)
	print("OK" if not failures else f"FAILED: {len(failures)}")
	return 1 if failures else 0


def main() -> int:
	parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
	parser.add_argument("base", nargs="?", default="http://127.0.0.1:8000")
	parser.add_argument("--user", default="Administrator")
	parser.add_argument("--password", default="admin")
	parser.add_argument("--shots", type=Path, default=Path("desk-views-shots"))
	args = parser.parse_args()
	return check(args.base.rstrip("/"), args.user, args.password, args.shots)


if __name__ == "__main__":
	sys.exit(main())
