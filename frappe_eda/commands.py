"""``bench --site SITE eda ...``: status, replay, relay, worker, declare.

Bench collects the module-level ``commands`` list of every installed app; each command connects to
the site the way Frappe's own commands do (``frappe.init`` + ``frappe.connect``) and leaves it with
``frappe.destroy``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone

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
	"""Message counts per direction and status, and every queue this site's worker consumes (the apps'
	handlers, each enabled EDA Subscription, receipts, reconciliation): the work queue with its ready,
	unacked (with ``eda_management_url``) and consumers, its retry tiers (``<queue>.retry.<delay>``) and
	its dead-letter queue (``<queue>.dead``)."""
	with _site(context):
		import frappe
		from frappe.query_builder.functions import Count

		# The labels the desk shows (the DocType's own options), so what is printed here is what
		# ``--status`` and the list view's filters accept.
		m = frappe.qb.DocType("EDA Message")
		rows = (
			frappe.qb.from_(m)
			.select(m.direction, m.status, Count("*").as_("n"))
			.groupby(m.direction, m.status)
			.run(as_dict=True)
		)
		click.echo("EDA Messages:")
		for row in sorted(rows, key=lambda r: (r.direction, r.status)):
			click.echo(f"  {row.direction:<10}{row.status:<11}{row.n:>8}")
		if not rows:
			click.echo("  (none)")
		from frappe_eda.desk.notifications import recipients_summary

		told = recipients_summary()
		click.echo(f"{'WARNING: ' if told['warn'] else ''}{told['message']}")
		from frappe_eda.replication.trust import trust_summary

		trust = trust_summary()
		click.echo(f"{'WARNING: ' if trust['warn'] else ''}{trust['message']}")
		from frappe_eda.desk.broker_view import queue_view

		view = queue_view()
		if view["error"]:
			click.echo(view["error"])
			return
		click.echo(f"queues on {view['broker']} (ready messages; unacked needs eda_management_url):")
		for row in view["queues"]:
			unacked = "?" if row.get("unacked") is None else row["unacked"]
			detail = f"  unacked {unacked}, consumers {row.get('consumers')}  <- {row['handler']}"
			shown = "" if row.get("missing") or row.get("error") else detail
			click.echo(f"  {row['queue']:<48}{_depth(row)}{shown}")
			for tier in (*row["tiers"], row["dead"]):
				click.echo(f"  {tier['queue']:<48}{_depth(tier)}")
		if not view["queues"]:
			click.echo("  (none: this site has no handler, enabled subscription or receipts to consume)")
		management = view.get("management") or {}
		if management.get("error"):
			click.echo(f"management API at {management['url']}: {management['error']}")


def _depth(row: dict) -> str:
	"""The ready count, right-aligned; ``missing``, or the broker's refusal to show the queue."""
	if row.get("error"):
		return f"  not readable: {row['error']}"
	return f"{'missing' if row.get('missing') else row['ready']:>8}"


REPLAY_STATUSES = ("Failed", "Dead", "Pending", "Received", "Processed", "Published")


def _utc_naive(value: str | None, option: str) -> datetime | None:
	"""``--since``/``--until``: an ISO date or timestamp; with an offset (``+02:00``, ``Z``) it is
	converted, without one it is taken as UTC, the zone ``created_at`` is stored in."""
	if not value:
		return None
	try:
		moment = datetime.fromisoformat(value.strip())
		if moment.tzinfo is not None:
			moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
	except ValueError as e:
		raise click.BadParameter(
			f"{value!r} is not an ISO date or timestamp ({e}); e.g. 2026-03-01T08:00:00+02:00",
			param_hint=option,
		)
	except OverflowError:
		raise click.BadParameter(f"{value!r} has no UTC equivalent a database can store", param_hint=option)
	return moment


def _resolve(refs: tuple[str, ...], queue: str | None) -> list[str]:
	"""EDA Message names for ``refs``, each an EDA Message name or a message id (the id's incoming copy,
	of ``queue`` when it reached several; else its outgoing record). Every unknown or ambiguous one is
	reported together, before anything is replayed."""
	import frappe

	from frappe_eda.stores.doctype_columns import from_column, to_column

	names: list[str] = []
	problems: list[str] = []
	for ref in refs:
		if frappe.db.exists("EDA Message", ref):
			names.append(ref)
			continue
		filters: dict = {"message_id": to_column("message_id", ref)}  # stored HTML-escaped
		if queue:
			filters["queue"] = to_column("queue", queue)
		rows = frappe.get_all("EDA Message", filters=filters, fields=["name", "direction", "queue"])
		incoming = [r for r in rows if r.direction == "Incoming"]
		if len(incoming) > 1:
			queues = ", ".join(sorted(from_column("queue", r.queue) for r in incoming))
			problems.append(f"message id {ref!r} reached several queues ({queues}): name one with --queue")
		elif rows:
			names.append((incoming or rows)[0].name)
		else:
			where = f" in queue {queue!r}" if queue else ""
			problems.append(f"no EDA Message is named {ref!r} or has message id {ref!r}{where}")
	if problems:
		raise click.ClickException("; ".join(problems))
	return names


@eda.command("replay")
@click.argument("refs", nargs=-1, metavar="[NAME_OR_MESSAGE_ID]...")
@click.option(
	"--status",
	"statuses",
	multiple=True,
	type=click.Choice(REPLAY_STATUSES, case_sensitive=False),
	help="Filter (repeatable, any case); default Failed and Dead.",
)
@click.option("--routing-key", default=None, help="Exact key or a topic pattern.")
@click.option("--queue", default=None, help="The consuming queue (also picks the copy of a message id).")
@click.option(
	"--since",
	default=None,
	help="Created at or after, in UTC (created_at is UTC): 2026-03-01 08:00, or ISO with an offset.",
)
@click.option(
	"--until",
	default=None,
	help="Created at or before, in UTC (created_at is UTC): 2026-03-01 18:00, or ISO with an offset.",
)
@click.option("--limit", default=500, show_default=True)
@click.option("--force", is_flag=True, help="Also replay Processed/Published messages.")
@click.option("--dry-run", is_flag=True)
@pass_context
def replay(
	context: click.Context,
	refs: tuple[str, ...],
	statuses: tuple[str, ...],
	routing_key: str | None,
	queue: str | None,
	since: str | None,
	until: str | None,
	limit: int,
	force: bool,
	dry_run: bool,
) -> None:
	"""Replay EDA Messages given by name or message id, or every one matching the filters (default:
	Failed and Dead). An unknown name or id is an error, and nothing is replayed."""
	since_at, until_at = _utc_naive(since, "--since"), _utc_naive(until, "--until")
	with _site(context):
		import frappe

		from frappe_eda.desk.replay import replay_report
		from frappe_eda.stores.doctype_columns import from_column, to_column

		if refs:
			names = _resolve(refs, queue)
		else:
			filters: dict = {"status": ["in", list(statuses or ("Failed", "Dead"))]}
			if queue:
				filters["queue"] = to_column(
					"queue", queue
				)  # stored HTML-escaped, like every producer string
			if since_at and until_at:
				filters["created_at"] = ["between", [since_at, until_at]]
			elif since_at or until_at:
				filters["created_at"] = [">=", since_at] if since_at else ["<=", until_at]
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
			names = [c.name for c in candidates]
		if dry_run:
			for name in names:
				click.echo(f"would replay {name}")
			click.echo(f"{len(names)} would be replayed")
			return
		results, summary = replay_report(names, force=force)
		for result in results:
			click.echo(f"{result['name']}: {'sent' if result['sent'] else 'not sent'} ({result['detail']})")
		click.echo(f"{summary['sent']} of {len(results)} replayed")
		click.echo(f"{summary['dead_copies_removed']} dead copies removed from the dead-letter queues")
		for reason, count in summary["dead_copies_kept"].items():
			click.echo(f"  copies left in the dead-letter queues ({reason}): {count}")


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
	"""Consume the queues of the handlers listed in installed apps' ``eda_handlers`` hooks; prints the
	site, the broker and each queue it consumes when it starts, and what it did when it stops."""
	with _site(context):
		from frappe_eda.consumer import handler_modules, run_worker
		from frappe_eda.messaging.errors import ConfigurationError
		from frappe_eda.messaging.registry import default_registry
		from frappe_eda.outbox.rules import all_rules
		from frappe_eda.replication.receipts import receipts_wanted
		from frappe_eda.replication.subscriptions import enabled_specs

		# A site whose rules publish has work too: relaying its outbox and answering reconciliation
		# requests as a source (replication.reconcile), even with nothing else to consume.
		if not handler_modules() and not enabled_specs() and not receipts_wanted() and not all_rules():
			raise click.ClickException(NO_HANDLERS)
		try:
			stats = run_worker(queues or None, relay=not no_relay)
		except (
			ConfigurationError
		) as e:  # no handler registered, or an unknown --queue: one line, no traceback
			hint = f" (the modules listed register none: {NO_HANDLERS})" if not len(default_registry) else ""
			raise click.ClickException(f"{e}{hint}")
		click.echo(
			f"stopped: {stats.processed} processed, {stats.duplicates} duplicates, {stats.retried} retried, {stats.dead} dead"
		)


NO_HANDLERS = (
	"no handlers to consume: no enabled EDA Subscription or EDA Event Rule, no installed app lists handler "
	'modules in the `eda_handlers` hook of its hooks.py (eda_handlers = ["myapp.eda.handlers"]), and '
	"EDA_HANDLER_MODULES is not set; a site that only publishes from code relays its outbox with "
	"`bench --site SITE eda relay`"
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


@eda.command("broker-user")
@click.option(
	"--management-url",
	envvar="EDA_MANAGEMENT_URL",
	help="RabbitMQ's management API as an administrator, e.g. http://admin@127.0.0.1:15672 (asked for "
	"the password when the URL has none; used for these calls only, never stored).",
)
@click.option("--user", "broker_user", default=None, help="The broker user (default: the site's name).")
@click.option(
	"--password", default=None, help="Set this password (default: a new user gets a generated one)."
)
@click.option(
	"--publish",
	"extra",
	multiple=True,
	metavar="EXCHANGE:KEY",
	help="Routing keys app code publishes on with publish() (a topic pattern); repeat as needed.",
)
@click.option(
	"--print", "print_only", is_flag=True, help="Print rabbitmqctl commands instead of calling the API."
)
@click.option(
	"--write-config",
	is_flag=True,
	help="Point eda_amqp_url in site_config.json at the new user (host and vhost as now).",
)
@pass_context
def broker_user(
	context: click.Context,
	management_url: str | None,
	broker_user: str | None,
	password: str | None,
	extra: tuple[str, ...],
	print_only: bool,
	write_config: bool,
) -> None:
	"""Create or update this site's own broker user with the least it needs (idempotent: run it again
	after adding a subscription, a destination or a rule)."""
	with _site(context):
		import frappe

		from frappe_eda.cli import provision_or_print
		from frappe_eda.messaging.errors import ConfigurationError
		from frappe_eda.messaging.trust.permissions import Route
		from frappe_eda.replication.trust import site_traffic
		from frappe_eda.settings import load_settings

		try:
			routes = [Route.parse(item) for item in extra]
		except ConfigurationError as e:
			raise click.UsageError(f"--publish {e}") from None
		broker = load_settings().broker
		traffic = site_traffic(broker_user, tuple(routes))
		if print_only:
			click.echo(
				f"# broker user {traffic.user!r} of site {frappe.local.site} in vhost {broker.vhost!r}"
			)
		report = provision_or_print(traffic, broker.vhost, management_url, password, print_only)
		if report is None or not report.password:
			return
		if write_config:
			from frappe.installer import update_site_config

			update_site_config("eda_amqp_url", broker.with_user(traffic.user, report.password).url)
			click.echo("eda_amqp_url in site_config.json now uses it: restart the site's worker")
		else:
			click.echo(f"password of {traffic.user!r} (shown once): {report.password}")


@eda.command("signing-key")
@click.option(
	"--rotate", is_flag=True, help="Replace the current key (subscribers must list the new public key first)."
)
@pass_context
def signing_key(context: click.Context, rotate: bool) -> None:
	"""Give this site an Ed25519 signing key (kept encrypted in EDA Settings) and print its public key,
	for the subscribers' Source Public Keys."""
	with _site(context):
		import frappe

		from frappe_eda.messaging.trust import SigningKey
		from frappe_eda.settings import load_signer

		current = load_signer()
		if current is not None and not rotate:
			click.echo(f"this site already signs with {current.public.text} (--rotate to replace it)")
			return
		key = SigningKey.generate()
		settings = frappe.get_single("EDA Settings")
		settings.signing_key = key.text
		settings.save(ignore_permissions=True)
		frappe.db.commit()
		click.echo(f"public key: {key.public.text}")
		if current is not None:
			click.echo(
				f"replaced {current.public.text}: remove it from the subscribers once nothing signed with it waits"
			)


@eda.command("retire-queue")
@click.argument("queue")
@pass_context
def retire_queue(context: click.Context, queue: str) -> None:
	"""Delete QUEUE, its retry tiers and its dead-letter queue, once all are empty and nobody consumes
	them: the queues of a deleted EDA Subscription, or of receipts switched off, after their messages were
	replayed or discarded. What still holds messages is kept and named; an enabled subscription's queue is
	refused (disable or delete it first)."""
	with _site(context):
		import frappe

		from frappe_eda.replication.queues import retire
		from frappe_eda.replication.subscriptions import default_queue

		for row in frappe.get_all("EDA Subscription", filters={"enabled": 1}, fields=["name", "queue"]):
			if ((row.queue or "").strip() or default_queue(row.name)) == queue:
				raise click.UsageError(f"{queue} is the queue of the enabled EDA Subscription {row.name}")
		retired = retire(queue, "", (), delete=True)
		click.echo(retired.summary())
		if retired.left:
			raise SystemExit(1)


@eda.command("backfill")
@click.argument("doctype")
@click.option(
	"--filters",
	default=None,
	help='JSON, as frappe.get_all takes it: {"status": "Open"} or [["modified", ">", "2026-01-01"]].',
)
@click.option(
	"--to",
	"destination",
	default=None,
	help="Send to this EDA Destination (default: through the DocType's enabled publishing rules).",
)
@click.option("--batch-size", default=200, show_default=True, type=click.IntRange(min=1))
@click.option(
	"--rate",
	default=None,
	type=click.FloatRange(min=0, min_open=True),
	help="At most this many documents a second.",
)
@click.option(
	"--max-pending",
	default=None,
	type=click.IntRange(min=0),
	help="Wait before a batch while this many outgoing messages are Pending (default: 5 x batch size; 0: never).",
)
@click.option(
	"--max-wait",
	default=None,
	type=click.FloatRange(min=0),
	help="Give up after waiting this many seconds for the relay (default: wait as long as it takes).",
)
@click.option("--restart", is_flag=True, help="Start from the first document, not after the last run's.")
@pass_context
def backfill(
	context: click.Context,
	doctype: str,
	filters: str | None,
	destination: str | None,
	batch_size: int,
	rate: float | None,
	max_pending: int | None,
	max_wait: float | None,
	restart: bool,
) -> None:
	"""Publish the existing DOCTYPE documents through the outbox (one `<doctype>.backfill` message each
	per target), so a new server catches up: in name order, a commit per batch (run it again to resume),
	throttled by --rate and by the Pending outbox."""
	import json
	import sys
	import time

	try:
		parsed = json.loads(filters) if filters else None
	except ValueError as e:
		raise click.ClickException(f"--filters is not JSON ({e}): {filters!r}")
	if parsed is not None and not isinstance(parsed, dict | list):
		raise click.ClickException(f"--filters must be a JSON object or list, not {filters!r}")
	with _site(context):
		import frappe

		from frappe_eda.replication.backfill import BackfillError
		from frappe_eda.replication.backfill import backfill as run_backfill

		frappe.set_user("Administrator")
		bar = None
		last_line = [0.0]

		def progress(done: int, total: int) -> None:
			nonlocal bar
			if sys.stdout.isatty():
				if bar is None:
					bar = click.progressbar(length=max(total, 1), label=f"{doctype}", show_pos=True)
					bar.__enter__()
				bar.update(min(done, bar.length) - bar.pos)
			elif done >= total or time.monotonic() - last_line[0] >= 5:
				click.echo(f"{done}/{total} documents")
				last_line[0] = time.monotonic()

		try:
			report = run_backfill(
				doctype,
				filters=parsed,
				to=destination,
				batch_size=batch_size,
				rate=rate,
				restart=restart,
				progress=progress,
				max_pending=max_pending,
				max_wait=max_wait,
				echo=click.echo,
			)
		except BackfillError as e:
			raise click.ClickException(str(e))
		except KeyboardInterrupt:
			raise click.ClickException("interrupted: every committed batch is kept; run it again to resume")
		finally:
			if bar is not None:
				bar.__exit__(None, None, None)
		click.echo(report.summary())


@eda.command("reconcile")
@click.argument("doctype")
@click.option(
	"--with", "source", default=None, help="The source server (default: the subscription's Source)."
)
@click.option(
	"--subscription", default=None, help="Only this EDA Subscription (default: all enabled for DOCTYPE)."
)
@click.option("--buckets", default=None, type=click.IntRange(1, 4096), help="Digest buckets (default 256).")
@click.option("--wait", is_flag=True, help="Wait for the outcome and print it.")
@click.option(
	"--timeout", default=300.0, show_default=True, type=click.FloatRange(min=0), help="With --wait."
)
@pass_context
def reconcile(
	context: click.Context,
	doctype: str,
	source: str | None,
	subscription: str | None,
	buckets: int | None,
	wait: bool,
	timeout: float,
) -> None:
	"""Compare this site's copies of DOCTYPE with the source's digests and have what differs sent again
	(anti-entropy; the eda workers of both sites do the work: see frappe_eda.replication.reconcile)."""
	import time

	with _site(context):
		import frappe

		from frappe_eda.messaging.replication.digests import DEFAULT_BUCKETS
		from frappe_eda.replication import reconcile as rc

		frappe.set_user("Administrator")
		try:
			names = rc.subscriptions_for(doctype, subscription)
			for name in names:
				state = rc.start_run(name, source, buckets or DEFAULT_BUCKETS)
				frappe.db.commit()
				click.echo(
					f"reconciliation {state['run']} of {name}: digest of {state['local_documents']} copies "
					f"in {state['buckets']} buckets sent to {state['source']}"
				)
		except frappe.ValidationError as e:
			raise click.ClickException(frappe.utils.strip_html(str(e)))
		if not wait:
			return
		deadline = time.monotonic() + timeout
		pending = list(names)
		while pending:
			frappe.db.rollback()  # a fresh snapshot: the worker commits what it handled
			for name in list(pending):
				result = rc.refresh(name, force_finish=time.monotonic() > deadline)
				frappe.db.commit()
				if result.get("status") == "done":
					pending.remove(name)
					click.echo(rc.summary(name, result))
			if pending:
				time.sleep(0.5)


commands = [eda]
