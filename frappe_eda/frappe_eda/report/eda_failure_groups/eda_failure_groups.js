// Copyright (c) 2026, frappe_eda developers and contributors
// License: MIT. See LICENSE

frappe.query_reports["EDA Failure Groups"] = {
	filters: [{ fieldname: "include_resolved", label: __("Resolved Groups"), fieldtype: "Check" }],
	formatter(value, row, column, data, default_formatter) {
		if (column.fieldname === "action" && data && data.fingerprint) {
			return `<button class="btn btn-xs btn-default" data-eda-fingerprint="${frappe.utils.escape_html(
				data.fingerprint
			)}">${__("Replay Group")}</button>`;
		}
		if (column.fieldname === "fingerprint" && data) {
			return `<a href="/app/eda-error?fingerprint=${encodeURIComponent(value)}">${frappe.utils.escape_html(value)}</a>`;
		}
		return default_formatter(value, row, column, data);
	},
	onload(report) {
		$(report.page.wrapper).on("click", "[data-eda-fingerprint]", (event) => {
			const fingerprint = $(event.currentTarget).attr("data-eda-fingerprint");
			frappe.confirm(__("Replay every Failed and Dead message of this group?"), () =>
				frappe.xcall("frappe_eda.desk.api.replay_failure_group", { fingerprint }).then((results) => {
					const sent = results.filter((r) => r.sent).length;
					frappe.msgprint(__("{0} of {1} replayed.", [sent, results.length]));
					report.refresh();
				})
			);
		});
	},
};
