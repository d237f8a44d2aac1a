"""Turning an exception into an error record, and grouping identical failures.

The fingerprint is what lets an operator see "these 4,000 dead messages are one bug": it hashes the
exception type and the stack's (file, function) frames, leaving out line numbers and the message text,
which vary between otherwise identical failures (ids, amounts, timestamps).
"""

from __future__ import annotations

import hashlib
import os
import traceback as tb
from types import TracebackType

from frappe_eda.messaging.errors import InvalidMessage
from frappe_eda.messaging.store import Direction, ErrorRecord


def exception_type_name(error: BaseException) -> str:
	cls = type(error)
	return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def fingerprint(error: BaseException) -> str:
	parts = [exception_type_name(error)]
	if not isinstance(error, InvalidMessage):
		parts += [f"{os.path.basename(f.filename)}:{f.name}" for f in tb.extract_tb(_tb(error))]
	return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]


def error_record(
	error: BaseException,
	message_id: str,
	direction: Direction,
	attempt: int = 1,
	queue: str = "",
	handler: str = "",
) -> ErrorRecord:
	return ErrorRecord(
		message_id=message_id,
		direction=direction,
		exception_type=exception_type_name(error),
		error=str(error) or exception_type_name(error),
		fingerprint=fingerprint(error),
		attempt=attempt,
		queue=queue,
		handler=handler,
		traceback="".join(tb.format_exception(type(error), error, _tb(error))),
	)


def _tb(error: BaseException) -> TracebackType | None:
	return error.__traceback__
