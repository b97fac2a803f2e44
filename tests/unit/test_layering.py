"""The layering of the design: who may import whom (go-containerregistry's depcheck idea).

cli -> (commands) -> (images, containers, build) -> (storage, rootless) -> oci.
Checked on the source text, so it also catches imports inside functions.
"""

from __future__ import annotations

import ast
import os

PBOX = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))), "pbox")


def _imports(path: str) -> set[str]:
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def _modules():
    for dirpath, _, files in os.walk(PBOX):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, os.path.dirname(PBOX))
                yield rel.replace(os.sep, "/"), _imports(path)


def _hits(imports: set[str], prefixes: tuple[str, ...]) -> set[str]:
    return {i for i in imports if any(i == p or i.startswith(p + ".") for p in prefixes)}


def test_oci_is_pure():
    for rel, imports in _modules():
        if rel.startswith("pbox/oci/"):
            bad = _hits(imports, ("pbox.storage", "pbox.rootless", "click", "pbox.cli",
                                  "pbox.commands", "pbox.images", "pbox.pull", "pbox.containers",
                                  "ctypes"))
            assert not bad, f"{rel} imports {bad}"


def test_only_the_cli_imports_click():
    for rel, imports in _modules():
        if rel == "pbox/cli.py" or rel.startswith("pbox/commands/"):
            continue
        assert not _hits(imports, ("click",)), f"{rel} imports click"


def test_nothing_imports_the_cli():
    for rel, imports in _modules():
        if rel == "pbox/cli.py" or rel.startswith("pbox/commands/") or rel == "pbox/__main__.py":
            continue
        bad = _hits(imports, ("pbox.cli", "pbox.commands"))
        assert not bad, f"{rel} imports {bad}"


def test_ctypes_only_in_the_syscalls_and_nativesha_modules():
    # (nativesha.py binds sha256 for oci/, which must not import rootless/)
    for rel, imports in _modules():
        if rel in ("pbox/rootless/syscalls.py", "pbox/oci/nativesha.py"):
            continue
        assert not _hits(imports, ("ctypes", "_ctypes")), f"{rel} imports ctypes"


def test_storage_and_rootless_know_nothing_above_them():
    above = ("pbox.images", "pbox.pull", "pbox.imageinfo", "pbox.containers", "pbox.build",
             "pbox.cli", "pbox.commands", "click")
    for rel, imports in _modules():
        if rel.startswith(("pbox/storage/", "pbox/rootless/")):
            bad = _hits(imports, above)
            assert not bad, f"{rel} imports {bad}"
        if rel.startswith("pbox/rootless/"):
            bad = _hits(imports, ("pbox.oci.registry", "requests"))
            assert not bad, f"{rel} imports {bad}"


def test_the_check_sees_violations(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("def f():\n    import click\n    from pbox.storage import store\n")
    assert _hits(_imports(str(bad)), ("click",)) == {"click"}
    assert _hits(_imports(str(bad)), ("pbox.storage",)) == {"pbox.storage"}
