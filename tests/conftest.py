"""Shared fixtures: paths to ../shared assets (skip when absent) and small generated clips."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Tests run tiny models on a 2-core CI machine: one intra-op thread each avoids torch's worker
# threads spinning for a core (measured 3x slower suite). Subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
RECIPES = REPO / "recipes"


def pytest_addoption(parser):
    parser.addoption("--device", default=os.environ.get("VRE_TEST_DEVICE", "cpu"),
                     help="device for learned experts in tests: cpu (default), cuda, cuda:N, mps")


def pytest_configure(config):
    os.environ["VRE_TEST_DEVICE"] = config.getoption("--device")


def run_device() -> str:
    """The device learned experts run on in tests (`pytest --device cuda`)."""
    return os.environ.get("VRE_TEST_DEVICE", "cpu")


def shared_path(*parts: str) -> Path:
    """A file under ../shared, or skip the test saying what is missing."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (real data/weights live in ../shared on development machines)")
    return path


@pytest.fixture(scope="session")
def clip(tmp_path_factory) -> Path:
    """A 48-frame 180x320 H.264 clip of a synthetic moving scene."""
    from video_pipeline.synth import make_clip

    return make_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", n_frames=48, size=(180, 320))


def write_recipe(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def vre(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 300):
    """Run the real `vre` command in a subprocess; returns CompletedProcess (text)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "video_pipeline.cli", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
