// Copyright (c) 2026, frappe_eda developers and contributors
// License: MIT. See LICENSE

frappe.listview_settings["EDA Error"] = {
	hide_name_column: true, // a random hash; the title opens the record
	add_fields: ["resolved"],
	formatters: {
		occurred_at(value) {
			return frappe_eda.utc_age(value);
		},
		// The title (exception type) is set as text (textContent): show the stored, HTML-escaped text
		// literally. Anywhere else a list formatter's result is HTML, so it stays as stored.
		exception_type(value) {
			return frappe.get_meta("EDA Error").title_field === "exception_type"
				? frappe_eda.unescape(value)
				: frappe_eda.list_cell(value);
		},
	},
	get_indicator(doc) {
		return doc.resolved ? [__("Resolved"), "green", "resolved,=,1"] : [__("Open"), "red", "resolved,=,0"];
	},
	onload(listview) {
		frappe_eda.setup_list(listview, ["exception_type", "fingerprint", "queue"], 9);
		listview.page.add_inner_button(__("Failure Groups"), () => frappe.set_route("query-report", "EDA Failure Groups"));
	},
};
