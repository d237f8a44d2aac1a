// Copyright (c) 2026, frappe_eda developers and contributors
// License: MIT. See LICENSE

frappe.listview_settings["EDA Receipt"] = {
	hide_name_column: true, // a digest of message, server and subscription
	add_fields: ["outcome"],
	formatters: {
		outcome_at(value) {
			return frappe_eda.utc_age(value);
		},
		// The title (server) is set as text: show the stored, HTML-escaped text literally.
		server(value) {
			return frappe.get_meta("EDA Receipt").title_field === "server" ? frappe_eda.unescape(value) : frappe_eda.list_cell(value);
		},
	},
	get_indicator(doc) {
		const colour = frappe_eda.RECEIPT_COLOURS[doc.outcome] || "gray";
		return [__(doc.outcome), colour, `outcome,=,${doc.outcome}`];
	},
	onload(listview) {
		frappe_eda.setup_list(listview, ["server", "outcome", "subscription"], 7);
	},
};
