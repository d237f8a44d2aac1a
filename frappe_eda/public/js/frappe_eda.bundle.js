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

// A desk URL: /app/... on Frappe v15, /desk/... on v16 (Frappe's own router knows which). `slug` is the
// DocType's route ("eda-message"), `name` a document (optional), `query` an object of filters (optional).
frappe_eda.desk_url = function (slug, name, query) {
	const url = frappe.router.make_url(name === undefined || name === null ? [slug] : [slug, name]);
	return query ? `${url}?${new URLSearchParams(query).toString()}` : url;
};

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

// A replay or resolve runs as a background job; this resolves with its outcome
// (frappe_eda.desk.api.replay_job_state): pushed over realtime when socket.io runs, else polled. While it
// runs, its progress (stored with the job's state, so polling sees it too) shows in a progress dialog
// titled `title` (none without a title). It always resolves, never rejects: a poll that fails (server
// error, lost connection, no permission) or a job that stays queued resolves as {status: "failed", error},
// which every caller shows, and polling stops. A running job is polled for as long as it runs.
frappe_eda.await_replay = function (job_id, title) {
	return new Promise((resolve) => {
		let done = false;
		let tries = 0;
		const show = (progress) => {
			if (!title || !progress) return;
			frappe.show_progress(title, flt(progress.percent), 100, frappe.utils.escape_html(progress.description || ""));
		};
		const finish = (state) => {
			if (done) return;
			done = true;
			frappe.realtime.off("eda_replay_done", on_event);
			if (title && frappe.cur_progress) frappe.hide_progress();
			resolve(state);
		};
		const on_event = (state) => state && state.job_id === job_id && finish(state);
		const poll = () => {
			if (done) return;
			frappe
				.xcall("frappe_eda.desk.api.replay_job_state", { job_id })
				.then((state) => {
					if (done) return;
					if (["finished", "failed"].includes(state.status)) return finish(state);
					if (state.status === "queued" && state.worker === false && tries >= 1) {
						// Nobody will run it: say what to start, once, in a dialog that stays.
						const what = __(
							"No background worker is running for this site, so the job waits in the queue. Start one with: bench worker (bench start runs one too); the job then runs by itself."
						);
						frappe.msgprint({ title: __("No background worker"), message: frappe.utils.escape_html(what), indicator: "orange" });
						return finish({ job_id, status: "failed", no_worker: true, error: what });
					}
					if (state.status === "running") {
						tries = 0; // it runs: wait for it however long it takes
						show(state.progress);
					}
					if (++tries < REPLAY_POLL_TRIES) setTimeout(poll, REPLAY_POLL_MS);
					else
						finish({
							job_id,
							status: "failed",
							error: __("The job is still queued; is a background worker running?"),
						});
				})
				.catch(() =>
					finish({
						job_id,
						status: "failed",
						error: __(
							"Could not check how the job went (the request failed). It may still run: reload the list later to see the messages' status."
						),
					})
				);
		};
		frappe.realtime.on("eda_replay_done", on_event);
		setTimeout(poll, 1000);
	});
};

// A bulk job's outcome as a dialog: sent (or resolved), refused counted by reason, the dead-letter copies
// removed or kept and why, and the first refused messages by name. All server text is escaped.
frappe_eda.show_job_summary = function (title, state) {
	const escape = frappe.utils.escape_html;
	if (state.status !== "finished") {
		frappe.msgprint({ title, message: escape(state.error || __("The job failed.")), indicator: "red" });
		return;
	}
	const summary = state.summary || {};
	const resolving = "resolved" in summary;
	const ok = resolving ? summary.resolved : summary.sent;
	const refused = Object.entries(summary.refused || {});
	const kept = Object.entries(summary.dead_copies_kept || {});
	const counts = (entries) =>
		`<ul>${entries.map(([reason, n]) => `<li>${escape(reason)}: <b>${cint(n)}</b></li>`).join("")}</ul>`;
	const failed = (state.results || []).filter((r) => !(resolving ? r.resolved : r.sent)).slice(0, 20);
	const parts = [
		`<p class="eda-summary-done"><b>${cint(ok)}</b> ${resolving ? __("resolved") : __("sent")} ${__("of {0}", [cint(summary.total)])}` +
			(summary.seconds != null ? ` <span class="text-muted">(${flt(summary.seconds, 1)} s)</span>` : "") +
			"</p>",
	];
	if (refused.length) {
		const total = refused.reduce((sum, [, n]) => sum + cint(n), 0);
		parts.push(`<p class="eda-summary-refused">${__("Refused")}: <b>${total}</b></p>${counts(refused)}`);
	}
	parts.push(`<p class="eda-summary-dead">${__("Copies removed from the dead-letter queues")}: <b>${cint(summary.dead_copies_removed)}</b></p>`);
	if (kept.length) parts.push(`<p>${__("Copies left in the dead-letter queues")}:</p>${counts(kept)}`);
	if (failed.length) {
		parts.push(
			`<details><summary>${__("Refused messages")}${state.results_truncated ? " " + __("(the first ones)") : ""}</summary><ul>${failed
				.map(
					(r) =>
						`<li><a href="${frappe_eda.desk_url("eda-message", r.name)}">${escape(r.name)}</a>: ${escape(r.detail || r.reason || "")}</li>`
				)
				.join("")}</ul></details>`
		);
	}
	frappe.msgprint({
		title,
		message: `<div class="eda-job-summary">${parts.join("")}</div>`,
		indicator: refused.length || kept.length ? "orange" : "green",
	});
};

// The EDA datetimes (created_at, updated_at, occurred_at) are written by the core in naive UTC, while
// Frappe stores every other datetime in the system time zone and its formatter converts from that to
// the user's. Converting UTC to the system time zone first makes them show exactly like every other
// datetime in the desk (and the user's time zone setting applies to them too). Unparseable: as stored.
frappe_eda.utc_to_system = function (value) {
	if (!value) return value;
	const system = frappe.boot.time_zone && frappe.boot.time_zone.system;
	const utc = moment.utc(String(value));
	if (!system || !utc.isValid() || !moment.tz) return value;
	return utc.tz(system).format("YYYY-MM-DD HH:mm:ss.SSSSSS");
};

// An EDA datetime as Frappe formats any datetime (user's format and time zone), as HTML-safe text.
frappe_eda.format_utc = function (value) {
	return value ? frappe.utils.escape_html(frappe.form.formatters.Datetime(frappe_eda.utc_to_system(value))) : "";
};

// How long ago an EDA datetime was ("3 hours ago"), with the full time as its tooltip.
frappe_eda.utc_age = function (value) {
	if (!value) return "";
	const system = frappe.utils.escape_html(frappe_eda.utc_to_system(value));
	return `<span title="${frappe_eda.format_utc(value)}">${frappe.utils.escape_html(
		frappe.datetime.prettyDate(system)
	)}</span>`;
};

// Read-only Datetime fields of a form holding UTC: shown in the system time zone.
frappe_eda.show_utc_datetimes = function (frm, fieldnames) {
	for (const fieldname of fieldnames) {
		const field = frm.fields_dict[fieldname];
		if (!field || field.df.fieldtype !== "Datetime") continue;
		field.df.formatter = (value) => frappe_eda.format_utc(value);
		field.refresh();
	}
};

// The EDA datetimes of a DocType in its list, report view, group-by and exports to screen: the report
// view formats each cell with the DocType's own docfield (frappe.format reads df.formatter), so the
// UTC columns show in the system time zone there too, like every other datetime of the desk.
const UTC_FIELDS = {
	"EDA Message": ["created_at", "updated_at"],
	"EDA Error": ["occurred_at"],
	"EDA Worker": ["started_at", "last_heartbeat"],
	"EDA Receipt": ["outcome_at", "received_at"],
};

frappe_eda.show_utc_columns = function (doctype) {
	const fields = (frappe.meta.docfield_map || {})[doctype] || {};
	for (const fieldname of UTC_FIELDS[doctype] || []) {
		const df = fields[fieldname];
		if (df && df.fieldtype === "Datetime") df.formatter = (value) => frappe_eda.format_utc(value);
	}
};

// Replication text is stored as it came, not escaped: the EDA Replica rows (replication.replicas.record:
// source names, conflict reasons from another server) and a reconciliation's "why" (names and reasons
// from the source). Frappe's Data and Text formatters insert a value as HTML (and a read-only Data
// control escapes it twice, showing entities), so these fields get a formatter (frappe.format reads
// df.formatter) that shows the document's own value as text: on the DocType's docfields for the list
// and the report view (show_raw_text_fields, from the list's onload), on a form's copies of them before
// the form first renders (show_raw_text_form, from the form's onload).
const RAW_TEXT_FIELDS = {
	"EDA Replica": [
		"source",
		"source_doctype",
		"source_name",
		"source_version",
		"source_hash",
		"last_message",
		"last_event",
		"detail",
	],
	"EDA Subscription": ["last_reconcile_why"],
};

frappe_eda.raw_text = function (value) {
	return frappe.utils.escape_html(String(value ?? "")).replace(/\n/g, "<br>");
};

const raw_text_formatter = (value, df, options, doc) =>
	frappe_eda.raw_text(doc && df && typeof doc[df.fieldname] === "string" ? doc[df.fieldname] : value);

frappe_eda.show_raw_text_fields = function (doctype) {
	const fields = (frappe.meta.docfield_map || {})[doctype] || {};
	for (const fieldname of RAW_TEXT_FIELDS[doctype] || []) {
		const df = fields[fieldname];
		if (df) df.formatter = raw_text_formatter;
	}
};

frappe_eda.show_raw_text_form = function (frm) {
	frappe_eda.show_raw_text_fields(frm.doctype);
	for (const fieldname of RAW_TEXT_FIELDS[frm.doctype] || []) {
		const df = frappe.meta.get_docfield(frm.doctype, fieldname, frm.docname);
		if (df) df.formatter = raw_text_formatter;
		const field = frm.fields_dict[fieldname];
		if (field && field.df !== df) field.df.formatter = raw_text_formatter;
	}
};

// Largest text pretty-printed in the form; beyond it the raw text is shown (the browser stays responsive).
const PRETTY_MAX_CHARS = 2 * 1024 * 1024;

// JSON text re-indented token by token, every token kept exactly as stored: numbers keep their digits
// (JSON.parse would round 2^53 + 1 and turn 1.0 into 1) and string escapes stay as they are. Only text
// that parses as JSON is re-indented; anything else (not JSON, too large) comes back unchanged.
frappe_eda.pretty_json = function (text) {
	text = String(text ?? "");
	if (!text || text.length > PRETTY_MAX_CHARS) return text;
	try {
		JSON.parse(text);
	} catch (e) {
		return text;
	}
	const out = [];
	let depth = 0;
	let in_string = false;
	const newline = () => "\n" + "  ".repeat(depth);
	for (let i = 0; i < text.length; i++) {
		const c = text[i];
		if (in_string) {
			out.push(c);
			if (c === "\\") out.push(text[++i]);
			else if (c === '"') in_string = false;
			continue;
		}
		if (c === " " || c === "\t" || c === "\n" || c === "\r") continue;
		if (c === '"') {
			in_string = true;
			out.push(c);
		} else if (c === "{" || c === "[") {
			let j = i + 1;
			while (" \t\n\r".includes(text[j])) j++;
			if (text[j] === "}" || text[j] === "]") {
				out.push(c + text[j]); // an empty object or list stays on one line
				i = j;
			} else {
				depth++;
				out.push(c + newline());
			}
		} else if (c === "}" || c === "]") {
			depth--;
			out.push(newline() + c);
		} else if (c === ",") {
			out.push("," + newline());
		} else if (c === ":") {
			out.push(": ");
		} else {
			out.push(c);
		}
	}
	return out.join("");
};

// A Code field's stored text (the body, headers: stored byte for byte, never escaped by the store)
// as an inert, readable block: escaped once, so markup in it shows as text.
frappe_eda.json_block = function (text) {
	if (!text) return `<p class="text-muted">${__("Empty")}</p>`;
	return `<pre class="eda-json" style="white-space: pre-wrap; word-break: break-word; max-height: 60vh; overflow: auto; padding: var(--padding-sm); background: var(--control-bg); border-radius: var(--border-radius)">${frappe.utils.escape_html(
		frappe_eda.pretty_json(text)
	)}</pre>`;
};

// A list column's HTML (a formatter's result that is not the title): always inside an element. Frappe v16
// sizes list columns with $(html).text(), and jQuery reads a string that does not start with "<" as a
// CSS selector: text such as "&lt;script&gt;" then throws, and no row of the page is drawn.
frappe_eda.list_cell = function (html) {
	return html ? `<span>${html}</span>` : "";
};

// The first line of a text, at most `max` characters (a list column; the form shows it whole).
frappe_eda.short_text = function (text, max = 80) {
	const line = String(text ?? "").split("\n", 1)[0];
	return line.length > max ? line.slice(0, max - 1) + "…" : line;
};

// The EDA lists' defaults, where the user or site has not chosen: enough columns for what an operator
// triages by (List View Settings' "total fields" wins when set) and the sidebar's group-by counts
// (the user's own "Edit Filters" choice wins when saved).
frappe_eda.setup_list = function (listview, group_by_fields, total_fields) {
	frappe_eda.show_utc_columns(listview.doctype);
	const settings = listview.list_view_settings || {};
	if (!settings.total_fields) {
		listview.list_view_settings = { ...settings, total_fields };
		listview.setup_columns();
		listview.render_header(true);
	}
	const group_by = listview.list_sidebar && listview.list_sidebar.list_group_by;
	if (group_by && !frappe.get_user_settings(listview.doctype).group_by_fields) {
		group_by.group_by_fields = ["assigned_to", "owner", ...group_by_fields];
		group_by.render_group_by_items();
		group_by.setup_dropdown();
	}
};

// Delivery receipts (frappe_eda.replication.receipts): what each server did with an outgoing message.
// Every text in a receipt came from another server and is stored HTML-escaped: shown with stored_text.
frappe_eda.RECEIPT_COLOURS = { Applied: "green", Skipped: "gray", Retrying: "orange", Refused: "red" };

// One receipt as inert HTML: "Applied at wh1.localhost at 10:04 — ITEM-9" or "Refused at wh2.localhost
// at 10:05: MissingLink: missing Item ITEM-9".
frappe_eda.receipt_line = function (r) {
	const colour = frappe_eda.RECEIPT_COLOURS[r.outcome] || "gray";
	const outcome = frappe_eda.RECEIPT_COLOURS[r.outcome] ? __(r.outcome) : frappe_eda.stored_text(r.outcome);
	const at = r.outcome_at ? " " + __("at {0}", [frappe_eda.format_utc(r.outcome_at)]) : "";
	const document = r.document ? ` — ${frappe_eda.stored_text(r.document)}` : "";
	const detail = r.detail ? `: ${frappe.utils.escape_html(frappe_eda.short_text(frappe_eda.unescape(r.detail), 300))}` : "";
	const subscription = r.subscription
		? ` <span class="text-muted">(${__("subscription {0}", [frappe_eda.stored_text(r.subscription)])})</span>`
		: "";
	return `<div class="eda-receipt"><span class="indicator-pill ${colour}">${outcome}</span> ${__("at")} <b>${frappe_eda.stored_text(
		r.server
	)}</b>${at}${document}${detail}${subscription}</div>`;
};

frappe_eda.receipt_lines = function (receipts) {
	return (receipts || []).map((r) => frappe_eda.receipt_line(r)).join("");
};

// Every document's form: a "Messages" section listing the EDA Messages about it (sent from it, or
// received and applied to it), newest first, with status, linked (frappe_eda.desk.tracking). Shown
// only when there are some, to users who may read EDA Messages; the text is stored producer text,
// shown inert.
const DOCUMENT_MESSAGES_SECTION = "eda-document-messages";

frappe_eda.show_document_messages = function (frm) {
	if (!frm || !frm.doc || frm.is_new() || frm.meta.issingle || frm.meta.istable) return;
	if (frm.doctype.startsWith("EDA ") || !frappe.model.can_read("EDA Message")) return;
	const doctype = frm.doctype;
	const name = frm.docname;
	frappe
		.xcall("frappe_eda.desk.api.document_messages", { doctype, name })
		.then((result) => {
			if (frm.doctype !== doctype || frm.docname !== name) return; // the form moved on
			frm.dashboard.parent.find(`.${DOCUMENT_MESSAGES_SECTION}`).remove();
			if (!result.messages.length) return;
			const counts = result.counts
				.map((c) => `${frappe_eda.stored_text(c.direction)} ${frappe_eda.stored_text(c.status)}: ${cint(c.count)}`)
				.join(" · ");
			const rows = result.messages.map((m) => {
				const red = ["Dead", "Failed"].includes(m.status) && !m.resolved;
				const where = m.direction === "Incoming" ? m.queue : m.exchange;
				return `<tr>
					<td><a href="${frappe_eda.desk_url("eda-message", m.name)}">${frappe_eda.stored_text(m.routing_key || m.name)}</a></td>
					<td>${frappe_eda.stored_text(m.direction)}</td>
					<td><span class="indicator-pill ${red ? "red" : m.status === "Processed" || m.status === "Published" ? "green" : "orange"}">${frappe_eda.stored_text(m.status)}</span>${m.resolved ? ` <span class="text-muted">(${__("resolved")})</span>` : ""}</td>
					<td>${frappe_eda.stored_text(where || "")}</td>
					<td>${frappe_eda.utc_age(m.created_at)}</td>
					<td class="text-muted">${frappe.utils.escape_html(frappe_eda.short_text(frappe_eda.unescape(m.last_error || ""), 80))}</td>
				</tr>${
					(m.receipts || []).length
						? `<tr class="eda-receipts"><td></td><td colspan="5" class="small">${frappe_eda.receipt_lines(m.receipts)}</td></tr>`
						: ""
				}`;
			});
			const html = `<div class="eda-document-messages-body">
				<p class="text-muted small">${counts}</p>
				<table class="table table-condensed small"><thead><tr>
					<th>${__("Routing Key")}</th><th>${__("Direction")}</th><th>${__("Status")}</th>
					<th>${__("Exchange / Queue")}</th><th>${__("Created")}</th><th>${__("Last Error")}</th>
				</tr></thead><tbody>${rows.join("")}</tbody></table>
				${result.more ? `<a href="${frappe_eda.desk_url("eda-message", null, { reference_doctype: doctype, reference_name: name })}">${__("All messages of this document")}</a>` : ""}
			</div>`;
			frm.dashboard.add_section(html, __("Messages"), `custom ${DOCUMENT_MESSAGES_SECTION}`);
			frm.dashboard.show();
		})
		.catch(() => {}); // a document the user may not read: no section, and the form works as before
};

$(document).on("form-refresh", (event, frm) => frappe_eda.show_document_messages(frm));
