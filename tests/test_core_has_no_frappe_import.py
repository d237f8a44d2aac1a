"""The core, the standalone stores and the test helper run in plain Python services: no Frappe.

Checked twice: statically (no import statement names frappe, nor does importlib) and at run time
(every module imports in a fresh interpreter where ``import frappe`` raises).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FRAMEWORK_FREE = ("frappe_eda/messaging", "frappe_eda/stores", "frappe_eda/testing", "frappe_eda/cli")
# The one store that is Frappe by design keeps messages in DocTypes: ``stores/doctype_store.py`` and the
# modules it is split into, all named ``stores/doctype_*.py``.
FRAPPE_STORE = "frappe_eda/stores/doctype_"


def core_files() -> list[Path]:
	files = [path for folder in FRAMEWORK_FREE for path in sorted((ROOT / folder).rglob("*.py"))]
	# A __main__ module runs its command when imported; its imports are the package's anyway.
	return [
		p
		for p in files
		if not p.relative_to(ROOT).as_posix().startswith(FRAPPE_STORE) and p.name != "__main__.py"
	]


def module_name(path: Path) -> str:
	return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def is_frappe(name: str) -> bool:
	return name == "frappe" or name.startswith("frappe.")


def frappe_imports(source: str) -> list[str]:
	"""Every way ``source`` names frappe in an import, with its line."""
	found = []
	for node in ast.walk(ast.parse(source)):
		names: list[str] = []
		if isinstance(node, ast.Import):
			names = [alias.name for alias in node.names]
		elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
			names = [node.module]
		elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
			function = node.func
			called = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", "")
			if called in ("import_module", "__import__") and isinstance(node.args[0].value, str):
				names = [node.args[0].value]
		found += [f"line {node.lineno}: {name}" for name in names if is_frappe(name)]
	return found


def test_the_detector_catches_every_spelling() -> None:
	source = "\n".join(
		[
			"import frappe",
			"import os, frappe.utils as fu",
			"from frappe import _",
			"from frappe.model.document import Document",
			"importlib.import_module('frappe.defaults')",
			"__import__('frappe')",
			"import frappe_eda.messaging, frappeish",
			"from frappe_eda import frappe",
			"from . import frappe",
		]
	)
	assert frappe_imports(source) == [
		"line 1: frappe",
		"line 2: frappe.utils",
		"line 3: frappe",
		"line 4: frappe.model.document",
		"line 5: frappe.defaults",
		"line 6: frappe",
	]


def test_no_core_module_imports_frappe() -> None:
	files = core_files()
	assert len(files) >= 20, [str(p) for p in files]  # the walk found the packages
	offenders = {p.relative_to(ROOT).as_posix(): frappe_imports(p.read_text()) for p in files}
	assert {path: found for path, found in offenders.items() if found} == {}


IMPORT_ALL = """
import importlib, sys, traceback
failed = []
for name in sys.argv[1:]:
	try:
		importlib.import_module(name)
	except BaseException:
		failed.append(name + ":\\n" + traceback.format_exc())
if "frappe" in sys.modules:
	failed.append("frappe ended up in sys.modules")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def import_with_frappe_poisoned(
	tmp_path: Path, modules: list[str], *extra_paths: Path
) -> subprocess.CompletedProcess:
	"""Import ``modules`` in a fresh interpreter whose ``frappe`` package raises when imported.

	It raises RuntimeError, not ImportError, so a ``try: import frappe / except ImportError`` cannot hide it.
	"""
	poison = tmp_path / "poison" / "frappe"
	poison.mkdir(parents=True)
	(poison / "__init__.py").write_text(
		"raise RuntimeError('frappe imported from the framework-free core')\n"
	)
	path = ":".join(str(p) for p in (poison.parent, *extra_paths, ROOT))
	return subprocess.run(
		[sys.executable, "-c", IMPORT_ALL, *modules],
		env={"PYTHONPATH": path, "PATH": "/usr/bin:/bin"},
		capture_output=True,
		text=True,
		timeout=120,
	)


def test_every_core_module_imports_while_frappe_cannot_be_imported(tmp_path: Path) -> None:
	modules = [module_name(p) for p in core_files()]
	assert "frappe_eda.testing" in modules and "frappe_eda.stores.memory" in modules
	result = import_with_frappe_poisoned(tmp_path, modules)
	assert result.returncode == 0, result.stdout + result.stderr


def test_the_runtime_check_would_catch_a_module_that_imports_frappe(tmp_path: Path) -> None:
	guilty = tmp_path / "pkg"
	guilty.mkdir()
	(guilty / "sneaky.py").write_text("try:\n\timport frappe\nexcept ImportError:\n\tfrappe = None\n")
	result = import_with_frappe_poisoned(tmp_path, ["frappe_eda.messaging", "sneaky"], guilty)
	assert result.returncode == 1
	assert "sneaky" in result.stdout and "frappe imported from the framework-free core" in result.stdout
