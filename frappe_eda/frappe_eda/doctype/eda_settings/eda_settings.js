// Copyright (c) 2026, frappe_eda developers and contributors
// License: MIT. See LICENSE

// Above the form, one intro: who a failure reaches (frappe_eda.desk.notifications.recipients_summary),
// with a warning when nobody has the Notify Role and the System Managers are told instead, or nobody is;
// and, while the site trusts unproven senders, what it trusts (frappe_eda.replication.trust.trust_summary).
frappe.ui.form.on("EDA Settings", {
	refresh(frm) {
		const onload = frm.doc.__onload || {};
		const lines = [onload.eda_notified, onload.eda_trust && onload.eda_trust.warn ? onload.eda_trust : null].filter(
			Boolean
		);
		if (!lines.length) return;
		const text = lines.map((line) => frappe.utils.escape_html(line.message)).join("<br>");
		frm.set_intro(text, lines.some((line) => line.warn) ? "orange" : "blue");
	},
});
