app_name = "frappe_eda"
app_title = "Frappe EDA"
app_publisher = "frappe_eda developers"
app_description = "Event-driven messaging over RabbitMQ: outbox, worker, retries, dead-letter and replay"
app_email = "developers@frappe-eda.invalid"
app_license = "mit"
required_apps = ["frappe"]
