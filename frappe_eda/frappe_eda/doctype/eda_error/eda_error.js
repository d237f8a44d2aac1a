// Copyright (c) 2026, frappe_eda developers and contributors
// License: MIT. See LICENSE

frappe.ui.form.on("EDA Error", {
	refresh(frm) {
		frm.disable_save();
		frappe_eda.show_stored_text(frm, ["message_id", "queue", "exception_type", "fingerprint"]);
		frappe_eda.show_utc_datetimes(frm, ["occurred_at"]);
	},
});
