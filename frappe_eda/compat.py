"""Where Frappe v15 and v16 differ, and only here.

frappe_eda runs on both majors from one codebase. Wherever the two need different code, the rest of the
app calls one of the names below instead of asking which major it runs on; anything that both majors
accept alike (``frappe.qb``, plain field names, four-element filters) needs no entry here. Tested on both
by ``frappe_eda/tests/test_compat.py``.

What differs, and why it matters to us:

- ``frappe.local``: werkzeug's ``Local`` in v15, Frappe's own context-variable ``Local`` in v16, which
  werkzeug's ``release_local`` cannot clear (``AttributeError: __release_local__``). Each major imports
  the ``release_local`` that fits its ``Local`` into the ``frappe`` namespace, so we use that one.
- Aggregates in ``frappe.get_list`` fields: v15's query builder takes SQL strings
  (``"count(name) as count"``); v16's refuses them and takes dicts (``{"COUNT": "name", "as": "count"}``).
- A ``has_permission`` hook with no objection: v15 reads ``None`` as "no opinion, ask the next hook"
  and anything else as conclusive; v16 reads every falsy answer, ``None`` too, as a denial.
"""

from __future__ import annotations

from typing import Any

import frappe

FRAPPE_MAJOR: int = int(str(frappe.__version__).split(".", 1)[0])

# What a ``has_permission`` hook returns to leave the decision to the role permissions (hooks can only
# deny): v16 needs True; v15 takes None, which also lets another app's hook on the DocType decide.
NO_OBJECTION: bool | None = True if FRAPPE_MAJOR >= 16 else None


def release_local() -> None:
	"""Empty this thread's ``frappe.local`` so that the next ``frappe.init`` builds a fresh one, as
	``frappe.destroy`` does, but without closing the database connection (the caller keeps it)."""
	frappe.release_local(frappe.local)


def count_field(alias: str, of: str = "name") -> str | dict[str, str]:
	"""A ``COUNT(of) AS alias`` column for ``frappe.get_list``/``get_all`` fields, in the syntax this
	major's list query accepts (with ``get_list``'s permission checks, which ``frappe.db.count`` lacks)."""
	if FRAPPE_MAJOR >= 16:
		return {"COUNT": of, "as": alias}
	return f"count({of}) as {alias}"


def grouped_counts(doctype: str, filters: Any, group_by: list[str], alias: str = "count") -> list[Any]:
	"""Rows of ``group_by``'s fields and how many documents the user may read have them."""
	return frappe.get_list(
		doctype,
		filters=filters,
		fields=[*group_by, count_field(alias)],
		group_by=", ".join(group_by),
		order_by=f"{group_by[0]} asc",
	)
