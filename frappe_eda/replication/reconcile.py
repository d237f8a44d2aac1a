"""Anti-entropy: a subscriber and its source compare digests and heal what events missed.

A change that bypasses every hook (``frappe.db.sql("update ...")``, a patch) or a copy deleted by hand
is never sent as an event. A reconciliation run finds it at a cost that grows with what differs:

1. The subscriber (``start_run``: ``bench eda reconcile``, or the scheduler per ``reconcile_every``)
   reduces its copies (EDA Replica rows Applied whose local copy still exists) to bucket digests of
   ``(source_name, source_hash)`` and publishes ``eda.reconcile.digest`` to ``eda.reconcile.<source>``.
2. The source (``handle_request``) builds the same digest over the rows its rule would send to that
   server and answers on the subscriber's reply key with ``eda.reconcile.listing`` messages: the names
   and hashes of each bucket that differs (whole buckets per message; one empty listing when nothing
   differs, so the subscriber knows the run ended).
3. The subscriber (``handle_reply``) compares each listing with its own bucket: it asks the source for
   the names that are missing or differ here (``eda.reconcile.resend``) and deletes copies whose
   document is gone at the source, when the subscription follows deletes.
4. The source re-sends each document through the outbox with event ``reconcile`` (the same rule and
   destination, so addressing and receipts work as usual); the subscriber applies it as a repair
   upsert (``apply``), and the source acknowledges with ``eda.reconcile.resent``.
5. ``refresh`` (the command's ``--wait``, the scheduler) counts what was healed and writes the outcome
   on the EDA Subscription (last reconciled, differed, healed, unhealed and why, runs with drift); two
   runs in a row with drift tell the EDA Managers.

Everything from the other server is untrusted: sizes and types are checked and a message that is not
one of these is refused (dead-lettered) with a clear error.
"""

from __future__ import annotations

import dataclasses
import html
import json
import logging
import re
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

import frappe

from frappe_eda.messaging.context import current_context
from frappe_eda.messaging.envelope import Message, encode
from frappe_eda.messaging.errors import InvalidMessage, UnprovenSender, UntrustedSender
from frappe_eda.messaging.registry import HandlerRegistry, Subscription
from frappe_eda.messaging.replication.digests import (
	DEFAULT_BUCKETS,
	MAX_BUCKETS,
	bucket_of,
	compare_listing,
	content_token,
	differing_buckets,
	digest,
	digest_from_wire,
	digest_to_wire,
)
from frappe_eda.replication.subscriptions import TRUSTED
from frappe_eda.setup.readiness import when_installed

log = logging.getLogger(__name__)

SUBSCRIPTION = "EDA Subscription"
REPLICA = "EDA Replica"
DIGEST_TYPE = "eda.reconcile.digest"
LISTING_TYPE = "eda.reconcile.listing"
RESEND_TYPE = "eda.reconcile.resend"
RESENT_TYPE = "eda.reconcile.resent"
KEY_PREFIX = "eda.reconcile."
REPLY_PREFIX = "eda.reconcile.reply."
REPLY_HEADER = "eda-reconcile-reply-to"
SOURCE_HANDLER = "frappe_eda.replication.reconcile.handle_request"
REPLY_HANDLER = "frappe_eda.replication.reconcile.handle_reply"
EVENT = "reconcile"

MAX_NAME = 140
MAX_HASH = 64
MAX_LISTING_BYTES = 400 * 1024  # under the ~512 KiB a listing message may take
MAX_LISTING_ENTRIES = 20_000
MAX_RESEND_NAMES = 2_000  # per resend message
MAX_PARTS = 10_000
LISTING_TIMEOUT = timedelta(minutes=10)  # the source must answer within
HEAL_TIMEOUT = timedelta(minutes=10)  # the documents asked for must be applied within
EVERY = {"Hourly": timedelta(hours=1), "Daily": timedelta(days=1)}
DRIFT_ALERT_RUNS = 2
_RUN_ID = re.compile(r"[A-Za-z0-9\-]{1,64}")
_HEX = re.compile(r"[0-9a-f]{1,64}")
_SAFE_KEY = re.compile(r"[A-Za-z0-9_.\-]{1,200}")


class InvalidReconcileMessage(InvalidMessage):
	"""A reconciliation message from another server that is not what the protocol sends."""


class ReconcileError(frappe.ValidationError):
	"""A run that cannot start (the command prints it on one line)."""


# --- digests of content hashes ------------------------------------------------------------------


def scrub_site(site: str) -> str:
	return re.sub(r"[^A-Za-z0-9_\-]", "_", site)[:150]


def request_key(source: str) -> str:
	return KEY_PREFIX + scrub_site(source)


def reply_key(site: str) -> str:
	return REPLY_PREFIX + scrub_site(site)


def _queue(prefix: str, site: str, exchange: str, default_exchange: str) -> str:
	queue = prefix + scrub_site(site)
	if exchange != default_exchange:
		queue += "." + re.sub(r"[^A-Za-z0-9_.\-]", "_", exchange)[:60]
	return queue


# --- the worker's registry ------------------------------------------------------------------------


def add_to_registry(registry: HandlerRegistry) -> None:
	"""This site's reconciliation queues: as a source, on each exchange its rules publish to; as a
	subscriber, on each exchange of its enabled subscriptions. Never fatal to the worker."""
	from frappe_eda.settings import load_outbox_settings

	try:
		default = load_outbox_settings().exchange
		site = frappe.local.site
		entries = [
			(_queue(KEY_PREFIX, site, ex, default), request_key(site), ex, RequestHandler(ex), SOURCE_HANDLER)
			for ex in sorted(source_exchanges(default))
		] + [
			(_queue(REPLY_PREFIX, site, ex, default), reply_key(site), ex, handle_reply, REPLY_HANDLER)
			for ex in sorted(subscriber_exchanges(default))
		]
	except Exception:
		log.exception("reconciliation queues cannot be served")
		return
	for queue, key, exchange, handler, name in entries:
		try:
			registry.add(
				Subscription(queue=queue, patterns=(key,), exchange=exchange, handler=handler, name=name)
			)
		except Exception:
			log.exception("reconciliation queue %r cannot be served", queue)


def source_exchanges(default: str) -> set[str]:
	from frappe_eda.outbox.rules import all_rules

	return {
		_rule_exchange(rule, default)
		for rules in all_rules().values()
		for rule in rules
		if rule.event != "on_trash"
	}


def subscriber_exchanges(default: str) -> set[str]:
	if not frappe.db.table_exists(SUBSCRIPTION):
		return set()
	return {
		(ex or "").strip() or default
		for ex in frappe.get_all(SUBSCRIPTION, filters={"enabled": 1}, pluck="exchange")
	}


def _rule_exchange(rule: Any, default: str) -> str:
	if rule.exchange:
		return rule.exchange
	if rule.destination:
		return frappe.db.get_value("EDA Destination", rule.destination, "exchange") or default
	return default


def _target_servers(destination: str) -> list[str]:
	if not destination:
		return []
	from frappe_eda.outbox import target_servers

	return target_servers(frappe.db.get_value("EDA Destination", destination, "target_servers"))


# --- validating what the other server sent -----------------------------------------------------------


def _refuse(text: str) -> InvalidReconcileMessage:
	return InvalidReconcileMessage(f"reconciliation message refused: {text}")


def _text(
	payload: Mapping[str, Any], key: str, limit: int = MAX_NAME, pattern: re.Pattern | None = None
) -> str:
	value = payload.get(key)
	if not isinstance(value, str) or not value.strip() or len(value) > limit:
		raise _refuse(f"{key!r} is {str(value)[:60]!r}, not text of 1 to {limit} characters")
	if pattern is not None and not pattern.fullmatch(value):
		raise _refuse(f"{key!r} is {value[:60]!r}, not of the form {pattern.pattern}")
	return value


def _int(payload: Mapping[str, Any], key: str, low: int, high: int) -> int:
	value = payload.get(key)
	if type(value) is not int or not low <= value <= high:
		raise _refuse(f"{key!r} is {str(value)[:30]!r}, not a whole number in {low}..{high}")
	return value


def _payload(message: Message) -> dict[str, Any]:
	if not isinstance(message.payload, dict):
		raise _refuse(f"the payload is a {type(message.payload).__name__}, not an object")
	return message.payload


def _names(value: Any, key: str, limit: int) -> list[str]:
	if not isinstance(value, list) or len(value) > limit:
		raise _refuse(f"{key!r} is not a list of at most {limit} names")
	for name in value:
		if not isinstance(name, str) or not name or len(name) > MAX_NAME:
			raise _refuse(f"{key!r} holds {str(name)[:60]!r}, not a document name")
	return value


def _entries(value: Any) -> dict[str, str]:
	if not isinstance(value, dict) or len(value) > MAX_LISTING_ENTRIES:
		raise _refuse(f"'entries' is not an object of at most {MAX_LISTING_ENTRIES} name: hash pairs")
	for name, content in value.items():
		if not isinstance(name, str) or not name or len(name) > MAX_NAME:
			raise _refuse(f"'entries' holds the name {str(name)[:60]!r}, not a document name")
		if not isinstance(content, str) or not (content == "" or _HEX.fullmatch(content)):
			raise _refuse(f"'entries' gives {name[:60]!r} the hash {str(content)[:70]!r}, not hex")
	return value


def _doctype(payload: Mapping[str, Any]) -> str:
	from frappe_eda.outbox.doc_events import OWN_DOCTYPES

	doctype = _text(payload, "doctype")
	if doctype in OWN_DOCTYPES or not frappe.db.exists("DocType", doctype):
		raise _refuse(f"{doctype[:60]!r} is not a DocType this site publishes")
	return doctype


# --- the source -----------------------------------------------------------------------------------


class RequestHandler:
	"""The source's handler of its reconciliation queue on ``exchange`` (where answers go too)."""

	def __init__(self, exchange: str) -> None:
		self.exchange = exchange
		self.__module__ = __name__
		self.__qualname__ = "handle_request"

	def __call__(self, message: Message) -> None:
		handle_request(message, self.exchange)


def handle_request(message: Message, exchange: str | None = None) -> None:
	"""The source's handler: a digest is answered with listings, a resend with documents."""
	if exchange is None:
		from frappe_eda.settings import load_outbox_settings

		exchange = load_outbox_settings().exchange
	if message.type == DIGEST_TYPE:
		answer_digest(message, exchange)
	elif message.type == RESEND_TYPE:
		answer_resend(message, exchange)
	else:
		raise _refuse(f"type {str(message.type)[:80]!r} is not {DIGEST_TYPE} or {RESEND_TYPE}")


def _requester(message: Message, payload: Mapping[str, Any]) -> str:
	server = _text(payload, "server")
	if server != message.source:
		raise _refuse(f"'server' {server[:60]!r} is not the message's source {str(message.source)[:60]!r}")
	from frappe_eda.settings import trusted_network

	if not trusted_network():
		_check_sender(server, "a reconciliation request")
	return server


class ForgedReconcileMessage(UntrustedSender):
	"""A reconciliation request or answer whose broker-validated sender is not the server it names."""


def _check_sender(server: str, what: str) -> None:
	"""``server`` must be who the broker says sent the message (a server publishes as the broker user
	named after it): a member cannot ask for another's documents, nor answer for another source."""
	sender = current_context().sender
	if not sender:
		raise UnprovenSender(repr(server[:80]))
	if sender != server:
		raise ForgedReconcileMessage(
			f"{what} naming {server[:80]!r} was sent by broker user {sender[:80]!r}: refused"
		)


def _reply_to(message: Message, server: str) -> str:
	headers = message.headers if isinstance(message.headers, Mapping) else {}
	key = headers.get(REPLY_HEADER)
	if isinstance(key, str) and key.startswith(REPLY_PREFIX) and _SAFE_KEY.fullmatch(key):
		return key
	return reply_key(server)


def matching_rules(doctype: str, server: str, exchange: str) -> list[Any]:
	"""The rules that send ``doctype`` to ``server`` on ``exchange`` (not delete-only ones)."""
	from frappe_eda.outbox.rules import all_rules
	from frappe_eda.settings import load_outbox_settings

	default = load_outbox_settings().exchange
	found = []
	for rule in all_rules().get(doctype, []):
		if rule.event == "on_trash" or _rule_exchange(rule, default) != exchange:
			continue
		targets = _target_servers(rule.destination)
		if targets and server not in targets:
			continue
		found.append(rule)
	return found


def _holds(rule: Any, row: Mapping[str, Any]) -> bool:
	if not rule.condition:
		return True
	from frappe_eda.outbox.doc_events import _condition_holds

	try:
		return _condition_holds(rule, frappe._dict(row))
	except Exception:
		return False


SUBMITTED_EVENTS = frozenset({"on_submit", "on_update_after_submit", "on_cancel"})


def source_rows(doctype: str, rules: list[Any]) -> Iterator[tuple[str, str, Any]]:
	"""``(name, content hash, rule)`` of each row one of ``rules`` would send (the first that would)."""
	from frappe_eda.replication.content import CHUNK, content_hash, hashed_columns

	columns = hashed_columns(doctype, rules[0].fields)
	conditional = any(r.condition for r in rules)
	fields = ["*"] if conditional else ["name", *columns]
	filters: list[Any] = []
	if all(r.event in SUBMITTED_EVENTS for r in rules):
		filters.append(["docstatus", "!=", 0])
	last = None
	while True:
		page = [*filters, *([["name", ">", last]] if last is not None else [])]
		rows = frappe.get_all(
			doctype, filters=page, fields=fields, order_by="name asc", limit_page_length=CHUNK
		)
		for row in rows:
			rule = next((r for r in rules if _holds(r, row)), None)
			if rule is not None:
				yield row.name, content_hash(row, columns), rule
		if len(rows) < CHUNK:
			return
		last = rows[-1].name


def answer_digest(message: Message, exchange: str) -> None:
	from frappe_eda.outbox import publish

	payload = _payload(message)
	run = _text(payload, "run", 64, _RUN_ID)
	subscription = _text(payload, "subscription")
	server = _requester(message, payload)
	doctype = _doctype(payload)
	buckets = _int(payload, "buckets", 1, MAX_BUCKETS)
	try:
		theirs = digest_from_wire(payload.get("digest"), buckets)
	except ValueError as e:
		raise _refuse(f"'digest': {e}") from None
	key = _reply_to(message, server)
	base = {"run": run, "subscription": subscription, "doctype": doctype}

	def reply(body: dict[str, Any]) -> None:
		publish(
			LISTING_TYPE,
			{**base, **body},
			exchange=exchange,
			routing_key=key,
			causation_id=message.id,
			correlation_id=run,
		)

	rules = matching_rules(doctype, server, exchange)
	if not rules:
		reply(
			{
				"part": 1,
				"parts": 1,
				"buckets": [],
				"entries": {},
				"error": f"{frappe.local.site} has no enabled rule that sends {doctype} to {server} on exchange {exchange}",
			}
		)
		return
	ours_items: dict[int, dict[str, str]] = {}
	for name, content, _rule in source_rows(doctype, rules):
		ours_items.setdefault(bucket_of(name, buckets), {})[name] = content
	ours = digest(((n, c) for items in ours_items.values() for n, c in items.items()), buckets, content_token)
	differing = differing_buckets(theirs, ours)
	parts: list[tuple[list[int], dict[str, str]]] = []
	size, current_buckets, current = 0, [], {}
	for bucket in differing:
		entries = ours_items.get(bucket, {})
		bucket_size = sum(len(json.dumps(n)) + len(c) + 4 for n, c in entries.items())
		if bucket_size > MAX_LISTING_BYTES or len(entries) > MAX_LISTING_ENTRIES:
			reply(
				{
					"part": 1,
					"parts": 1,
					"buckets": [],
					"entries": {},
					"error": f"bucket {bucket} holds {len(entries)} documents, more than one listing carries; "
					f"reconcile with more buckets (at most {MAX_BUCKETS})",
				}
			)
			return
		if current_buckets and (
			size + bucket_size > MAX_LISTING_BYTES or len(current) + len(entries) > MAX_LISTING_ENTRIES
		):
			parts.append((current_buckets, current))
			size, current_buckets, current = 0, [], {}
		current_buckets.append(bucket)
		current.update(entries)
		size += bucket_size
	if current_buckets or not parts:
		parts.append((current_buckets, current))
	for index, (part_buckets, entries) in enumerate(parts, 1):
		reply(
			{
				"part": index,
				"parts": len(parts),
				"buckets": part_buckets,
				"entries": entries,
				"compared": len(set(theirs) | set(ours)),
				"differing": len(differing),
			}
		)


def answer_resend(message: Message, exchange: str) -> None:
	from frappe_eda.outbox import publish
	from frappe_eda.outbox.doc_events import publish_document

	payload = _payload(message)
	run = _text(payload, "run", 64, _RUN_ID)
	subscription = _text(payload, "subscription")
	server = _requester(message, payload)
	doctype = _doctype(payload)
	names = _names(payload.get("names"), "names", MAX_RESEND_NAMES)
	rules = matching_rules(doctype, server, exchange)
	not_sent: dict[str, str] = {}
	resent = 0
	for name in names:
		if not frappe.db.exists(doctype, name):
			not_sent[name] = "the source no longer has it"
			continue
		doc = frappe.get_doc(doctype, name)
		rule = next((r for r in rules if _holds(r, doc.as_dict())), None)
		if rule is None:
			not_sent[name] = "no rule of the source sends it to this server any more"
			continue
		publish_document(doc, dataclasses.replace(rule, event=EVENT))
		resent += 1
	publish(
		RESENT_TYPE,
		{
			"run": run,
			"subscription": subscription,
			"doctype": doctype,
			"resent": resent,
			"not_sent": not_sent,
		},
		exchange=exchange,
		routing_key=_reply_to(message, server),
		causation_id=message.id,
		correlation_id=run,
	)


# --- the subscriber -------------------------------------------------------------------------------


def _now() -> datetime:
	return frappe.utils.now_datetime()


def _utcnow() -> datetime:
	return datetime.now(timezone.utc).replace(tzinfo=None)


def load_state(subscription: str, lock: bool = False) -> dict[str, Any]:
	text = frappe.db.get_value(SUBSCRIPTION, subscription, "reconcile_state", for_update=lock)
	try:
		state = json.loads(text) if text else {}
	except ValueError:
		state = {}
	return state if isinstance(state, dict) else {}


def save_state(subscription: str, state: dict[str, Any], **fields: Any) -> None:
	frappe.db.set_value(
		SUBSCRIPTION,
		subscription,
		{"reconcile_state": json.dumps(state, separators=(",", ":"), default=str), **fields},
		update_modified=False,  # no reload of the workers (subscriptions.signature reads modified)
	)


def local_items(spec: Any, source: str) -> dict[str, str]:
	"""``{source_name: source_hash}`` of this subscription's copies that still exist here."""
	replica = frappe.qb.DocType(REPLICA)
	local = frappe.qb.DocType(spec.document_type)
	query = (
		frappe.qb.from_(replica)
		.join(local)
		.on(local.name == replica.local_name)
		.select(replica.source_name, replica.source_hash)
		.where(replica.subscription == spec.name)
		.where(replica.status == "Applied")
		.where(replica.source == source)
	)
	return {name: content or "" for name, content in query.run()}


def _spec(subscription: str) -> Any:
	from frappe_eda.replication.subscriptions import spec_of
	from frappe_eda.settings import load_settings

	return spec_of(frappe.get_doc(SUBSCRIPTION, subscription), load_settings().exchange)


def subscriptions_for(doctype: str, subscription: str | None = None) -> list[str]:
	if subscription:
		if not frappe.db.exists(SUBSCRIPTION, subscription):
			raise ReconcileError(f"EDA Subscription {subscription!r} does not exist")
		return [subscription]
	names = frappe.get_all(
		SUBSCRIPTION,
		filters={"enabled": 1},
		or_filters={"source_doctype": doctype, "document_type": doctype},
		pluck="name",
		order_by="name asc",
	)
	if not names:
		raise ReconcileError(f"no enabled EDA Subscription applies {doctype}")
	return names


def start_run(subscription: str, source: str | None = None, buckets: int = DEFAULT_BUCKETS) -> dict[str, Any]:
	"""Publish this subscription's digest (committed by the caller); the new run's state."""
	from frappe_eda.outbox import publish

	spec = _spec(subscription)
	source = (source or spec.source or "").strip()
	if not source:
		raise ReconcileError(f"EDA Subscription {subscription!r} names no source server: give --with SOURCE")
	if type(buckets) is not int or not 1 <= buckets <= MAX_BUCKETS:
		raise ReconcileError(f"buckets must be 1..{MAX_BUCKETS}")
	previous = load_state(subscription, lock=True)
	if previous and previous.get("status") != "done":
		refresh(subscription, force_finish=True)  # a run still open is closed with what it reached
		previous = load_state(subscription, lock=True)
	items = local_items(spec, source)
	run = frappe.generate_hash(length=16)
	site = frappe.local.site
	message = publish(
		DIGEST_TYPE,
		{
			"run": run,
			"subscription": subscription,
			"server": site,
			"doctype": spec.source_doctype,
			"buckets": buckets,
			"digest": digest_to_wire(digest(items.items(), buckets, content_token)),
		},
		exchange=spec.exchange,
		routing_key=request_key(source),
		correlation_id=run,
		headers={REPLY_HEADER: reply_key(site)},
	)
	size = len(encode(message))
	state = {
		"run": run,
		"status": "listing",
		"source": source,
		"doctype": spec.source_doctype,
		"buckets": buckets,
		"started_at": str(_now()),
		"started_utc": str(_utcnow()),
		"local_documents": len(items),
		"compared": None,
		"differing": None,
		"parts": None,
		"parts_seen": [],
		"listed": 0,
		"to_send": [],
		"gone": [],
		"deleted": [],
		"resend_acks": 0,
		"resends": 0,
		"not_sent": {},
		"error": "",
		"subscriber_messages": 1,
		"subscriber_bytes": size,
		"source_messages": 0,
		"source_bytes": 0,
		"drift_runs_before": int(
			frappe.db.get_value(SUBSCRIPTION, subscription, "reconcile_runs_with_drift") or 0
		),
	}
	save_state(subscription, state)
	return state


def handle_reply(message: Message) -> None:
	"""The subscriber's handler: listings are compared and answered; a resend acknowledgement noted."""
	if message.type not in (LISTING_TYPE, RESENT_TYPE):
		raise _refuse(f"type {str(message.type)[:80]!r} is not {LISTING_TYPE} or {RESENT_TYPE}")
	payload = _payload(message)
	run = _text(payload, "run", 64, _RUN_ID)
	subscription = _text(payload, "subscription")
	if not frappe.db.exists(SUBSCRIPTION, subscription):
		raise _refuse(f"subscription {subscription[:60]!r} does not exist here")
	state = load_state(subscription, lock=True)
	if state.get("run") != run or state.get("status") == "done":
		log.info("reconciliation %s of %s is not open; %s dropped", run, subscription, message.type)
		return
	if message.source != state.get("source"):
		raise _refuse(f"from {str(message.source)[:60]!r}, but run {run} asked {state.get('source')!r}")
	if frappe.db.get_value(SUBSCRIPTION, subscription, "sender_check") != TRUSTED:
		_check_sender(str(state.get("source") or ""), "a reconciliation answer")
	state["source_messages"] += 1
	state["source_bytes"] += len(encode(message))
	if message.type == RESENT_TYPE:
		_note_resent(state, payload)
	else:
		_compare_listing(subscription, state, payload, message)
	save_state(subscription, state)


def _note_resent(state: dict[str, Any], payload: Mapping[str, Any]) -> None:
	resent = _int(payload, "resent", 0, MAX_RESEND_NAMES)
	not_sent = payload.get("not_sent")
	if not isinstance(not_sent, dict) or len(not_sent) > MAX_RESEND_NAMES:
		raise _refuse(f"'not_sent' is not an object of at most {MAX_RESEND_NAMES} names")
	for name, why in not_sent.items():
		if isinstance(name, str) and len(name) <= MAX_NAME and isinstance(why, str):
			state["not_sent"][name] = why[:200]
	state["resend_acks"] += 1
	state["resent"] = state.get("resent", 0) + resent


def _compare_listing(
	subscription: str, state: dict[str, Any], payload: Mapping[str, Any], message: Message
) -> None:
	from frappe_eda.outbox import publish

	buckets = state["buckets"]
	parts = _int(payload, "parts", 1, MAX_PARTS)
	part = _int(payload, "part", 1, parts)
	listed = payload.get("buckets")
	if (
		not isinstance(listed, list)
		or len(listed) > buckets
		or any(type(b) is not int or not 0 <= b < buckets for b in listed)
	):
		raise _refuse(f"'buckets' is not a list of bucket numbers 0..{buckets - 1}")
	entries = _entries(payload.get("entries"))
	error = payload.get("error")
	if error is not None:
		state["error"] = (error if isinstance(error, str) else repr(error))[:500]
	for key in ("compared", "differing"):
		if type(payload.get(key)) is int:
			state[key] = payload[key]
	wanted = set(listed)
	stray = [n for n in entries if bucket_of(n, buckets) not in wanted]
	if stray:
		raise _refuse(f"{stray[0][:60]!r} is not in the listed buckets")
	if part in state["parts_seen"]:
		return
	state["parts"] = parts
	state["parts_seen"].append(part)
	spec = _spec(subscription)
	local = {n: c for n, c in local_items(spec, state["source"]).items() if bucket_of(n, buckets) in wanted}
	to_send, gone = compare_listing(entries, local, content_token)
	state["listed"] += len(entries)
	state["to_send"].extend(to_send)
	state["gone"].extend(gone)
	for start in range(0, len(to_send), MAX_RESEND_NAMES):
		sent = publish(
			RESEND_TYPE,
			{
				"run": state["run"],
				"subscription": subscription,
				"server": frappe.local.site,
				"doctype": spec.source_doctype,
				"names": to_send[start : start + MAX_RESEND_NAMES],
			},
			exchange=spec.exchange,
			routing_key=request_key(state["source"]),
			causation_id=message.id,
			correlation_id=state["run"],
			headers={REPLY_HEADER: reply_key(frappe.local.site)},
		)
		state["resends"] += 1
		state["subscriber_messages"] += 1
		state["subscriber_bytes"] += len(encode(sent))
	if spec.follow_deletes:
		for name in gone:
			_delete_copy(spec, state, name, message.id)
	if len(state["parts_seen"]) >= parts:
		state["status"] = "healing"
		state["listed_at"] = str(_now())


def _delete_copy(spec: Any, state: dict[str, Any], source_name: str, message_id: str) -> None:
	from frappe_eda.replication import replicas

	existing = replicas.load(spec.name, state["source"], source_name)
	local_name = existing.local_name if existing else source_name
	frappe.local.flags.eda_applying = spec.name
	try:
		if frappe.db.exists(spec.document_type, local_name):
			doc = frappe.get_doc(spec.document_type, local_name)
			if doc.docstatus == 1:
				doc.cancel()
			frappe.delete_doc(spec.document_type, local_name, ignore_permissions=True)
	finally:
		frappe.local.flags.eda_applying = None
	replicas.record(
		existing,
		subscription=spec.name,
		source=state["source"],
		source_doctype=spec.source_doctype,
		source_name=source_name,
		document_type=spec.document_type,
		local_name=local_name,
		status="Deleted",
		message_id=message_id,
		event=EVENT,
		detail=f"gone at the source: deleted by reconciliation {state['run']}",
		source_hash="",
	)
	state["deleted"].append(source_name)


# --- the outcome ----------------------------------------------------------------------------------


def healed_names(subscription: str, state: dict[str, Any]) -> set[str]:
	names = state.get("to_send") or []
	if not names:
		return set()
	healed = set()
	for start in range(0, len(names), 1000):
		healed.update(
			frappe.get_all(
				REPLICA,
				filters={
					"subscription": subscription,
					"source": state["source"],
					"source_name": ["in", names[start : start + 1000]],
					"status": "Applied",
					"last_event": EVENT,
					"applied_at": [">=", state["started_at"]],
				},
				pluck="source_name",
			)
		)
	return healed


def _document_traffic(spec: Any, state: dict[str, Any]) -> tuple[int, int]:
	"""Messages and bytes of the documents the source re-sent, as this site received them."""
	row = frappe.db.sql(
		"""select count(*), coalesce(sum(length(payload)), 0) from `tabEDA Message`
		where direction = 'Incoming' and queue = %s and message_type = %s and created_at >= %s""",
		(spec.queue, f"{frappe.scrub(spec.source_doctype)}.{EVENT}", state["started_utc"]),
	)
	return int(row[0][0]), int(row[0][1])


def _unhealed_why(spec: Any, state: dict[str, Any], unhealed: list[str]) -> list[str]:
	lines = []
	for name in unhealed[:20]:
		row = frappe.db.get_value(
			REPLICA,
			{"subscription": spec.name, "source": state["source"], "source_name": name},
			["status", "detail", "last_event"],
			as_dict=True,
		)
		if name in state.get("not_sent", {}):
			why = state["not_sent"][name]
		elif row and row.last_event == EVENT and row.status != "Applied":
			why = f"{row.status}: {row.detail or ''}"
		else:
			why = _failed_message(spec, state, name) or "not applied yet: no copy arrived from the source"
		lines.append(f"{name}: {why}"[:300])
	if len(unhealed) > 20:
		lines.append(f"... and {len(unhealed) - 20} more")
	return lines


def _failed_message(spec: Any, state: dict[str, Any], name: str) -> str:
	for row in frappe.get_all(
		"EDA Message",
		filters={
			"direction": "Incoming",
			"queue": spec.queue,
			"message_type": f"{frappe.scrub(spec.source_doctype)}.{EVENT}",
			"status": ["in", ["Failed", "Dead"]],
			"created_at": [">=", state["started_utc"]],
		},
		fields=["payload", "last_error", "status"],
		limit=200,
	):
		try:
			if json.loads(row.payload or "{}").get("payload", {}).get("name") == name:
				error = html.unescape(frappe.utils.strip_html(row.last_error or ""))[:200]
				retried = " (retried later)" if row.status == "Failed" else " (dead-lettered: replay it)"
				return f"its message failed{retried}: {error}"
		except (ValueError, AttributeError):
			continue
	return ""


def outcome(subscription: str, state: dict[str, Any] | None = None) -> dict[str, Any]:
	"""What the run reached so far (nothing written)."""
	state = load_state(subscription) if state is None else state
	spec = _spec(subscription)
	healed = healed_names(subscription, state)
	to_send = state.get("to_send") or []
	gone = state.get("gone") or []
	deleted = state.get("deleted") or []
	messages, size = _document_traffic(spec, state) if state.get("started_utc") else (0, 0)
	return {
		"run": state.get("run"),
		"status": state.get("status"),
		"buckets": state.get("buckets"),
		"compared": state.get("compared"),
		"differing": state.get("differing"),
		"listed": state.get("listed", 0),
		"resent": len(to_send),
		"gone": len(gone),
		"deleted": len(deleted),
		"healed": len(healed) + len(deleted),
		"unhealed": [n for n in to_send if n not in healed] + [n for n in gone if n not in set(deleted)],
		"differed": len(to_send) + len(gone),
		"subscriber_messages": state.get("subscriber_messages", 0),
		"subscriber_bytes": state.get("subscriber_bytes", 0),
		"source_messages": state.get("source_messages", 0) + messages,
		"source_bytes": state.get("source_bytes", 0) + size,
		"document_messages": messages,
		"error": state.get("error") or "",
	}


def refresh(subscription: str, force_finish: bool = False, now: datetime | None = None) -> dict[str, Any]:
	"""Finish the open run when it is complete or out of time, writing its outcome on the subscription;
	returns the outcome."""
	state = load_state(subscription, lock=True)
	if not state:
		return {}
	result = outcome(subscription, state)
	if state.get("status") == "done":
		return result
	now = now or _now()
	started = frappe.utils.get_datetime(state["started_at"])
	why: list[str] = []
	finished = force_finish
	if state.get("error"):
		finished = True
		why.append(f"the source answered: {state['error']}")
	elif state.get("status") == "listing":
		if now - started > LISTING_TIMEOUT or force_finish:
			finished = True
			minutes = int(LISTING_TIMEOUT.total_seconds() // 60)
			why.append(
				f"the source {state['source']} sent no complete listing within {minutes} minutes "
				"(is its eda worker running, and does a rule send this DocType to this server?)"
			)
	else:
		listed_at = frappe.utils.get_datetime(state.get("listed_at") or state["started_at"])
		acked = state.get("resend_acks", 0) >= state.get("resends", 0)
		asked = set(state.get("to_send") or [])
		if acked and not [n for n in result["unhealed"] if n in asked]:
			finished = True  # every document asked for applied (gone ones kept here never heal)
		elif now - listed_at > HEAL_TIMEOUT:
			finished = True
	if not finished:
		return result
	spec = _spec(subscription)
	if result["unhealed"]:
		gone_kept = [n for n in result["unhealed"] if n in set(state.get("gone") or [])]
		resend_unhealed = [n for n in result["unhealed"] if n not in set(gone_kept)]
		why.extend(_unhealed_why(spec, state, resend_unhealed))
		if gone_kept:
			why.append(
				f"{len(gone_kept)} gone at the source but kept here (the subscription does not follow "
				f"deletes): {', '.join(gone_kept[:10])}"
			)
	drift = result["differed"] > 0 or bool(state.get("error"))
	runs = state.get("drift_runs_before", 0) + 1 if drift else 0
	state["status"] = "done"
	state["finished_at"] = str(now)
	state["outcome"] = {k: v for k, v in result.items() if k != "unhealed"} | {
		"unhealed": result["unhealed"][:100]
	}
	save_state(
		subscription,
		state,
		last_reconciled_at=now,
		last_reconcile_differed=result["differed"],
		last_reconcile_healed=result["healed"],
		last_reconcile_unhealed=len(result["unhealed"])
		if not state.get("error")
		else max(1, len(result["unhealed"])),
		last_reconcile_why="\n".join(why)[:4000],
		reconcile_runs_with_drift=runs,
	)
	if runs >= DRIFT_ALERT_RUNS:
		_alert(subscription, runs, result, why)
	result["status"] = "done"
	result["why"] = why
	return result


def _alert(subscription: str, runs: int, result: dict[str, Any], why: list[str]) -> None:
	from frappe.utils import escape_html

	from frappe_eda.desk.notifications import recipients
	from frappe_eda.settings import load_settings

	told = recipients(load_settings().notify_role)
	subject = escape_html(
		f"EDA: subscription {subscription} drifted in {runs} reconciliations in a row "
		f"({result['differed']} differed, {result['healed']} healed, {len(result['unhealed'])} not)"
		f"{told.because()}"
	)
	for user in told.users:
		log_doc = frappe.new_doc("Notification Log")
		log_doc.update(
			{
				"for_user": user,
				"type": "Alert",
				"subject": subject,
				"email_content": escape_html("\n".join(why)[:2000]),
				"document_type": SUBSCRIPTION,
				"document_name": subscription,
			}
		)
		log_doc.insert(ignore_permissions=True)


# --- the scheduler and the desk ---------------------------------------------------------------------


@when_installed
def scheduled() -> None:
	"""Every few minutes: finish open runs, and start those that ``reconcile_every`` says are due."""
	if not frappe.db.has_column(SUBSCRIPTION, "reconcile_every"):
		return
	for row in frappe.get_all(
		SUBSCRIPTION, filters={"enabled": 1}, fields=["name", "reconcile_every", "source"]
	):
		try:
			state = load_state(row.name)
			if state and state.get("status") != "done":
				refresh(row.name)
				frappe.db.commit()
				continue
			every = EVERY.get(row.reconcile_every or "")
			if every is None or not (row.source or "").strip():
				continue
			started = frappe.utils.get_datetime(state["started_at"]) if state.get("started_at") else None
			if started is None or _now() - started >= every:
				start_run(row.name)
				frappe.db.commit()
		except Exception:
			frappe.db.rollback()
			frappe.log_error(title=f"EDA reconciliation of {row.name} failed")


@frappe.whitelist()
def reconcile_now(subscription: str) -> dict[str, Any]:
	"""The desk's button: start a run of ``subscription``."""
	frappe.only_for(("System Manager", "EDA Manager"))
	state = start_run(subscription)
	return {"run": state["run"], "local_documents": state["local_documents"]}


def summary(subscription: str, result: dict[str, Any]) -> str:
	"""The command's report of a finished run."""
	lines = [
		f"{subscription}: run {result.get('run')}",
		f"  buckets compared {result.get('compared')} of {result.get('buckets')}, "
		f"differing {result.get('differing')}, listed names {result.get('listed')}",
		f"  resent {result.get('resent')}, gone {result.get('gone')} (deleted {result.get('deleted')}), "
		f"healed {result.get('healed')}, not healed {len(result.get('unhealed') or [])}",
		f"  subscriber sent {result.get('subscriber_messages')} messages, "
		f"{result.get('subscriber_bytes')} bytes; source sent {result.get('source_messages')} messages "
		f"({result.get('document_messages')} documents), {result.get('source_bytes')} bytes",
	]
	lines.extend(f"  {line}" for line in result.get("why") or [])
	return "\n".join(lines)
