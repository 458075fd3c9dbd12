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


def vre_python() -> Path:
    """The Python of a separate venv with VRE (video-representations-extractor) installed: $VRE_PYTHON,
    else `vre-venv/` beside the shared folder; skips the test when there is none."""
    candidates = [os.environ.get("VRE_PYTHON", ""), SHARED.resolve().parent / "vre-venv" / "bin" / "python"]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    pytest.skip("VRE (video-representations-extractor) is not installed: set VRE_PYTHON to the python of "
                "a venv where `pip install video-representations-extractor` ran")


def run_vre_oracle(nodes: str | list[str], inputs: dict, folder: Path, params: dict | None = None):
    """VRE's output for a node on `inputs`, or {node: output} for a list of nodes, from one VRE
    process (see benchmarks/vre_oracle.py); skips without VRE."""
    import json

    import numpy as np

    python = vre_python()
    src, dst = folder / "oracle_in.npz", folder / "oracle_out.npz"
    np.savez(src, **inputs)
    names = [nodes] if isinstance(nodes, str) else list(nodes)
    r = subprocess.run([str(python), str(REPO / "benchmarks" / "vre_oracle.py"), ";".join(names), str(src),
                        str(dst), json.dumps(params or {})], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    outputs = dict(np.load(dst))
    return outputs[nodes] if isinstance(nodes, str) else outputs


def write_recipe(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def vre(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 300):
    """Run the real `vre` command in a subprocess; returns CompletedProcess (text)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "video_pipeline.cli", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def one_thread():
    """Torch on one thread for the test: tiny models run fastest that way, and two threads fight over
    a busy 2-core runner. Modules opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_store(path: Path, arrays: dict, shard_frames: int = 4) -> Path:
    """A store of {name: (data [T, H, W, C], attrs)}, every frame done."""
    from video_pipeline.store import ArraySpec, VideoStore

    n, h, w = next(iter(arrays.values()))[0].shape[:3]
    store = VideoStore.open(path, "w")
    store.init_meta({"experts": {}}, "test", {"path": "synthetic", "n_frames": n, "fps": 1.0, "height": h,
                                              "width": w}, "test", shard_frames, (h, w))
    for name, (data, attrs) in arrays.items():
        store.write_array(ArraySpec(name, data.shape[-1], str(data.dtype), attrs), data)
    return path
