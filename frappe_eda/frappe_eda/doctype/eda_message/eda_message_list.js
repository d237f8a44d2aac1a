// Copyright (c) 2026, frappe_eda developers and contributors
// License: MIT. See LICENSE

frappe.listview_settings["EDA Message"] = {
	hide_name_column: true, // a random hash; the title opens the record
	add_fields: ["status", "direction", "resolved", "last_error", "queue", "attempts", "created_at"],
	formatters: {
		// Stored HTML-escaped (frappe_eda.stored_text): the first line, short; the full text is in the form.
		last_error(value) {
			return frappe_eda.stored_text(frappe_eda.short_text(frappe_eda.unescape(value)));
		},
		created_at(value) {
			return frappe_eda.utc_age(value);
		},
		// The title (routing key) is set as text (textContent): show the stored, HTML-escaped text as
		// the literal key. Anywhere else a list formatter's result is HTML, so it stays as stored.
		routing_key(value) {
			return frappe.get_meta("EDA Message").title_field === "routing_key" ? frappe_eda.unescape(value) : value;
		},
	},
	get_indicator(doc) {
		const colour = {
			Pending: "orange",
			Published: "green",
			Failed: "red",
			Received: "blue",
			Processed: "green",
			Dead: "red",
		};
		const label = doc.resolved && ["Failed", "Dead"].includes(doc.status) ? __("{0} (resolved)", [__(doc.status)]) : __(doc.status);
		// The indicator label is rendered as HTML.
		return [frappe.utils.escape_html(label), colour[doc.status], "status,=," + doc.status];
	},
	onload(listview) {
		frappe_eda.setup_list(listview, ["status", "queue", "routing_key", "direction"], 9);
		if (!frappe.user.has_role("EDA Manager") && frappe.session.user !== "Administrator") return;
		listview.page.add_actions_menu_item(__("Replay"), () => bulk(listview, "frappe_eda.desk.api.replay_messages"));
		listview.page.add_actions_menu_item(__("Mark Resolved"), () => bulk(listview, "frappe_eda.desk.api.mark_resolved"));
		listview.page.add_inner_button(__("Failure Groups"), () => frappe.set_route("query-report", "EDA Failure Groups"));
	},
};

function bulk(listview, method) {
	const names = listview.get_checked_items(true);
	if (!names.length) return frappe.msgprint(__("Select messages first."));
	frappe.xcall(method, { names }).then((answer) => {
		if (!answer || !answer.job_id) return listview.refresh(); // Mark Resolved: done at once
		frappe.show_alert({ message: __("Replay of {0} messages queued", [answer.queued]), indicator: "blue" });
		frappe_eda.await_replay(answer.job_id).then((state) => {
			if (state.status !== "finished") {
				frappe.msgprint({ title: __("Replay"), message: frappe.utils.escape_html(state.error || ""), indicator: "red" });
			} else {
				const results = state.results || [];
				const sent = results.filter((r) => r.sent).length;
				frappe.msgprint({
					title: __("Replay"),
					message: __("{0} of {1} replayed.", [sent, results.length]) + render_refusals(results),
					indicator: sent === results.length ? "green" : "orange",
				});
			}
			listview.refresh();
		});
	});
}

function render_refusals(results) {
	const refused = results.filter((r) => !r.sent);
	if (!refused.length) return "";
	const escape = frappe.utils.escape_html;
	return "<ul>" + refused.map((r) => `<li>${escape(r.name)}: ${escape(r.detail)}</li>`).join("") + "</ul>";
}
