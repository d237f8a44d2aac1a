"""The broker and worker view of the EDA workspace: what the broker holds for this site's handlers, and
which workers run.

For each subscription of the site's handlers (the ``eda_handlers`` modules, as ``bench eda status``
reads them): the work queue's ready messages and consumers (a passive ``queue_declare``), its retry
tiers (``<queue>.retry.<delay>``) and its dead-letter queue (``<queue>.dead``). Unacked messages are
known only to RabbitMQ's management API: with ``eda_management_url`` in site_config.json (e.g.
``http://127.0.0.1:15672``; credentials in the URL, else the broker URL's) they are read from
``/api/queues/<vhost>/<queue>``, otherwise they show as n/a. The broker is tried once with a short
timeout (``replay.fast_broker``): a broker that is away gives a message, not a server error.

Beside it, the EDA Worker rows (``consumer.heartbeats``) with their state: alive, stale (no beat for a
while: dead or hung) or stopped.

For EDA Managers and System Managers (``access.is_manager``): queue names and depths are operations
data. Strings go back as they are (unescaped); the desk escapes everything it shows.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import frappe
from frappe import _

from frappe_eda.desk.access import is_manager

WORKER = "EDA Worker"
# Rows the view lists (the most recently seen first); the EDA Worker list has them all.
WORKERS_SHOWN = 50
MANAGEMENT_TIMEOUT = 3.0


@frappe.whitelist()
def broker_view() -> dict[str, Any]:
	"""The queues of this site's handlers with their depths, and the workers with their state."""
	if not is_manager():
		frappe.throw(_("Only an EDA Manager or System Manager may see the broker."), frappe.PermissionError)
	from frappe_eda.desk.notifications import recipients_summary

	return {
		**queue_view(),
		"workers": workers(),
		"notified": recipients_summary(),
		"checked_at": datetime.now(timezone.utc).replace(tzinfo=None).isoformat(sep=" "),
	}


def queue_view() -> dict[str, Any]:
	"""``{"broker", "queues", "error", "management"}``; ``error`` says why nothing could be read.

	Every queue this site's worker consumes (``consumer.site_registry``): the apps' handler queues, one
	per enabled EDA Subscription, the receipts queue and the reconciliation queues, each with its retry
	tiers and dead-letter queue."""
	from frappe_eda.consumer import site_registry
	from frappe_eda.desk.replay import fast_broker
	from frappe_eda.messaging.connection import BrokerConnection
	from frappe_eda.messaging.errors import EdaError
	from frappe_eda.messaging.topology import TopologyDeclarer, dead_letter_queue, retry_queue
	from frappe_eda.settings import load_settings

	result: dict[str, Any] = {"broker": "", "queues": [], "error": None, "management": None}
	try:
		settings = load_settings()
		result["broker"] = settings.broker.redacted_url()
		subscriptions = list(site_registry())
	except Exception as e:  # a handler module that does not import, settings that do not parse
		result["error"] = _("Could not read the site's handlers or broker settings: {0}").format(_describe(e))
		return result
	management = ManagementApi.from_config(settings.broker)
	try:
		with BrokerConnection(fast_broker(settings.broker)) as connection:
			declarer = TopologyDeclarer(connection)
			try:
				for subscription in subscriptions:
					tiers = subscription.retry_policy(settings.retry).tiers()
					work = _passive(declarer, subscription.queue, consumers=True)
					result["queues"].append(
						{
							"queue": subscription.queue,
							"handler": subscription.name,
							"exchange": subscription.exchange,
							"patterns": list(subscription.patterns),
							**work,
							"unacked": None,
							"tiers": [
								{"queue": retry_queue(subscription.queue, delay), "delay": delay}
								| _passive(declarer, retry_queue(subscription.queue, delay))
								for delay in tiers
							],
							"dead": {"queue": dead_letter_queue(subscription.queue)}
							| _passive(declarer, dead_letter_queue(subscription.queue)),
						}
					)
			finally:
				declarer.close()
	except EdaError as e:
		result["error"] = _("The broker at {0} could not be reached: {1}").format(
			result["broker"], _describe(e)
		)
		return result
	except Exception as e:  # the connection dropped half-way, an AMQP error we did not expect
		result["error"] = _("Reading the queues failed: {0}").format(_describe(e))
		return result
	if management is not None:
		result["management"] = management.fill_unacked(result["queues"])
	return result


def _passive(declarer: Any, queue: str, consumers: bool = False) -> dict[str, Any]:
	"""``{"ready", "missing"}`` (and ``"consumers"``) of one queue, by passive declares (never creating
	it); a queue the site's broker user may not see (403) gives ``"error"``."""
	import pika.exceptions

	try:
		ready = declarer.queue_depth(queue)
		found: dict[str, Any] = {"ready": ready, "missing": ready is None}
		if consumers:
			found["consumers"] = None if ready is None else declarer.consumer_count(queue)
		return found
	except pika.exceptions.ChannelClosedByBroker as e:
		return {"ready": None, "consumers": None, "missing": False, "error": f"{e.reply_code} {e.reply_text}"}


class ManagementApi:
	"""RabbitMQ's HTTP API (the management plugin), for the unacked counts AMQP does not give."""

	def __init__(self, url: str, user: str, password: str, vhost: str) -> None:
		self.url = url.rstrip("/")
		self.vhost = vhost
		token = base64.b64encode(f"{user}:{password}".encode()).decode()
		self._auth = f"Basic {token}"

	@classmethod
	def from_config(cls, broker: Any) -> ManagementApi | None:
		"""From ``eda_management_url`` in site_config.json; None when it is not set."""
		configured = (frappe.conf.get("eda_management_url") or "").strip()
		if not configured:
			return None
		parts, amqp = urlsplit(configured), urlsplit(broker.url)
		user = unquote(parts.username) if parts.username else unquote(amqp.username or "guest")
		password = unquote(parts.password) if parts.password else unquote(amqp.password or "guest")
		netloc = parts.hostname or "127.0.0.1"
		if ":" in netloc:
			netloc = f"[{netloc}]"  # an IPv6 address
		if parts.port:
			netloc += f":{parts.port}"
		url = urlunsplit((parts.scheme or "http", netloc, parts.path, "", ""))
		return cls(url, user, password, broker.vhost)

	def fill_unacked(self, queues: list[dict[str, Any]]) -> dict[str, Any]:
		"""Set ``unacked`` of each work queue found; returns ``{"url", "error"}`` for the view."""
		error = None
		for row in queues:
			if row.get("missing") or row.get("error"):
				continue
			try:
				row["unacked"] = int(self.queue(row["queue"]).get("messages_unacknowledged", 0))
			except Exception as e:
				error = _describe(e)
				break  # one timeout is enough: the rest would wait as long
		return {"url": self.url, "error": error}

	def queue(self, name: str) -> dict[str, Any]:
		path = f"/api/queues/{quote(self.vhost, safe='')}/{quote(name, safe='')}"
		request = urllib.request.Request(self.url + path, headers={"Authorization": self._auth})
		with urllib.request.urlopen(request, timeout=MANAGEMENT_TIMEOUT) as response:
			return json.loads(response.read().decode("utf-8"))


def workers(limit: int = WORKERS_SHOWN) -> list[dict[str, Any]]:
	"""EDA Worker rows, the most recently seen first, each with its ``state`` and seconds since seen."""
	from frappe_eda.consumer.heartbeats import COUNTERS, worker_beat

	rows = frappe.get_all(
		WORKER,
		fields=[
			"name",
			"worker_id",
			"host",
			"pid",
			"queues",
			"started_at",
			"last_heartbeat",
			"heartbeat_every",
			"stopped",
			*COUNTERS,
		],
		order_by="last_heartbeat desc",
		limit=limit,
	)
	now = datetime.now(timezone.utc)
	shown = []
	for row in rows:
		beat = worker_beat(row)
		shown.append(
			{
				"name": row.name,
				"worker_id": beat.worker_id,
				"host": beat.host,
				"pid": beat.pid,
				"queues": list(beat.queues),
				"started_at": str(row.started_at or ""),
				"last_seen": str(row.last_heartbeat or ""),
				"heartbeat_every": beat.heartbeat_every,
				"state": beat.state(now),
				"age": round(beat.age(now), 1),
				**{counter: getattr(beat, counter) for counter in COUNTERS},
			}
		)
	return shown


def _describe(error: BaseException) -> str:
	text = str(error).strip()
	return f"{type(error).__name__}: {text}" if text else type(error).__name__
