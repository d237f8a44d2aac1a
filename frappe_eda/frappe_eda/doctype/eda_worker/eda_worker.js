// Copyright (c) 2026, frappe_eda developers and contributors
// License: MIT. See LICENSE

frappe.ui.form.on("EDA Worker", {
	refresh(frm) {
		frm.disable_save();
		frappe_eda.show_stored_text(frm, ["worker_id", "host"]);
		frappe_eda.show_utc_datetimes(frm, ["started_at", "last_heartbeat"]);
		const [label, colour] = frappe_eda.worker_state_indicator(frm.doc);
		frm.page.set_indicator(label, colour);
	},
});
