"""The site's relay claim: one relay at a time per site, freed by the database if its holder dies.

Every ``bench eda worker`` relays its site's outbox, and so do ``bench eda relay`` and the scheduler's
``relay_stale``; without a claim they read the same Pending rows and send them twice, interleaved. The
claim is a session lock of the site's database (MariaDB ``GET_LOCK``, PostgreSQL
``pg_try_advisory_lock``) taken on the process's own site connection: it is not transactional, so the
commits the relay makes while it records confirms do not release it, and the server frees it when the
holder's connection ends (a SIGKILLed worker never blocks the others). See ``frappe_eda.stores.sql_claim``
for why one lock over the outbox and not row claims (``SKIP LOCKED`` reorders).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import frappe

log = logging.getLogger(__name__)


def _lock() -> tuple[str, str, tuple[object, ...]]:
	database = frappe.conf.db_name or frappe.local.site
	if frappe.db.db_type == "postgres":
		key = int.from_bytes(hashlib.sha1(f"eda_relay\0{database}".encode()).digest()[:8], "big", signed=True)
		return "select pg_try_advisory_lock(%s)", "select pg_advisory_unlock(%s)", (key,)
	# GET_LOCK names are server-wide (64 characters at most): one per site database.
	name = "eda_relay_" + hashlib.sha1(database.encode()).hexdigest()
	return "select get_lock(%s, 0)", "select release_lock(%s)", (name,)


@contextmanager
def site_relay_claim() -> Iterator[bool]:
	"""True to one holder per site at a time, False at once to anyone else (who then sends nothing)."""
	take, free, params = _lock()
	if not frappe.db.sql(take, params)[0][0]:
		yield False
		return
	try:
		yield True
	finally:
		try:
			frappe.db.sql(free, params)
		except Exception:
			# The connection is broken, or (PostgreSQL) its transaction aborted by the error the batch is
			# raising. Closing it frees the lock, where a live connection that kept it would block every
			# other relay; the batch's own error, if any, is the one that propagates.
			log.warning("could not release the relay claim; closing the site connection", exc_info=True)
			frappe.db.close()
