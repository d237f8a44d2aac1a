"""What a running handler may know about its delivery, without widening every handler's signature.

Handlers take one argument, the ``Message``. The few that need more (the attempt number, or the
store's open transaction to write their own rows atomically with the inbox record) call
``current_context()`` while they run.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from frappe_eda.messaging.errors import EdaError
from frappe_eda.messaging.store import MessageStore


@dataclass(frozen=True)
class HandlerContext:
	queue: str
	routing_key: str
	attempt: int
	redelivered: bool
	store: MessageStore
	# The broker user that sent the message, as the broker proved it (``trust.senders``); "" if unproven.
	sender: str = ""


_current: ContextVar[HandlerContext | None] = ContextVar("frappe_eda_handler_context", default=None)


def current_context() -> HandlerContext:
	context = _current.get()
	if context is None:
		raise EdaError("current_context() is only available while a handler runs")
	return context


@contextmanager
def handler_context(context: HandlerContext) -> Iterator[HandlerContext]:
	token = _current.set(context)
	try:
		yield context
	finally:
		_current.reset(token)
