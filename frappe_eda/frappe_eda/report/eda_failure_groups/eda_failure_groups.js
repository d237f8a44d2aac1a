// Copyright (c) 2026, frappe_eda developers and contributors
// License: MIT. See LICENSE

frappe.query_reports["EDA Failure Groups"] = {
	filters: [{ fieldname: "include_resolved", label: __("Resolved Groups"), fieldtype: "Check" }],
	formatter(value, row, column, data, default_formatter) {
		// Rows carry text as stored: HTML-escaped (frappe_eda/stores/doctype_columns.py). The Data
		// formatter renders HTML, so text cells go through eda_report_text, which keeps rows written
		// before escaping inert too; the fingerprint stays as stored for the filter and the replay.
		if (column.fieldname === "action" && data && data.fingerprint) {
			return `<button class="btn btn-xs btn-default" data-eda-fingerprint="${frappe.utils.escape_html(
				data.fingerprint
			)}">${__("Replay Group")}</button>`;
		}
		if (column.fieldname === "fingerprint" && data) {
			return `<a href="/app/eda-error?fingerprint=${encodeURIComponent(value)}">${eda_report_text(value)}</a>`;
		}
		if (column.fieldtype === "Data" && typeof value === "string") {
			return default_formatter(eda_report_text(value), row, column, data);
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
						frappe.show_alert({ message: __("Replay of {0} messages queued", [queued]), indicator: "blue" });
						return eda_await_replay(job_id);
					})
					.then((state) => {
						const results = state.results || [];
						const sent = results.filter((r) => r.sent).length;
						frappe.msgprint(
							state.status === "finished"
								? __("{0} of {1} replayed.", [sent, results.length])
								: frappe.utils.escape_html(state.error || "")
						);
						report.refresh();
					})
			);
		});
	},
};

// A replay runs as a background job; this resolves with its outcome: pushed over realtime when
// socket.io runs, else polled (every 2 s, for up to 5 minutes).
function eda_await_replay(job_id) {
	return new Promise((resolve) => {
		let done = false;
		let tries = 0;
		const finish = (state) => {
			if (done) return;
			done = true;
			frappe.realtime.off("eda_replay_done", on_event);
			resolve(state);
		};
		const on_event = (state) => state && state.job_id === job_id && finish(state);
		const poll = () => {
			if (done) return;
			frappe.xcall("frappe_eda.desk.api.replay_job_state", { job_id }).then((state) => {
				if (["finished", "failed"].includes(state.status)) finish(state);
				else if (++tries < 150) setTimeout(poll, 2000);
				else finish({ status: "failed", error: __("The replay is still queued; is a background worker running?") });
			});
		};
		frappe.realtime.on("eda_replay_done", on_event);
		setTimeout(poll, 1000);
	});
}

// Undo the store's five entities, then escape: literal text whether a row was stored escaped or not.
function eda_report_text(value) {
	const entities = { amp: "&", quot: '"', apos: "'", gt: ">", lt: "<" };
	const raw = String(value ?? "").replace(/&(amp|quot|apos|gt|lt);/g, (_, name) => entities[name]);
	return frappe.utils.escape_html(raw);
}
