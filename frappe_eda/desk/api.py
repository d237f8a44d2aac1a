"""Whitelisted desk methods. Each checks the role itself: only EDA Manager may replay or resolve.

Every argument is validated here, before anything touches the database or the broker, so a bad call
gets a ``frappe.ValidationError`` that says what is wrong instead of an SQL error or a 500. Replays
are queued as background jobs (``frappe_eda.desk.replay``): the call returns ``{"job_id": ...}`` at
once, and ``replay_job_state`` tells the desk how the job went. Mark Resolved is a job too.
"""

from __future__ import annotations

import json
import re
from typing import Any

import frappe
from frappe import _

from frappe_eda.desk import access, notifications, replay, tracking
from frappe_eda.replication import receipts

MANAGER_ROLE = "EDA Manager"
MAX_NAMES = 10_000  # names in one bulk action; a larger selection goes by filters
MAX_MATCHES = 100_000  # messages one filtered bulk action may take
STATUSES = ("Pending", "Published", "Failed", "Received", "Processed", "Dead")
MAX_NAME_LENGTH = 140
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024
JOB_ID = re.compile(r"^eda-[a-z-]+-[0-9a-f]{16}$")


def _require_manager() -> None:
	"""Actions (replay, resolve) take the EDA Manager role itself; reads also allow System Managers
	(``access.is_manager``)."""
	if MANAGER_ROLE not in frappe.get_roles() and frappe.session.user != "Administrator":
		frappe.throw(_("Only an EDA Manager may do this."), frappe.PermissionError)


def _names(names: Any) -> list[str]:
	"""A non-empty list of existing EDA Message names, from a list or its JSON (or one name)."""
	if isinstance(names, str):
		text = names.strip()
		if text.startswith("["):
			try:
				names = json.loads(text)
			except ValueError:
				frappe.throw(_("names must be a JSON list of EDA Message names"), frappe.ValidationError)
		else:
			names = [text] if text else []
	if not isinstance(names, list | tuple):
		frappe.throw(_("names must be a list of EDA Message names"), frappe.ValidationError)
	if not names:
		frappe.throw(_("Select at least one EDA Message."), frappe.ValidationError)
	if len(names) > MAX_NAMES:
		frappe.throw(
			_("At most {0} messages at a time ({1} were given); select fewer.").format(MAX_NAMES, len(names)),
			frappe.ValidationError,
		)
	if not all(isinstance(n, str) and n and len(n) <= MAX_NAME_LENGTH for n in names):
		frappe.throw(_("Each name must be a non-empty EDA Message name."), frappe.ValidationError)
	wanted = list(dict.fromkeys(names))
	found = set(frappe.get_all("EDA Message", filters={"name": ["in", wanted]}, pluck="name"))
	unknown = [n for n in wanted if n not in found]
	if unknown:
		shown = ", ".join(frappe.utils.escape_html(n) for n in unknown[:5])
		frappe.throw(
			_("No EDA Message named {0}{1}.").format(
				shown, _(" and {0} more").format(len(unknown) - 5) if len(unknown) > 5 else ""
			),
			frappe.DoesNotExistError,
		)
	return wanted


def _filters(filters: Any) -> dict[str, Any]:
	"""Desk filters for a bulk action instead of names, from a dict or its JSON: ``status`` (one or a
	list), ``queue``, ``routing_key``, ``direction``, ``resolved`` (0/1) and ``fingerprint`` (messages with
	an unresolved error of that failure group). At least one; values as the list filters them (stored
	text; ``queue`` and ``routing_key`` also ``["like", "%part%"]``, the list's standard filter)."""
	if isinstance(filters, str):
		try:
			filters = json.loads(filters)
		except ValueError:
			frappe.throw(_("filters must be a JSON object"), frappe.ValidationError)
	if not isinstance(filters, dict) or not filters:
		frappe.throw(_("filters must be a non-empty object"), frappe.ValidationError)
	allowed = (*replay.FILTER_FIELDS, "fingerprint")
	unknown = [k for k in filters if k not in allowed]
	if unknown:
		frappe.throw(
			_("Cannot filter a bulk action by {0}; use {1}.").format(
				frappe.utils.escape_html(", ".join(map(str, unknown))), ", ".join(allowed)
			),
			frappe.ValidationError,
		)
	clean: dict[str, Any] = {}
	for key, value in filters.items():
		if key == "status":
			values = value if isinstance(value, list) else [value]
			if not values or not all(v in STATUSES for v in values):
				frappe.throw(
					_("status must be one or more of {0}").format(", ".join(STATUSES)), frappe.ValidationError
				)
			clean[key] = list(dict.fromkeys(values))
		elif key == "direction":
			if value not in replay.DIRECTIONS:
				frappe.throw(_("direction must be Incoming or Outgoing"), frappe.ValidationError)
			clean[key] = value
		elif key == "resolved":
			clean[key] = int(_flag(value, "resolved"))
		else:
			like = key != "fingerprint" and isinstance(value, list) and len(value) == 2 and value[0] == "like"
			text = value[1] if like else value
			if not isinstance(text, str) or not text.strip("%") or len(text) > MAX_NAME_LENGTH:
				frappe.throw(
					_('{0} must be a non-empty text, or ["like", pattern] (as the list filters it)').format(
						key
					),
					frappe.ValidationError,
				)
			clean[key] = ["like", text] if like else text
	return clean


def _selection(names: Any, filters: Any) -> tuple[dict[str, Any], int]:
	"""The job's selection, ``{"names": [...]}`` or ``{"filters": {...}}``, and how many it is now."""
	if filters not in (None, "", {}, "{}"):
		if names not in (None, "", [], "[]"):
			frappe.throw(_("Give names or filters, not both."), frappe.ValidationError)
		clean = _filters(filters)
		count = len(replay.select_names(clean))
		if not count:
			frappe.throw(_("No EDA Message matches these filters."), frappe.ValidationError)
		if count > MAX_MATCHES:
			frappe.throw(
				_("{0} messages match; at most {1} at a time: narrow the filters.").format(
					count, MAX_MATCHES
				),
				frappe.ValidationError,
			)
		return {"filters": clean}, count
	wanted = _names(names)
	return {"names": wanted}, len(wanted)


def _flag(value: Any, label: str) -> bool:
	if value in (0, 1, True, False, "0", "1", "", None):
		return bool(int(value or 0))
	frappe.throw(_("{0} must be 0 or 1").format(label), frappe.ValidationError)
	return False


def _queued(job_id: str, count: int) -> dict[str, Any]:
	return {"job_id": job_id, "queued": count}


@frappe.whitelist(methods=["POST"])
def replay_messages(names: Any = None, force: int | str = 0, filters: Any = None) -> dict[str, Any]:
	"""Queue a replay of the selected messages (``names``, or ``filters`` for a selection of any size);
	returns ``{"job_id", "queued"}`` at once."""
	_require_manager()
	forced = _flag(force, "force")
	selection, count = _selection(names, filters)
	job_id = replay.enqueue(replay.replay_job, replay.new_job_id("replay"), force=forced, **selection)
	return _queued(job_id, count)


@frappe.whitelist(methods=["POST"])
def replay_failure_group(fingerprint: str, force: int | str = 0) -> dict[str, Any]:
	"""Queue a replay of every unresolved Failed and Dead message of one failure group."""
	_require_manager()
	if not isinstance(fingerprint, str) or not fingerprint.strip() or len(fingerprint) > MAX_NAME_LENGTH:
		frappe.throw(_("fingerprint must name a failure group"), frappe.ValidationError)
	forced = _flag(force, "force")
	count = len(replay.group_names(fingerprint))
	if not count:
		frappe.throw(
			_("No unresolved Failed or Dead messages in this failure group."), frappe.ValidationError
		)
	if count > MAX_MATCHES:  # as a filtered bulk action: one job, a bounded selection
		frappe.throw(
			_(
				"{0} messages are in this group; at most {1} at a time: replay them from the list, filtered."
			).format(count, MAX_MATCHES),
			frappe.ValidationError,
		)
	job_id = replay.enqueue(
		replay.replay_job, replay.new_job_id("group"), filters=replay.group_filters(fingerprint), force=forced
	)
	return _queued(job_id, count)


@frappe.whitelist(methods=["POST"])
def edit_and_replay(name: str, payload: str) -> dict[str, Any]:
	"""Queue sending a corrected copy of ``name``; the job's outcome names the copy (``copy``)."""
	_require_manager()
	names = _names([name] if isinstance(name, str) else name)
	if len(names) != 1:
		frappe.throw(_("Edit and Replay takes one message at a time."), frappe.ValidationError)
	[name] = names
	if isinstance(payload, dict | list):
		payload = frappe.as_json(payload)  # measured and parsed like the text the form sends
	if isinstance(payload, str):
		if len(payload.encode("utf-8", "surrogatepass")) > MAX_PAYLOAD_BYTES:
			frappe.throw(
				_("The payload is over {0} bytes.").format(MAX_PAYLOAD_BYTES), frappe.ValidationError
			)
		try:
			data = json.loads(payload)
		except (ValueError, RecursionError) as e:
			frappe.throw(
				_("The payload is not valid JSON: {0}").format(frappe.utils.escape_html(str(e))),
				frappe.ValidationError,
			)
	else:
		frappe.throw(_("The payload must be JSON text."), frappe.ValidationError)
	job_id = replay.enqueue(replay.edit_and_replay_job, replay.new_job_id("edit"), name=name, payload=data)
	return _queued(job_id, 1)


@frappe.whitelist()
def replay_job_state(job_id: str) -> dict[str, Any]:
	"""How a queued replay or resolve went: ``status`` queued, running (``progress``), finished
	(``summary`` and ``results``, or ``copy``),
	failed (``error``) or unknown (expired or never queued). Only its own user may read it."""
	_require_manager()
	if not isinstance(job_id, str) or not JOB_ID.match(job_id):
		frappe.throw(_("Not a replay job id."), frappe.ValidationError)
	state = replay.job_state(job_id)
	if state is None:
		return {"job_id": job_id, "status": "unknown"}
	if state.get("user") != frappe.session.user and frappe.session.user != "Administrator":
		frappe.throw(_("This replay job was queued by another user."), frappe.PermissionError)
	answer = {"job_id": job_id, **{k: v for k, v in state.items() if k != "user"}}
	if answer.get("status") == "queued":
		# Nobody to run it: the desk says so instead of waiting (replay.worker_listening).
		answer["worker"] = replay.worker_listening()
	return answer


@frappe.whitelist(methods=["POST"])
def mark_resolved(names: Any = None, filters: Any = None) -> dict[str, Any]:
	"""Queue resolving the selected messages (``names`` or ``filters``) and their own errors (not other
	queues' copies), and removing their copies from ``<queue>.dead``; returns ``{"job_id", "queued"}``."""
	_require_manager()
	selection, count = _selection(names, filters)
	job_id = replay.enqueue(replay.resolve_job, replay.new_job_id("resolve"), **selection)
	return _queued(job_id, count)


@frappe.whitelist()
def failure_groups(include_resolved: int | str = 0) -> list[dict[str, Any]]:
	"""Failure groups carry sample error texts of any message, so they are for managers only (the
	readers the EDA Failure Groups report allows: EDA Manager or System Manager)."""
	if not access.is_manager():
		frappe.throw(_("Only an EDA Manager may see failure groups."), frappe.PermissionError)
	return notifications.failure_groups(resolved=_flag(include_resolved, "include_resolved"))


@frappe.whitelist()
def message_errors(name: str) -> list[dict[str, Any]]:
	"""The errors of one message, oldest first, with full tracebacks (for the form)."""
	if not isinstance(name, str) or not name or len(name) > MAX_NAME_LENGTH:
		frappe.throw(_("name must be an EDA Message name"), frappe.ValidationError)
	doc = access.readable_message(name)
	filters = {"message_id": doc.message_id, "direction": doc.direction, "queue": doc.queue or ""}
	return frappe.get_all(
		"EDA Error",
		filters=filters,
		fields=[
			"name",
			"attempt",
			"occurred_at",
			"exception_type",
			"error",
			"traceback",
			"fingerprint",
			"resolved",
		],
		order_by="occurred_at asc",
	)


@frappe.whitelist()
def message_receipts(name: str) -> list[dict[str, Any]]:
	"""The receipts of one outgoing message, newest first (for the form): for whoever may read it."""
	if not isinstance(name, str) or not name or len(name) > MAX_NAME_LENGTH:
		frappe.throw(_("name must be an EDA Message name"), frappe.ValidationError)
	doc = access.readable_message(name)
	return receipts.receipts_of([doc.name])[doc.name]


@frappe.whitelist()
def document_messages(doctype: str, name: str) -> dict[str, Any]:
	"""The EDA Messages about one document, for its form's "Messages" section (``desk.tracking``)."""
	if not isinstance(doctype, str) or not doctype or len(doctype) > MAX_NAME_LENGTH:
		frappe.throw(_("doctype must be a DocType name"), frappe.ValidationError)
	if not isinstance(name, str) or not name or len(name) > MAX_NAME_LENGTH:
		frappe.throw(_("name must be a document name"), frappe.ValidationError)
	if not frappe.db.exists("DocType", doctype):
		frappe.throw(_("No DocType {0}").format(frappe.utils.escape_html(doctype)), frappe.ValidationError)
	return tracking.document_messages(doctype, name)
