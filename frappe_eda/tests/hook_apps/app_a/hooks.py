"""An app that declares publishing and a sensitive field the documented way."""

eda_publish = {
	"ToDo": [
		{"event": "after_insert", "routing_key": "todo.created", "fields": ["description", "status"]},
		{"event": "on_trash", "exchange": "audit.events"},
	],
}
eda_sensitive_fields = {"ToDo": ["description"]}
