# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE
"""The EDA workspace opens: every chart and number card on it computes through Frappe's own endpoints,
as the desk calls them when an operator opens the workspace (an hourly chart raised KeyError 'Hourly')."""

import json

import frappe
from frappe.desk.desktop import get_desktop_page
from frappe.desk.doctype.dashboard_chart.dashboard_chart import get as chart_data
from frappe.desk.doctype.number_card.number_card import get_result
from frappe.tests.utils import FrappeTestCase


class TestEDAWorkspace(FrappeTestCase):
	def test_the_workspace_and_each_of_its_charts_and_cards_load(self):
		workspace = frappe.get_doc("Workspace", "EDA")
		page = get_desktop_page(json.dumps({"name": workspace.name, "title": workspace.title}))
		self.assertTrue(page["charts"]["items"], "the workspace shows a chart")
		for chart in workspace.charts:
			with self.subTest(chart=chart.chart_name):
				data = chart_data(chart_name=chart.chart_name, refresh=1)
				self.assertIn("labels", data)
		for block in json.loads(workspace.content):
			if block["type"] == "number_card":
				name = block["data"]["number_card_name"]
				with self.subTest(card=name):
					card = frappe.get_doc("Number Card", name)
					self.assertIsInstance(get_result(card.as_dict(), card.filters_json), int | float)
