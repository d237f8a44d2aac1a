// Copyright (c) 2026, frappe_eda developers and contributors
// License: MIT. See LICENSE

frappe.ui.form.on("EDA Receipt", {
	refresh(frm) {
		frm.disable_save();
		frappe_eda.show_stored_text(frm, ["message_id", "server", "subscription", "document"]);
		frappe_eda.show_utc_datetimes(frm, ["outcome_at", "received_at"]);
	},
});
