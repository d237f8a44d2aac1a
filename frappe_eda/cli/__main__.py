from frappe_eda.cli import run

run()
