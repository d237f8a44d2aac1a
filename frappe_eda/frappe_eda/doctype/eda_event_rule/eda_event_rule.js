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
		if (!frm.is_new() && frm.doc.document_type) {
			frm.add_custom_button(__("Try Condition"), () => frappe_eda_try_rule(frm));
		}
	},
});

// Whether the saved rule's condition holds for a document the user picks, and what would be sent
// (frappe_eda.outbox.conditions.try_rule): nothing is sent or recorded. Every value is shown as text.
function frappe_eda_try_rule(frm) {
	const dialog = new frappe.ui.Dialog({
		title: __("Try Condition"),
		fields: [
			{
				fieldname: "docname",
				fieldtype: "Link",
				options: frm.doc.document_type,
				label: __("{0} to try it on", [__(frm.doc.document_type)]),
				reqd: 1,
			},
			{ fieldname: "result", fieldtype: "HTML" },
		],
		primary_action_label: __("Try"),
		primary_action(values) {
			frappe
				.call("frappe_eda.outbox.conditions.try_rule", { rule: frm.doc.name, docname: values.docname })
				.then((r) => {
					const out = r.message || {};
					const esc = frappe.utils.escape_html;
					let html;
					if (out.error) {
						html = `<div class="eda-try-result text-danger">${esc(out.error)}</div>`;
					} else {
						const verdict = out.holds
							? __("The condition holds: this message would be sent.")
							: __("The condition does not hold: nothing would be sent.");
						html = `<div class="eda-try-result">
							<p><b>${esc(verdict)}</b></p>
							<p>${esc(__("Type"))}: <code>${esc(out.message_type)}</code>,
							${esc(__("exchange"))} <code>${esc(out.exchange)}</code>,
							${esc(__("routing key"))} <code>${esc(out.routing_key)}</code>,
							${esc(__("target servers"))}: ${esc((out.target_servers || []).join(", ") || "-")}</p>
							<pre class="eda-try-payload">${esc(JSON.stringify(out.payload, null, 1))}</pre>
						</div>`;
					}
					dialog.fields_dict.result.$wrapper.html(html);
				});
		},
	});
	dialog.show();
}
