"""Fields above permlevel 0 stay out of document payloads unless a rule names them.

A DocType hides fields from most of its readers with permission levels (``permlevel`` 1 and up, often
set by a Property Setter: salaries, margins, personal data). A payload reaches every consumer of the
routing key and every reader of EDA Message, so such a field is sent only when the rule (an EDA Event
Rule's *Fields to Send* or an ``eda_publish`` hook's ``fields``) lists it by name: listing it is the
decision to publish it. Child-table columns above permlevel 0 are sent only when the rule lists the
table field itself. Password fields and ``eda_sensitive_fields`` are dropped whatever a rule says.
"""

from __future__ import annotations

import frappe


def restricted_fields(doctype: str) -> set[str]:
	"""The fieldnames of ``doctype`` (customisations included) above permlevel 0."""
	return {df.fieldname for df in frappe.get_meta(doctype).fields if (df.permlevel or 0) > 0}
