"""The tree's dependency rule: common/ never imports a platform package or the collector."""

from __future__ import annotations

import ast

from tests.conftest import ROOT

FORBIDDEN = ("sensor_linux", "sensor_windows", "collector")


def _imports(path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant)):
            names.add(str(node.args[0].value))
    return names


def test_common_imports_no_platform_package() -> None:
    files = sorted((ROOT / "common").rglob("*.py"))
    assert files
    offenders = {str(f.relative_to(ROOT)): sorted(n for n in _imports(f)
                                                  if n.split(".")[0] in FORBIDDEN)
                 for f in files}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_check_itself_detects_a_forbidden_import(tmp_path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import importlib\nfrom sensor_linux import procfs\n"
                   "importlib.import_module('collector.store')\n")
    assert {"sensor_linux", "collector.store"} <= _imports(bad)
