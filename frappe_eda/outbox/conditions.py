"""What a rule's condition may use, and trying a rule on a real document without sending anything.

A condition is evaluated with ``frappe.safe_eval`` (no builtins beyond the safe ones, no imports, no
attribute starting with an underscore). It sees:

- ``doc``: the document;
- ``utils``: Frappe's safe data helpers (as Webhook and Server Script conditions get them):
  ``strip_html``, ``getdate``, ``nowdate``, ``add_days``, ``date_diff``, ``flt``, ``cint``, ``cstr``...;
- ``frappe.utils``: the same helpers under the name Frappe developers type;
- ``strip_html``: on its own, because a Text Editor field (a ToDo's description) holds HTML:
  ``strip_html(doc.description).startswith("WH1:")`` where ``doc.description.startswith("WH1:")``
  never holds.

``try_rule`` is the rule form's *Try Condition*: whether the condition holds for a chosen document and
what would be sent (type, exchange, routing key, target servers, payload after Send Fields and the
sensitive fields), sending and recording nothing.
"""

from __future__ import annotations

from typing import Any

import frappe
from frappe import _

from frappe_eda.outbox.rules import PublishRule, routing_key_for


def condition_context(doc: Any) -> dict[str, Any]:
	"""The names a condition may use (see the module's docstring)."""
	from frappe.integrations.doctype.webhook.webhook import get_context

	context = dict(get_context(doc))  # {"doc": doc, "utils": <safe helpers>}
	helpers = context["utils"]
	context["frappe"] = FrappeInCondition(helpers)
	context["strip_html"] = helpers.strip_html
	return context


class FrappeInCondition:
	"""``frappe`` inside a condition: ``frappe.utils`` only. Anything else (``frappe.db``) is an
	``AttributeError`` that the rule's validation turns into a clear refusal."""

	__slots__ = ("utils",)

	def __init__(self, utils: Any) -> None:
		self.utils = utils


def condition_holds(condition: str, doc: Any) -> bool:
	"""``condition`` on ``doc``, as the outbox evaluates it; raises what the expression raises."""
	return bool(frappe.safe_eval(condition, eval_locals=condition_context(doc)))


@frappe.whitelist()
def try_rule(rule: str, docname: str) -> dict[str, Any]:
	"""The rule ``rule`` tried on ``docname``: ``{"holds", "error", "message_type", "exchange",
	"routing_key", "target_servers", "payload"}``. Sends nothing, records nothing. For EDA Managers who
	may read the document."""
	from frappe_eda.desk.access import is_manager
	from frappe_eda.outbox import resolve_destination, target_servers
	from frappe_eda.outbox.payload import document_payload
	from frappe_eda.settings import load_outbox_settings

	if not is_manager():
		frappe.throw(_("Only an EDA Manager or System Manager may try a rule."), frappe.PermissionError)
	row = frappe.get_doc("EDA Event Rule", rule)
	doc = frappe.get_doc(row.document_type, docname)
	doc.check_permission("read")
	result: dict[str, Any] = {"holds": True, "error": None}
	if row.condition:
		try:
			result["holds"] = condition_holds(row.condition, doc)
		except Exception as e:  # the condition's own mistake, shown to whoever wrote it
			return {"holds": False, "error": f"{type(e).__name__}: {e}"}
	spec = PublishRule(
		doctype=row.document_type,
		event=row.event,
		routing_key=row.routing_key or "",
		exchange=row.exchange or "",
		destination=row.destination or "",
		fields=tuple(row.field_list()),
		rule=row.name,
	)
	message_type = f"{frappe.scrub(doc.doctype)}.{row.event}"
	try:
		routing_key = routing_key_for(spec, doc) if spec.routing_key or not spec.destination else None
		exchange, key = resolve_destination(
			spec.destination or None,
			spec.exchange or None,
			routing_key,
			message_type,
			load_outbox_settings().exchange,
		)
	except Exception as e:  # a disabled destination, a bad template: what the save would record
		return {**result, "error": f"{type(e).__name__}: {e}"}
	servers = (
		frappe.db.get_value("EDA Destination", spec.destination, "target_servers") if spec.destination else ""
	)
	return {
		**result,
		"message_type": message_type,
		"exchange": exchange,
		"routing_key": key,
		"target_servers": target_servers(servers),
		"payload": document_payload(doc, spec.fields),
	}
