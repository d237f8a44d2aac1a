// Copyright (c) 2026, frappe_eda developers and contributors
// License: MIT. See LICENSE

// What the primary Replay takes; a Received or Pending message is in flight (a replay, the worker or the
// relay has it) and a replay refuses it.
const EDA_REPLAYABLE = ["Failed", "Dead"];

frappe.ui.form.on("EDA Message", {
	refresh(frm) {
		frm.disable_save();
		frappe_eda.show_stored_text(frm, ["message_id", "message_type", "routing_key", "exchange", "queue", "replay_of"]);
		frappe_eda.show_utc_datetimes(frm, ["created_at", "updated_at"]);
		show_body(frm);
		show_errors(frm);
		show_related(frm);
		show_receipts(frm);
		if (!frappe.user.has_role("EDA Manager") && frappe.session.user !== "Administrator") return;

		frm.add_custom_button(__("Replay"), () => replay(frm), __("Actions"));
		frm.add_custom_button(__("Edit and Replay"), () => edit_and_replay(frm), __("Actions"));
		if (!frm.doc.resolved && ["Failed", "Dead"].includes(frm.doc.status)) {
			frm.add_custom_button(__("Mark Resolved"), () => mark_resolved(frm), __("Actions"));
		}
		if (EDA_REPLAYABLE.includes(frm.doc.status)) {
			frm.page.set_primary_action(__("Replay"), () => replay(frm));
		}
	},
});

function replay(frm) {
	const done = ["Processed", "Published"].includes(frm.doc.status);
	const send = (force) =>
		frappe
			.xcall("frappe_eda.desk.api.replay_messages", { names: [frm.doc.name], force: force ? 1 : 0 })
			.then(({ job_id }) => {
				frappe.show_alert({ message: __("Replay queued"), indicator: "blue" });
				return frappe_eda.await_replay(job_id);
			})
			.then((state) => {
				const [result] = state.results || [];
				const sent = state.status === "finished" && result && result.sent;
				const detail = result ? result.detail : state.error;
				frappe.show_alert({
					message: frappe.utils.escape_html(sent ? __("Replayed ({0})", [detail]) : detail || __("Not replayed")),
					indicator: sent ? "green" : "red",
				});
				frm.reload_doc();
			});
	if (done) {
		frappe.confirm(
			__("This message was already {0}. Replaying runs its handler again. Continue?", [
				__(frm.doc.status).toLowerCase(),
			]),
			() => send(true)
		);
	} else {
		send(false);
	}
}

function edit_and_replay(frm) {
	let envelope = {};
	try {
		envelope = JSON.parse(frm.doc.payload || "{}");
	} catch (e) {
		envelope = {};
	}
	const dialog = new frappe.ui.Dialog({
		title: __("Edit and Replay"),
		fields: [
			{
				fieldtype: "HTML",
				options: `<p class="text-muted">${__(
					"A corrected copy is sent with a new message id, linked to this one; this message is kept and marked resolved."
				)}</p>`,
			},
			{
				fieldname: "payload",
				fieldtype: "Code",
				options: "JSON",
				label: __("Payload"),
				default: JSON.stringify(envelope.payload ?? {}, null, 2),
				reqd: 1,
			},
		],
		primary_action_label: __("Send Copy"),
		primary_action({ payload }) {
			try {
				JSON.parse(payload);
			} catch (e) {
				frappe.msgprint(__("The payload is not valid JSON: {0}", [frappe.utils.escape_html(e.message)]));
				return;
			}
			frappe
				.xcall("frappe_eda.desk.api.edit_and_replay", { name: frm.doc.name, payload })
				.then(({ job_id }) => {
					dialog.hide();
					frappe.show_alert({ message: __("Copy queued"), indicator: "blue" });
					return frappe_eda.await_replay(job_id);
				})
				.then((state) => {
					if (state.status !== "finished") {
						frappe.msgprint({ title: __("Edit and Replay"), message: frappe.utils.escape_html(state.error || ""), indicator: "red" });
						return;
					}
					frappe.show_alert({ message: __("Copy sent"), indicator: "green" });
					if (state.copy) frappe.set_route("Form", "EDA Message", state.copy);
				});
		},
	});
	dialog.show();
}

function mark_resolved(frm) {
	frappe
		.xcall("frappe_eda.desk.api.mark_resolved", { names: [frm.doc.name] })
		.then(({ job_id }) => frappe_eda.await_replay(job_id))
		.then((state) => {
			const summary = state.summary || {};
			const kept = Object.keys(summary.dead_copies_kept || {});
			if (state.status !== "finished" || kept.length) {
				frappe.msgprint({
					title: __("Mark Resolved"),
					message: frappe.utils.escape_html(state.status === "finished" ? kept.join("; ") : state.error || ""),
					indicator: state.status === "finished" ? "orange" : "red",
				});
			} else {
				frappe.show_alert({ message: __("Resolved"), indicator: "green" });
			}
			frm.reload_doc();
		});
}

function show_errors(frm) {
	const wrapper = frm.get_field("errors_html").$wrapper;
	wrapper.html(`<p class="text-muted">${__("Loading errors...")}</p>`);
	frappe.xcall("frappe_eda.desk.api.message_errors", { name: frm.doc.name }).then((errors) => {
		if (!errors.length) {
			wrapper.html(`<p class="text-muted">${__("No errors recorded.")}</p>`);
			return;
		}
		const rows = errors
			.map(
				(e) => `<div class="eda-error" style="margin-bottom: var(--margin-md)">
					<div><b>${__("Attempt {0}", [cint(e.attempt)])}</b> · ${frappe_eda.format_utc(e.occurred_at)} ·
					<a href="${frappe_eda.desk_url("eda-error", null, { fingerprint: e.fingerprint })}">${__("same failure")}</a></div>
					<div>${frappe_eda.stored_text(e.exception_type)}: ${frappe_eda.stored_text(e.error)}</div>
					<details><summary>${__("Traceback")}</summary><pre style="white-space: pre-wrap">${frappe.utils.escape_html(
						e.traceback || ""
					)}</pre></details>
				</div>`
			)
			.join("");
		wrapper.html(rows);
	});
}

// The body and headers are Code fields holding the exact stored text (replay sends it again); these
// show it re-indented, read-only and inert, and leave the stored text untouched.
function show_body(frm) {
	frm.get_field("payload_html").$wrapper.html(frappe_eda.json_block(frm.doc.payload));
	frm.get_field("headers_html").$wrapper.html(frappe_eda.json_block(frm.doc.headers));
}

const RELATED = [
	["replay_of", "Replay of"],
	["replayed_as", "Replayed as"],
	["caused_by", "Caused by"],
	["caused", "Caused"],
	["correlation_root", "Started by"],
	["correlated", "Same correlation"],
];

function show_related(frm) {
	const wrapper = frm.get_field("related_html").$wrapper;
	wrapper.html(`<p class="text-muted">${__("Loading related messages...")}</p>`);
	frappe.xcall("frappe_eda.frappe_eda.doctype.eda_message.eda_message.related_messages", { name: frm.doc.name }).then(
		(related) => {
			const link = (m) =>
				`<a href="${frappe_eda.desk_url("eda-message", m.name)}">${frappe_eda.stored_text(m.routing_key || m.message_id)}</a>
				<span class="text-muted">${frappe_eda.stored_text(m.status)} · ${frappe_eda.stored_text(m.direction)}${
					m.queue ? " · " + frappe_eda.stored_text(m.queue) : ""
				} · ${frappe_eda.format_utc(m.created_at)}</span>`;
			const rows = RELATED.filter(([key]) => (related[key] || []).length).map(
				([key, label]) =>
					`<div style="margin-bottom: var(--margin-sm)"><b>${__(label)}</b>
					${related[key].map((m) => `<div>${link(m)}</div>`).join("")}
					${related[key].length >= related.limit ? `<div class="text-muted">${__("First {0} shown.", [cint(related.limit)])}</div>` : ""}</div>`
			);
			wrapper.html(rows.length ? rows.join("") : `<p class="text-muted">${__("No related messages stored.")}</p>`);
			if (rows.length) frm.get_field("related_section").collapse(false);
		}
	);
}

// What each server did with an outgoing message (its delivery receipts, newest first), in the form's
// dashboard: the servers' text is shown inert (frappe_eda.receipt_line).
const RECEIPTS_SECTION = "eda-message-receipts";

function show_receipts(frm) {
	frm.dashboard.parent.find(`.${RECEIPTS_SECTION}`).remove();
	if (frm.doc.direction !== "Outgoing") return;
	const name = frm.doc.name;
	frappe
		.xcall("frappe_eda.desk.api.message_receipts", { name })
		.then((receipts) => {
			if (frm.docname !== name) return; // the form moved on
			frm.dashboard.parent.find(`.${RECEIPTS_SECTION}`).remove();
			if (!receipts.length) return;
			frm.dashboard.add_section(
				`<div class="eda-message-receipts-body">${frappe_eda.receipt_lines(receipts)}
				<a class="small" href="${frappe_eda.desk_url("eda-receipt", null, { eda_message: name })}">${__("All receipts")}</a></div>`,
				__("Receipts"),
				`custom ${RECEIPTS_SECTION}`
			);
			frm.dashboard.show();
		})
		.catch(() => {});
}
