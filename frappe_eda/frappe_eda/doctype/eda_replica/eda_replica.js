// Copyright (c) 2026, frappe_eda developers and contributors
// License: MIT. See LICENSE

frappe.ui.form.on("EDA Replica", {
	onload(frm) {
		// Names and conflict reasons from another server, stored as they came: shown as text.
		frappe_eda.show_raw_text_form(frm);
	},
	refresh(frm) {
		frm.disable_save();
	},
});
