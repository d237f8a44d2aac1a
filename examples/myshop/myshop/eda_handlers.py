import frappe
from frappe_eda.messaging import PermanentFailure, subscribe


@subscribe("myshop.todo.after_insert", queue="myshop.notes", exchange="myshop.events")
def note_from_todo(message):
	todo = message.payload  # the rule's fields, plus doctype, name, docstatus, modified and owner
	title = frappe.utils.strip_html(todo["description"]).strip()[:140]
	if frappe.db.exists("Note", {"title": title}):
		# Retrying cannot help: Dead at once. Rename that Note, then replay this message.
		raise PermanentFailure(f"a Note titled {title!r} already exists")
	frappe.get_doc({"doctype": "Note", "title": title, "content": f"From ToDo {todo['name']}"}).insert()
	# No frappe.db.commit(): the worker commits the Note with the message's record, then acks.
