// Copyright (c) 2026, frappe_eda developers and contributors
// License: MIT. See LICENSE

frappe.listview_settings["EDA Message"] = {
	hide_name_column: true, // a random hash; the title opens the record
	add_fields: ["status", "direction", "resolved", "last_error", "queue", "attempts", "created_at"],
	formatters: {
		// Stored HTML-escaped (frappe_eda.stored_text): the first line, short; the full text is in the form.
		last_error(value) {
			return frappe_eda.list_cell(frappe_eda.stored_text(frappe_eda.short_text(frappe_eda.unescape(value))));
		},
		created_at(value) {
			return frappe_eda.utc_age(value);
		},
		// The title (routing key) is set as text (textContent): show the stored, HTML-escaped text as
		// the literal key. Anywhere else a list formatter's result is HTML, so it stays as stored.
		routing_key(value) {
			return frappe.get_meta("EDA Message").title_field === "routing_key"
				? frappe_eda.unescape(value)
				: frappe_eda.list_cell(value);
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
		frappe_eda.setup_list(listview, ["status", "queue", "exception_type", "fingerprint", "routing_key", "direction"], 9);
		if (!frappe.user.has_role("EDA Manager") && frappe.session.user !== "Administrator") return;
		listview.page.add_actions_menu_item(__("Replay"), () => bulk(listview, "frappe_eda.desk.api.replay_messages"));
		listview.page.add_actions_menu_item(__("Mark Resolved"), () => bulk(listview, "frappe_eda.desk.api.mark_resolved"));
		listview.page.add_inner_button(__("Failure Groups"), () => frappe.set_route("query-report", "EDA Failure Groups"));
	},
};

// The list filters a bulk action can carry instead of names (frappe_eda.desk.api._filters).
const BULK_FILTER_FIELDS = ["status", "queue", "routing_key", "direction", "resolved"];

function bulk(listview, method) {
	const title = method.endsWith("mark_resolved") ? __("Mark Resolved") : __("Replay");
	const names = listview.get_checked_items(true);
	if (!names.length) return frappe.msgprint(__("Select messages first."));
	const run = (args) =>
		frappe.xcall(method, args).then((answer) => {
			frappe.show_alert({ message: __("{0}: {1} messages queued", [title, cint(answer.queued)]), indicator: "blue" });
			return frappe_eda.await_replay(answer.job_id, title).then((state) => {
				frappe_eda.show_job_summary(title, state);
				listview.refresh();
			});
		});
	const matching = listview.total_count || 0;
	const filters = bulk_filters(listview);
	// The whole page is selected and more match: offer every message the filters match (any number).
	if (names.length === (listview.data || []).length && matching > names.length && filters) {
		// Past the list's count bound (1,000) the list knows only "more than"; the job takes them all.
		const bounded = listview.count_upper_bound && matching >= listview.count_upper_bound;
		const how_many = bounded ? __("more than {0}", [cint(matching - 1)]) : cint(matching);
		const dialog = new frappe.ui.Dialog({
			title,
			fields: [
				{
					fieldtype: "HTML",
					options: `<p>${__("{0} messages are selected on this page; {1} match the list's filters.", [
						cint(names.length),
						how_many,
					])}</p>`,
				},
			],
			primary_action_label: bounded ? __("All matching") : __("All {0} matching", [cint(matching)]),
			primary_action() {
				dialog.hide();
				run({ filters });
			},
			secondary_action_label: __("Only the {0} selected", [cint(names.length)]),
			secondary_action() {
				dialog.hide();
				run({ names });
			},
		});
		dialog.show();
		return;
	}
	run({ names });
}

// The list's filters as a bulk action's filters, or null when one of them cannot be carried over (the
// action then takes the selected names only).
function bulk_filters(listview) {
	const out = {};
	for (const [, field, op, value] of listview.get_filters_for_args()) {
		if (!BULK_FILTER_FIELDS.includes(field)) return null;
		if (field === "status" && op === "in") out.status = Array.isArray(value) ? value : String(value).split(",");
		else if (op === "=") out[field] = field === "resolved" ? cint(value) : value;
		else if (op === "like" && ["queue", "routing_key"].includes(field)) out[field] = ["like", value];
		else return null;
	}
	return Object.keys(out).length ? out : null;
}
