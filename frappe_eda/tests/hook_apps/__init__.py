"""hooks.py modules of pretend apps, read with Frappe's own loader (``frappe.get_hooks(app_name=...)``)
and merged with Frappe's own ``append_hook``, as Frappe merges the hooks of several installed apps."""
