"""``bench eda backfill``: the existing documents of a DocType through the outbox, so a new server catches up.

Each matching document becomes one ``{doctype}.backfill`` message per target (subscriptions apply it as
an upsert): the message a save would make (``doc_events.publish_document``: no Password or sensitive
field, linked documents when a rule sends them, the content hash), written as a Pending EDA Message and
never sent from here: the relay sends it, in order, with confirms.

- **Targets.** ``to`` names one EDA Destination (every matching document goes there). Without it, the
  DocType's enabled publishing rules (EDA Event Rules and ``eda_publish`` hooks, whatever their event)
  are grouped by target (destination, exchange, routing-key template) and each target gets one message
  per document that the condition of at least one of its rules accepts, with the fields those rules
  send (all of them when one of them names none). The condition is how each server gets only its own
  data, so a backfill honours it. A routing-key template is rendered with ``event=backfill``.
- **Batches.** Documents are read in name order, ``batch_size`` at a time, and each batch commits with
  its checkpoint (the last name done), so a crash or Ctrl-C loses nothing written and a re-run
  resumes after the last committed batch. ``restart=True`` starts over; a finished run clears it.
- **Checkpoints** are rows of ``tabDefaultValue`` under the parent ``__eda_backfill``, keyed
  ``eda_backfill::<sha1 of site, doctype, filters, to>``, read and written with plain queries in the
  batch's own transaction. (``frappe.db.set_default`` would clear the whole site cache on each write.)
- **Throttling.** ``rate`` caps documents per second; and before each batch, while the site's Pending
  outgoing EDA Messages number ``max_pending`` or more (default five batches), the backfill waits for the
  relay to drain them, so the outbox is never flooded and other traffic keeps flowing. ``max_wait``
  (seconds of one wait) gives up with ``BackfillStalled`` (resumable) instead of waiting for ever.

A backfill commits, batch by batch: call it from a command or a job, not from inside a request.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import frappe

from frappe_eda import compat
from frappe_eda.messaging.errors import ConfigurationError
from frappe_eda.outbox.doc_events import OWN_DOCTYPES, publish_document
from frappe_eda.outbox.rules import PublishRule, all_rules, routing_key_for

BACKFILL_EVENT = "backfill"
EDA_MODULE = "Frappe EDA"
CHECKPOINT_PARENT = "__eda_backfill"
CHECKPOINT_PREFIX = "eda_backfill::"
DEFAULT_BATCH_SIZE = 200
PENDING_BATCHES = 5  # default max_pending: this many batches waiting in the outbox
WAIT_REPORT_EVERY = 30.0  # seconds between "still waiting" lines


class BackfillError(frappe.ValidationError):
	"""A backfill that cannot start or go on; the message says what to fix."""


class BackfillStalled(BackfillError):
	"""The outbox stayed over ``max_pending`` for ``max_wait`` seconds: no relay is draining it."""


@dataclass(frozen=True)
class Target:
	"""Where one message per document goes, and the rules (conditions, fields) that lead there."""

	destination: str = ""
	exchange: str = ""
	routing_key: str = ""
	rules: tuple[PublishRule, ...] = ()

	def describe(self) -> str:
		where = [f"destination {self.destination}"] if self.destination else []
		if self.exchange or not self.destination:
			where.append(f"exchange {self.exchange or '(default)'}")
		if self.routing_key:
			where.append(f"key {self.routing_key}")
		origins = sorted({f"rule {r.rule}" if r.rule else "eda_publish hook" for r in self.rules if r.event})
		return " ".join(where) + (f" ({', '.join(origins)})" if origins else "")


@dataclass
class BackfillReport:
	doctype: str
	targets: list[str] = field(default_factory=list)
	total: int = 0  # documents matching the filters when the run started
	already_done: int = 0  # of those, done by earlier runs (resuming)
	resumed_from: str | None = None  # the last name an earlier run committed
	documents: int = 0  # documents read by this run
	messages: int = 0  # EDA Messages written (Pending; Failed for a document no consumer would take)
	skipped: int = 0  # (document, target) pairs whose rules' conditions all said no
	batches: int = 0
	waited: float = 0.0  # seconds spent waiting for the relay to drain the outbox
	seconds: float = 0.0

	def summary(self) -> str:
		lines = [
			f"backfill of {self.doctype}: {self.documents} documents seen, {self.messages} messages written, "
			f"{self.skipped} skipped by condition, {self.batches} batches, {self.seconds:.1f} s"
		]
		if self.resumed_from is not None:
			lines.append(f"resumed after {self.resumed_from!r} ({self.already_done} documents done before)")
		if self.waited:
			lines.append(f"waited {self.waited:.0f} s for the relay to drain the outbox")
		lines.extend(f"target: {target}" for target in self.targets)
		return "\n".join(lines)


def backfill(
	doctype: str,
	filters: dict | list | None = None,
	to: str | None = None,
	batch_size: int = DEFAULT_BATCH_SIZE,
	rate: float | None = None,
	restart: bool = False,
	progress: Callable[[int, int], Any] | None = None,
	*,
	max_pending: int | None = None,
	max_wait: float | None = None,
	poll_interval: float = 2.0,
	echo: Callable[[str], Any] | None = None,
	sleep: Callable[[float], Any] = time.sleep,
) -> BackfillReport:
	"""Publish every existing ``doctype`` document matching ``filters`` (see the module).

	``progress(done, total)`` is called before the first batch (``done``: what earlier runs did) and
	after each committed batch. ``max_pending`` 0 never waits for the relay. ``echo`` gets the lines a
	person wants to read (what is about to happen, waiting for the relay). Raises ``BackfillError`` (a
	``frappe.ValidationError``) for anything that cannot work, before writing anything when it can.
	"""
	started = time.monotonic()
	if batch_size < 1:
		raise BackfillError(f"batch size must be at least 1, not {batch_size}")
	if rate is not None and rate <= 0:
		raise BackfillError(f"rate must be a positive number of documents a second, not {rate}")
	if max_pending is None:
		max_pending = PENDING_BATCHES * batch_size
	check_doctype(doctype)
	_check_enabled()
	base = filter_list(doctype, filters)
	total = _count(doctype, base, filters)  # also checks the filters, before anything else is read
	targets = resolve_targets(doctype, to)
	report = BackfillReport(doctype=doctype, targets=[t.describe() for t in targets], total=total)
	key = checkpoint_key(doctype, filters, to)
	if restart:
		_clear_checkpoint(key)
	last = _read_checkpoint(key)
	if last is not None:
		report.resumed_from = last
		report.already_done = _count(doctype, [*base, [doctype, "name", "<=", last]], filters)
	if echo:
		resuming = f", resuming after {last!r}" if last is not None else ""
		echo(
			f"backfill of {doctype}: {report.total} matching documents{resuming}; "
			f"to {'; '.join(report.targets)}"
		)
	if progress:
		progress(report.already_done, report.total)
	gate = _OutboxGate(max_pending, max_wait, poll_interval, echo, sleep)
	paced_from = time.monotonic()
	while True:
		gate.wait()
		report.waited = gate.waited
		page = list(base)
		if last is not None:
			page.append([doctype, "name", ">", last])
		names = frappe.get_all(
			doctype, filters=page, pluck="name", order_by="name asc", limit_page_length=batch_size
		)
		if not names:
			break
		try:
			for name in names:
				_publish_one(doctype, name, targets, report)
			last = names[-1]
			_write_checkpoint(key, last, doctype, filters, to)
			frappe.db.commit()
		except BaseException:
			frappe.db.rollback()  # the batch in hand only; every earlier batch is committed
			raise
		report.batches += 1
		if progress:
			progress(report.already_done + report.documents, report.total)
		if len(names) < batch_size:
			break
		if rate:
			ahead = report.documents / rate - (time.monotonic() - paced_from)
			if ahead > 0:
				sleep(ahead)
	_clear_checkpoint(key)
	frappe.db.commit()
	report.seconds = time.monotonic() - started
	return report


def check_doctype(doctype: str) -> None:
	if not doctype or not frappe.db.exists("DocType", doctype):
		raise BackfillError(f"DocType {doctype!r} does not exist")
	meta = frappe.get_meta(doctype)
	if meta.istable:
		parents = frappe.get_all(
			"DocField",
			filters={"options": doctype, "fieldtype": ["in", ["Table", "Table MultiSelect"]]},
			pluck="parent",
		)
		hint = f" (in {', '.join(sorted(set(parents)))})" if parents else ""
		raise BackfillError(
			f"{doctype} is a child table: backfill its parent DocType{hint}, which carries its rows"
		)
	if doctype in OWN_DOCTYPES or meta.module == EDA_MODULE:
		raise BackfillError(f"{doctype} is one of EDA's own DocTypes, which are never published")
	if meta.issingle:
		raise BackfillError(f"{doctype} is a Single: it has no list of documents to backfill")
	if meta.get("is_virtual"):
		raise BackfillError(f"{doctype} is a virtual DocType: it has no table to read documents from")


def _check_enabled() -> None:
	from frappe_eda.settings import load_outbox_settings

	if not load_outbox_settings().enabled:
		raise BackfillError(
			f"EDA is not enabled on site {frappe.local.site}: tick Enabled in EDA Settings (or set "
			"eda_enabled in site_config.json); a disabled outbox publishes nothing"
		)


def filter_list(doctype: str, filters: dict | list | None) -> list[list]:
	"""``filters`` as ``frappe.get_all`` takes them (a dict, or a list of ``[field, op, value]``), as one
	list of ``[doctype, field, op, value]`` a name condition can be added to."""
	if not filters:
		return []
	if isinstance(filters, dict):
		result = []
		for key, value in filters.items():
			if isinstance(value, list | tuple):
				if len(value) != 2:
					raise BackfillError(
						f'filter {key!r}: {value!r} is not [operator, value]; e.g. {{{key!r}: ["like", "A%"]}}'
					)
				result.append([doctype, key, value[0], value[1]])
			else:
				result.append([doctype, key, "=", value])
		return result
	if isinstance(filters, list | tuple):
		result = []
		for item in filters:
			if isinstance(item, list | tuple) and len(item) == 3:
				result.append([doctype, *item])
			elif isinstance(item, list | tuple) and len(item) == 4:
				result.append(list(item))
			else:
				raise BackfillError(
					f'filter {item!r} is not [field, operator, value]; e.g. [["status", "=", "Open"]]'
				)
		return result
	raise BackfillError(
		f"filters must be a dict or a list of [field, operator, value], not {type(filters).__name__}"
	)


def _count(doctype: str, conditions: list[list], filters: Any) -> int:
	"""The matching documents; filters the database refuses (an unknown field, a bad operator) are a
	``BackfillError`` saying so, never a SQL traceback."""
	try:
		# frappe.get_all, as the batches are read: the same filter syntax and checks
		[row] = frappe.get_all(doctype, filters=conditions, fields=[compat.count_field("n")])
		return int(row.n)
	except BackfillError:
		raise
	except Exception as e:
		raise BackfillError(
			f"the filters {json.dumps(filters, default=str)} do not work on {doctype}: {_reason(e)}"
		)


def _reason(error: Exception) -> str:
	args: tuple[Any, ...] = tuple(error.args)
	if len(args) == 2 and isinstance(args[0], int):  # a pymysql error: (code, text)
		return str(args[1])
	return str(error) or type(error).__name__


def resolve_targets(doctype: str, to: str | None) -> list[Target]:
	"""``to``'s single target, or one per distinct target of the DocType's enabled rules; each checked
	now (destination enabled, template renderable), so a backfill that cannot work writes nothing."""
	if to:
		enabled = frappe.db.get_value("EDA Destination", to, "enabled")
		if enabled is None:
			raise BackfillError(f"EDA Destination {to!r} does not exist")
		if not enabled:
			raise BackfillError(f"EDA Destination {to!r} is disabled; enable it first")
		return [Target(destination=to, rules=(PublishRule(doctype=doctype, event="", destination=to),))]
	rules = all_rules().get(doctype, [])
	if not rules:
		raise BackfillError(
			f"{doctype} has no enabled publishing rule (EDA Event Rule or eda_publish hook) to say where "
			"its documents go: add one, or name an EDA Destination with --to"
		)
	grouped: dict[tuple[str, str, str], list[PublishRule]] = {}
	for rule in rules:
		grouped.setdefault((rule.destination, rule.exchange, rule.routing_key), []).append(rule)
	targets = [Target(d, e, k, tuple(group)) for (d, e, k), group in grouped.items()]
	for target in targets:
		_check_target(doctype, target)
	return targets


def _check_target(doctype: str, target: Target) -> None:
	origin = target.describe()
	if target.destination:
		enabled = frappe.db.get_value("EDA Destination", target.destination, "enabled")
		if not enabled:
			state = "does not exist" if enabled is None else "is disabled"
			raise BackfillError(
				f"the target {origin} sends to EDA Destination {target.destination!r}, which {state}: "
				"fix the rule, or name a destination with --to"
			)
	if target.routing_key or not target.destination:
		rule = replace(target.rules[0], event=BACKFILL_EVENT)
		try:
			routing_key_for(rule, frappe._dict(doctype=doctype, name="x"))
		except ConfigurationError as e:
			raise BackfillError(f"the target {origin} has a routing key that cannot work: {e}")


def _publish_one(doctype: str, name: str, targets: list[Target], report: BackfillReport) -> None:
	try:
		doc = frappe.get_doc(doctype, name)
	except frappe.DoesNotExistError:
		return  # deleted since the batch was listed (its on_trash rule, if any, told the subscribers)
	report.documents += 1
	for target in targets:
		rules = [rule for rule in target.rules if _accepts(rule, doc)]
		if not rules:
			report.skipped += 1
			continue
		# The message a save would make (payload, linked documents, content hash, routing key, a Failed
		# record for what cannot be sent), as the ``backfill`` event of the rules that accept it.
		rule = replace(
			rules[0],
			event=BACKFILL_EVENT,
			fields=() if any(not r.fields for r in rules) else _union(r.fields for r in rules),
			send_linked=any(r.send_linked for r in rules),
		)
		publish_document(doc, rule)
		report.messages += 1


def _accepts(rule: PublishRule, doc: Any) -> bool:
	if not rule.condition:
		return True
	from frappe_eda.outbox.conditions import condition_holds

	try:
		return condition_holds(rule.condition, doc)
	except Exception as e:
		origin = f"EDA Event Rule {rule.rule}" if rule.rule else "an eda_publish hook"
		raise BackfillError(
			f"the condition of {origin} ({rule.condition!r}) fails on {doc.doctype} {doc.name}: {e}; "
			"fix it and run the backfill again (it resumes)"
		)


def _union(groups: Any) -> tuple[str, ...]:
	return tuple(dict.fromkeys(name for group in groups for name in group))


@dataclass
class _OutboxGate:
	"""Backpressure: a batch starts only while fewer than ``max_pending`` outgoing messages are Pending."""

	max_pending: int
	max_wait: float | None
	poll_interval: float
	echo: Callable[[str], Any] | None
	sleep: Callable[[float], Any]
	waited: float = 0.0  # in all, over the run (the sum of the polls' sleeps)
	reported_at: float | None = None  # ``waited`` when the last "waiting" line was echoed

	def wait(self) -> None:
		"""Each poll commits first, for a snapshot that sees what the relay sent since. ``max_wait``
		counts one wait at a stretch; the "waiting" line repeats every ``WAIT_REPORT_EVERY`` s of it."""
		if self.max_pending <= 0:
			return
		stretch = 0.0
		while True:
			frappe.db.commit()
			pending = frappe.db.count("EDA Message", {"direction": "Outgoing", "status": "Pending"})
			if pending < self.max_pending:
				return
			if self.max_wait is not None and stretch >= self.max_wait:
				raise BackfillStalled(
					f"{pending} outgoing EDA Messages are still Pending after {stretch:.0f} s (the backfill "
					f"waits below {self.max_pending}): is a relay running (bench eda relay, or bench eda "
					"worker)? Run the backfill again to resume"
				)
			if self.echo and (
				self.reported_at is None or self.waited - self.reported_at >= WAIT_REPORT_EVERY
			):
				self.echo(
					f"waiting for the relay: {pending} outgoing messages Pending (the backfill goes on "
					f"below {self.max_pending})"
				)
				self.reported_at = self.waited
			self.sleep(self.poll_interval)
			stretch += self.poll_interval
			self.waited += self.poll_interval


def checkpoint_key(doctype: str, filters: Any, to: str | None) -> str:
	identity = json.dumps(
		{"site": frappe.local.site, "doctype": doctype, "filters": filters or None, "to": to or None},
		sort_keys=True,
		default=str,
	)
	return CHECKPOINT_PREFIX + hashlib.sha1(identity.encode("utf-8")).hexdigest()


def _read_checkpoint(key: str) -> str | None:
	value = frappe.db.get_value("DefaultValue", {"parent": CHECKPOINT_PARENT, "defkey": key}, "defvalue")
	if not value:
		return None
	try:
		return json.loads(value)["last"]
	except (ValueError, KeyError, TypeError):
		return None  # not ours to read: start over rather than guess


def _write_checkpoint(key: str, last: str, doctype: str, filters: Any, to: str | None) -> None:
	value = json.dumps({"last": last, "doctype": doctype, "filters": filters, "to": to}, default=str)
	name = frappe.db.get_value("DefaultValue", {"parent": CHECKPOINT_PARENT, "defkey": key}, "name")
	if name:
		frappe.db.set_value("DefaultValue", name, "defvalue", value, update_modified=True)
		return
	frappe.get_doc(
		{
			"doctype": "DefaultValue",
			"parent": CHECKPOINT_PARENT,
			"parenttype": CHECKPOINT_PARENT,
			"parentfield": "system_defaults",
			"defkey": key,
			"defvalue": value,
		}
	).db_insert()


def _clear_checkpoint(key: str) -> None:
	frappe.db.delete("DefaultValue", {"parent": CHECKPOINT_PARENT, "defkey": key})
