"""Routing-key templates take plain placeholders only: no attribute access, indexing or format specs."""

import pytest

from frappe_eda.messaging.errors import ConfigurationError, InvalidRoutingKeyTemplate
from frappe_eda.messaging.templates import check_template, render_template

ALLOWED = ("doctype", "event", "name")


@pytest.mark.parametrize(
	"template",
	[
		"{doctype.__class__}",
		"{doctype.__init__.__globals__}",
		"{event[0]}",
		"{name:>9999}",
		"{name!r}",
		"{0}",
		"{}",
		"{type}",
		"{doctype",
		"doctype}",
	],
)
def test_anything_but_a_plain_placeholder_is_refused(template):
	with pytest.raises(InvalidRoutingKeyTemplate) as refused:
		check_template(template, ALLOWED)
	assert "{doctype}, {event}, {name}" in str(refused.value)
	assert isinstance(refused.value, ConfigurationError)


def test_plain_placeholders_and_escaped_braces_render():
	assert (
		render_template("erp.{doctype}.{event}.{{x}}", doctype="todo", event="on_update")
		== "erp.todo.on_update.{x}"
	)


def test_values_are_never_read_as_templates():
	assert render_template("{name}", name="{name.__class__}:>99") == "{name.__class__}:>99"


def test_render_refuses_what_check_refuses():
	with pytest.raises(InvalidRoutingKeyTemplate):
		render_template("{type:>9999}", type="x")
