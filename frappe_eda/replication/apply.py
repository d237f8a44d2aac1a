"""One replicated message applied to the local copy, as an EDA Subscription says.

The handler runs in the worker's transaction for the message (its savepoint): the copy, its EDA
Replica row and the receipt for the source commit together with the message's record, or not at all.
What to do is decided by ``frappe_eda.messaging.replication`` (order, conflicts, mapping); this module
reads and writes documents the Frappe way (``insert``/``save``/``submit``/``cancel``/``delete_doc``), so
the local DocType's own validation and hooks run as for a user's change.

Failures are chosen so nothing stalls and nothing loops: a linked document that is missing is
``MissingLink`` (retried with back-off: it may arrive; then dead, replay once it exists), a change the
local DocType refuses (mandatory field, validation) is ``ApplyRefused`` (a ``PermanentFailure``, dead at
once: fix the mapping and replay), and bad input from the source is an ``InvalidMessage``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import frappe

from frappe_eda.messaging.envelope import Message
from frappe_eda.messaging.errors import EdaError, InvalidMessage, PermanentFailure
from frappe_eda.messaging.replication import addressing
from frappe_eda.messaging.replication.events import Action, action_for, event_of
from frappe_eda.messaging.replication.mapping import LocalFields, map_document
from frappe_eda.messaging.replication.planning import LocalCopy, Plan, Verdict, plan
from frappe_eda.messaging.replication.receipts import ReceiptOutcome
from frappe_eda.messaging.replication.versions import DocVersion
from frappe_eda.outbox.doc_events import LINKS_KEY, RENAME_KEY
from frappe_eda.replication import NEVER_WRITTEN, replicas
from frappe_eda.replication.content import HASH_KEY
from frappe_eda.replication.subscriptions import SubscriptionSpec

log = logging.getLogger(__name__)

MAX_NAME = 140


class InvalidReplicatedDocument(InvalidMessage):
	"""A payload that is not a document of the subscription's source DocType."""


class WrongSource(PermanentFailure):
	"""A message from another server than the subscription's source."""


class MissingLink(EdaError):
	"""The copy links to a document this site does not have (yet). Retried: it may arrive."""

	def __init__(self, doctype: str, name: str, field: str):
		self.doctype, self.name, self.field = doctype, name, field
		super().__init__(
			f"missing {doctype} {name} (linked in {field}); retried until it arrives, then dead-lettered: "
			"replay the message once it exists, or set the subscription's Missing Linked Documents"
		)


class ApplyRefused(PermanentFailure):
	"""The local DocType refused the change (a mandatory field, its validation): retrying cannot help."""


class SubscriptionHandler:
	"""The worker's handler for one EDA Subscription."""

	def __init__(self, spec: SubscriptionSpec) -> None:
		self.spec = spec
		self.__module__ = __name__
		self.__qualname__ = spec.handler_name

	def __call__(self, message: Message) -> None:
		apply_message(self.spec, message)


def apply_message(spec: SubscriptionSpec, message: Message) -> None:
	here = frappe.local.site
	headers = message.headers if isinstance(message.headers, Mapping) else {}
	payload = _document_of(spec, message)
	source = message.source or ""
	if spec.source and source != spec.source:
		raise WrongSource(
			f"from {source[:MAX_NAME]!r}, but subscription {spec.name!r} applies only what "
			f"{spec.source!r} sends"
		)
	addressing.check_addressed(headers, here)
	event = event_of(message.type)
	if addressing.is_echo(headers, source, here):
		_send_receipt(spec, message, ReceiptOutcome.SKIPPED, "a change that started on this server")
		return
	action = action_for(message.type)
	version = DocVersion.of(payload.get("modified"), event)
	rename = _rename_of(payload) if action is Action.RENAME else None
	source_name = rename["old"] if rename else payload["name"]
	existing = replicas.load(spec.name, source, source_name)
	values = _mapped_values(spec, payload)
	local_name = _local_name(spec, existing, source_name, values)
	local = _local_copy(spec.document_type, local_name)
	decision = plan(
		action,
		version,
		existing.applied() if existing else None,
		local,
		spec.conflict_policy,
		# sent again by reconciliation, or a db_set that may have kept ``modified``: same version applies
		repair=event in ("reconcile", "on_change"),
	)
	book = {
		"subscription": spec.name,
		"source": source,
		"source_doctype": spec.source_doctype,
		"source_name": source_name,
		"document_type": spec.document_type,
		"message_id": message.id,
		"event": event,
	}
	if action is Action.DELETE and decision.verdict is Verdict.NOTHING_TO_DO:
		# no copy here (never had one, or deleted by hand), but the source's delete still moves the
		# version: an older change arriving later (a retry, a redelivery) is stale, and brings nothing back
		replicas.tombstone(existing, book, version, decision.reason)
		_send_receipt(spec, message, ReceiptOutcome.SKIPPED, f"{decision.verdict.value}: {decision.reason}")
		return
	if not decision.applies:
		_record_skip(spec, message, existing, book, decision, local_name if local else "")
		return
	origin = addressing.origin_of(headers, source)
	if rename:
		_apply_rename(spec, existing, book, version, rename, local_name, message, origin)
		return
	with _applying(spec, origin):
		written = _execute(spec, action, payload, values, local_name if local else None, local)
	if written is None:  # deleted
		replicas.record(
			existing, **book, local_name=local_name or "", status="Deleted", version=version, source_hash=""
		)
		_send_receipt(spec, message, ReceiptOutcome.APPLIED, "deleted", local_name or "")
		return
	replicas.record(
		existing,
		**book,
		local_name=written.name,
		status="Applied",
		version=version,
		local_modified=written.modified,  # as the save just wrote it
		source_hash=_source_hash(payload),
	)
	_send_receipt(spec, message, ReceiptOutcome.APPLIED, action.value, written.name)


@contextmanager
def _applying(spec: SubscriptionSpec, origin: str) -> Iterator[None]:
	"""While a subscription writes the copy: the outbox publishes nothing of it (no echo) unless the
	subscription publishes applied changes, and then with the change's origin. Reset after, so later
	messages of this process (a receipt, the next message, a user's save) say where they started."""
	flags = frappe.local.flags
	flags.eda_applying, flags.eda_applying_publishes, flags.eda_origin = (
		spec.name,
		spec.publish_applied,
		origin,
	)
	try:
		yield
	finally:
		flags.eda_applying = flags.eda_origin = None


# --- reading the message ----------------------------------------------------------------------------


def _document_of(spec: SubscriptionSpec, message: Message) -> dict[str, Any]:
	payload = message.payload
	if not isinstance(payload, dict):
		raise InvalidReplicatedDocument(
			f"the payload is a {type(payload).__name__}, not a document (an object with doctype and name)"
		)
	doctype, name = payload.get("doctype"), payload.get("name")
	if doctype != spec.source_doctype:
		raise InvalidReplicatedDocument(
			f"the payload's doctype is {str(doctype)[:MAX_NAME]!r}, but subscription {spec.name!r} "
			f"applies {spec.source_doctype}"
		)
	if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
		raise InvalidReplicatedDocument(
			f"the payload's name is {str(name)[:MAX_NAME]!r}: a document name is text of 1 to "
			f"{MAX_NAME} characters"
		)
	docstatus = payload.get("docstatus", 0)
	if docstatus not in (0, 1, 2) or isinstance(docstatus, bool):
		raise InvalidReplicatedDocument(f"the payload's docstatus is {str(docstatus)[:20]!r}, not 0, 1 or 2")
	return payload


def _local_fields(doctype: str) -> LocalFields:
	"""Kept for the request (the worker's batch): read for every message, changed only by migrate."""
	cache = frappe.local.cache.setdefault("eda_local_fields", {})
	if doctype not in cache:
		cache[doctype] = _read_local_fields(doctype)
	return cache[doctype]


def _read_local_fields(doctype: str) -> LocalFields:
	meta = frappe.get_meta(doctype)
	fields = {df.fieldname for df in meta.fields if df.fieldtype not in frappe.model.no_value_fields}
	tables = {
		df.fieldname: {
			c.fieldname
			for c in frappe.get_meta(df.options).fields
			if c.fieldtype not in frappe.model.no_value_fields
		}
		for df in meta.get_table_fields()
	}
	return LocalFields(fields=fields | set(tables), tables=tables)


def _mapped_values(spec: SubscriptionSpec, payload: dict[str, Any]) -> dict[str, Any]:
	return map_document(payload, spec.mapping, _local_fields(spec.document_type))


def _local_name(
	spec: SubscriptionSpec, existing: replicas.ReplicaRow | None, source_name: str, values: dict[str, Any]
) -> str:
	"""The local copy's name: as written last, else by the source's name or the key field."""
	if existing and existing.local_name:
		return existing.local_name
	if spec.match_by == "Key Field":
		key = values.get(spec.key_field)
		if key in (None, ""):
			raise ApplyRefused(
				f"the key field {spec.key_field!r} has no value in the message: the local copy cannot be "
				"found or created (check the subscription's field rules)"
			)
		found = frappe.db.get_value(spec.document_type, {spec.key_field: key}, "name")
		return found or ""
	return source_name


def _local_copy(doctype: str, name: str) -> LocalCopy | None:
	if not name:
		return None
	table = frappe.qb.DocType(doctype)
	rows = (
		frappe.qb.from_(table)
		.select(table.modified, table.docstatus)
		.where(table.name == name)
		.for_update()
		.run(as_dict=True)
	)
	return LocalCopy(modified=rows[0].modified, docstatus=rows[0].docstatus or 0) if rows else None


# --- writing the copy --------------------------------------------------------------------------------


def _execute(
	spec: SubscriptionSpec,
	action: Action,
	payload: dict[str, Any],
	values: dict[str, Any],
	local_name: str | None,
	local: LocalCopy | None,
) -> Any:
	"""Apply ``action``; the written document, or ``None`` when it was deleted."""
	try:
		if action is Action.DELETE:
			if not spec.follow_deletes:
				return frappe.get_doc(spec.document_type, local_name)
			doc = frappe.get_doc(spec.document_type, local_name)
			if doc.docstatus == 1:
				doc.cancel()
			frappe.delete_doc(spec.document_type, local_name, ignore_missing=True)
			return None
		if action is Action.CANCEL:
			doc = frappe.get_doc(spec.document_type, local_name)
			if spec.follow_docstatus and doc.docstatus == 1:
				doc.cancel()
			return doc
		_ensure_links(spec, values, payload)
		doc = _upsert(spec, values, payload["name"], local_name, local)
		wants_submit = action is Action.SUBMIT or payload.get("docstatus") == 1
		if spec.follow_docstatus and wants_submit and doc.docstatus == 0 and doc.meta.is_submittable:
			doc.submit()
		return doc
	except (frappe.DuplicateEntryError, frappe.TimestampMismatchError, frappe.QueryDeadlockError):
		raise  # another worker wrote the same document meanwhile: retried
	except frappe.ValidationError as e:
		raise ApplyRefused(f"{spec.document_type} refused the change: {type(e).__name__}: {_plain(e)}") from e


def _upsert(
	spec: SubscriptionSpec,
	values: dict[str, Any],
	source_name: str,
	local_name: str | None,
	local: LocalCopy | None,
) -> Any:
	if local is None:
		# get_doc of a dict, as a script would insert it; insert() sets the DocType's defaults
		doc = frappe.get_doc({"doctype": spec.document_type})
		doc.update(values)
		if spec.link_policy == "Ignore":
			doc.flags.ignore_links = True
		doc.insert(set_name=source_name if spec.match_by == "Source Name" else None)
		return doc
	doc = frappe.get_doc(spec.document_type, local_name)
	if doc.docstatus == 2:
		return doc  # cancelled here: nothing more can change it
	if doc.docstatus == 1:
		allowed = {df.fieldname for df in doc.meta.fields if df.allow_on_submit}
		values = {k: v for k, v in values.items() if k in allowed}
	if spec.link_policy == "Ignore":
		doc.flags.ignore_links = True
	doc.update(values)
	doc.save()
	return doc


def _ensure_links(spec: SubscriptionSpec, values: dict[str, Any], payload: dict[str, Any]) -> None:
	"""Every Link the copy will hold points at an existing document, or the policy says what to do."""
	if spec.link_policy == "Ignore":
		return
	sent = _sent_documents(payload) if spec.link_policy == "Create From Sent Documents" else {}
	for doctype, name, field in _links(spec.document_type, values):
		if frappe.db.exists(doctype, name):
			continue
		dependency = sent.get((doctype, name))
		if dependency is None or not _may_create(doctype):
			raise MissingLink(doctype, name, field)
		_create_dependency(doctype, name, dependency)


def _may_create(doctype: str) -> bool:
	"""A linked document sent along is created only of a DocType a subscription could write itself."""
	from frappe_eda.outbox.doc_events import OWN_DOCTYPES

	if doctype in NEVER_WRITTEN or doctype in OWN_DOCTYPES:
		return False
	meta = frappe.get_meta(doctype)
	return not (meta.istable or meta.issingle)


def _links(doctype: str, values: dict[str, Any]) -> list[tuple[str, str, str]]:
	meta = frappe.get_meta(doctype)
	found = []
	for df in meta.fields:
		if df.fieldtype == "Link" and isinstance(values.get(df.fieldname), str) and values[df.fieldname]:
			found.append((df.options, values[df.fieldname], df.fieldname))
	for table in meta.get_table_fields():
		child = frappe.get_meta(table.options)
		for idx, row in enumerate(values.get(table.fieldname) or [], 1):
			for df in child.fields:
				if df.fieldtype == "Link" and isinstance(row.get(df.fieldname), str) and row[df.fieldname]:
					found.append(
						(df.options, row[df.fieldname], f"{table.fieldname} row {idx} {df.fieldname}")
					)
	return found


def _sent_documents(payload: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
	sent = payload.get(LINKS_KEY)
	if not isinstance(sent, list):
		return {}
	return {
		(d["doctype"], d["name"]): d
		for d in sent
		if isinstance(d, dict) and isinstance(d.get("doctype"), str) and isinstance(d.get("name"), str)
	}


def _create_dependency(doctype: str, name: str, sent: dict[str, Any]) -> None:
	"""A linked document the source sent along, created with the source's name and the fields this site
	has; its own links unchecked (a dependency's dependencies are not sent)."""
	from frappe_eda.messaging.replication.mapping import FieldMapping

	values = map_document(sent, FieldMapping(), _local_fields(doctype))
	for table in frappe.get_meta(doctype).get_table_fields():
		values.pop(table.fieldname, None)  # its own fields only: no child rows from the other server
	doc = frappe.new_doc(doctype)
	doc.update(values)
	doc.flags.ignore_links = True
	doc.insert(set_name=name)


def _rename_of(payload: dict[str, Any]) -> dict[str, Any]:
	rename = payload.get(RENAME_KEY)
	if (
		not isinstance(rename, dict)
		or not all(isinstance(rename.get(k), str) and 0 < len(rename[k]) <= MAX_NAME for k in ("old", "new"))
		or rename["new"] != payload["name"]
	):
		raise InvalidReplicatedDocument(
			"an after_rename message needs _eda_rename with the old and new names, the new one being the "
			"document's name"
		)
	return {"old": rename["old"], "new": rename["new"], "merge": bool(rename.get("merge"))}


def _apply_rename(
	spec: SubscriptionSpec,
	existing: replicas.ReplicaRow | None,
	book: dict[str, Any],
	version: DocVersion,
	rename: dict[str, Any],
	local_name: str,
	message: Message,
	origin: str,
) -> None:
	"""The source renamed (or merged) the document: the copy follows when it carries the source's name;
	with a key field the copy keeps its name and only the EDA Replica is re-keyed. Either way the row
	moves to the new source name, so later changes of the new name land on this copy."""
	new_local = local_name
	try:
		with _applying(spec, origin):
			if spec.match_by == "Source Name" and local_name != rename["new"]:
				new_local = frappe.rename_doc(
					spec.document_type, local_name, rename["new"], merge=rename["merge"], force=True
				)
	except frappe.ValidationError as e:
		raise ApplyRefused(f"could not rename {spec.document_type} {local_name}: {_plain(e)}") from e
	# the old name's row stays as a tombstone at the rename's version: a redelivered older change of
	# the old name is then stale, instead of creating a second copy under the old name
	replicas.tombstone(existing, book, version, f"renamed to {rename['new']}")
	moved = {**book, "source_name": rename["new"]}
	target = replicas.load(spec.name, book["source"], rename["new"])
	replicas.record(
		target,
		**moved,
		local_name=new_local,
		status="Applied",
		# the new name's row at the document's own version (a save's rank): the rename's rank would make
		# a db_set or reconciliation that keeps this modified look older than the rename, and be dropped
		version=DocVersion(version.modified),
		local_modified=frappe.db.get_value(spec.document_type, new_local, "modified"),
		source_hash=_source_hash(message.payload),
		detail=f"renamed from {rename['old']}" + (" (merged)" if rename["merge"] else ""),
	)
	_send_receipt(spec, message, ReceiptOutcome.APPLIED, f"renamed to {new_local}", new_local)


# --- bookkeeping -------------------------------------------------------------------------------------


def _record_skip(
	spec: SubscriptionSpec,
	message: Message,
	existing: replicas.ReplicaRow | None,
	book: dict[str, Any],
	decision: Plan,
	local_name: str,
) -> None:
	"""A change not applied is still recorded (the replica row says why), except a stale or repeated
	message, which leaves the row as the newer change wrote it."""
	status = "Conflict" if decision.verdict is Verdict.CONFLICT else "Skipped"
	if decision.verdict not in (Verdict.STALE, Verdict.ALREADY_APPLIED) or existing is None:
		keep = existing.status if existing and decision.verdict is Verdict.NOTHING_TO_DO else status
		replicas.record(
			existing, **book, local_name=local_name, status=keep or status, detail=decision.reason
		)
	_send_receipt(
		spec, message, ReceiptOutcome.SKIPPED, f"{decision.verdict.value}: {decision.reason}", local_name
	)


def _send_receipt(
	spec: SubscriptionSpec, message: Message, outcome: ReceiptOutcome, detail: str, document: str = ""
) -> None:
	try:
		from frappe_eda.replication.receipts import send_receipt
	except ImportError:  # receipts not installed in this build
		return
	send_receipt(message, spec.name, outcome, detail, document, exchange=spec.exchange)


def _source_hash(payload: dict[str, Any]) -> str:
	"""The source's content hash (``_eda_hash``), when it is one: reconciliation compares it."""
	value = payload.get(HASH_KEY)
	if isinstance(value, str) and 0 < len(value) <= 64 and all(c in "0123456789abcdef" for c in value):
		return value
	return ""


def _plain(error: Exception) -> str:
	"""Frappe's messages carry HTML (bold names); the record and the receipt keep plain text."""
	return frappe.utils.strip_html(str(error))[:500]
