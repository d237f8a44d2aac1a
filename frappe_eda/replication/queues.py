"""A subscription's queues follow the subscription (and the receipts queue follows the destinations).

- **Disabled**: the worker stops consuming it (it reloads its subscriptions) and the queue is unbound
  from its exchange, so nothing new piles up there; what it holds stays.
- **Enabled again** (or its patterns changed): the queue, its retry tiers and dead-letter queue are
  declared and bound with the current patterns; bindings of patterns no longer listed are removed.
- **Deleted**: unbound at once; the queue, its retry tiers and its dead-letter queue are deleted when
  all of them are empty (the broker deletes only an empty queue: nothing is dropped) and nobody
  consumes them; a worker still consuming deletes them when it reloads its subscriptions. When
  something is left, the queues stay and the deleting user is told what and how to settle it: replay or
  discard the messages (EDA Message list filtered by the queue), then ``bench --site SITE eda
  retire-queue QUEUE``.
- **EDA Replica rows are kept** as history (which source documents this site holds copies of, and where
  they came from); they no longer change. Delete them from the EDA Replica list, filtered by the
  subscription, when that history is not wanted.
- **Receipts switched off** on the last destination that asked for them: the receipts queue is retired
  the same way.

The broker work runs after the change commits (a rolled-back save or delete changes nothing on the
broker), with the site's broker settings and one short try: a broker that is away is logged, and the
worker's own declare brings an enabled subscription's bindings back when it starts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import frappe
import pika.exceptions

from frappe_eda.messaging.connection import BrokerConnection
from frappe_eda.messaging.registry import Subscription
from frappe_eda.messaging.topology import TopologyDeclarer, consumer_topology, dead_letter_queue, retry_queue

log = logging.getLogger(__name__)


@dataclass
class Retirement:
	"""What retiring a queue did: the bindings removed, the queues deleted, and what holds messages."""

	queue: str
	unbound: list[str] = field(default_factory=list)
	deleted: list[str] = field(default_factory=list)
	left: dict[str, int] = field(default_factory=dict)

	def summary(self) -> str:
		if not self.left:
			return f"{self.queue}: unbound ({', '.join(self.unbound) or 'no binding'}); deleted {', '.join(self.deleted) or 'nothing'}"
		held = ", ".join(f"{name} holds {n}" for name, n in self.left.items())
		return (
			f"{self.queue} kept: {held}. Replay or discard those messages (EDA Message list, queue "
			f"{self.queue}), then run: bench --site {frappe.local.site} eda retire-queue {self.queue}"
		)


def family(queue: str) -> list[str]:
	"""The work queue, its retry tiers (the site's retry policy) and its dead-letter queue."""
	from frappe_eda.settings import load_settings

	tiers = load_settings().retry.tiers()
	return [queue, *(retry_queue(queue, delay) for delay in tiers), dead_letter_queue(queue)]


def depths(declarer: TopologyDeclarer, names: Iterable[str]) -> dict[str, int]:
	"""Messages ready in each queue that exists."""
	found = {}
	for name in names:
		depth = declarer.queue_depth(name)
		if depth is not None:
			found[name] = depth
	return found


@contextmanager
def _declarer(connection: BrokerConnection | None = None) -> Iterator[TopologyDeclarer]:
	"""A declarer on ``connection`` (the worker's), or on a short-lived one of the site's broker."""
	from frappe_eda.desk.replay import fast_broker
	from frappe_eda.settings import load_settings

	with ExitStack() as stack:
		if connection is None:
			connection = stack.enter_context(BrokerConnection(fast_broker(load_settings().broker)))
		declarer = TopologyDeclarer(connection)
		try:
			yield declarer
		finally:
			declarer.close()


def held(queue: str) -> dict[str, int]:
	"""What ``queue``'s family holds now (queues with messages only)."""
	with _declarer() as declarer:
		return {name: n for name, n in depths(declarer, family(queue)).items() if n}


def retire(
	queue: str,
	exchange: str,
	patterns: Iterable[str],
	*,
	delete: bool,
	connection: BrokerConnection | None = None,
) -> Retirement:
	"""Unbind ``queue`` from ``exchange`` for each of ``patterns``; with ``delete``, delete it, its retry
	tiers and dead-letter queue when all are empty and nobody consumes them (else keep them all and say
	what is left: a worker still consuming retires them when it reloads)."""
	result = Retirement(queue)
	with _declarer(connection) as declarer:
		for pattern in patterns:
			declarer.unbind(queue, exchange, pattern)
			result.unbound.append(pattern)
		if not delete:
			return result
		result.left = {name: n for name, n in depths(declarer, family(queue)).items() if n}
		if result.left:
			return result
		for name in family(queue):
			try:
				declarer.delete_if_idle(name)
				result.deleted.append(name)
			except pika.exceptions.ChannelClosedByBroker as e:
				if e.reply_code == 404:
					continue
				result.left[name] = -1  # consumed (a worker not reloaded yet) or a message just arrived
				break
	return result


def restore(subscription: Subscription, unbind: Iterable[str] = ()) -> None:
	"""Declare ``subscription``'s queues and bindings (idempotent); remove bindings of ``unbind``."""
	from frappe_eda.settings import load_settings

	settings = load_settings()
	with _declarer() as declarer:
		declarer.declare(consumer_topology(subscription, settings.retry, settings.queue_type))
		for pattern in unbind:
			declarer.unbind(subscription.queue, subscription.exchange, pattern)


def retire_deleted(connection: BrokerConnection, queues: Iterable[str]) -> list[Retirement]:
	"""The worker, after it stopped consuming ``queues`` (a reload): those no EDA Subscription uses any
	more are deleted when empty (a deletion the desk could not finish while they were consumed)."""
	if not queues or not frappe.db.table_exists("EDA Subscription"):
		return []
	from frappe_eda.replication.subscriptions import default_queue

	used = {
		(row.queue or "").strip() or default_queue(row.name)
		for row in frappe.get_all("EDA Subscription", fields=["name", "queue"])
	}
	done = []
	for queue in queues:
		if queue not in used:
			done.append(retire(queue, "", (), delete=True, connection=connection))
	return done


def follow_receipts(without: str | None = None) -> None:
	"""After a destination is saved or deleted: while one asks for receipts, the receipts queue is bound;
	once none does, it is retired like a deleted subscription's (its receipts are kept until settled)."""
	from frappe_eda.replication.receipts import DESTINATION, receipt_subscription

	filters: dict[str, Any] = {"enabled": 1, "request_receipts": 1}
	if without:
		filters["name"] = ["!=", without]
	subscription = receipt_subscription()
	if frappe.db.exists(DESTINATION, filters):
		after_commit(lambda: restore(subscription), "binding the receipts queue")
	else:
		after_commit(
			lambda: retire(subscription.queue, subscription.exchange, subscription.patterns, delete=True),
			"retiring the receipts queue",
		)


def after_commit(work: Any, what: str) -> None:
	"""Run ``work`` once the change commits; a broker that is away is logged, never raised at the user."""

	def run() -> None:
		try:
			outcome = work()
		except Exception:
			log.warning("EDA: %s could not be done on the broker", what, exc_info=True)
			return
		if isinstance(outcome, Retirement):
			log.info("EDA: %s", outcome.summary())

	frappe.db.after_commit.add(run)
