"""Where in a handler something happened, read from the stack: for errors that tell a developer which
line to change (a handler that committed the worker's transaction, say).

The handler is the frame the ``DeliveryProcessor`` called; the call site is the innermost frame that
is not machinery (the database layer, the store), as the caller defines it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from types import FrameType

PROCESSOR = "frappe_eda.messaging.processing"


def call_site(is_machinery: Callable[[str], bool]) -> tuple[str, str]:
	"""(handler's dotted name, "file:line in function" of the call) for the code running now."""
	frame: FrameType | None = sys._getframe(1)
	where = handler = ""
	while frame is not None:
		code = frame.f_code
		if not where and not is_machinery(code.co_filename) and code.co_filename != __file__:
			where = f"{short_path(code.co_filename)}:{frame.f_lineno} in {code.co_name}"
		caller = frame.f_back
		if caller is not None and caller.f_globals.get("__name__") == PROCESSOR:
			handler = f"{frame.f_globals.get('__name__', '?')}.{getattr(code, 'co_qualname', code.co_name)}"
			break
		frame = caller
	return handler, where


def short_path(filename: str) -> str:
	"""A path from a bench's apps folder on (``myapp/myapp/handlers.py``), as people find it in their
	repository; other paths as they are."""
	parts = filename.split(os.sep)
	return os.sep.join(parts[parts.index("apps") + 1 :]) if "apps" in parts else filename
