"""What a new user installs: ranges, never one release, and CI running exactly the README's commands."""
from __future__ import annotations

import re
import tomllib

import pytest

from conftest import REPO

packaging = pytest.importorskip("packaging.requirements")


def requirements() -> dict:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]
    return {r.name: r for r in map(packaging.Requirement, deps)}


def test_dependencies_are_ranges_that_keep_an_installed_cpu_torch():
    reqs = requirements()
    pinned = [str(r) for r in reqs.values() if any(s.operator in ("==", "===") for s in r.specifier)]
    assert not pinned, f"pinned to one release: {pinned} (a library declares ranges; CI pins in .ci/constraints.txt)"
    # a CPU build from download.pytorch.org (local version +cpu) of this or the previous release is kept
    for name, versions in {"torch": ("2.13.0+cpu", "2.14.1+cpu", "2.14.1"),
                           "torchvision": ("0.28.0+cpu", "0.29.1+cpu", "0.29.1")}.items():
        for version in versions:
            assert reqs[name].specifier.contains(version), f"{name} {version} is refused by {reqs[name]}"


def test_ci_runs_the_readme_install_and_test_commands_verbatim():
    readme = (REPO / "README.md").read_text()
    block = re.search(r"\*\*Run the tests\*\*.*?```bash\n(.*?)\n```", readme, re.S).group(1)
    commands = [c.strip() for c in block.split("&&")]
    ci = (REPO / ".ci" / "run").read_text()
    ci_lines = {line.strip().replace("pip install -q ", "pip install ") for line in ci.splitlines()}
    for command in commands[2:]:  # after making and activating the venv, which CI does its own way
        assert command in ci_lines, f"README's '{command}' is not what .ci/run runs"
    constraints = (REPO / ".ci" / "constraints.txt").read_text()
    reqs = requirements()
    for line in constraints.splitlines():
        if line and not line.startswith("#"):
            pin = packaging.Requirement(line)
            assert reqs[pin.name].specifier.contains(next(iter(pin.specifier)).version), line
