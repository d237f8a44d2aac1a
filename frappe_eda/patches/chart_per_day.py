"""Frappe v15's dashboard charts have no hourly time grain: "EDA Messages per Hour" raised
``KeyError: 'Hourly'`` on every opening of the EDA workspace. The workspace now shows "EDA Messages per
Day"; this removes the old chart from sites that have it."""

import frappe


def execute() -> None:
	frappe.delete_doc_if_exists("Dashboard Chart", "EDA Messages per Hour", force=True)
