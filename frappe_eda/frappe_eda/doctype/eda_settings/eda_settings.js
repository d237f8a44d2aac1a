// Copyright (c) 2026, frappe_eda developers and contributors
// License: MIT. See LICENSE

// Above the form: who a failure reaches (frappe_eda.desk.notifications.recipients_summary), with a
// warning when nobody has the Notify Role and the System Managers are told instead, or nobody is.
frappe.ui.form.on("EDA Settings", {
	refresh(frm) {
		const told = (frm.doc.__onload || {}).eda_notified;
		if (!told) return;
		frm.set_intro(frappe.utils.escape_html(told.message), told.warn ? "orange" : "blue");
		// Trust between servers (frappe_eda.replication.trust.trust_summary): a warning while the site
		// takes unproven senders.
		const trust = (frm.doc.__onload || {}).eda_trust;
		if (trust && trust.warn) {
			frm.dashboard.add_comment(frappe.utils.escape_html(trust.message), "orange", true);
		}
	},
});
