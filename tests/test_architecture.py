"""The tree's dependency rules, each checked on the real tree and proven able to fail:

* the event model (common/: schema, TTPHash, renderers, wire) imports no delivery, CLI or
  platform code;
* common/ imports no platform package and no collector;
* the platform packages do not import each other;
* the sensor reaches the collector only through its application layer (sensor_linux/app.py,
  the embedded local collector); the collector imports no platform package.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

MODEL = {"schema", "ttphash", "percent", "ecs", "qlog", "render", "wire", "jsonin",
         "proctable", "process_event", "filehash"}
PLATFORMS = ("sensor_linux", "sensor_windows")


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside functions (``from common import
    wire`` counts as ``common.wire``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant)):
            names.add(str(node.args[0].value))
    return names


def _breaks(files: list[Path], forbidden, base: Path = ROOT) -> dict[str, list[str]]:
    """File -> the imports of it that ``forbidden(module)`` refuses."""
    found = {}
    for path in files:
        bad = sorted(n for n in _imports(path) if forbidden(n))
        if bad:
            found[str(path.relative_to(base))] = bad
    return found


def _package(name: str, base: Path = ROOT) -> list[Path]:
    files = sorted((base / name).rglob("*.py"))
    assert files, name
    return files


def _model_rule(module: str) -> bool:
    top = module.split(".")
    if top[0] in ("click", "nats", "psycopg") or top[0] in PLATFORMS + ("collector",):
        return True
    return top[0] == "common" and len(top) > 1 and top[1] not in MODEL


def _model_files(base: Path = ROOT) -> list[Path]:
    return [base / "common" / f"{name}.py" for name in sorted(MODEL)]


def _common_rule(module: str) -> bool:
    return module.split(".")[0] in PLATFORMS + ("collector",)


def _platform_rule(own: str):  # noqa: ANN202
    return lambda module: module.split(".")[0] in PLATFORMS and module.split(".")[0] != own


def _sensor_files(base: Path = ROOT) -> list[Path]:
    app = base / "sensor_linux" / "app.py"
    return [p for name in PLATFORMS for p in _package(name, base) if p != app]


def _collector_rule(module: str) -> bool:
    return module.split(".")[0] == "collector"


def test_the_event_model_imports_no_delivery_cli_or_platform_code() -> None:
    assert _breaks(_model_files(), _model_rule) == {}


def test_common_imports_no_platform_package_or_collector() -> None:
    assert _breaks(_package("common"), _common_rule) == {}


def test_platform_packages_do_not_import_each_other() -> None:
    for own in PLATFORMS:
        assert _breaks(_package(own), _platform_rule(own)) == {}


def test_only_the_application_layer_reaches_the_collector() -> None:
    assert _breaks(_sensor_files(), _collector_rule) == {}
    assert _breaks(_package("collector"), lambda m: m.split(".")[0] in PLATFORMS) == {}
    assert _breaks([ROOT / "sensor_linux" / "app.py"], _collector_rule)  # the one that does


def test_every_rule_can_fail(tmp_path) -> None:
    """A tree that breaks each rule once: each check finds exactly its break."""
    bad = {"common/schema.py": "from common import sinks\n",
           "common/render.py": "import click\n",
           "common/spool.py": "from sensor_linux import procfs\n",
           "sensor_linux/x.py": "from sensor_windows import pe\n",
           "sensor_windows/y.py": "import importlib\nimportlib.import_module('sensor_linux.cli')\n",
           "sensor_linux/z.py": "def f():\n    from collector.store import Store\n",
           "collector/w.py": "from sensor_linux.enrich import Enricher\n"}
    for name, text in bad.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    for name in MODEL - {"schema", "render"}:
        (tmp_path / "common" / f"{name}.py").write_text("import json\n")
    model = [p for p in _model_files(tmp_path) if p.exists()]
    assert set(_breaks(model, _model_rule, tmp_path)) == {"common/schema.py",
                                                          "common/render.py"}
    assert set(_breaks(_package("common", tmp_path), _common_rule, tmp_path)) == {
        "common/spool.py"}
    assert set(_breaks(_package("sensor_linux", tmp_path), _platform_rule("sensor_linux"),
                       tmp_path)) == {"sensor_linux/x.py"}
    assert set(_breaks(_package("sensor_windows", tmp_path), _platform_rule("sensor_windows"),
                       tmp_path)) == {"sensor_windows/y.py"}
    assert set(_breaks(_sensor_files(tmp_path), _collector_rule, tmp_path)) == {
        "sensor_linux/z.py"}
    assert set(_breaks(_package("collector", tmp_path),
                       lambda m: m.split(".")[0] in PLATFORMS, tmp_path)) == {"collector/w.py"}
