"""The site's inbox claim: two ``bench eda worker`` processes on one queue never run one message twice.

Both can hold a copy of one id at once (a producer resent it after a lost confirm; a worker whose broker
node died is still finishing the message the broker already gave to the other). The processor claims
the id before it reads the inbox (``MessageStore.claim_inbox``); here that is a lock of the site's
database server named after the site, queue and id: PostgreSQL's ``pg_advisory_xact_lock`` ends with
the transaction by itself; MariaDB's ``GET_LOCK`` is a session lock, so the store releases it when its
outermost transaction ends (and the server does, should the worker die). The inbox is then read with a
locking read, which sees the other worker's commit even where the transaction's snapshot is older.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import frappe

from frappe_eda.messaging.errors import EdaError

# Seconds a worker waits for another one's batch holding the same id.
WAIT_SECONDS = 60
CLAIMS_PER_QUERY = 100


class InboxClaimTimeout(EdaError):
	"""Another worker held a message of this batch longer than ``WAIT_SECONDS``; the batch is run again."""


def _names(queue: str, message_ids: Iterable[str]) -> list[str]:
	database = frappe.conf.db_name or frappe.local.site
	return sorted(
		"eda_in_" + hashlib.sha1(f"{database}\0{queue}\0{message_id}".encode()).hexdigest()
		for message_id in set(message_ids)
	)


def claim(queue: str, message_ids: Iterable[str]) -> None:
	names = _names(queue, message_ids)
	if frappe.db.db_type == "postgres":
		for name in names:
			key = int.from_bytes(hashlib.sha1(name.encode()).digest()[:8], "big", signed=True)
			frappe.db.sql("select pg_advisory_xact_lock(%s)", (key,))
		return
	held = _held()
	wanted = [name for name in names if name not in held]
	# One round trip for the batch (MariaDB evaluates the select list left to right, in sorted order,
	# so two workers never wait on each other crosswise); a lock not granted reads 0.
	for start in range(0, len(wanted), CLAIMS_PER_QUERY):
		chunk = wanted[start : start + CLAIMS_PER_QUERY]
		granted = frappe.db.sql(
			"select " + ", ".join(["get_lock(%s, %s)"] * len(chunk)),
			tuple(value for name in chunk for value in (name, WAIT_SECONDS)),
		)[0]
		held.extend(name for name, ok in zip(chunk, granted, strict=True) if ok)
		if not all(granted):
			raise InboxClaimTimeout(
				f"another worker held a message of queue {queue!r} for over {WAIT_SECONDS}s; the batch "
				"is run again"
			)


def claimed() -> bool:
	"""Whether this transaction holds claims (the inbox is then read with a locking read)."""
	return bool(getattr(frappe.local, "eda_inbox_claims", None)) or frappe.db.db_type == "postgres"


def release() -> None:
	"""After the outermost transaction ended: free the MariaDB session locks taken in it."""
	held = getattr(frappe.local, "eda_inbox_claims", None)
	if not held:
		return
	frappe.local.eda_inbox_claims = []
	for start in range(0, len(held), CLAIMS_PER_QUERY):
		chunk = held[start : start + CLAIMS_PER_QUERY]
		try:
			frappe.db.sql("select " + ", ".join(["release_lock(%s)"] * len(chunk)), tuple(chunk))
		except Exception:  # the connection is gone: the server freed them with it
			return


def _held() -> list[str]:
	held = getattr(frappe.local, "eda_inbox_claims", None)
	if held is None:
		held = []
		frappe.local.eda_inbox_claims = held
	return held
