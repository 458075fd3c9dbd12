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


def run_vre_oracle(nodes: list[str], inputs: dict, folder: Path, params: dict | None = None,
                   env: dict | None = None) -> dict:
    """{node: VRE's output} for `nodes` on `inputs`, from one VRE process (benchmarks/vre_oracle.py);
    skips without VRE."""
    import json

    import numpy as np

    python = vre_python()
    src, dst = folder / "oracle_in.npz", folder / "oracle_out.npz"
    np.savez(src, **inputs)
    r = subprocess.run([str(python), str(REPO / "benchmarks" / "vre_oracle.py"), ";".join(nodes), str(src),
                        str(dst), json.dumps(params or {})], capture_output=True, text=True, timeout=600,
                       env={**os.environ, **(env or {})})
    assert r.returncode == 0, r.stderr[-2000:]
    return dict(np.load(dst))


# VRE's derived tasks of the semantic_mapper example compared by tests/test_dronescapes.py
VRE_MAPPER_NODES = ("buildings", "sky-and-water", "transportation", "containing", "vegetation", "buildings(nearby)",
                    "safe-landing-no-sseg", "safe-landing-semantics")


@pytest.fixture(scope="session")
def vre_reference(tmp_path_factory):
    """Inputs and VRE's outputs for every node the tests compare, from one VRE process (its start-up
    is most of the cost). Returns (inputs, outputs); skips without VRE. Mapper nodes need VRE's git
    repository ($VRE_GIT_DIR): without it they are absent from the outputs."""
    import numpy as np

    from video_pipeline.synth import scene_frames

    vre_python()  # skips first when VRE is absent
    folder = tmp_path_factory.mktemp("vre_reference")
    rng = np.random.default_rng(1)
    n, h, w = 3, 48, 64
    frames = np.concatenate([scene_frames(2, (h, w), seed=3), rng.integers(0, 256, (1, h, w, 3), dtype=np.uint8)])
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    ground = 1.0 / (0.5 + np.mgrid[0:h, 0:w][0] / h)  # farther up the frame, as an oblique view
    depth = np.stack([ground * (1 - 0.1 * np.sin((9 + k) * xx) * np.cos(7 * yy)) for k in range(n)])
    inputs = {"frames": frames, "depth_marigold": (depth / depth.max()).astype(np.float32)[..., None],
              "normals_svd(depth_marigold)": (rng.random((n, h, w, 3)) * 0.4 + [0.3, 0.65, 0.3]).astype(np.float32)}
    for name, size in (("semantic_mask2former_mapillary_49189528_0", 65), ("semantic_mask2former_coco_47429163_0", 133),
                       ("semantic_mask2former_mapillary_49189528_1", 65)):
        inputs[name] = rng.integers(0, size, (n, h, w)).astype(np.uint8)
    params = {"edges/canny": {"threshold1": 100, "threshold2": 200, "aperture_size": 3, "l2_gradient": True},
              "normals/depth-svd": {"sensor_fov": 75, "sensor_size": [3840, 2160], "window_size": 11,
                                    "dependencies": ["depth_marigold"]},
              "soft-segmentation/python-halftone": {"sample": 3, "scale": 1, "percentage": 91,
                                                    "angles": [0, 15, 30, 45], "antialias": False,
                                                    "resolution": [h, w]},
              "soft-segmentation/generalized-boundaries": {"use_median_filtering": True, "adjust_to_rgb": True,
                                                           "max_channels": 3}}
    nodes = ["color/rgb", "color/hsv", *params]
    env = {}
    git_dir = os.environ.get("VRE_GIT_DIR") or \
        SHARED.resolve().parent / ".mirror" / "Meehai+video-representations-extractor" / "repo"
    mapper = folder / "semantic_mapper"
    mapper.mkdir()
    sources = ("examples/semantic_mapper/semantic_mapper.py", "examples/vre_reader/multitask_dataset.py",
               "examples/vre_reader/multitask_statistics.py")
    shows = [subprocess.run(["git", f"--git-dir={git_dir}", "show", f"HEAD:{s}"], capture_output=True) for s in sources]
    if all(r.returncode == 0 for r in shows):
        for source, r in zip(sources, shows):
            (mapper / source.rsplit("/", 1)[1]).write_bytes(r.stdout)
        nodes += [f"mapper:{m}" for m in VRE_MAPPER_NODES]
        env["VRE_SEMANTIC_MAPPER"] = str(mapper)
    return inputs, run_vre_oracle(nodes, dict(inputs), folder, params, env)


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
