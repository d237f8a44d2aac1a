"""Replaying and resolving EDA Messages from the desk: by record, by selection (names or filters), by
failure group, edited or as is.

A web request never talks to the broker and never commits early: ``frappe_eda.desk.api`` validates
the call, queues one of the ``*_job`` functions here with ``frappe.enqueue`` and returns a job id at
once. The job (a background worker, as the requesting user) opens the site's broker connection with
a short timeout and no long back-off, works through the selection ``CHUNK`` messages at a time, and
leaves its progress and then its outcome in the cache under the job id, where the desk polls it
(``job_state``; there may be no socket.io), and pushes both as realtime events (``progress``,
``eda_replay_done``). The outcome has a ``summary``: sent or resolved, refused counted by reason, and the
dead-letter copies removed or kept (and why).

Twice at once is safe: before a chunk is sent, its messages are claimed, each one's status moved from
Failed or Dead (with force also Processed or Published) to Received (incoming) or Pending (outgoing)
under row locks (``SELECT ... FOR UPDATE`` then ``UPDATE``, committed). A second job replaying the same
messages waits for those locks, then finds them Received or Pending and refuses them as "already being
replayed", so no message is sent twice by two jobs, and no record is written by both. A message that
is Received or Pending is never claimed, even with force: it is in flight (a replay, or the worker or
the relay has it), and the worker or the relay finishes it. A send that fails puts the record back as
it was (and says why in its last error), so it can be replayed again.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import frappe
from frappe.query_builder.functions import IfNull

from frappe_eda.messaging.connection import BrokerConnection, BrokerSettings
from frappe_eda.messaging.deadletters import remove_dead_copies
from frappe_eda.messaging.errors import BrokerUnavailable, DeadLetterCleanupError, EdaError
from frappe_eda.messaging.publisher import Publisher
from frappe_eda.messaging.replay import Replayer, ReplayResult
from frappe_eda.messaging.store import Direction, MessageFilter, MessageRecord
from frappe_eda.messaging.topology import dead_letter_queue
from frappe_eda.stores.doctype_columns import from_column, to_column

DIRECTIONS = {"Outgoing": Direction.OUTGOING, "Incoming": Direction.INCOMING}
_LABELS = {direction: label for label, direction in DIRECTIONS.items()}
DONE_EVENT = "eda_replay_done"
PROGRESS_EVENT = "progress"
STATE_TTL = 3600  # seconds a job's outcome stays readable
QUEUE = "default"
JOB_TIMEOUT = 1500
CHUNK = 200  # messages claimed and sent (or resolved) at a time; progress is shown after each
RESULTS_KEPT = 200  # per-message results in a job's outcome (the refused first); the summary counts all
CLAIMABLE = ("Failed", "Dead")
FORCE_CLAIMABLE = (*CLAIMABLE, "Processed", "Published")
CLAIM_ATTEMPTS = 5
IN_FLIGHT = {"Incoming": "Received", "Outgoing": "Pending"}  # what a claim moves a message to


# --- jobs (run by a background worker) ------------------------------------------------------------


def new_job_id(kind: str) -> str:
	return f"eda-{kind}-{frappe.generate_hash(length=16)}"


def enqueue(job: Callable[..., Any], job_id: str, **kwargs: Any) -> str:
	"""Queue ``job`` as the current user; its outcome will be readable under ``job_id``."""
	_set_state(job_id, status="queued")
	frappe.enqueue(job, queue=QUEUE, timeout=JOB_TIMEOUT, job_id=job_id, eda_job_id=job_id, **kwargs)
	return job_id


def replay_job(
	eda_job_id: str,
	names: list[str] | None = None,
	force: bool = False,
	filters: dict[str, Any] | None = None,
) -> dict[str, Any]:
	"""Replay ``names``, or every message matching ``filters`` (as ``select_names``) when it starts."""
	return _run(
		eda_job_id,
		lambda: replay_selection(
			names if names is not None else select_names(filters or {}), force, job_id=eda_job_id
		),
	)


def resolve_job(
	eda_job_id: str, names: list[str] | None = None, filters: dict[str, Any] | None = None
) -> dict[str, Any]:
	"""Mark Resolved for ``names``, or every message matching ``filters`` when it starts."""
	return _run(
		eda_job_id,
		lambda: resolve_selection(
			names if names is not None else select_names(filters or {}), job_id=eda_job_id
		),
	)


def edit_and_replay_job(eda_job_id: str, name: str, payload: Any) -> dict[str, Any]:
	return _run(eda_job_id, lambda: {"copy": edit_and_replay(name, payload)})


def worker_listening() -> bool:
	"""Whether a background worker (``bench worker``; ``bench start`` runs one) listens on the queue the
	desk's jobs go to. When it cannot be told (Redis away), say yes: never cry wolf."""
	from frappe.utils.background_jobs import get_queue, get_workers

	try:
		return bool(get_workers(queue=get_queue(QUEUE)))
	except Exception:
		return True


def job_state(job_id: str) -> dict[str, Any] | None:
	"""What a job has done so far (``status``: queued, running with ``progress``, finished or failed),
	or None."""
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


class _Progress:
	"""A job's progress: stored in its state (the desk polls it) and pushed as a realtime event."""

	def __init__(self, job_id: str | None, title: str, total: int) -> None:
		self.job_id, self.title, self.total = job_id, title, total
		self.started = time.monotonic()

	def __call__(self, done: int, description: str) -> None:
		if not self.job_id:
			return
		percent = round(done * 100 / self.total, 1) if self.total else 100.0
		progress = {"done": done, "total": self.total, "percent": percent, "description": description}
		_set_state(self.job_id, status="running", progress=progress)
		frappe.publish_realtime(
			PROGRESS_EVENT,
			{"percent": percent, "title": self.title, "description": description, "job_id": self.job_id},
			room=_user_room(),
		)

	def seconds(self) -> float:
		return round(time.monotonic() - self.started, 2)


def _chunks(items: Sequence[str]) -> Iterator[list[str]]:
	for start in range(0, len(items), CHUNK):
		yield list(items[start : start + CHUNK])


def _kept_results(results: list[dict[str, Any]]) -> dict[str, Any]:
	"""All results of a small job; of a large one the refused first, ``RESULTS_KEPT`` in all."""
	if len(results) <= RESULTS_KEPT:
		return {"results": results, "results_truncated": False}
	refused = [r for r in results if not r.get("sent", r.get("resolved"))]
	others = [r for r in results if r.get("sent", r.get("resolved"))]
	return {"results": (refused + others)[:RESULTS_KEPT], "results_truncated": True}


def fast_broker(settings: BrokerSettings) -> BrokerSettings:
	"""The site's broker settings for a desk action: one short try, no minutes of reconnect back-off."""
	return dataclasses.replace(settings, reconnect_attempts=1, reconnect_max_wait=1.0, socket_timeout=5.0)


def _replayer(connection: BrokerConnection, store: Any = None) -> Replayer:
	from frappe_eda.settings import load_settings
	from frappe_eda.stores.doctype_store import DocTypeStore

	settings = load_settings()
	store = store or DocTypeStore(commit=True)  # in a job: each replayed record commits as it goes
	publisher = Publisher(connection, store, exchange=settings.exchange, source=frappe.local.site)
	return Replayer(publisher, store, actor=frappe.session.user)


def replay_report(names: list[str], force: bool = False) -> tuple[list[dict[str, Any]], dict[str, Any]]:
	"""Every per-message result and the summary, for ``bench eda replay`` (synchronous, all results)."""
	return _replay(names, force, None)


def replay_selection(names: list[str], force: bool = False, job_id: str | None = None) -> dict[str, Any]:
	"""A replay job's outcome: its ``summary`` and the per-message results (see ``_kept_results``)."""
	results, summary = _replay(names, force, job_id)
	return {"summary": summary, **_kept_results(results)}


def _replay(names: list[str], force: bool, job_id: str | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
	"""Claim, send and record chunk by chunk; clean ``<queue>.dead`` once per queue at the end."""
	from frappe_eda.settings import load_settings
	from frappe_eda.stores.doctype_store import DocTypeStore

	names = list(dict.fromkeys(names))
	progress = _Progress(job_id, "Replay", len(names))
	progress(0, f"0 of {len(names)} sent")
	results: dict[str, dict[str, Any]] = {}
	sent: list[tuple[str, ReplayResult]] = []
	store = DocTypeStore(commit=True)  # in a job: each chunk commits as it goes
	with BrokerConnection(fast_broker(load_settings().broker)) as connection:
		replayer = _replayer(connection, store)
		done = 0
		for chunk in _chunks(names):
			# The relay claim from the claim to Published: a relay would send the Pending outgoing ones too.
			with replayer.holding_relay():
				claimed, refused = _claim(store, chunk, force)
				results.update(refused)
				try:
					replayed = replayer.replay_many(
						[record for _, record in claimed], force=force, clean=False
					)
				except BaseException as e:
					_release(claimed)
					if isinstance(e, BrokerUnavailable) or not isinstance(e, EdaError):
						raise
					replayed = [_failed(record, e) for _, record in claimed]
			for (name, _record), result in zip(claimed, replayed, strict=True):
				results[name] = _result(name, result)
				if result.sent:
					sent.append((name, result))
			done += len(chunk)
			progress(done, f"{done} of {len(names)} done, {len(sent)} sent")
		removed, kept = 0, Counter[str]()
		if any(r.direction is Direction.INCOMING for _, r in sent):
			progress(len(names), f"{len(sent)} sent; removing their copies from the dead-letter queues")
			cleaned = replayer.remove_dead_copies([r for _, r in sent])
			for (name, before), after in zip(sent, cleaned, strict=True):
				if after.dead_copy_removed:
					removed += 1
				elif after.detail != before.detail:
					problem = after.detail[len(before.detail) :].lstrip("; ")
					kept[problem] += 1
					results[name]["detail"] = after.detail
	ordered = [results[n] for n in names]
	return ordered, _summary(ordered, "sent", len(names), removed, kept, progress)


def _summary(
	results: list[dict[str, Any]],
	done: str,
	total: int,
	removed: int,
	kept: Counter[str],
	progress: _Progress,
) -> dict[str, Any]:
	"""A job's summary: ``done`` ("sent" or "resolved") of ``total``, the others counted by reason, and the
	dead-letter copies removed or kept (by reason)."""
	return {
		"total": total,
		done: sum(r[done] for r in results),
		"refused": dict(Counter(r["reason"] for r in results if not r[done]).most_common()),
		"dead_copies_removed": removed,
		"dead_copies_kept": dict(kept.most_common()),
		"seconds": progress.seconds(),
	}


def _claim(
	store: Any, names: list[str], force: bool
) -> tuple[list[tuple[str, MessageRecord]], dict[str, dict[str, Any]]]:
	"""Take ``names`` for this job: the claimable ones move to Received / Pending under row locks and are
	returned as they were before (the replay sends and records from that), in name order, the order
	rows are locked in everywhere here; the others are refused. A deadlock (with a worker writing the
	same rows in another order) rolls the claim back, and it is tried again."""
	for attempt in range(CLAIM_ATTEMPTS):
		try:
			return _claim_once(store, names, force)
		except frappe.QueryDeadlockError:
			frappe.db.rollback()
			if attempt == CLAIM_ATTEMPTS - 1:
				raise
			time.sleep(0.05 * (attempt + 1))
	raise AssertionError("unreachable")


def _claim_once(
	store: Any, names: list[str], force: bool
) -> tuple[list[tuple[str, MessageRecord]], dict[str, dict[str, Any]]]:
	claimable = FORCE_CLAIMABLE if force else CLAIMABLE
	m = frappe.qb.DocType("EDA Message")
	frappe.db.commit()  # a new transaction: what other jobs committed is seen, and locks are short
	rows = (
		frappe.qb.from_(m)
		.select(m.name, m.message_id, m.direction, m.queue, m.status)
		.where(m.name.isin(names))
		.orderby(m.name)
		.for_update()
		.run(as_dict=True)
	)
	found = {r.name: r for r in rows}
	refused: dict[str, dict[str, Any]] = {}
	take = []
	for name in names:
		row = found.get(name)
		if row is None:
			refused[name] = _refused(name, "no longer exists", "this EDA Message was deleted")
		elif row.status in claimable:
			take.append(row)
		else:
			refused[name] = _refused(name, *_why_not(row.status))
	claimed: list[tuple[str, MessageRecord]] = []
	if take:
		keys = {
			(
				from_column("message_id", r.message_id),
				DIRECTIONS[r.direction],
				from_column("queue", r.queue),
			): r.name
			for r in take
		}
		# Read after the locks were granted: the rows are as the last commit left them.
		records = store.find(MessageFilter(message_ids=tuple({k[0] for k in keys}), limit=10**9))
		by_key = {record.key: record for record in records if record.key in keys}
		claimed = [(keys[key], record) for key, record in by_key.items()]
		claimed.sort(key=lambda item: item[0])  # the replay writes them in this order: the locks' order
		for name in set(keys.values()) - {name for name, _ in claimed}:
			refused[name] = _refused(name, "no longer exists", "its record could not be read")
		for direction, status in IN_FLIGHT.items():
			chosen = [name for name, record in claimed if record.direction is DIRECTIONS[direction]]
			if chosen:
				(
					frappe.qb.update(m)
					.set(m.status, status)
					.set(m.modified, frappe.utils.now_datetime())
					.where(m.name.isin(chosen) & m.status.isin(claimable))
					.run()
				)
	frappe.db.commit()
	return claimed, refused


def _release(claimed: list[tuple[str, MessageRecord]]) -> None:
	"""After a replay that broke off: claimed messages it did not get to reopen (their replay count is
	unchanged) go back to their status, so they can be replayed again. The ones it sent, or already put
	back, are left as they are."""
	from frappe_eda.stores.doctype_store import STATUS_LABELS

	frappe.db.rollback()
	m = frappe.qb.DocType("EDA Message")
	try:
		for name, record in claimed:
			(
				frappe.qb.update(m)
				.set(m.status, STATUS_LABELS[record.status])
				.where(
					(m.name == name)
					& (m.status == IN_FLIGHT[_LABELS[record.direction]])
					& (m.replay_count == record.replay_count)
				)
				.run()
			)
		frappe.db.commit()
	except Exception:
		frappe.db.rollback()
		frappe.logger("frappe_eda").exception("could not release the messages a broken replay claimed")


def _why_not(status: str) -> tuple[str, str]:
	if status in ("Processed", "Published"):
		return (
			f"already {status}",
			f"already {status}: replaying would run its handler again; replay it with force (--force on "
			"the command line) to do it anyway",
		)
	if status == "Received":
		return (
			"already being replayed (Received)",
			"Received: another replay has it, or the worker is processing it",
		)
	return "already being replayed (Pending)", "Pending: another replay has it, or the relay sends it"


def _refused(name: str, reason: str, detail: str) -> dict[str, Any]:
	return {"name": name, "sent": False, "reason": reason, "detail": detail}


def _result(name: str, result: ReplayResult) -> dict[str, Any]:
	reason = "" if result.sent else ("dry run" if result.detail == "dry run" else "broker refused")
	if not result.sent and result.previous_status.value in ("processed", "published"):
		reason = f"already {result.previous_status.value.title()}"
	return {"name": name, "sent": result.sent, "reason": reason, "detail": result.detail}


def _failed(record: MessageRecord, error: EdaError) -> ReplayResult:
	return ReplayResult(
		record.message_id,
		record.queue,
		record.direction,
		record.status,
		False,
		f"{type(error).__name__}: {error}",
	)


FILTER_FIELDS = ("status", "queue", "routing_key", "direction", "resolved")


def select_names(filters: dict[str, Any]) -> list[str]:
	"""EDA Messages matching validated desk filters (``api._filters``), oldest first. Values are as the
	list filters them: stored text. ``fingerprint``: messages with an unresolved error of that group."""
	where: dict[str, Any] = {}
	for field in FILTER_FIELDS:
		if field in filters:
			value = filters[field]
			if isinstance(value, list):
				where[field] = value if value[:1] == ["like"] else ["in", value]
			else:
				where[field] = value
	if "fingerprint" in filters:
		message_ids = frappe.get_all(
			"EDA Error",
			filters={"fingerprint": filters["fingerprint"], "resolved": 0},
			pluck="message_id",
			distinct=True,
		)
		where["message_id"] = ["in", message_ids or [""]]
	return frappe.get_all("EDA Message", filters=where, pluck="name", order_by="created_at asc, name asc")


def group_filters(fingerprint: str) -> dict[str, Any]:
	"""A failure group's replay: its unresolved Failed and Dead messages."""
	return {"fingerprint": fingerprint, "status": list(CLAIMABLE), "resolved": 0}


def group_names(fingerprint: str) -> list[str]:
	"""Every unresolved Failed or Dead message whose unresolved errors carry ``fingerprint``."""
	return select_names(group_filters(fingerprint))


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


def resolve_selection(names: list[str], job_id: str | None = None) -> dict[str, Any]:
	"""A resolve job: ``mark_resolved`` chunk by chunk (each committed), then the Dead incoming messages'
	copies leave ``<queue>.dead``, one scan per queue. The records stay resolved whatever the broker
	does: a broker that is away, or a cleaning that fails, is said in the summary (``dead_copies_kept``)."""
	from frappe_eda.settings import load_settings

	names = list(dict.fromkeys(names))
	progress = _Progress(job_id, "Mark Resolved", len(names))
	progress(0, f"0 of {len(names)} resolved")
	results: list[dict[str, Any]] = []
	dead: dict[str, list[str]] = {}  # queue -> message ids whose copy may be parked
	done = 0
	for chunk in _chunks(names):
		frappe.db.commit()
		rows = _rows(chunk)
		found = {r.name: r for r in rows}
		_resolve_rows(rows)
		frappe.db.commit()
		for name in chunk:
			row = found.get(name)
			if row is None:
				results.append({"name": name, "resolved": False, "reason": "no longer exists", "detail": ""})
				continue
			results.append({"name": name, "resolved": True, "reason": "", "detail": ""})
			if row.direction == "Incoming" and row.status == "Dead":
				dead.setdefault(from_column("queue", row.queue), []).append(
					from_column("message_id", row.message_id)
				)
		done += len(chunk)
		progress(done, f"{done} of {len(names)} resolved")
	removed, kept = 0, Counter[str]()
	if dead:
		progress(len(names), "removing their copies from the dead-letter queues")
		left = dict(dead)
		try:
			with BrokerConnection(fast_broker(load_settings().broker)) as connection:
				for queue, message_ids in dead.items():
					try:
						removed += len(remove_dead_copies(connection, queue, message_ids).removed)
					except DeadLetterCleanupError as e:
						kept[f"{dead_letter_queue(queue)}: {e}"] += len(message_ids)
					del left[queue]
		except BrokerUnavailable as e:
			reason = f"the broker is unreachable ({e}); the copies stay in the dead-letter queues"
			kept[reason] += sum(len(ids) for ids in left.values())
	summary = _summary(results, "resolved", len(names), removed, kept, progress)
	return {"summary": summary, **_kept_results(results)}


def mark_resolved(names: list[str]) -> int:
	"""Resolve messages and their own errors (same id, direction and queue): they leave the failure
	lists, and retention may delete them. Another queue's copy of the same message keeps its errors.
	In the caller's transaction; ``<queue>.dead`` is left alone (``resolve_selection`` cleans it)."""
	rows = _rows(names)
	_resolve_rows(rows)
	return len(rows)


def _rows(names: list[str]) -> list[Any]:
	return frappe.get_all(
		"EDA Message",
		filters={"name": ["in", names or [""]]},
		fields=["name", "message_id", "direction", "queue", "status"],
	)


def _resolve_rows(rows: list[Any]) -> None:
	if not rows:
		return
	message = frappe.qb.DocType("EDA Message")
	error = frappe.qb.DocType("EDA Error")
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
