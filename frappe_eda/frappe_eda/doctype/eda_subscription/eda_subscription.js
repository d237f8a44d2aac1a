// Copyright (c) 2026, frappe_eda developers and contributors
// License: MIT. See LICENSE

frappe.ui.form.on("EDA Subscription", {
	sender_check(frm) {
		frm.trigger("warn_trusted_network");
	},
	warn_trusted_network(frm) {
		// Trusted Network takes any sender: say so above the form while it is chosen.
		if (frm.doc.sender_check === "Trusted Network") {
			frm.set_intro(
				__(
					"Trusted Network: this subscription applies messages from any sender on the broker, so any server of the network can write these documents here as if it were the source. Give each server its own broker user (bench eda broker-user), then switch to Proven Sender."
				),
				"orange"
			);
		} else {
			frm.set_intro("");
		}
	},
	onload(frm) {
		// The reconciliation's why names documents and reasons of another server: shown as text.
		frappe_eda.show_raw_text_form(frm);
	},
	refresh(frm) {
		frm.trigger("warn_trusted_network");
		if (frm.is_new()) return;
		frm.add_custom_button(__("Copies"), () => {
			frappe.set_route("List", "EDA Replica", { subscription: frm.doc.name });
		});
		frm.add_custom_button(__("Messages"), () => {
			frappe.set_route("List", "EDA Message", { queue: frm.doc.queue });
		});
		if (frm.doc.enabled && frm.doc.source) {
			frm.add_custom_button(__("Reconcile Now"), () => {
				frappe
					.call("frappe_eda.replication.reconcile.reconcile_now", { subscription: frm.doc.name })
					.then((r) => {
						frappe.show_alert({
							message: __("Digest of {0} copies sent; the outcome shows here when the run ends", [
								r.message.local_documents,
							]),
							indicator: "blue",
						});
					});
			});
		}
	},
	source_doctype(frm) {
		if (!frm.doc.document_type) frm.set_value("document_type", frm.doc.source_doctype);
	},
});
