"""Routing-key templates: ``{doctype}.{event}`` and friends, rendered without ``str.format``'s extras.

Templates come from the desk (EDA Event Rule, EDA Destination), so they are configuration written by
people, not code: only plain named placeholders are allowed. ``str.format`` would also evaluate
attribute and index access (``{doctype.__class__}``), conversions (``{name!r}``) and format specs
(``{name:>9999}``, a 9999-byte key), so each template is checked field by field before rendering.
"""

from __future__ import annotations

from string import Formatter

from frappe_eda.messaging.errors import InvalidRoutingKeyTemplate

_FORMATTER = Formatter()


def check_template(template: str, allowed: tuple[str, ...]) -> None:
	"""Raise ``InvalidRoutingKeyTemplate`` unless every ``{...}`` in ``template`` is one of ``allowed``."""
	try:
		fields = list(_FORMATTER.parse(template))
	except ValueError as e:  # unbalanced braces
		raise InvalidRoutingKeyTemplate(template, str(e), allowed) from None
	for _literal, name, spec, conversion in fields:
		if name is None:
			continue
		if name not in allowed:
			raise InvalidRoutingKeyTemplate(template, f"{{{name}}} is not a placeholder", allowed)
		if spec or conversion:
			raise InvalidRoutingKeyTemplate(
				template, f"{{{name}}} has a conversion or format spec, which is not allowed", allowed
			)


def render_template(template: str, **values: str) -> str:
	"""``template`` with its placeholders replaced by ``values`` (checked first: only those names)."""
	allowed = tuple(values)
	check_template(template, allowed)
	return "".join(
		literal + (str(values[name]) if name is not None else "")
		for literal, name, _spec, _conversion in _FORMATTER.parse(template)
	)
