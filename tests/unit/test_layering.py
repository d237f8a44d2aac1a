"""The core and the standalone stores must never need Frappe: they run in plain services."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FRAMEWORK_FREE = [
	"frappe_eda/messaging",
	"frappe_eda/stores/memory.py",
	"frappe_eda/stores/sql.py",
	"frappe_eda/stores/sql_schema.py",
	"frappe_eda/testing",
	"frappe_eda/cli",
]


def _modules() -> list[Path]:
	found = []
	for entry in FRAMEWORK_FREE:
		path = ROOT / entry
		found += sorted(path.rglob("*.py")) if path.is_dir() else [path]
	return found


def test_no_core_module_imports_frappe() -> None:
	offenders = []
	for path in _modules():
		for node in ast.walk(ast.parse(path.read_text())):
			names = []
			if isinstance(node, ast.Import):
				names = [alias.name for alias in node.names]
			elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
				names = [node.module]
			offenders += [
				f"{path.relative_to(ROOT)}: {n}" for n in names if n == "frappe" or n.startswith("frappe.")
			]
	assert offenders == []
	assert len(_modules()) > 15


def test_core_modules_import_with_frappe_unimportable(tmp_path: Path) -> None:
	(tmp_path / "frappe.py").write_text("raise ImportError('frappe must not be imported by the core')\n")
	modules = [
		".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
		for p in _modules()
		if p.name != "__main__.py"  # importing it runs the command
	]
	script = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
	result = subprocess.run(
		[sys.executable, "-c", script, *modules],
		env={"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin"},
		capture_output=True,
		text=True,
	)
	assert result.returncode == 0, result.stderr
