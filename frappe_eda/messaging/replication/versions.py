"""The version of a document a message carries, read from producer input that is not trusted.

The version is the source's ``modified`` (Frappe stamps it on every save, to the microsecond) and a rank
that orders events sharing one ``modified``: a delete keeps the document's last ``modified``, so it must
rank above the update it follows, or that update, redelivered, would bring the document back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from frappe_eda.messaging.errors import InvalidMessage

# Events that leave ``modified`` as it was; they rank above the save that stamped it.
RANK = {"on_trash": 2, "after_delete": 2, "after_rename": 1}
MAX_TIMESTAMP_TEXT = 40


class InvalidDocumentVersion(InvalidMessage):
	"""A replicated document whose ``modified`` is missing or not a timestamp: it cannot be ordered."""

	def __init__(self, value: Any):
		shown = repr(value)[:80]
		super().__init__(
			f"the document's 'modified' is {shown}, not a timestamp such as '2026-12-01 10:04:05.123456'; "
			"without it the message cannot be ordered against other changes of the same document"
		)


@dataclass(frozen=True, order=True)
class DocVersion:
	modified: datetime
	rank: int = 0

	@classmethod
	def of(cls, modified: Any, event: str = "") -> DocVersion:
		"""The version of a payload's ``modified`` for ``event``; ``InvalidDocumentVersion`` otherwise."""
		return cls(parse_modified(modified), RANK.get(event, 0))

	def text(self) -> str:
		"""As stored beside a copy: ``2026-12-01 10:04:05.123456`` and the rank (``...|2``)."""
		return f"{self.modified.isoformat(sep=' ', timespec='microseconds')}|{self.rank}"

	@classmethod
	def from_text(cls, text: str) -> DocVersion:
		stamp, _, rank = text.partition("|")
		return cls(parse_modified(stamp), int(rank or 0))


def parse_modified(value: Any) -> datetime:
	"""A naive datetime from ``modified`` as Frappe sends it (``YYYY-MM-DD HH:MM:SS[.ffffff]``).

	A time zone, if a non-Frappe producer gives one, is dropped after converting nothing: sources are
	compared only with themselves, so their own clock's wall time is what orders their changes."""
	if isinstance(value, datetime):
		return value.replace(tzinfo=None)
	# NUL refused here: CPython's fromisoformat reads "...10:04:05\x00" as if the NUL were not there
	if not isinstance(value, str) or not value or len(value) > MAX_TIMESTAMP_TEXT or "\x00" in value:
		raise InvalidDocumentVersion(value)
	try:
		parsed = datetime.fromisoformat(value.strip())
	except ValueError:
		raise InvalidDocumentVersion(value) from None
	return parsed.replace(tzinfo=None)
