// Copyright (c) 2026, frappe_eda developers and contributors
// License: MIT. See LICENSE

frappe.ui.form.on("EDA Event Rule", {
	document_type(frm) {
		if (!frm.doc.document_type) return;
		frappe.model.with_doctype(frm.doc.document_type, () => {
			const fields = frappe.meta
				.get_docfields(frm.doc.document_type)
				.filter((df) => !frappe.model.no_value_type.includes(df.fieldtype) && df.fieldtype !== "Password")
				.map((df) => df.fieldname);
			frm.set_df_property("send_fields", "description", __("Available: {0}", [fields.join(", ")]));
		});
	},
	refresh(frm) {
		frm.trigger("document_type");
	},
});
