// Copyright (c) 2026, frappe_eda developers and contributors
// License: MIT. See LICENSE

frappe.listview_settings["EDA Error"] = {
	add_fields: ["resolved"],
	get_indicator(doc) {
		return doc.resolved ? [__("Resolved"), "green", "resolved,=,1"] : [__("Open"), "red", "resolved,=,0"];
	},
	onload(listview) {
		listview.page.add_inner_button(__("Failure Groups"), () => frappe.set_route("query-report", "EDA Failure Groups"));
	},
};
