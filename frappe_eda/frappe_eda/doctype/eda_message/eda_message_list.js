// Copyright (c) 2026, frappe_eda developers and contributors
// License: MIT. See LICENSE

frappe.listview_settings["EDA Message"] = {
	add_fields: ["status", "direction", "resolved"],
	get_indicator(doc) {
		const colour = {
			Pending: "orange",
			Published: "green",
			Failed: "red",
			Received: "blue",
			Processed: "green",
			Dead: "darkgrey",
		};
		const label = doc.resolved && ["Failed", "Dead"].includes(doc.status) ? __("{0} (resolved)", [__(doc.status)]) : __(doc.status);
		return [label, colour[doc.status], "status,=," + doc.status];
	},
	onload(listview) {
		if (!frappe.user.has_role("EDA Manager") && frappe.session.user !== "Administrator") return;
		listview.page.add_actions_menu_item(__("Replay"), () => bulk(listview, "frappe_eda.desk.api.replay_messages"));
		listview.page.add_actions_menu_item(__("Mark Resolved"), () => bulk(listview, "frappe_eda.desk.api.mark_resolved"));
		listview.page.add_inner_button(__("Failure Groups"), () => frappe.set_route("query-report", "EDA Failure Groups"));
	},
};

function bulk(listview, method) {
	const names = listview.get_checked_items(true);
	if (!names.length) return frappe.msgprint(__("Select messages first."));
	frappe.xcall(method, { names }).then((results) => {
		if (Array.isArray(results)) {
			const sent = results.filter((r) => r.sent).length;
			frappe.msgprint({
				title: __("Replay"),
				message: __("{0} of {1} replayed.", [sent, results.length]) + render_refusals(results),
				indicator: sent === results.length ? "green" : "orange",
			});
		}
		listview.refresh();
	});
}

function render_refusals(results) {
	const refused = results.filter((r) => !r.sent);
	if (!refused.length) return "";
	return "<ul>" + refused.map((r) => `<li>${r.name}: ${frappe.utils.escape_html(r.detail)}</li>`).join("") + "</ul>";
}
