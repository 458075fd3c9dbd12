"""Security: the tool runs no code and loads no file it was not asked to, and writes only where told.

- YAML is safe-loaded everywhere (recipes, training and distillation configs, split files);
- checkpoints are read with `torch.load(weights_only=True)`: a pickle that would run code is refused;
- plugin code runs only from installed entry points or files a recipe's `plugins:` names;
- export and import never write outside the target folder, whatever names a hostile dataset uses;
- downloaded weights are verified by sha256 before use (and refused without a checksum).
Each behaviour is shown with a payload that would leave a marker file if it ran; static checks of
the source back them up for every call site.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import http.server
import importlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr

from conftest import REPO, vre
from reliability.figures import record
from reliability.synthetic import TRAIN_CONFIG, training_store
from video_pipeline.cli import main

SOURCES = sorted((REPO / "video_pipeline").rglob("*.py")) + sorted((REPO / "experts").rglob("*.py"))


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("vre: error: "), captured.err
    return lines[0]


@functools.cache
def source_calls() -> list[tuple[Path, ast.Call]]:
    """Every call in the package's source (video_pipeline/ and experts/)."""
    return [(path, node) for path in SOURCES for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Call)]


def calls(name_test) -> list[tuple[Path, ast.Call]]:
    """The calls whose dotted function name passes `name_test`."""
    return [(path, node) for path, node in source_calls() if name_test(dotted(node.func))]


def dotted(node) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return ""


def keyword(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


# ---------------------------------------------------------------------------------------- YAML
def test_every_yaml_load_in_the_source_uses_a_safe_loader():
    unsafe = {"yaml.unsafe_load", "yaml.full_load", "yaml.unsafe_load_all", "yaml.full_load_all"}
    assert calls(lambda name: name in unsafe) == []
    loads = calls(lambda name: name in ("yaml.load", "yaml.load_all"))
    assert loads, "no yaml.load call found: the check looks in the wrong place"
    for path, call in loads:
        loader = keyword(call, "Loader") or (call.args[1] if len(call.args) > 1 else None)
        module = importlib.import_module(".".join(path.relative_to(REPO).with_suffix("").parts))
        cls = getattr(module, loader.id) if isinstance(loader, ast.Name) else None
        assert isinstance(cls, type) and issubclass(cls, yaml.SafeLoader), f"{path}:{call.lineno}"
    for path in SOURCES:
        text = path.read_text()
        for name in ("yaml.Loader", "yaml.FullLoader", "yaml.UnsafeLoader"):
            assert name not in text, f"{path} uses {name}"
    record("security", "yaml.load call sites with a SafeLoader", "checked", cases=len(loads))


PAYLOADS = {  # YAML tags that run code under an unsafe loader; each would create MARKER
    "object/apply": "!!python/object/apply:os.system ['touch {marker}']",
    "object/new": "!!python/object/new:subprocess.Popen [[touch, '{marker}']]",
    "name": "!!python/name:os.system",
}


def yaml_surfaces(tmp: Path, payload: str) -> dict[str, list[str]]:
    """Every command that reads a YAML file, given a file carrying `payload`: argv per surface."""
    store = training_store(tmp / "s.zarr") if not (tmp / "s.zarr").exists() else tmp / "s.zarr"
    recipe = tmp / "recipe.yaml"
    recipe.write_text(f"experts:\n  rgb:\n    type: color/rgb\n    params: {payload}\n")
    config = tmp / "train.yaml"
    config.write_text(TRAIN_CONFIG.format(output="run", store=store).replace("seed: 0", f"seed: {payload}"))
    distill = tmp / "distill.yaml"
    distill.write_text(f"output: {payload}\n")
    splits = tmp / "splits.yaml"
    splits.write_text(f"train:\n  s: {payload}\n")
    return {"recipe": ["run", str(recipe), str(tmp / "clip.mp4"), "-o", str(tmp / "out.zarr")],
            "training config": ["train", str(config)], "distillation config": ["distill", str(distill)],
            "split file": ["export", "dronescapes", str(store), "-o", str(tmp / "exp"), "--splits", str(splits)]}


@pytest.mark.parametrize("tag", list(PAYLOADS))
def test_yaml_tags_that_run_code_are_refused_everywhere(tmp_path, capsys, tag):
    marker = tmp_path / "marker"
    for surface, argv in yaml_surfaces(tmp_path, PAYLOADS[tag].format(marker=marker)).items():
        assert main(argv) == 2, surface
        line = one_error_line(capsys)
        assert "invalid YAML" in line and "python/" in line, f"{surface}: {line}"
        record("security", f"YAML tag {tag} in a {surface}", "refused", cases=1)
    assert not marker.exists()


# ---------------------------------------------------------------------------------------- checkpoints
def test_every_torch_load_in_the_source_is_weights_only():
    loads = calls(lambda name: name == "torch.load")
    assert loads, "no torch.load call found: the check looks in the wrong place"
    for path, call in loads:
        value = keyword(call, "weights_only")
        assert isinstance(value, ast.Constant) and value.value is True, f"{path}:{call.lineno}"
    risky = calls(lambda name: name in ("pickle.load", "pickle.loads", "joblib.load", "torch.jit.load",
                                        "marshal.loads", "dill.load", "eval", "exec"))
    assert risky == [], [f"{p}:{c.lineno}" for p, c in risky]
    for path, call in calls(lambda name: name in ("np.load", "numpy.load")):
        value = keyword(call, "allow_pickle")
        assert isinstance(value, ast.Constant) and value.value is False, f"{path}:{call.lineno}"
    for path, call in calls(lambda name: name.endswith("from_pretrained")):
        value = keyword(call, "trust_remote_code")
        assert value is None or (isinstance(value, ast.Constant) and value.value is False), f"{path}:{call.lineno}"
    record("security", "torch.load call sites with weights_only=True", "checked", cases=len(loads))


class Payload:
    """Unpickling this calls os.system('touch MARKER')."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A checkpoint that runs code when unpickled, a store, and the marker it would create."""
    import torch

    root = tmp_path_factory.mktemp("hostile")
    marker = root / "marker"
    ckpt = root / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hyper_parameters": Payload(marker), "epoch": 1,
                "optimizer": {}}, ckpt)
    return {"root": root, "ckpt": ckpt, "marker": marker, "store": training_store(root / "s.zarr")}


def checkpoint_surfaces(hostile, tmp: Path, clip: Path) -> dict[str, list[str]]:
    ckpt, store = hostile["ckpt"], hostile["store"]
    train = tmp / "train.yaml"
    train.write_text(TRAIN_CONFIG.format(output="run", store=store))
    init = tmp / "init.yaml"
    init.write_text(TRAIN_CONFIG.format(output="run2", store=store).replace(
        "  parameters: {num_filters: 6}", f"  parameters: {{num_filters: 6}}\n  init: {ckpt}"))
    out = {"vre train --resume": ["train", str(train), "--resume", str(ckpt), "--device", "cpu"],
           "training config model.init": ["train", str(init), "--device", "cpu"],
           "vre ensemble": ["ensemble", str(ckpt), str(store), "--device", "cpu"]}
    for name, spec in {"semantic/phgmae-distil": "{type: semantic/phgmae-distil, weights: %s}",
                       "edges/pidinet": "{type: edges/pidinet, weights: %s}",
                       "flow/raft": "{type: flow/raft, weights: %s}"}.items():
        recipe = tmp / f"{name.replace('/', '-')}.yaml"
        recipe.write_text("experts:\n  e: " + spec % ckpt + "\n")
        out[f"recipe weights of {name}"] = ["run", str(recipe), str(clip), "-o", str(tmp / f"{recipe.stem}.zarr"),
                                            "--device", "cpu", "-q"]
    return out


def test_a_checkpoint_that_would_run_code_is_refused_everywhere(hostile, tmp_path, clip, capsys):
    for surface, argv in checkpoint_surfaces(hostile, tmp_path, clip).items():
        assert main(argv) == 2, surface
        line = one_error_line(capsys)
        assert "unsafe unpickling, which is refused" in line and str(hostile["ckpt"]) in line, f"{surface}: {line}"
        assert not hostile["marker"].exists(), surface
        record("security", f"code-running checkpoint via {surface}", "refused", cases=1)


# ---------------------------------------------------------------------------------------- plugins
PLANTED = """\
from pathlib import Path
Path({marker!r}).write_text(__name__)
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory, clip):
    """A finished store whose metadata names a plugin file that would leave a marker if imported."""
    root = tmp_path_factory.mktemp("plugins")
    recipe = root / "r.yaml"
    recipe.write_text("shard_frames: 16\nexperts:\n  rgb: {type: color/rgb}\n")
    store = root / "s.zarr"
    assert main(["run", str(recipe), str(clip), "-o", str(store), "-q"]) == 0
    marker = root / "marker"
    (root / "evil.py").write_text(PLANTED.format(marker=str(marker)))
    group = zarr.open_group(str(store), mode="r+")
    meta = dict(group.attrs["video_pipeline"])
    meta["recipe"] = {**meta["recipe"], "plugins": [str(root / "evil.py")]}
    group.attrs["video_pipeline"] = meta
    return {"root": root, "recipe": recipe, "store": store, "marker": marker}


def test_plugin_files_named_only_by_a_store_never_run(finished, clip, tmp_path, capsys):
    """A store (someone else's, say) naming a plugin in its metadata: reading, exporting and
    rerunning it never imports that file; only a recipe's plugins: list does."""
    from video_pipeline.dataset import StoreDataset

    store = str(finished["store"])
    assert main(["inspect", store]) == 0
    assert main(["stats", store]) == 0
    assert main(["export", "dronescapes", store, "-o", str(tmp_path / "exp"), "-j", "1"]) == 0
    assert main(["run", str(finished["recipe"]), str(clip), "-o", store, "-q"]) == 0
    StoreDataset(store)[0]
    assert not finished["marker"].exists()
    named = tmp_path / "named.yaml"
    named.write_text(f"plugins: [{finished['root'] / 'evil.py'}]\n" + finished["recipe"].read_text())
    assert main(["run", str(named), str(clip), "-o", store, "-q"]) == 0
    assert finished["marker"].exists()  # named by the recipe: imported, as documented
    record("security", "plugin named only by a store's metadata", "never imported", cases=5)


def test_modules_planted_in_the_working_folder_are_not_imported_by_vre(finished, clip, tmp_path):
    """The installed `vre` command does not import modules from the current folder (unlike
    `python -m`, which puts it first on sys.path: see docs/reliability.md)."""
    command = Path(sys.executable).parent / "vre"
    if not command.exists():
        pytest.skip(f"{command}: the package is not installed with its console script here")
    marker = tmp_path / "marker"
    for name in ("yaml", "zarr", "numpy", "av", "experts", "video_pipeline", "color"):
        (tmp_path / f"{name}.py").write_text(PLANTED.format(marker=str(marker)))
    res = subprocess.run([str(command), "run", str(finished["recipe"]), str(clip), "-o", "s.zarr", "-q"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert not marker.exists(), marker.read_text()
    record("security", "modules planted in the working folder", "not imported", cases=7)


# ---------------------------------------------------------------------------------------- export / import
def snapshot(root: Path, skip: Path) -> dict[str, int]:
    """Every file under `root` but those under `skip`, with its size."""
    return {str(p): p.stat().st_size for p in root.rglob("*") if p.is_file() and skip not in p.parents}


@pytest.mark.parametrize("split", ["../escape", "/tmp/absolute", "a/b", "..", ".", '"train\\n"', "''"])
def test_export_refuses_split_names_that_are_paths(finished, tmp_path, capsys, split):
    # The output sits two levels down, so a name that climbs out of it still lands under tmp_path,
    # which is snapshotted with the store's own folder (not the whole session's temporary tree).
    out = tmp_path / "work" / "out"
    out.parent.mkdir()
    (tmp_path / "splits.yaml").write_text(f"{split}: {{s: all}}\n")
    watched = (tmp_path, finished["root"])
    before = [snapshot(root, out) for root in watched]
    argv = ["export", "dronescapes", str(finished["store"]), "-o", str(out), "--splits",
            str(tmp_path / "splits.yaml")]
    assert main(argv) == 2
    assert "split name" in one_error_line(capsys)
    assert not out.exists() and [snapshot(root, out) for root in watched] == before
    assert not Path("/tmp/absolute").exists()
    record("security", f"export split name {split!r}", "refused", cases=1)


@pytest.mark.parametrize("name", ["../rgb", "/etc", "_progress", "zarr.json"])
def test_export_refuses_modality_names_that_are_not_in_the_store(finished, tmp_path, capsys, name):
    assert main(["export", "dronescapes", str(finished["store"]), "-o", str(tmp_path / "out"),
                 "--modalities", name]) == 2
    assert "has no modality" in one_error_line(capsys)
    assert not (tmp_path / "out").exists()
    record("security", f"export --modalities {name}", "refused", cases=1)


def hostile_dataset(src: Path) -> None:
    """A Dronescapes-layout folder whose names try to land outside the output or on the store's own
    files, plus files that are not what they claim."""
    frame = np.zeros((8, 12, 3), np.uint8)
    train = src / "train_set"
    for modality in ["rgb", "zarr.json", "_progress", "_frames", "_index", "__x", "c", "x.partial"]:
        (train / modality).mkdir(parents=True, exist_ok=True)
        np.savez(train / modality / "v_1.npz", frame)
    np.savez(train / "rgb" / ".._2.npz", frame)  # a video named ".."
    np.savez(train / "rgb" / "v_3.npz", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (train / "rgb" / "v_4.npz").symlink_to("/etc/hostname")
    (train / "depth").mkdir()
    np.savez(train / "depth" / "v_1.npz", np.zeros((8, 12), np.float32))
    (train / "depth.json").write_text(json.dumps({"dtype": "object", "channels": 1, "kind": "depth"}))
    (train / "normals").mkdir()
    np.savez(train / "normals" / "v_1.npz", np.zeros((8, 12, 3), np.float32))
    (train / "normals.json").write_text(json.dumps({"dtype": "float16", "channels": -3, "kind": "normals"}))
    (src / "train_set.txt").write_text("../../etc/passwd\n/etc/passwd\n")


def test_import_of_a_hostile_dataset_writes_only_inside_the_target(tmp_path, capsys):
    src, out = tmp_path / "src", tmp_path / "out"
    hostile_dataset(src)
    before = snapshot(tmp_path, out)
    assert main(["import", "dronescapes", str(src), "-o", str(out)]) == 3  # 3: some files were skipped
    summary = json.loads(capsys.readouterr().out)
    assert snapshot(tmp_path, out) == before  # nothing written outside `out`
    assert sorted(p.name for p in out.iterdir()) == ["v.zarr"]  # the video named "..": a hidden file, ignored
    skipped = {Path(s["path"]).name for s in summary["skipped"]}
    assert {"v_3.npz", "v_4.npz", "train_set.txt"} <= skipped  # a pickle, a link out of the tree, bad lines
    assert {f"train_set/{name}/" for name in ("zarr.json", "_progress", "_frames", "_index", "__x")} <= \
        set(summary["ignored"])  # not modality names: named, never written
    # descriptions cannot set a dtype or a channel count: those come from the files themselves
    assert group_dtypes(out / "v.zarr") == {"c": "uint8", "depth": "float32", "normals": "float32", "rgb": "uint8",
                                            "x.partial": "uint8"}
    group = zarr.open_group(str(out / "v.zarr"), mode="r")
    assert sorted(group["_progress"].array_keys()) == ["c", "depth", "normals", "rgb", "x.partial"]
    assert "train_set/rgb/.._2.npz" in summary["ignored"]
    assert group["rgb"].shape == (2, 8, 12, 3) and group["_index/frame_number"][:].tolist() == [1, 3]
    record("security", "import of a hostile dataset", "written only inside the target", cases=len(skipped))


def group_dtypes(path: Path) -> dict[str, str]:
    group = zarr.open_group(str(path), mode="r")
    return {name: str(group[name].dtype) for name in sorted(group.array_keys())}


# ---------------------------------------------------------------------------------------- downloads
WEIGHTS = bytes(range(256)) * 4096  # 1 MiB
SHA = hashlib.sha256(WEIGHTS).hexdigest()


class Server(http.server.ThreadingHTTPServer):
    """Serves WEIGHTS at /w.bin, half of it then a dropped connection at /cut.bin, and half of it
    then a stall at /stall.bin; counts requests and says when a stall began."""

    def __init__(self):
        self.requests = 0
        self.stalled = threading.Event()
        self.release = threading.Event()
        super().__init__(("127.0.0.1", 0), Handler)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.requests += 1
        self.send_response(200)
        self.send_header("Content-Length", str(len(WEIGHTS)))
        self.end_headers()
        if self.path == "/w.bin":
            self.wfile.write(WEIGHTS)
            return
        self.wfile.write(WEIGHTS[:len(WEIGHTS) // 2])
        self.wfile.flush()
        if self.path == "/stall.bin":
            self.server.stalled.set()
            self.server.release.wait(60)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = Server()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.release.set()
    srv.shutdown()


def test_downloads_are_verified_before_use(server, tmp_path, monkeypatch):
    from video_pipeline.errors import WeightsError
    from video_pipeline.weights import resolve

    srv, base = server
    monkeypatch.setenv("VRE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(WeightsError, match="needs a sha256 checksum"):
        resolve(f"{base}/w.bin", expert="e")
    assert srv.requests == 0  # refused before anything is fetched
    with pytest.raises(WeightsError, match="has sha256 .*, expected 0{64}"):
        resolve(f"{base}/w.bin#sha256={'0' * 64}", expert="e")
    with pytest.raises(WeightsError, match="download of .*/cut.bin has sha256"):  # cut short: fails the check
        resolve(f"{base}/cut.bin#sha256={SHA}", expert="e")
    cache = tmp_path / "cache"
    assert [p for p in cache.rglob("*") if p.is_file()] == []  # nothing unverified is kept
    got = resolve(f"{base}/w.bin#sha256={SHA}", expert="e")
    assert got.path.read_bytes() == WEIGHTS and got.sha256 == SHA
    record("security", "downloads: no checksum, wrong checksum, cut connection", "refused, nothing kept", cases=3)


def test_a_download_killed_midway_is_never_used(server, tmp_path):
    """A process killed while it downloads weights: the half-written file never takes the weights'
    place; the next attempt downloads again and verifies."""
    srv, base = server
    cache = tmp_path / "cache"
    fetch = "import sys; from video_pipeline.weights import resolve; print(resolve(sys.argv[1], expert='e').path)"
    env = {**os.environ, "VRE_CACHE": str(cache)}
    proc = subprocess.Popen([sys.executable, "-c", fetch, f"{base}/stall.bin#sha256={SHA}"], env=env)
    assert srv.stalled.wait(120)
    time.sleep(0.2)  # the first half is on its way to the temporary file
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (cache / "downloads" / SHA / "stall.bin").exists()
    leftovers = list(cache.rglob("*.part"))
    srv.release.set()
    res = subprocess.run([sys.executable, "-c", fetch, f"{base}/w.bin#sha256={SHA}"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert Path(res.stdout.strip()).read_bytes() == WEIGHTS
    record("security", "download killed midway", "never used", cases=1, stray_part_files=len(leftovers))
