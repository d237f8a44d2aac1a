"""An app that gives a bare dict spec (Frappe merges it field by field) and a string field name."""

eda_publish = {
	"ToDo": [{"event": "on_update", "to": "warehouse", "condition": "doc.status == 'Open'"}],
	"Note": {"event": "after_insert", "fields": "title, public", "routing_key": "note.added"},
}
eda_sensitive_fields = {"ToDo": "assigned_by", "*": ["_comments"]}
