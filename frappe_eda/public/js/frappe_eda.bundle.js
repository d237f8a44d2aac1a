// Copyright (c) 2026, frappe_eda developers and contributors
// License: MIT. See LICENSE

// Desk helpers shared by the EDA Message and EDA Error forms and lists and the EDA Failure Groups
// report. Loaded on every desk page (app_include_js in hooks.py), so those scripts call frappe_eda.*
// instead of each carrying its own copy.
frappe.provide("frappe_eda");

// The store's five entities (frappe_eda/stores/doctype_columns.py: _ESCAPES / _UNESCAPES), and no others:
// decoding more (as a full HTML decoder would) would change text that was never escaped by the store.
const STORE_ENTITIES = { amp: "&", quot: '"', apos: "'", gt: ">", lt: "<" };
const STORE_ENTITY = /&(amp|quot|apos|gt|lt);/g;

// Poll a replay job every 2 s, for up to 5 minutes, when no realtime event says it is done.
const REPLAY_POLL_MS = 2000;
const REPLAY_POLL_TRIES = 150;

// Producer text is stored HTML-escaped, so Frappe's own formatters show it as text. This is the exact
// inverse of the store's escaping: the literal text. Only for text that is set as text (textContent,
// a list title), never as HTML; for HTML use frappe_eda.stored_text.
frappe_eda.unescape = function (value) {
	return String(value ?? "").replace(STORE_ENTITY, (_, name) => STORE_ENTITIES[name]);
};

// Stored text as HTML that shows it literally: undo the store's entities, then escape once. Rows
// written before the store escaped show as inert text too, and nothing shows as "&lt;". (Code fields
// such as the traceback are stored as they are: they take plain frappe.utils.escape_html.)
frappe_eda.stored_text = function (value) {
	return frappe.utils.escape_html(frappe_eda.unescape(value));
};

// A read-only Data control escapes its value once more before formatting it, so stored text would show
// as entities ("&lt;img"). For these form fields only, read the control's HTML back as text in an inert
// DOMParser document (never the page's: nothing in it runs or loads), then show it with stored_text.
frappe_eda.show_stored_text = function (frm, fieldnames) {
	const formatter = (value) =>
		frappe_eda.stored_text(
			new DOMParser().parseFromString(String(value ?? ""), "text/html").body.textContent
		);
	for (const fieldname of fieldnames) {
		const field = frm.fields_dict[fieldname];
		if (!field || field.df.fieldtype !== "Data") continue;
		field.df.formatter = formatter;
		field.refresh();
	}
};

// A replay runs as a background job; this resolves with its outcome (frappe_eda.desk.api.replay_job_state):
// pushed over realtime when socket.io runs, else polled. It always resolves, never rejects: a poll that
// fails (server error, lost connection, no permission) or a job that stays queued resolves as
// {status: "failed", error}, which every caller shows, and polling stops.
frappe_eda.await_replay = function (job_id) {
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
			frappe
				.xcall("frappe_eda.desk.api.replay_job_state", { job_id })
				.then((state) => {
					if (done) return;
					if (["finished", "failed"].includes(state.status)) finish(state);
					else if (++tries < REPLAY_POLL_TRIES) setTimeout(poll, REPLAY_POLL_MS);
					else
						finish({
							job_id,
							status: "failed",
							error: __("The replay is still queued; is a background worker running?"),
						});
				})
				.catch(() =>
					finish({
						job_id,
						status: "failed",
						error: __(
							"Could not check how the replay went (the request failed). It may still run: reload the message later to see its status."
						),
					})
				);
		};
		frappe.realtime.on("eda_replay_done", on_event);
		setTimeout(poll, 1000);
	});
};
