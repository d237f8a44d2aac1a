# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE
"""Producer text in a real browser: hostile strings in every field of an EDA Message and an EDA Error
must show as text, never run, on every desk page that shows them.

Not a unit test (no Frappe and no browser in CI): run it by hand against a site served by
``bench serve``, in two steps, because seeding needs the site's Python and the browser needs
Playwright (with a system Chromium; never ``playwright install``)::

    bench --site SITE execute frappe_eda.tests.desk_xss_check.seed      # prints the seeded names
    python frappe_eda/tests/desk_xss_check.py http://127.0.0.1:8000 --password admin [--shots DIR]
    bench --site SITE execute frappe_eda.tests.desk_xss_check.clean

``seed`` writes through ``DocTypeStore`` (the path the worker and the outbox take) and the desk
notifier, so what the browser sees is what a producer could cause. The check opens the message and
error forms, both lists, the list's group-by counts, both report views, the EDA Failure Groups report
and the bell, and fails when
``window.__eda_xss`` gets set (an ``onerror`` ran), when a page logs an error, or when the hostile
text is not visible literally.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from pathlib import Path

# No dot in it, so it survives wherever a dotted name is cut (the bell shows the exception's class name).
MARK = 'onerror="__eda_xss=1"'
HOSTILE = f"<img src=x {MARK}>"
TAG = "eda-xss-check"


# --- seeding (runs inside the site: bench execute) ------------------------------------------------


def seed() -> dict[str, str]:
	"""One Dead incoming EDA Message, one EDA Error and a bell notice, hostile in every field."""
	import frappe

	from frappe_eda.desk.notifications import DeskNotifier
	from frappe_eda.messaging.notify import DEAD_LETTERED, FailureNotice
	from frappe_eda.messaging.store import Direction, ErrorRecord, MessageRecord, Status
	from frappe_eda.stores.doctype_columns import escape
	from frappe_eda.stores.doctype_store import DocTypeStore

	clean()
	message_id = f"{HOSTILE}-{uuid.uuid4().hex[:8]}"
	record = MessageRecord(
		message_id=message_id,
		direction=Direction.INCOMING,
		status=Status.DEAD,
		routing_key=f"{TAG}.{HOSTILE}",
		body=json.dumps({"id": message_id, "type": HOSTILE, "payload": {HOSTILE: HOSTILE}}),
		exchange=f"{TAG}.{HOSTILE}",
		queue=f"{TAG}.{HOSTILE}",
		handler=f"handlers.{HOSTILE}",
		message_type=HOSTILE,
		headers={HOSTILE: HOSTILE},
		attempts=1,
		last_error=f"DuplicateKey: key '{HOSTILE}' appears twice in the envelope",
		replay_of=HOSTILE,
	)
	failure = ErrorRecord(
		message_id=message_id,
		direction=Direction.INCOMING,
		exception_type=f"frappe_eda.messaging.errors.{HOSTILE}",
		error=f"key '{HOSTILE}' appears twice in the envelope",
		fingerprint=f"{TAG}-{uuid.uuid4().hex[:8]}",
		queue=record.queue,
		handler=record.handler,
		traceback=f"Traceback (most recent call last):\n  {HOSTILE}\nDuplicateKey: {HOSTILE}",
	)
	store = DocTypeStore(commit=True)
	with store.transaction():
		store.save([record])
		store.add_error(failure)
	DeskNotifier("System Manager").notify(
		FailureNotice(
			kind=DEAD_LETTERED,
			message_id=message_id,
			routing_key=record.routing_key,
			exception_type=f"errors.{HOSTILE}",
			error=failure.error,
			fingerprint=failure.fingerprint,
			queue=record.queue,
		)
	)
	frappe.db.commit()
	names = {
		"message": frappe.db.get_value("EDA Message", {"message_id": escape(message_id)}),
		"error": frappe.db.get_value("EDA Error", {"message_id": escape(message_id)}),
	}
	print(json.dumps(names))
	return names


def clean() -> None:
	"""Delete what ``seed`` wrote."""
	import frappe

	names = frappe.get_all("EDA Message", filters={"routing_key": ["like", f"{TAG}.%"]}, pluck="name")
	frappe.db.delete("EDA Error", {"queue": ["like", f"{TAG}.%"]})
	frappe.db.delete("EDA Message", {"routing_key": ["like", f"{TAG}.%"]})
	if names:
		frappe.db.delete("Notification Log", {"document_name": ["in", names]})
	frappe.db.delete("Notification Log", {"subject": ["like", "%eda_xss=1%"]})
	frappe.db.commit()


# --- the browser check -----------------------------------------------------------------------------


def pages(message: str, error: str) -> list[tuple[str, str, str | None]]:
	"""(label, path, selector to click first) of every page that shows the seeded records."""
	return [
		("message form", f"/app/eda-message/{message}", None),
		("message list", "/app/eda-message?status=Dead", None),
		("message group-by", "/app/eda-message", '.group-by-field a[data-fieldname="routing_key"]'),
		("message report view", "/app/eda-message/view/report?status=Dead", None),
		("error form", f"/app/eda-error/{error}", None),
		("error list", "/app/eda-error", None),
		("error report view", "/app/eda-error/view/report", None),
		("EDA Failure Groups", "/app/query-report/EDA Failure Groups", None),
		("bell", "/app/eda-message", ".notifications-icon"),
	]


def check(base: str, user: str, password: str, shots: Path) -> int:
	try:
		from frappe_eda.tests.desk_browser import desk_page
	except ImportError:  # run as a script by the Python that has Playwright, not the app: a sibling
		from desk_browser import desk_page  # type: ignore[no-redef]

	failed = 0
	shots.mkdir(parents=True, exist_ok=True)
	with desk_page(base, user, password) as (page, problems):
		names = page.evaluate(
			"""async () => {
				const get = async (doctype) => (await frappe.xcall("frappe.client.get_list", {
					doctype, filters: {queue: ["like", "eda-xss-check.%"]}, fields: ["name"], limit_page_length: 1,
				}))[0]?.name;
				return {message: await get("EDA Message"), error: await get("EDA Error")};
			}"""
		)
		# The list sidebar's group-by counts for text fields (a user setting, as "Edit Filters" saves it).
		page.evaluate(
			"""() => frappe.model.user_settings.save("EDA Message", "group_by_fields",
				["routing_key", "queue", "exchange", "message_type"])"""
		)
		if not (names.get("message") and names.get("error")):
			print(
				"FAILED: no seeded records; run `bench --site SITE execute frappe_eda.tests.desk_xss_check.seed`"
			)
			return 1
		for n, (label, path, click) in enumerate(pages(names["message"], names["error"])):
			problems.clear()
			page.goto(f"{base}{path}", wait_until="networkidle")
			page.wait_for_selector(".page-container, .layout-main", timeout=30000)
			if click:
				page.click(click)
			page.wait_for_timeout(2500)  # broken <img> load errors fire asynchronously
			ran = page.evaluate("window.__eda_xss")
			text = page.inner_text("body")
			literal = text.count(MARK)
			entities = text.count("&lt;img")
			shot = shots / f"{n}-{label.replace(' ', '-')}.png"
			page.screenshot(path=str(shot), full_page=True)
			ok = ran is None and literal > 0 and not problems
			failed += not ok
			print(
				f"{'ok  ' if ok else 'FAIL'} {label:22} script ran: {ran is not None!s:5} "
				f"literal hostile text: {literal:2}  shown as entities: {entities:2}  {shot}"
			)
			for problem in problems:
				print(f"     {problem[:300]}")
	print("OK" if not failed else f"FAILED on {failed} page(s)")
	return 1 if failed else 0


def main() -> int:
	parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
	parser.add_argument("base", nargs="?", default="http://127.0.0.1:8000")
	parser.add_argument("--user", default="Administrator")
	parser.add_argument("--password", default="admin")
	parser.add_argument("--shots", type=Path, default=Path("desk-xss-shots"))
	args = parser.parse_args()
	return check(args.base.rstrip("/"), args.user, args.password, args.shots)


if __name__ == "__main__":
	sys.exit(main())
