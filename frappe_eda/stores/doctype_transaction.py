"""The DocType store's transactions: who owns the site's database transaction, savepoints per level,
and noticing a handler that ended the transaction itself.

In the worker and the relay the store owns the transaction (``commit=True``): the outermost level
commits, or rolls back on error. In a web request the request owns it (``commit=False``): every level,
the outermost too, is a savepoint inside the request's transaction. The state lives on the site
connection (``frappe.local.eda_transaction``), shared by every DocTypeStore instance.

A handler that calls ``frappe.db.commit()`` or ``rollback()`` ends the whole transaction and every
savepoint in it. Frappe v15 runs ``frappe.db.before_commit`` / ``before_rollback`` callbacks for those
and never for a savepoint, so each level registers them and, when one fires inside it, raises
``HandlerCommitted`` or ``HandlerEndedTransaction`` (naming the handler and the line) instead of
failing the batch with an opaque "SAVEPOINT does not exist".
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import frappe

from frappe_eda.messaging.callsite import call_site
from frappe_eda.messaging.errors import HandlerCommitted, HandlerEndedTransaction, TransactionLost

log = logging.getLogger(__name__)

ROLLED_BACK_OTHERS = (
	"a handler called {call} at {where} and rolled back what other messages of the batch had written; "
	"nothing of the batch was recorded, run it again"
)


@dataclass
class _Level:
	"""One savepoint level, told by Frappe's before_commit / before_rollback callbacks when code inside
	it (a handler) ended the whole transaction: Frappe runs those callbacks for ``frappe.db.commit()``
	and ``frappe.db.rollback()`` and never for a savepoint, so the store's own savepoints do not count."""

	first: bool  # the first level of its outermost transaction: nothing the store wrote came before it
	open: bool = True
	ended: str = ""  # "commit" or "rollback"
	where: str = ""
	handler: str = ""
	contained: bool = False  # a rollback took nothing but this level's own writes with it


@dataclass
class _Open:
	"""The store transaction open on this site connection, shared by every DocTypeStore instance."""

	depth: int = 0
	lost: bool = False
	owned: bool = False  # the store owns the outermost transaction (commit=True): no caller's writes in it
	opened: int = 0  # savepoint levels opened in this outermost transaction
	levels: list[_Level] = field(default_factory=list)


def in_site_transaction() -> bool:
	"""Whether a store transaction is open on this site connection (a level would be nested)."""
	state: _Open | None = getattr(frappe.local, "eda_transaction", None)
	return state is not None and state.depth > 0


@contextmanager
def site_transaction(commit: bool) -> Iterator[None]:
	"""One level of the store's transaction on this site connection (see the module docstring)."""
	state: _Open | None = getattr(frappe.local, "eda_transaction", None)
	if state is None:
		state = frappe.local.eda_transaction = _Open()
	outermost = state.depth == 0
	if outermost:
		state.lost, state.owned, state.opened = False, commit, 0
	savepoint = None if outermost and commit else f"eda_{state.depth}_{frappe.generate_hash(length=8)}"
	level = None
	if savepoint:
		frappe.db.savepoint(savepoint)
		level = _watch(state)
	state.depth += 1
	try:
		yield
	except BaseException as e:
		if level is not None and level.ended and isinstance(e, Exception):
			_ended(level, state, e)
		_undo(savepoint, state)
		raise
	else:
		if level is not None and level.ended:
			_ended(level, state, None)
		_finish(savepoint, state, outermost)
	finally:
		state.depth -= 1
		if level is not None:
			level.open = False
			state.levels.remove(level)


def checkpoint() -> None:
	"""Commit between two messages when the store owns the transaction (the worker), so what a handler's
	own commit made durable gets its records durable too; inside a request (not owned) nothing."""
	state: _Open | None = getattr(frappe.local, "eda_transaction", None)
	if state is None or not state.owned or state.depth != 1 or state.levels or state.lost:
		return
	frappe.db.commit()
	state.opened = 0  # the next level is the first of a fresh transaction


def _undo(savepoint: str | None, state: _Open) -> None:
	if savepoint is None:
		frappe.db.rollback()
		return
	try:
		frappe.db.rollback(save_point=savepoint)
	except Exception as e:
		# A deadlock (or a handler's own commit/rollback) ended the whole transaction; keep the
		# original exception and let the outermost level refuse to commit what is left.
		_lost(state, savepoint, e)


def _finish(savepoint: str | None, state: _Open, outermost: bool) -> None:
	if savepoint:
		try:
			frappe.db.release_savepoint(savepoint)
		except Exception as e:
			_lost(state, savepoint, e)
	if outermost and state.lost:
		if savepoint is None:
			frappe.db.rollback()
		raise TransactionLost(
			"the database ended the transaction inside a savepoint (a deadlock, or code that called "
			"frappe.db.commit() or rollback() inside a handler); nothing was recorded, retry the whole batch"
		)
	if savepoint is None:
		frappe.db.commit()


def _lost(state: _Open, savepoint: str, error: Exception) -> None:
	log.warning("savepoint %s is gone (%s): the store transaction is lost", savepoint, error)
	state.lost = True


def _watch(state: _Open) -> _Level:
	"""Open a level and ask Frappe to tell it about a commit or rollback of the whole transaction.

	The callbacks stay queued after the level closes (Frappe has no way to remove one) and do nothing
	then; Frappe drops them at the next commit or rollback, so they never outlive one transaction.
	"""
	level = _Level(first=state.opened == 0)
	state.opened += 1
	state.levels.append(level)
	frappe.db.before_commit.add(lambda: _observe(state, level, "commit"))
	frappe.db.before_rollback.add(lambda: _observe(state, level, "rollback"))
	return level


def _observe(state: _Open, level: _Level, action: str) -> None:
	if not level.open or level.ended:
		return
	level.ended = action
	level.handler, level.where = _call_site()
	level.contained = state.owned and bool(state.levels) and state.levels[0].first


def _ended(level: _Level, state: _Open, error: BaseException | None) -> None:
	"""Code inside this level committed or rolled back the transaction: its savepoint is gone.

	Raises ``HandlerCommitted`` or ``HandlerEndedTransaction`` so the worker records the message (Dead
	or Failed) in the new transaction instead of losing the batch. What was written since the end
	belongs to this level alone, and is rolled back unless a commit's handler returned normally: after
	a rollback the retry must start clean, and a handler that raised keeps nothing. A rollback that also
	took writes from before this level (other messages of the batch, a request's own writes) cannot be
	recorded around: the transaction is lost, as before.
	"""
	if isinstance(error, HandlerEndedTransaction):
		raise error  # a nested level already turned it into the error and cleaned up
	committed = level.ended == "commit"
	if error is not None or not committed:
		frappe.db.rollback()
	if not committed and not level.contained:
		# Stop the batch here: going on would record the messages after it while those before it lost
		# their writes, and a commit further on could make that half durable.
		state.lost = True
		raise TransactionLost(
			ROLLED_BACK_OTHERS.format(call="frappe.db.rollback()", where=level.where)
		) from error
	kind = HandlerCommitted if committed else HandlerEndedTransaction
	raise kind(f"frappe.db.{level.ended}()", level.where, level.handler) from error


def _call_site() -> tuple[str, str]:
	"""(handler, "file:line in function") of the code that ended the transaction: the first frame
	outside Frappe's database layer, its callback manager and this module. Runs only when one ended."""
	return call_site(_is_machinery)


def _is_machinery(filename: str) -> bool:
	return (
		filename == __file__
		or f"frappe{os.sep}database{os.sep}" in filename
		or filename.endswith(f"frappe{os.sep}utils{os.sep}__init__.py")
	)
