"""The layering the packages' README.md files state, checked on every module's imports.

Pure core at the bottom, adapters above it, services above those, the API and the command line on top:
a package imports only what ``ALLOWED`` gives it, and each README.md says the same.
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SERVICES = {"collector", "kpi_engine", "edge_agent", "simulators", "reports", "evidence", "dashboards"}
# Package → the packages of ours it may import. Reports and evidence read the engine's results (kpi_engine),
# never the API's.
ALLOWED: dict[str, set[str]] = {
    "pilot_core": set(),
    "device_profiles": set(),
    "adapters": {"pilot_core"},
    "collector": {"pilot_core", "adapters"},
    "kpi_engine": {"pilot_core", "adapters"},
    "edge_agent": {"pilot_core", "adapters"},
    "simulators": {"pilot_core", "adapters"},
    "dashboards": {"pilot_core", "adapters"},
    "reports": {"pilot_core", "adapters", "kpi_engine"},
    "evidence": {"pilot_core", "adapters", "kpi_engine"},
    "api": {"pilot_core", "adapters", *SERVICES},
    "pilot": {"pilot_core", "adapters", *SERVICES, "api"},
    "bench": {"pilot_core", "adapters", *SERVICES, "api", "pilot"},  # the console's pages: the app, the demo
    "tests": {"pilot_core", "adapters", *SERVICES, "api", "pilot", "bench"},
}
PACKAGES = sorted(p.name for p in REPO.iterdir() if (p / "__init__.py").is_file())


def imports_of(package: str) -> dict[str, list[str]]:
    """Each package of ours that ``package`` imports (at any depth, lazily or for typing too) → where."""
    found: dict[str, list[str]] = {}
    for path in sorted((REPO / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".", 1)[0]
                if top in PACKAGES and top != package:
                    found.setdefault(top, []).append(f"{path.relative_to(REPO)}:{node.lineno} imports {module}")
    return found


def readme_line(package: str, label: str) -> str | None:
    text = (REPO / package / "README.md").read_text(encoding="utf-8")
    return next((line for line in text.splitlines() if line.startswith(f"- {label}:")), None)


def named(line: str) -> set[str]:
    return set(re.findall(r"`([a-z_]+)`", line))


def test_every_package_is_in_the_table_and_has_a_short_readme() -> None:
    assert set(PACKAGES) == set(ALLOWED), "a new top-level package needs its row in ALLOWED and a README.md"
    for package in PACKAGES:
        readme = REPO / package / "README.md"
        assert readme.is_file(), f"{package} has no README.md"
        assert len(readme.read_text(encoding="utf-8").splitlines()) <= 10, f"{readme} is longer than ten lines"


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_the_readme_states_the_rule_of_the_table(package: str) -> None:
    may = readme_line(package, "May import")
    assert may is not None, f"{package}/README.md has no '- May import:' line"
    assert named(may) == ALLOWED[package]
    users = {p for p, allowed in ALLOWED.items() if package in allowed}
    only = readme_line(package, "Imported only by")
    never = readme_line(package, "Never imported by")
    assert (only is None) != (never is None), f"{package}/README.md says who imports it exactly once"
    if only is not None:
        assert named(only) == users
    if never is not None:
        assert named(never) == set(ALLOWED) - users - {package}
    assert readme_line(package, "Tests") and readme_line(package, "Start reading")


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_package_imports_only_what_its_layer_allows(package: str) -> None:
    upward = {top: where for top, where in imports_of(package).items() if top not in ALLOWED[package]}
    assert not upward, f"{package} may import only {sorted(ALLOWED[package])}:\n" + "\n".join(
        line for where in upward.values() for line in where
    )


def test_every_package_folder_is_installed() -> None:
    """The Dockerfile installs the project without -e: a folder missing from the packages list is left out."""
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(REPO).parts)
        for package in PACKAGES
        if package != "tests"
        for init in (REPO / package).rglob("__init__.py")
    }
    assert found <= listed, f"missing from [tool.setuptools] packages in pyproject.toml: {sorted(found - listed)}"
