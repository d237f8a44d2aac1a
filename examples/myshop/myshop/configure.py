"""The EDA Destination and EDA Event Rule of the worked example, as the README creates them in the desk:
``bench --site SITE execute myshop.configure.configure`` (``execute`` commits). Running it twice
changes nothing."""

import frappe


def configure() -> None:
	if not frappe.db.exists("EDA Destination", "myshop"):
		frappe.get_doc(
			{
				"doctype": "EDA Destination",
				"destination_name": "myshop",
				"exchange": "myshop.events",
				"routing_key": "myshop.{type}",
			}
		).insert()
	rule = {
		"doctype": "EDA Event Rule",
		"document_type": "ToDo",
		"event": "after_insert",
		"destination": "myshop",
	}
	if not frappe.db.exists(rule):
		frappe.get_doc({**rule, "send_fields": "description\npriority"}).insert()
