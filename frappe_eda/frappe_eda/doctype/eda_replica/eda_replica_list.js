// Copyright (c) 2026, frappe_eda developers and contributors
// License: MIT. See LICENSE

const EDA_REPLICA_COLOURS = { Applied: "green", Deleted: "gray", Skipped: "orange", Conflict: "red" };

frappe.listview_settings["EDA Replica"] = {
	add_fields: ["status"],
	get_indicator(doc) {
		const colour = EDA_REPLICA_COLOURS[doc.status] || "gray";
		return [__(doc.status), colour, `status,=,${doc.status}`];
	},
	onload(listview) {
		// Source names and reasons from another server, stored as they came: shown as text here and in
		// the report view.
		frappe_eda.show_raw_text_fields(listview.doctype);
		frappe_eda.setup_list(listview, ["subscription", "status", "source", "document_type"], 6);
	},
};
