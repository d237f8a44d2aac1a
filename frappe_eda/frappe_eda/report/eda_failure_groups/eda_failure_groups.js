// Copyright (c) 2026, frappe_eda developers and contributors
// License: MIT. See LICENSE

frappe.query_reports["EDA Failure Groups"] = {
	filters: [{ fieldname: "include_resolved", label: __("Resolved Groups"), fieldtype: "Check" }],
	formatter(value, row, column, data, default_formatter) {
		// Rows carry text as stored: HTML-escaped (frappe_eda/stores/doctype_columns.py). The Data
		// formatter renders HTML, so text cells go through frappe_eda.stored_text, which keeps rows written
		// before escaping inert too; the fingerprint stays as stored for the filter and the replay.
		if (column.fieldname === "action" && data && data.fingerprint) {
			return `<button class="btn btn-xs btn-default" data-eda-fingerprint="${frappe.utils.escape_html(
				data.fingerprint
			)}">${__("Replay Group")}</button>`;
		}
		if (column.fieldname === "fingerprint" && data) {
			return `<a href="${frappe_eda.desk_url("eda-error", null, { fingerprint: value })}">${frappe_eda.stored_text(value)}</a>`;
		}
		if (column.fieldtype === "Data" && typeof value === "string") {
			return default_formatter(frappe_eda.stored_text(value), row, column, data);
		}
		return default_formatter(value, row, column, data);
	},
	onload(report) {
		$(report.page.wrapper).on("click", "[data-eda-fingerprint]", (event) => {
			const fingerprint = $(event.currentTarget).attr("data-eda-fingerprint");
			frappe.confirm(__("Replay every Failed and Dead message of this group?"), () =>
				frappe
					.xcall("frappe_eda.desk.api.replay_failure_group", { fingerprint })
					.then(({ job_id, queued }) => {
						frappe.show_alert({ message: __("Replay of {0} messages queued", [cint(queued)]), indicator: "blue" });
						return frappe_eda.await_replay(job_id, __("Replay Group"));
					})
					.then((state) => {
						frappe_eda.show_job_summary(__("Replay Group"), state);
						report.refresh();
					})
			);
		});
	},
};
