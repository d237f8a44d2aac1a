"""Enabled EDA Subscriptions as handlers of the worker, re-read when one is added, changed or removed.

Each subscription is one entry of the worker's registry: its own queue (``eda.sub.<name>`` unless set),
bound to its exchange with each routing-key pattern, and one handler (``apply.SubscriptionHandler``) whose
name, ``eda_subscription:<name>``, keys its inbox, retries and EDA Errors. Saving or deleting a
subscription bumps a version in the cache; the worker compares it between batches (and reads the table
itself every ``CHECK_EVERY`` seconds, should the cache have been cleared) and, when it moved, finishes
the batch in hand and consumes the new set, on the same connection, without a restart.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

import frappe

from frappe_eda.messaging.registry import HandlerRegistry, Subscription
from frappe_eda.messaging.replication.mapping import FieldAction, FieldMapping, FieldRule
from frappe_eda.messaging.replication.planning import ConflictPolicy
from frappe_eda.messaging.trust import KeyRing, SenderPolicy
from frappe_eda.replication import subscription_handler_name

log = logging.getLogger(__name__)

SUBSCRIPTION = "EDA Subscription"
VERSION_KEY = "eda_subscriptions_version"
QUEUE_PREFIX = "eda.sub."


@dataclass(frozen=True)
class SubscriptionSpec:
	"""One EDA Subscription as the handler needs it, read once per (re)load of the worker."""

	name: str
	source_doctype: str
	document_type: str
	source: str
	patterns: tuple[str, ...]
	exchange: str
	queue: str
	match_by: str
	key_field: str
	follow_docstatus: bool
	follow_deletes: bool
	conflict_policy: ConflictPolicy
	link_policy: str
	publish_applied: bool
	mapping: FieldMapping
	# Whom the queue takes messages from: the source's own broker user (and its signature), or anyone in
	# a trusted network. Checked by the worker before the handler runs.
	senders: SenderPolicy | None = None

	@property
	def handler_name(self) -> str:
		return subscription_handler_name(self.name)


def default_queue(name: str) -> str:
	return QUEUE_PREFIX + re.sub(r"[^A-Za-z0-9_.\-]", "_", name.strip().lower())[:200]


def patterns_of(text: str | None) -> tuple[str, ...]:
	return tuple(p.strip() for p in (text or "").replace(",", "\n").splitlines() if p.strip())


def spec_of(doc: Any, default_exchange: str) -> SubscriptionSpec:
	rules = tuple(
		FieldRule(
			action=FieldAction(row.action or "Map"),
			source=(row.source_field or "").strip(),
			target=(row.target_field or "").strip(),
			value=row.value,
			table=(row.child_table or "").strip(),
		)
		for row in doc.get("field_rules") or []
	)
	return SubscriptionSpec(
		name=doc.name,
		source_doctype=doc.source_doctype,
		document_type=doc.document_type or doc.source_doctype,
		source=(doc.source or "").strip(),
		patterns=patterns_of(doc.routing_key_patterns),
		exchange=(doc.exchange or "").strip() or default_exchange,
		queue=(doc.queue or "").strip() or default_queue(doc.name),
		match_by=doc.match_by or "Source Name",
		key_field=(doc.key_field or "").strip(),
		follow_docstatus=bool(doc.follow_docstatus),
		follow_deletes=bool(doc.follow_deletes),
		conflict_policy=ConflictPolicy(doc.conflict_policy or ConflictPolicy.SOURCE_WINS.value),
		link_policy=doc.link_policy or "Wait and Retry",
		publish_applied=bool(doc.publish_applied),
		mapping=FieldMapping(rules=rules, copy_unlisted=bool(doc.copy_unlisted)),
		senders=sender_policy(doc),
	)


PROVEN, TRUSTED = "Proven Sender", "Trusted Network"


def sender_policy(doc: Any) -> SenderPolicy:
	"""The subscription's sender check: its Source Server's broker user (a server publishes as the user
	named after it), plus the source's public keys when listed; in a trusted network, anyone."""
	keys = KeyRing.parse_or_none(doc.get("source_public_keys"))
	if (doc.get("sender_check") or PROVEN) == TRUSTED:
		return SenderPolicy.trusted(keys)
	return SenderPolicy.only([(doc.source or "").strip()], keys)


def enabled_specs() -> list[SubscriptionSpec]:
	"""Every enabled subscription; one that cannot be read is logged and left out, never fatal."""
	from frappe_eda.settings import load_settings

	if not frappe.db.table_exists(SUBSCRIPTION):
		return []
	exchange = load_settings().exchange
	specs = []
	for name in frappe.get_all(SUBSCRIPTION, filters={"enabled": 1}, pluck="name", order_by="name asc"):
		try:
			specs.append(spec_of(frappe.get_doc(SUBSCRIPTION, name), exchange))
		except Exception:
			log.exception("EDA Subscription %r cannot be served; left out", name)
	return specs


def registry_entry(spec: SubscriptionSpec) -> Subscription:
	"""The worker's entry for one subscription: its queue, bindings, handler and sender check."""
	from frappe_eda.replication.apply import SubscriptionHandler

	return Subscription(
		queue=spec.queue,
		patterns=spec.patterns,
		exchange=spec.exchange,
		handler=SubscriptionHandler(spec),
		name=spec.handler_name,
		senders=spec.senders,
	)


def add_to_registry(registry: HandlerRegistry, specs: list[SubscriptionSpec]) -> None:
	"""One registry entry per subscription; a queue another handler already has is logged and skipped."""
	for spec in specs:
		try:
			registry.add(registry_entry(spec))
		except Exception:
			log.exception("EDA Subscription %r cannot be served on queue %r", spec.name, spec.queue)


def bump_version() -> None:
	"""Tell running workers the subscriptions changed (called when one is saved or deleted), once the
	change commits: a worker reloading earlier would read the table as it was, and keep the old set."""
	frappe.db.after_commit.add(_bump)


def _bump() -> None:
	frappe.cache.set_value(VERSION_KEY, frappe.generate_hash(length=12), expires_in_sec=30 * 24 * 3600)


def signature() -> str:
	"""What the worker compares: the cache's version and, read from the table, names and modified."""
	rows = frappe.db.sql(f"select name, modified, enabled from `tab{SUBSCRIPTION}` order by name")
	return hashlib.sha1(repr(rows).encode()).hexdigest()


class ChangeWatch:
	"""Between batches: has any subscription changed since the worker loaded them?

	The cache's version is read at every turn (one Redis GET); the table every ``check_every``
	seconds, after ending the loop thread's read snapshot (MariaDB's repeatable read would otherwise
	show the table as it was when the worker started)."""

	CHECK_EVERY = 10.0

	def __init__(self, check_every: float = CHECK_EVERY) -> None:
		self.check_every = check_every
		self.version = frappe.cache.get_value(VERSION_KEY, expires=True)
		self.table = ""
		self.table = self._table_signature()
		self._checked = time.monotonic()

	def _table_signature(self) -> str:
		"""The table's signature now; the last one known when it cannot be read (not a change)."""
		try:
			frappe.db.rollback()
			return signature() if frappe.db.table_exists(SUBSCRIPTION) else ""
		except Exception:
			log.warning("could not read EDA Subscriptions; checking again later", exc_info=True)
			return self.table

	def changed(self) -> bool:
		try:
			if frappe.cache.get_value(VERSION_KEY, expires=True) != self.version:
				return True
		except Exception:
			pass  # Redis away: the table check below still notices
		if time.monotonic() - self._checked >= self.check_every:
			self._checked = time.monotonic()
			return self._table_signature() != self.table
		return False


def follow_queue(doc: Any) -> None:
	"""After a save commits: a disabled subscription's queue is unbound (nothing new piles up); an enabled
	one is declared and bound with its patterns, and patterns no longer listed are unbound
	(``replication.queues``)."""
	from frappe_eda.replication import queues
	from frappe_eda.settings import load_settings

	before = doc.get_doc_before_save()
	spec = spec_of(doc, load_settings().exchange)
	old = set(patterns_of(before.routing_key_patterns)) if before else set()
	if not doc.enabled:
		if before is None or before.enabled:
			queues.after_commit(
				lambda: queues.retire(spec.queue, spec.exchange, spec.patterns, delete=False),
				f"unbinding the disabled subscription {doc.name}'s queue",
			)
		return
	if before is not None and before.enabled and old == set(spec.patterns):
		return
	entry = registry_entry(spec)
	queues.after_commit(
		lambda: queues.restore(entry, unbind=sorted(old - set(spec.patterns))),
		f"binding subscription {doc.name}'s queue",
	)


def retire_queue(doc: Any) -> None:
	"""On delete: say now what its queues still hold (they are kept until it is settled); after the delete
	commits, unbind them and delete them when empty (``replication.queues``)."""
	from frappe_eda.replication import queues
	from frappe_eda.settings import load_settings

	spec = spec_of(doc, load_settings().exchange)
	try:
		held = queues.held(spec.queue)
	except Exception:
		held = {}
	if held:
		shown = ", ".join(f"{name}: {n}" for name, n in held.items())
		frappe.msgprint(
			frappe._(
				"The queues of this subscription still hold messages ({0}); they are unbound and kept. Replay or discard them (EDA Message list, queue {1}), then run bench --site {2} eda retire-queue {1}"
			).format(
				frappe.utils.escape_html(shown), frappe.utils.escape_html(spec.queue), frappe.local.site
			),
			title=frappe._("Queues kept"),
			indicator="orange",
		)
	queues.after_commit(
		lambda: queues.retire(spec.queue, spec.exchange, spec.patterns, delete=True),
		f"retiring the deleted subscription {doc.name}'s queues",
	)
