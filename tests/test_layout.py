"""The packages and what may import what, as the README's architecture section draws them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The plain modules at the package root: what everything shares, each a concept of its own.
ROOT_MODULES = {"app", "extensions", "settings", "states", "models", "shapes", "changes"}

# Each part, and the parts it may import besides itself and the root modules (which any may).
MAY_IMPORT: dict[str, set[str]] = {
    "root": set(),
    "infra": set(),
    "sandbox": set(),
    "depositphotos": {"infra"},
    "archive": {"infra"},
    "services": {"infra", "depositphotos", "archive"},
    # The builder of what the app and the workers share, and the app factory.
    "extensions": {"infra", "depositphotos", "archive", "services"},
    "app": {"infra", "archive", "extensions", "web"},
    "web": {"infra", "depositphotos", "archive", "services", "extensions"},
    "workers": {"infra", "depositphotos", "archive", "services", "extensions"},
    # The command line starts every part; the HTTP client and prompt files stay out of them.
    "tools.cli": {"infra", "archive", "services", "extensions", "workers", "sandbox", "tools"},
    "tools": {"infra"},
    "__main__": {"tools.cli"},
}


def _part(module: str) -> str | None:
    """The part a module belongs to, None outside the project."""
    names = module.split(".")
    if names[0] == "workers":
        return "workers"
    if names[0] != "webhook_app":
        return None
    if len(names) == 1:
        return "root"
    if names[1] == "tools" and len(names) > 2 and names[2] == "cli":
        return "tools.cli"
    if names[1] in ("app", "extensions", "__main__"):
        return names[1]
    if (ROOT / "webhook_app" / names[1]).is_dir():
        return names[1]
    return "root"


def _modules() -> list[tuple[str, Path]]:
    found = []
    for package in ("webhook_app", "workers"):
        for path in sorted((ROOT / package).rglob("*.py")):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found.append((module.removesuffix(".__init__"), path))
    return found


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_the_package_root_holds_only_the_shared_concepts() -> None:
    plain = {
        path.stem
        for path in (ROOT / "webhook_app").glob("*.py")
        if path.stem not in {"__init__", "__main__"}
    }
    assert plain <= ROOT_MODULES


@pytest.mark.parametrize(("module", "path"), _modules(), ids=lambda value: str(value))
def test_each_module_imports_only_what_its_part_may(module: str, path: Path) -> None:
    part = _part(module)
    assert part is not None
    # The sandbox plays the other side of the wire: not even the root modules.
    allowed = MAY_IMPORT[part] | {part} | ({"root"} if part != "sandbox" else set())
    wrong = sorted(
        name
        for name in _imports(path)
        if (target := _part(name)) is not None and target not in allowed
    )
    assert not wrong, f"{module} ({part}) may not import {wrong}"


def test_every_package_says_what_lives_there_and_who_may_import_it() -> None:
    for init in sorted((ROOT / "webhook_app").glob("*/__init__.py")):
        docstring = ast.get_docstring(ast.parse(init.read_text()))
        assert docstring, f"{init.parent.name} has no docstring"
