// Copyright (c) 2026, frappe_eda developers and contributors
// License: MIT. See LICENSE

// A worker's state, as frappe_eda.messaging.heartbeat.WorkerBeat.state computes it: stopped when its
// last beat said so, stale when no beat came for STALE_AFTER_BEATS beats (at least MIN_STALE_SECONDS),
// else alive. last_heartbeat (the beat's last_seen: Frappe's list queries drop a field whose name holds
// "_seen") is naive UTC, as the worker wrote it, compared with the browser's clock in UTC.
const STALE_AFTER_BEATS = 3;
const MIN_STALE_SECONDS = 60;

frappe.provide("frappe_eda");

frappe_eda.worker_state = function (doc) {
	if (cint(doc.stopped)) return "stopped";
	const seen = moment.utc(String(doc.last_heartbeat || ""));
	if (!seen.isValid()) return "stale";
	const stale_after = Math.max(STALE_AFTER_BEATS * flt(doc.heartbeat_every || 15), MIN_STALE_SECONDS);
	return moment.utc().diff(seen, "seconds", true) > stale_after ? "stale" : "alive";
};

frappe_eda.worker_state_indicator = function (doc) {
	const state = frappe_eda.worker_state(doc);
	return {
		alive: [__("Alive"), "green", "stopped,=,0"],
		stale: [__("Stale"), "orange", "stopped,=,0"],
		stopped: [__("Stopped"), "gray", "stopped,=,1"],
	}[state];
};

frappe.listview_settings["EDA Worker"] = {
	add_fields: ["last_heartbeat", "heartbeat_every", "stopped"],
	formatters: {
		last_heartbeat(value) {
			return frappe_eda.utc_age(value);
		},
		started_at(value) {
			return frappe_eda.utc_age(value);
		},
	},
	get_indicator(doc) {
		return frappe_eda.worker_state_indicator(doc);
	},
	onload(listview) {
		frappe_eda.setup_list(listview, ["host", "stopped"], 7);
	},
};
