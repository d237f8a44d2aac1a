// The EDA workspace's broker and worker view (Custom HTML Block "EDA Broker", written by
// frappe_eda.setup.install from this file). Frappe runs it with `root_element`, the block's shadow root.
// Data: frappe_eda.desk.broker_view.broker_view. Every string from the broker or the store is escaped.
(function () {
	const REFRESH_MS = 30000;
	const root = root_element;
	const box = root.querySelector(".eda-broker");
	const esc = (value) => frappe.utils.escape_html(value === null || value === undefined ? "" : String(value));
	const count = (value, bad) => {
		if (value === null || value === undefined) return `<span class="text-muted">${__("n/a")}</span>`;
		return `<span class="${bad && value > 0 ? "eda-bad" : ""}">${esc(value)}</span>`;
	};
	const depth = (q, bad) => (q.missing ? `<span class="text-muted">${__("not declared")}</span>` : q.error ? `<span class="eda-warn" title="${esc(q.error)}">${__("error")}</span>` : count(q.ready, bad));
	const age = (value) => (window.frappe_eda && frappe_eda.utc_age ? frappe_eda.utc_age(value) : esc(value));
	const STATE = { alive: ["green", __("Alive")], stale: ["orange", __("Stale")], stopped: ["gray", __("Stopped")] };

	function queues(data) {
		if (data.error) return "";
		if (!data.queues.length) return `<p class="text-muted">${__("No handlers on this site (eda_handlers in an app's hooks.py).")}</p>`;
		const rows = data.queues.map((q) => {
			const tiers = q.tiers.length ? q.tiers.map((t) => `${esc(t.queue.slice(q.queue.length + 1))}: ${depth(t)}`).join("<br>") : `<span class="text-muted">${__("none")}</span>`;
			const consumers = q.consumers === 0 ? `<span class="eda-warn" title="${esc(__("No worker consumes this queue"))}">0</span>` : count(q.consumers);
			return `<tr>
				<td title="${esc(q.handler)}">${esc(q.queue)}<div class="text-muted small">${esc(q.exchange)} ${esc(q.patterns.join(", "))}</div></td>
				<td class="num">${depth(q)}</td>
				<td class="num">${count(q.unacked)}</td>
				<td class="num">${consumers}</td>
				<td class="small">${tiers}</td>
				<td class="num">${depth(q.dead, true)}</td>
			</tr>`;
		});
		let note = "";
		if (!data.management) note = __("Unacked needs RabbitMQ's management API: set eda_management_url in site_config.json (e.g. http://127.0.0.1:15672).");
		else if (data.management.error) note = __("The management API at {0} failed: {1}", [esc(data.management.url), esc(data.management.error)]);
		return `<h5>${__("Queues on {0}", [esc(data.broker)])}</h5>
			<table class="table table-condensed small"><thead><tr>
				<th>${__("Queue")}</th><th class="num">${__("Ready")}</th><th class="num">${__("Unacked")}</th>
				<th class="num">${__("Consumers")}</th><th>${__("Retry Tiers")}</th><th class="num">${__("Dead")}</th>
			</tr></thead><tbody>${rows.join("")}</tbody></table>
			${note ? `<p class="text-muted small">${note}</p>` : ""}`;
	}

	function workers(data) {
		const link = `<a href="${frappe.router.make_url(["eda-worker"])}">${__("All workers")}</a>`;
		if (!data.workers.length) return `<h5>${__("Workers")}</h5><p class="text-muted">${__("No worker has run yet: bench --site {0} eda worker.", [esc(frappe.boot.sitename || "SITE")])}</p>`;
		const rows = data.workers.map((w) => {
			const [colour, label] = STATE[w.state] || ["gray", esc(w.state)];
			return `<tr>
				<td><a href="${frappe.router.make_url(["eda-worker", w.name])}">${esc(w.worker_id)}</a></td>
				<td><span class="indicator-pill ${colour}">${label}</span></td>
				<td>${age(w.last_seen)}</td>
				<td>${age(w.started_at)}</td>
				<td class="num">${count(w.processed)}</td>
				<td class="num">${count(w.retried)}</td>
				<td class="num">${count(w.dead, true)}</td>
				<td class="small" title="${esc(w.queues.join("\n"))}">${esc(w.queues.length)}</td>
			</tr>`;
		});
		return `<h5>${__("Workers")}</h5>
			<table class="table table-condensed small"><thead><tr>
				<th>${__("Worker")}</th><th>${__("State")}</th><th>${__("Last Seen")}</th><th>${__("Started")}</th>
				<th class="num">${__("Processed")}</th><th class="num">${__("Retried")}</th><th class="num">${__("Dead")}</th><th>${__("Queues")}</th>
			</tr></thead><tbody>${rows.join("")}</tbody></table>${link}`;
	}

	function show(data) {
		box.querySelector(".eda-broker-status").innerHTML = __("checked {0}", [age(data.checked_at)]);
		box.querySelector(".eda-broker-error").innerHTML = data.error ? `<div class="alert alert-warning small">${esc(data.error)}</div>` : "";
		const told = data.notified;
		box.querySelector(".eda-broker-notified").innerHTML = told ? `<div class="${told.warn ? "alert alert-warning" : "text-muted"} small">${esc(told.message)}</div>` : "";
		box.querySelector(".eda-broker-queues").innerHTML = queues(data);
		box.querySelector(".eda-broker-workers").innerHTML = workers(data);
	}

	function load() {
		box.querySelector(".eda-broker-status").textContent = __("Loading…");
		frappe.call({
			method: "frappe_eda.desk.broker_view.broker_view",
			type: "GET",
			silent: true,
			callback: (r) => show(r.message),
			error: () => {
				box.querySelector(".eda-broker-status").textContent = "";
				box.querySelector(".eda-broker-error").innerHTML = `<div class="alert alert-warning small">${esc(__("Could not load the broker view (no permission, or the request failed)."))}</div>`;
			},
		});
	}

	box.querySelector(".eda-broker-refresh").addEventListener("click", load);
	load();
	// Refresh while the workspace shows it; the desk keeps a page left behind in the DOM, hidden.
	const timer = setInterval(() => {
		if (!root.host || !root.host.isConnected) clearInterval(timer);
		else if (root.host.offsetParent !== null && !document.hidden) load();
	}, REFRESH_MS);
})();
