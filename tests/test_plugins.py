"""Plugins: the example package of docs/plugins.md installed through its entry point, loose plugin
files named by a recipe, and the plugin's own test battery run by pytest in a subprocess.

The package is installed with `pip --target` into a temporary folder that only the subprocesses see
(PYTHONPATH), so the development environment is never changed.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest
import zarr

from conftest import REPO, vre
from video_pipeline.synth import make_clip
from video_pipeline.errors import RecipeError
from video_pipeline.expert import Expert, OutputSpec
from video_pipeline.recipe import load_recipe
from video_pipeline.testing import (ExpertTests, assert_same_output, check_output_array, check_output_spec,
                                    check_parameters, check_values, next_frame_deps)

DOC = REPO / "docs" / "plugins.md"


def doc_files() -> dict[str, str]:
    """The example files of docs/plugins.md: fenced code blocks whose first line is `# <file name>`."""
    files = {}
    for block in re.findall(r"```[a-z]*\n(.*?)```", DOC.read_text(), flags=re.S):
        block = textwrap.dedent(block)  # blocks inside list items are indented
        first = block.split("\n", 1)[0].strip()
        match = re.fullmatch(r"# ([\w/.-]+\.(?:py|toml|yaml))", first)
        if match:
            files[match[1]] = block
    return files


def write_files(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


@pytest.fixture(scope="module")
def docs() -> dict[str, str]:
    files = doc_files()
    assert {"pyproject.toml", "vre_mylab/experts.py", "my_experts.py", "recipe.yaml",
            "tests/test_experts.py", "test_my_experts.py"} <= set(files), sorted(files)
    return files


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory, docs) -> dict[str, str]:
    """Environment of a subprocess that has the example package installed (and nothing else changed)."""
    root = tmp_path_factory.mktemp("mylab")
    package = root / "package"
    write_files(package, {"pyproject.toml": docs["pyproject.toml"], "vre_mylab/__init__.py": "",
                          "vre_mylab/experts.py": docs["vre_mylab/experts.py"]})
    site = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    "--no-build-isolation", "--disable-pip-version-check", "--target", str(site),
                    str(package)], check=True, capture_output=True, text=True, timeout=300)
    assert (next(site.glob("vre_mylab-*.dist-info")) / "entry_points.txt").is_file()
    return {"PYTHONPATH": str(site)}


@pytest.fixture(scope="module")
def small_clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", n_frames=10, size=(32, 48))


def test_installed_package_is_discovered_through_its_entry_point(plugin_env):
    probe = ("from importlib.metadata import entry_points; "
             "print(sorted(ep.value for ep in entry_points(group='video_pipeline.experts')))")
    found = subprocess.run([sys.executable, "-c", probe], env={**os.environ, **plugin_env},
                           capture_output=True, text=True, check=True).stdout
    assert "'vre_mylab.experts'" in found and "'experts.color'" in found
    listed = vre("experts", "mylab/dark", env=plugin_env)
    assert listed.returncode == 0, listed.stderr
    assert "level: float (default 0.25)" in listed.stdout
    # the environment running these tests does not have it
    assert "vre_mylab.experts" not in {ep.value for ep in entry_points(group="video_pipeline.experts")}


def test_vre_run_with_an_installed_package_and_a_loose_plugin_file(plugin_env, docs, small_clip, tmp_path):
    write_files(tmp_path, {"recipe.yaml": docs["recipe.yaml"], "my_experts.py": docs["my_experts.py"]})
    res = vre("run", "recipe.yaml", str(small_clip), "-o", "out.zarr", "-q", cwd=tmp_path, env=plugin_env)
    assert res.returncode == 0, res.stderr
    root = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")
    rgb = root["rgb"][:]
    np.testing.assert_array_equal(root["negative"][:], 255 - rgb)
    luma = root["luma"][:].astype(np.float32)
    expected = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32) / 255
    np.testing.assert_allclose(luma[..., 0], expected, atol=2e-3)
    np.testing.assert_array_equal(root["dark"][:], (root["luma"][:] < 0.3).astype(np.uint8))
    assert 0 < root["dark"][:].mean() < 1
    attrs = root["dark"].attrs
    assert attrs["type"] == "mylab/dark" and attrs["params"] == {"level": 0.3} and attrs["deps"] == ["luma"]
    assert root["negative"].attrs["type"] == "local/invert"
    listed = vre("experts", "local/invert", "--plugins", "my_experts.py", cwd=tmp_path)
    assert listed.returncode == 0 and "writes: image uint8 x3 in [0, 255]" in listed.stdout, listed.stderr
    assert "local/invert" not in vre("experts", cwd=tmp_path).stdout  # loose files only when named


def test_only_plugin_files_the_recipe_names_are_executed(small_clip, tmp_path):
    marker = tmp_path / "imported.txt"
    (tmp_path / "planted.py").write_text(textwrap.dedent(f"""
        from pathlib import Path
        import numpy as np
        from video_pipeline import Expert, OutputSpec, register_expert
        Path({str(marker)!r}).write_text("planted.py ran")

        @register_expert("planted/zeros")
        class Zeros(Expert):
            def output(self, deps):
                return OutputSpec(channels=1, kind="binary")
            def __call__(self, frames, deps):
                return np.zeros((*frames.shape[:3], 1), np.uint8)
        """))
    (tmp_path / "silent.yaml").write_text("experts:\n  z: {type: planted/zeros}\n")
    with pytest.raises(RecipeError, match="unknown expert type 'planted/zeros'"):
        load_recipe(tmp_path / "silent.yaml")
    assert not marker.exists()  # sitting next to the recipe is not enough to be imported
    (tmp_path / "named.yaml").write_text("plugins: [planted.py]\nexperts:\n  z: {type: planted/zeros}\n")
    res = vre("run", "named.yaml", str(small_clip), "-o", "b.zarr", "-q", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert marker.read_text() == "planted.py ran"
    assert zarr.open_group(str(tmp_path / "b.zarr"), mode="r")["z"].shape == (10, 32, 48, 1)
    # a plugin file that fails to import: one line naming the recipe line and the file
    (tmp_path / "broken.py").write_text("import no_such_module_here\n")
    (tmp_path / "broken.yaml").write_text("plugins: [broken.py]\nexperts:\n  r: {type: color/rgb}\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(tmp_path / "broken.yaml")
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{tmp_path / 'broken.yaml'}:1:")
    assert "broken.py" in message and "no_such_module_here" in message


BROKEN_TESTS = '''

import numpy as np
from video_pipeline import Expert, OutputSpec, register_expert


@register_expert("mylab/overflow")
class Overflow(Expert):
    """Declares values in [0, 1] and returns up to 2: the battery must catch it."""

    def output(self, deps):
        return OutputSpec(channels=1, kind="features", dtype="float16", value_range=(0.0, 1.0))

    def __call__(self, frames, deps):
        return (frames[..., :1] / 127.5).astype(np.float16)


@register_expert("mylab/batch-smoothed")
class BatchSmoothed(Expert):
    """Averages each frame with the one before it in the batch: a frame depends on its batch mates."""

    def output(self, deps):
        return OutputSpec(channels=1, kind="features", dtype="float16", value_range=(0.0, 1.0))

    def __call__(self, frames, deps):
        grey = frames[..., :1] / 255.0
        previous = np.concatenate([grey[:1], grey[:-1]])
        return ((grey + previous) / 2).astype(np.float16)


class TestOverflow(ExpertTests):
    expert_type = "mylab/overflow"


class TestBatchSmoothed(ExpertTests):
    expert_type = "mylab/batch-smoothed"
'''


def test_plugin_battery_in_a_pytest_subprocess(plugin_env, docs, tmp_path):
    write_files(tmp_path, {"tests/test_experts.py": docs["tests/test_experts.py"] + BROKEN_TESTS,
                           "test_my_experts.py": docs["test_my_experts.py"], "my_experts.py": docs["my_experts.py"]})
    report = tmp_path / "report.xml"
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          f"--junitxml={report}", "tests/test_experts.py", "test_my_experts.py"], cwd=tmp_path,
                         env={**os.environ, **plugin_env}, capture_output=True, text=True, timeout=300)
    outcomes: dict[str, dict[str, str]] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        failed = case.find("failure") is not None or case.find("error") is not None
        outcomes.setdefault(case.get("classname").rsplit(".", 1)[-1], {})[case.get("name")] = \
            "failed" if failed else "passed"
    checks = {name for name in dir(ExpertTests) if name.startswith("test_")}
    assert outcomes["TestLuma"] == dict.fromkeys(checks, "passed"), res.stdout[-3000:]
    assert outcomes["TestDark"] == dict.fromkeys(checks, "passed"), res.stdout[-3000:]
    assert outcomes["TestInvert"] == dict.fromkeys(checks, "passed"), res.stdout[-3000:]  # a loose file
    failed = {name for name, outcome in outcomes["TestOverflow"].items() if outcome == "failed"}
    assert failed == {"test_values_in_range", "test_end_to_end_run"}, res.stdout[-3000:]
    assert "outside value_range (0.0, 1.0)" in res.stdout
    failed = {name for name, outcome in outcomes["TestBatchSmoothed"].items() if outcome == "failed"}
    assert failed == {"test_frames_are_independent_of_batching"}, res.stdout[-3000:]
    assert res.returncode == 1


def test_checks_fail_on_what_they_guard():
    spec = OutputSpec(1, "features", dtype="float16", value_range=(0.0, 1.0))
    with pytest.raises(AssertionError, match="float32, the spec says float16"):
        check_output_array(np.zeros((2, 4, 4, 1), np.float32), spec, 2)
    with pytest.raises(AssertionError, match="3 channels"):
        check_output_array(np.zeros((2, 4, 4, 3), np.float16), spec, 2)
    with pytest.raises(AssertionError, match="1 frames for 2"):
        check_output_array(np.zeros((1, 4, 4, 1), np.float16), spec, 2)
    with pytest.raises(AssertionError, match="NaN"):
        check_values(np.full((1, 2, 2, 1), np.nan, np.float16), spec)
    labels = OutputSpec(1, "semantic", classes=("a", "b"), palette=((0, 0, 0), (9, 9, 9)))
    check_values(np.ones((1, 2, 2, 1), np.uint8), labels)
    with pytest.raises(AssertionError, match="class index 2 for 2 classes"):
        check_values(np.full((1, 2, 2, 1), 2, np.uint8), labels)
    with pytest.raises(AssertionError, match="outside value_range"):
        check_values(np.full((1, 2, 2, 1), 2, np.uint8), OutputSpec(1, "binary"))
    with pytest.raises(AssertionError, match="flow output has 2 channels"):
        check_output_spec(OutputSpec(3, "flow"))
    with pytest.raises(AssertionError, match="name its classes"):
        check_output_spec(OutputSpec(1, "semantic"))
    with pytest.raises(AssertionError, match="class map is stored as uint8"):
        check_output_spec(OutputSpec(1, "semantic", dtype="float16", classes=("a",), palette=((1, 2, 3),)))
    check_output_spec(labels)
    a = np.zeros((2, 3, 3, 1), np.float16)
    assert_same_output(a, a + np.float16(0.005), atol=0.01)
    with pytest.raises(AssertionError, match="differ by up to 0.09998"):
        assert_same_output(a, a + np.float16(0.1), atol=0.01)
    with pytest.raises(AssertionError, match="50.00% of values differ"):
        assert_same_output(np.array([0, 1], np.uint8), np.array([0, 2], np.uint8), atol=0)

    class Unannotated(Expert):
        def __init__(self, k=3):
            self.k = k

    class WrongDefault(Expert):
        def __init__(self, k: int = 0.5):
            self.k = k

    class Fine(Expert):
        def __init__(self, classes: list[str], k: int | None = None, names: list[str] = ("a",)):
            self.k = k

    with pytest.raises(AssertionError, match="'k' has no annotation"):
        check_parameters(Unannotated)
    with pytest.raises(AssertionError, match="default of 'k'"):
        check_parameters(WrongDefault)
    check_parameters(Fine)


def test_next_frame_inputs_follow_the_runner_convention():
    frames = np.arange(4, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    extra = next_frame_deps(frames)
    assert extra["next_frames"][:, 0, 0, 0].tolist() == [1, 2, 3, 2]
    assert extra["next_sign"].tolist() == [1, 1, 1, -1] and extra["next_sign"].dtype == np.float32
