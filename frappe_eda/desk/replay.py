"""Replaying EDA Messages from the desk: by record, by selection, by failure group, edited or as is.

A web request never talks to the broker and never commits early: ``frappe_eda.desk.api`` validates
the call, queues one of the ``*_job`` functions here with ``frappe.enqueue`` and returns a job id at
once. The job (a background worker, as the requesting user) opens the site's broker connection with
a short timeout and no long back-off, replays through the core ``Replayer``, shows progress, and
leaves its outcome in the cache under the job id, where the desk reads it (``job_state``) and from
where it is also pushed as the realtime event ``eda_replay_done``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import frappe
from frappe.query_builder.functions import IfNull

from frappe_eda.messaging.connection import BrokerConnection, BrokerSettings
from frappe_eda.messaging.errors import BrokerUnavailable, EdaError
from frappe_eda.messaging.publisher import Publisher
from frappe_eda.messaging.replay import Replayer
from frappe_eda.messaging.store import Direction
from frappe_eda.stores.doctype_columns import from_column, to_column

DIRECTIONS = {"Outgoing": Direction.OUTGOING, "Incoming": Direction.INCOMING}
DONE_EVENT = "eda_replay_done"
STATE_TTL = 3600  # seconds a job's outcome stays readable
QUEUE = "default"
JOB_TIMEOUT = 1500


# --- jobs (run by a background worker) ------------------------------------------------------------


def new_job_id(kind: str) -> str:
	return f"eda-{kind}-{frappe.generate_hash(length=16)}"


def enqueue(job: Callable[..., Any], job_id: str, **kwargs: Any) -> str:
	"""Queue ``job`` as the current user; its outcome will be readable under ``job_id``."""
	_set_state(job_id, status="queued")
	frappe.enqueue(job, queue=QUEUE, timeout=JOB_TIMEOUT, job_id=job_id, eda_job_id=job_id, **kwargs)
	return job_id


def replay_job(eda_job_id: str, names: list[str], force: bool = False) -> dict[str, Any]:
	return _run(eda_job_id, lambda: {"results": replay_records(names, force, job_id=eda_job_id)})


def edit_and_replay_job(eda_job_id: str, name: str, payload: Any) -> dict[str, Any]:
	return _run(eda_job_id, lambda: {"copy": edit_and_replay(name, payload)})


def job_state(job_id: str) -> dict[str, Any] | None:
	"""What a job has done so far (``status``: queued, running, finished or failed), or None."""
	return frappe.cache.get_value(_state_key(job_id), expires=True)  # not memoised: it changes


def _run(job_id: str, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
	_set_state(job_id, status="running")
	try:
		outcome = {"status": "finished", **work()}
	except BrokerUnavailable as e:
		frappe.db.rollback()
		outcome = {"status": "failed", "error": _broker_away(e)}
		frappe.logger("frappe_eda").warning(f"replay job {job_id}: {outcome['error']}")
	except Exception as e:
		frappe.db.rollback()
		_finish(job_id, {"status": "failed", "error": f"{type(e).__name__}: {e}"})
		raise  # the worker logs it (Error Log) as for any failed job
	_finish(job_id, outcome)
	return outcome


def _finish(job_id: str, outcome: dict[str, Any]) -> None:
	_set_state(job_id, **outcome)
	frappe.publish_realtime(DONE_EVENT, {"job_id": job_id, **outcome}, room=_user_room())


def _user_room() -> str:
	"""The requesting user's room, named explicitly: a job's task id would otherwise win."""
	from frappe.realtime import get_user_room

	return get_user_room(frappe.session.user)


def _set_state(job_id: str, **state: Any) -> None:
	frappe.cache.set_value(
		_state_key(job_id), {"user": frappe.session.user, **state}, expires_in_sec=STATE_TTL
	)


def _state_key(job_id: str) -> str:
	return f"eda:replay-job:{job_id}"


def _broker_away(error: BrokerUnavailable) -> str:
	from frappe_eda.settings import load_settings

	return (
		f"RabbitMQ at {load_settings().broker.redacted_url()} is unreachable ({error}); the replay did not "
		"start or stopped part-way. Start the broker or fix EDA Settings, then replay what is left."
	)


# --- the replay itself ----------------------------------------------------------------------------


def fast_broker(settings: BrokerSettings) -> BrokerSettings:
	"""The site's broker settings for a desk action: one short try, no minutes of reconnect back-off."""
	return dataclasses.replace(settings, reconnect_attempts=1, reconnect_max_wait=1.0, socket_timeout=5.0)


def _replayer(connection: BrokerConnection) -> Replayer:
	from frappe_eda.settings import load_settings
	from frappe_eda.stores.doctype_store import DocTypeStore

	settings = load_settings()
	store = DocTypeStore(commit=True)  # in a job: each replayed record commits as it goes
	publisher = Publisher(connection, store, exchange=settings.exchange, source=frappe.local.site)
	return Replayer(publisher, store, actor=frappe.session.user)


def replay_records(names: list[str], force: bool = False, job_id: str | None = None) -> list[dict[str, Any]]:
	from frappe_eda.settings import load_settings

	rows = frappe.get_all(
		"EDA Message",
		filters={"name": ["in", names or [""]]},
		fields=["name", "message_id", "direction", "queue"],
	)
	results = []
	with BrokerConnection(fast_broker(load_settings().broker)) as connection:
		replayer = _replayer(connection)
		for done, row in enumerate(rows, 1):
			try:
				result = replayer.replay(
					from_column("message_id", row.message_id),
					from_column("queue", row.queue) or None,
					direction=DIRECTIONS[row.direction],
					force=force,
				)
				results.append({"name": row.name, "sent": result.sent, "detail": result.detail})
			except EdaError as e:
				results.append({"name": row.name, "sent": False, "detail": str(e)})
			if job_id and (done == len(rows) or done % 20 == 0):
				frappe.publish_realtime(  # the desk's progress bar
					"progress",
					{
						"percent": done * 100 / len(rows),
						"title": "Replay",
						"description": f"{done} of {len(rows)}",
					},
					room=_user_room(),
				)
	return results


def group_names(fingerprint: str) -> list[str]:
	"""Every unresolved Failed or Dead message whose unresolved errors carry ``fingerprint``."""
	message_ids = frappe.get_all(
		"EDA Error", filters={"fingerprint": fingerprint, "resolved": 0}, pluck="message_id", distinct=True
	)
	return frappe.get_all(
		"EDA Message",
		filters={
			"message_id": ["in", message_ids or [""]],
			"status": ["in", ["Failed", "Dead"]],
			"resolved": 0,
		},
		pluck="name",
	)


def replay_group(fingerprint: str, force: bool = False) -> list[dict[str, Any]]:
	return replay_records(group_names(fingerprint), force=force)


def edit_and_replay(name: str, payload: str | dict) -> str:
	"""Send a corrected copy of EDA Message ``name``; returns the copy's EDA Message name."""
	from frappe_eda.settings import load_settings

	row = frappe.db.get_value("EDA Message", name, ["message_id", "direction", "queue"], as_dict=True)
	data = json.loads(payload) if isinstance(payload, str) else payload
	with BrokerConnection(fast_broker(load_settings().broker)) as connection:
		copy = _replayer(connection).edit_and_replay(
			from_column("message_id", row.message_id),
			data,
			from_column("queue", row.queue) or None,
			direction=DIRECTIONS[row.direction],
		)
	mark_resolved([name])  # the original's errors too: the copy replaces it
	return frappe.db.get_value(
		"EDA Message",
		{
			"message_id": to_column("message_id", copy.message_id),
			"direction": row.direction,
			"queue": row.queue or "",
		},
		"name",
	)


def mark_resolved(names: list[str]) -> int:
	"""Resolve messages and their own errors (same id, direction and queue): they leave the failure
	lists, and retention may delete them. Another queue's copy of the same message keeps its errors."""
	message = frappe.qb.DocType("EDA Message")
	error = frappe.qb.DocType("EDA Error")
	rows = frappe.get_all(
		"EDA Message",
		filters={"name": ["in", names or [""]]},
		fields=["name", "message_id", "direction", "queue"],
	)
	if not rows:
		return 0
	frappe.qb.update(message).set(message.resolved, 1).where(message.name.isin([r.name for r in rows])).run()
	by_target: dict[tuple[str, str], list[str]] = {}
	for row in rows:
		by_target.setdefault((row.direction, row.queue or ""), []).append(row.message_id)
	for (direction, queue), message_ids in by_target.items():
		(
			frappe.qb.update(error)
			.set(error.resolved, 1)
			.where(error.message_id.isin(message_ids))
			.where(error.direction == direction)
			.where(IfNull(error.queue, "") == queue)
			.run()
		)
	return len(rows)
