"""Waking the relay right after commit, so commit-to-publish takes milliseconds, not a poll interval.

The signal is a Redis list per site: ``after_commit`` pushes a token, the relay blocks on it with a
timeout (its polling fallback). A lost signal costs latency, never a message: the relay also polls
and a scheduler job re-drives anything left behind.
"""

from __future__ import annotations

import frappe

WAKE_KEY = "eda:relay:wake"


def wake_relay_after_commit() -> None:
	"""Once per transaction, however many messages it queued."""
	if getattr(frappe.local, "eda_wake_registered", False):
		return
	frappe.local.eda_wake_registered = True
	frappe.db.after_commit.add(_wake)
	frappe.db.after_rollback.add(_forget)


def _wake() -> None:
	frappe.local.eda_wake_registered = False
	try:
		key = frappe.cache.make_key(WAKE_KEY)  # the site's prefix; a raw pipeline does not add it
		pipeline = frappe.cache.pipeline()
		pipeline.lpush(key, "1")
		pipeline.ltrim(key, 0, 0)
		pipeline.execute()  # one round trip: this runs after every commit that queued a message
	except Exception:
		frappe.logger("frappe_eda").warning("could not signal the relay; it will poll", exc_info=True)


def _forget() -> None:
	frappe.local.eda_wake_registered = False


def wait_for_wake(timeout: float) -> bool:
	"""Block up to ``timeout`` seconds for a commit signal; True if one came."""
	key = frappe.cache.make_key(WAKE_KEY)
	return bool(frappe.cache.blpop([key], timeout=max(1, int(timeout))))
