"""Trust between servers on a site: what it may do on the broker, and whether it still trusts blindly.

A server publishes as the broker user named after it (its site name), so the broker-validated sender of
a message (``frappe_eda.messaging.trust``) names the server. ``site_traffic`` lists what this site does
on the broker (its worker's queues and bindings, the keys its rules, destinations, receipts and
reconciliation publish on), from which ``bench eda broker-user`` grants the least it needs.
``trust_summary`` is what the worker's start-up line, EDA Settings and ``eda status`` say about it.
"""

from __future__ import annotations

from typing import Any

import frappe

from frappe_eda.messaging.replication import addressing
from frappe_eda.messaging.topology import topology_for
from frappe_eda.messaging.trust.permissions import Route, ServerTraffic

SUBSCRIPTION = "EDA Subscription"
DESTINATION = "EDA Destination"


def site_traffic(user: str | None = None, extra: tuple[Route, ...] = ()) -> ServerTraffic:
	"""This site's broker traffic, as broker user ``user`` (default: the site's name). ``extra`` adds
	routing keys that app code publishes on with ``publish()`` (unknowable from configuration)."""
	from frappe_eda.consumer import site_registry
	from frappe_eda.outbox import target_servers
	from frappe_eda.outbox.rules import DEFAULT_ROUTING_KEY, all_rules
	from frappe_eda.replication import reconcile
	from frappe_eda.settings import load_settings

	settings = load_settings()
	default = settings.exchange
	topology = topology_for(site_registry(), settings.retry, settings.queue_type)
	publishes: list[Route] = list(extra)
	destinations = {
		d.name: d
		for d in frappe.get_all(
			DESTINATION, filters={"enabled": 1}, fields=["name", "exchange", "routing_key", "target_servers"]
		)
	}
	for rules in all_rules().values():
		for rule in rules:
			destination = destinations.get(rule.destination) if rule.destination else None
			exchange = rule.exchange or (destination and destination.exchange) or default
			key = rule.routing_key or (destination and destination.routing_key) or DEFAULT_ROUTING_KEY
			publishes.append(Route(exchange, key))
			for server in target_servers(destination.target_servers) if destination else ():
				publishes.append(Route(exchange, reconcile.reply_key(server)))  # answers to its digests
	for destination in destinations.values():
		publishes.append(Route(destination.exchange or default, destination.routing_key or "{type}"))
	for sub in frappe.get_all(SUBSCRIPTION, filters={"enabled": 1}, fields=["source", "exchange"]):
		if sub.source:
			exchange = (sub.exchange or "").strip() or default
			publishes.append(Route(exchange, addressing.receipt_key_for(sub.source)))
			publishes.append(Route(exchange, reconcile.request_key(sub.source)))
	exchanges = {e.name: e.type for e in topology.exchanges}
	topic = {name for name, kind in exchanges.items() if kind == "topic"}
	topic |= {r.exchange for r in publishes if r.exchange not in exchanges}  # ours are topic exchanges
	return ServerTraffic(
		user or frappe.local.site,
		queues=tuple(q.name for q in topology.queues),
		publishes=tuple(dict.fromkeys(publishes)),
		binds=tuple(dict.fromkeys(Route(b.exchange, b.routing_key) for b in topology.bindings if b.exchange)),
		topic_exchanges=frozenset(topic),
	)


def unproven_subscriptions() -> list[str]:
	"""Enabled subscriptions in trusted-network mode: they take any sender."""
	from frappe_eda.replication.subscriptions import TRUSTED

	if not frappe.db.table_exists(SUBSCRIPTION):
		return []
	return frappe.get_all(
		SUBSCRIPTION, filters={"enabled": 1, "sender_check": TRUSTED}, pluck="name", order_by="name asc"
	)


def trust_summary() -> dict[str, Any]:
	"""What this site trusts, in one line; ``warn`` while anything is taken from unproven senders or the
	site publishes as a broker user that is not its name (subscribers that require proof refuse that)."""
	from frappe_eda.settings import load_settings, trusted_network

	site = frappe.local.site
	user = load_settings().broker.user
	parts, warn = [], False
	if user != site:
		parts.append(
			f"this site publishes as broker user {user!r}, not {site!r}: subscriptions elsewhere that require a "
			"proven sender refuse its messages (bench eda broker-user creates its own)"
		)
		warn = True
	unproven = unproven_subscriptions()
	if unproven:
		shown = ", ".join(unproven[:5]) + (f" and {len(unproven) - 5} more" if len(unproven) > 5 else "")
		parts.append(f"trusted network: subscriptions {shown} apply messages from any sender")
		warn = True
	if trusted_network():
		parts.append("trusted network: receipts and reconciliation requests are taken from any member")
		warn = True
	if not warn:
		parts.append(
			f"proven senders: this site publishes as {user!r}; each subscription takes only its source's broker user"
		)
	return {"message": "Trust between servers: " + "; ".join(parts) + ".", "warn": warn}
