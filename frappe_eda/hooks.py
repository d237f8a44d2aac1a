app_name = "frappe_eda"
app_title = "Frappe EDA"
app_publisher = "frappe_eda developers"
app_description = "Event-driven messaging over RabbitMQ: outbox, worker, retries, dead-letter and replay"
app_email = "developers@frappe-eda.invalid"
app_license = "mit"

# Desk helpers the EDA Message / EDA Error scripts and the EDA Failure Groups report share (how stored
# producer text is shown, awaiting a replay job). An esbuild bundle: `bench build --app frappe_eda`
# writes it to public/dist with a hashed name, so browsers never keep a stale copy after an upgrade.
app_include_js = ["frappe_eda.bundle.js"]

# --- publishing: every document event may match an EDA Event Rule or an app's eda_publish hook ---
doc_events = {
	"*": {
		event: "frappe_eda.outbox.doc_events.on_document_event"
		for event in (
			"after_insert",
			"on_update",
			"on_submit",
			"on_cancel",
			"on_trash",
			"on_update_after_submit",
			"on_change",  # published only after db_set (frappe_eda.outbox.doc_events)
			"after_rename",
		)
	}
}

# Secrets of Frappe's own DocTypes that are not Password fields (those are never sent anyway): never in
# a payload. Frappe merges this dict with every other app's eda_sensitive_fields.
eda_sensitive_fields = {
	"User": ["reset_password_key", "api_key"],
	"OAuth Bearer Token": ["access_token", "refresh_token"],
	"OAuth Authorization Code": ["authorization_code", "code_challenge"],
	"OAuth Client": ["client_secret"],
}

after_install = "frappe_eda.setup.install.after_install"
# The roles are ensured on every migrate too: a site that lost one (or was restored without it) gets it back.
after_migrate = "frappe_eda.setup.install.after_migrate"

# EDA Messages and Errors are history about a document, not links that keep it alive: deleting the
# document (even one whose on_trash rule just wrote a message) must not raise LinkExistsError.
ignore_links_on_delete = ["EDA Message", "EDA Error", "EDA Receipt", "EDA Replica"]

# A message's payload is a copy of its document: readers need read permission on that document, or
# the EDA Manager / System Manager role (frappe_eda.desk.access).
has_permission = {
	"EDA Message": "frappe_eda.desk.access.message_has_permission",
	"EDA Error": "frappe_eda.desk.access.error_has_permission",
}
permission_query_conditions = {
	"EDA Message": "frappe_eda.desk.access.message_query_conditions",
	"EDA Error": "frappe_eda.desk.access.error_query_conditions",
}
# Frappe's frappe.client.get_count skips permissions: for EDA's DocTypes ours applies them (it delegates
# to Frappe's for every other DocType).
override_whitelisted_methods = {"frappe.client.get_count": "frappe_eda.desk.access.get_count"}

# Outcomes of desk replay jobs, polled by the desk: a cache clear (a role change, bench clear-cache)
# must not make a running replay look lost. They expire on their own after an hour.
persistent_cache_keys = ["eda:replay-job:*"]

scheduler_events = {
	# Re-drive outbox messages that no relay picked up (the relay itself is woken after each commit).
	"cron": {
		"* * * * *": ["frappe_eda.outbox.relay.relay_stale"],
		# Reconciliation: finish open runs, start those each subscription's reconcile_every says are due.
		"*/5 * * * *": ["frappe_eda.replication.reconcile.scheduled"],
	},
	"hourly": ["frappe_eda.desk.notifications.send_failure_digest"],
	"daily": ["frappe_eda.desk.retention.apply_retention"],
}

# Log Settings may also clear finished EDA Messages (Failed and Dead are kept until resolved).
default_log_clearing_doctypes = {"EDA Message": 30, "EDA Receipt": 90}
