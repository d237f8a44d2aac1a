"""An app whose entries cannot work: each is reported and skipped, the good one still counts."""

eda_publish = {
	"ToDo": [
		"on_update",
		{"event": "on_explode"},
		{"event": "on_update", "fields": 5},
		{"event": "on_submit", "routing_key": ["not", "text"]},
		{"event": "on_cancel", "routing_key": "todo.cancelled"},
	],
	"": [{"event": "on_update"}],
}
eda_sensitive_fields = {"ToDo": [None, "priority"]}
