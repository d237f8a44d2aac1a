"""``bench --site SITE eda ...``: status, replay, relay, worker, declare.

Bench collects the module-level ``commands`` list of every installed app; each command connects to
the site the way Frappe's own commands do (``frappe.init`` + ``frappe.connect``) and leaves it with
``frappe.destroy``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click
from frappe.commands import get_site, pass_context


@contextmanager
def _site(context: click.Context) -> Iterator[str]:
	import frappe

	site = get_site(context)
	frappe.init(site=site)
	frappe.connect()
	try:
		yield site
	finally:
		frappe.destroy()


@click.group("eda")
def eda() -> None:
	"""Event-driven messaging: outbox relay, worker, status and replay."""


@eda.command("status")
@pass_context
def status(context: click.Context) -> None:
	"""Message counts per direction and status, and the depth of each handler's queues."""
	with _site(context):
		from frappe_eda.consumer import handler_modules
		from frappe_eda.messaging.connection import BrokerConnection
		from frappe_eda.messaging.errors import BrokerUnavailable
		from frappe_eda.messaging.registry import default_registry, import_handler_modules
		from frappe_eda.messaging.topology import TopologyDeclarer, dead_letter_queue
		from frappe_eda.settings import load_settings
		from frappe_eda.stores.doctype_store import DocTypeStore

		counts = DocTypeStore(commit=False).counts()
		click.echo("EDA Messages:")
		for (direction, state), count in sorted(
			counts.items(), key=lambda kv: (kv[0][0].value, kv[0][1].value)
		):
			click.echo(f"  {direction.value:<4}{state.value:<11}{count:>8}")
		import_handler_modules(handler_modules())
		settings = load_settings()
		try:
			with BrokerConnection(settings.broker) as connection:
				declarer = TopologyDeclarer(connection)
				click.echo(f"queues on {settings.broker.redacted_url()}:")
				for subscription in default_registry:
					for name in (subscription.queue, dead_letter_queue(subscription.queue)):
						depth = declarer.queue_depth(name)
						click.echo(f"  {name:<40}{'missing' if depth is None else depth:>8}")
				declarer.close()
		except BrokerUnavailable as e:
			click.echo(f"broker unavailable: {e}")


@eda.command("replay")
@click.argument("names", nargs=-1)
@click.option(
	"--status",
	"statuses",
	multiple=True,
	type=click.Choice(["Failed", "Dead", "Pending", "Processed", "Published"]),
)
@click.option("--routing-key", default=None, help="Exact key or a topic pattern.")
@click.option("--queue", default=None)
@click.option("--since", default=None, help="Datetime (UTC) the message was created at or after.")
@click.option("--until", default=None)
@click.option("--limit", default=500, show_default=True)
@click.option("--force", is_flag=True, help="Also replay Processed/Published messages.")
@click.option("--dry-run", is_flag=True)
@pass_context
def replay(
	context: click.Context,
	names: tuple[str, ...],
	statuses: tuple[str, ...],
	routing_key: str | None,
	queue: str | None,
	since: str | None,
	until: str | None,
	limit: int,
	force: bool,
	dry_run: bool,
) -> None:
	"""Replay EDA Messages by NAMES, or every one matching the filters (default: Failed and Dead)."""
	with _site(context):
		import frappe

		from frappe_eda.desk.replay import replay_records
		from frappe_eda.stores.doctype_columns import from_column, to_column

		if not names:
			filters: dict = {"status": ["in", list(statuses or ("Failed", "Dead"))]}
			if queue:
				filters["queue"] = to_column(
					"queue", queue
				)  # stored HTML-escaped, like every producer string
			if since and until:
				filters["created_at"] = ["between", [since, until]]
			elif since or until:
				filters["created_at"] = [">=", since] if since else ["<=", until]
			candidates = frappe.get_all(
				"EDA Message",
				filters=filters,
				fields=["name", "routing_key"],
				order_by="created_at asc",
				limit=limit,
			)
			if routing_key:
				from frappe_eda.messaging.routing import topic_matches

				candidates = [
					c
					for c in candidates
					if topic_matches(routing_key, from_column("routing_key", c.routing_key))
				]
			names = tuple(c.name for c in candidates)
		if dry_run:
			for name in names:
				click.echo(f"would replay {name}")
			click.echo(f"{len(names)} would be replayed")
			return
		results = replay_records(list(names), force=force)
		for result in results:
			click.echo(f"{result['name']}: {'sent' if result['sent'] else 'not sent'} ({result['detail']})")
		click.echo(f"{sum(r['sent'] for r in results)} of {len(results)} replayed")


@eda.command("relay")
@click.option("--once", is_flag=True, help="Drain what is Pending now and exit.")
@pass_context
def relay(context: click.Context, once: bool) -> None:
	"""Send Pending outgoing messages; without --once, keep relaying after each commit until stopped."""
	with _site(context):
		from frappe_eda.messaging.connection import BrokerConnection
		from frappe_eda.outbox.relay import drain, run_relay
		from frappe_eda.settings import load_settings

		if once:
			with BrokerConnection(load_settings().broker) as connection:
				click.echo(f"relayed {drain(connection)} messages")
		else:
			run_relay()


@eda.command("worker")
@click.option("-q", "--queue", "queues", multiple=True, help="Only these queues (default: all handlers').")
@click.option("--no-relay", is_flag=True, help="Do not relay the outbox from this process.")
@pass_context
def worker(context: click.Context, queues: tuple[str, ...], no_relay: bool) -> None:
	"""Consume the queues of the handlers listed in installed apps' ``eda_handlers`` hooks."""
	with _site(context):
		from frappe_eda.consumer import run_worker

		stats = run_worker(queues or None, relay=not no_relay)
		click.echo(
			f"stopped: {stats.processed} processed, {stats.duplicates} duplicates, {stats.retried} retried, {stats.dead} dead"
		)


@eda.command("declare")
@pass_context
def declare(context: click.Context) -> None:
	"""Declare exchanges, queues, retry and dead-letter queues of all handlers, without consuming."""
	with _site(context):
		from frappe_eda.consumer import build_worker
		from frappe_eda.messaging.connection import BrokerConnection
		from frappe_eda.settings import load_settings

		with BrokerConnection(load_settings().broker) as connection:
			worker = build_worker(connection)
			worker.declare()
			worker.close()
			click.echo(f"declared {len(worker.subscriptions)} handler queues")


commands = [eda]
