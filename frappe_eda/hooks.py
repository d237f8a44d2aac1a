app_name = "frappe_eda"
app_title = "Frappe EDA"
app_publisher = "frappe_eda developers"
app_description = "Event-driven messaging over RabbitMQ: outbox, worker, retries, dead-letter and replay"
app_email = "developers@frappe-eda.invalid"
app_license = "mit"

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
		)
	}
}

after_install = "frappe_eda.setup.install.after_install"

scheduler_events = {
	# Re-drive outbox messages that no relay picked up (the relay itself is woken after each commit).
	"cron": {"* * * * *": ["frappe_eda.outbox.relay.relay_stale"]},
	"hourly": ["frappe_eda.desk.notifications.send_failure_digest"],
	"daily": ["frappe_eda.desk.retention.apply_retention"],
}

# Log Settings may also clear finished EDA Messages (Failed and Dead are kept until resolved).
default_log_clearing_doctypes = {"EDA Message": 30}
