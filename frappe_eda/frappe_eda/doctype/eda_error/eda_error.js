// Copyright (c) 2026, frappe_eda developers and contributors
// License: MIT. See LICENSE

frappe.ui.form.on("EDA Error", {
	refresh(frm) {
		frm.disable_save();
		eda_error_show_stored_text(frm, ["message_id", "queue", "exception_type", "fingerprint"]);
	},
});

// Producer text is stored HTML-escaped (frappe_eda/stores/doctype_columns.py), so Frappe's formatters
// show it inert. A read-only Data control escapes its value once more, which would show entities
// ("&lt;img"): for these fields read the control's HTML back as text in an inert DOMParser document,
// undo the store's five entities and escape once, so the text shows literally and stays inert.
function eda_error_show_stored_text(frm, fieldnames) {
	const entities = { amp: "&", quot: '"', apos: "'", gt: ">", lt: "<" };
	const formatter = (value) => {
		const stored = new DOMParser().parseFromString(String(value ?? ""), "text/html").body.textContent;
		const raw = stored.replace(/&(amp|quot|apos|gt|lt);/g, (_, name) => entities[name]);
		return frappe.utils.escape_html(raw);
	};
	for (const fieldname of fieldnames) {
		const field = frm.fields_dict[fieldname];
		if (!field || field.df.fieldtype !== "Data") continue;
		field.df.formatter = formatter;
		field.refresh();
	}
}
