"""Does VRE's own reader load what we export, with the same values? Two checks, modality by modality.

    python benchmarks/vre_conformance.py --vre-python /work/vre-venv/bin/python \
        --vre-repo /work/.mirror/Meehai+video-representations-extractor/repo [--work DIR] [--frames 4]

A. Our store -> `vre export dronescapes` -> VRE's `MultiTaskDataset`: a store made by `vre run` on
   the Toledo clip (../shared, else a generated clip) with rgb, hsv, Canny and PiDiNet edges, a tiny
   randomly initialised Depth Anything (relative depth), normals from it, the released
   PHG-MAE-Distil semantic model and a binary map; each exported modality is read by VRE's reader
   with VRE's class for its kind and compared with the value VRE's own representation of it holds
   (hsv and edges as float in [0, 1], class maps one-hot).
B. A VRE output folder -> `vre import vre` -> `vre export dronescapes` -> VRE's reader, against VRE's
   reader on the original folder: VRE itself is run (`vre` of the same environment) on the clip's
   first frames for the representations it computes without weights (rgb, hsv, Canny).
C. Our rgb, hsv and Canny exports against VRE's files for the same decoded frames.

VRE (video-representations-extractor 1.18.x) must be installed in the environment of
--vre-python; its reader is taken from the repository snapshot at run time (see
vre_reader_probe.py). Prints one markdown table per check and writes DIR/conformance.json.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from video_pipeline.export import export_dronescapes
from video_pipeline.importer import import_vre
from video_pipeline.store import VideoStore

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from tiny_models import build_depth_anything  # noqa: E402  (the tests' tiny Depth Anything)
SHARED = HERE.parent.parent / "shared"
# our modality -> (VRE reader kind, how VRE's representation holds our stored values)
OURS = {"rgb": "image", "hsv": "hsv", "edges": "edges", "pidinet": "edges", "depth": "depth",
        "normals": "normals", "semantic": "semantic", "roads": "binary"}
VRE_CONFIG = """\
default_compute_parameters: {batch_size: 2}
default_io_parameters: {binary_format: npz, image_format: not-set, compress: true}
representations:
  rgb: {type: color/rgb, dependencies: [], parameters: {}}
  hsv: {type: color/hsv, dependencies: [rgb], parameters: {}}
  edges_canny: {type: edges/canny, dependencies: [], parameters: {threshold1: 100, threshold2: 200, aperture_size: 3, l2_gradient: false}}
"""
VRE_REPOSITORY = '''\
def get_repository():
    from vre_repository.color.hsv import HSV
    from vre_repository.color.rgb import RGB
    from vre_repository.edges.canny import Canny
    return {"color/rgb": RGB, "color/hsv": HSV, "edges/canny": Canny}
'''
VRE_KINDS = {"rgb": "image", "hsv": "hsv", "edges_canny": "edges"}


def clip_path(work: Path) -> Path:
    real = SHARED / "data" / "uav_toledo.mp4"
    if real.is_file():
        return real
    from video_pipeline.synth import make_clip

    return make_clip(work / "clip.mp4", n_frames=8, size=(180, 320))


def vre_cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "video_pipeline.cli", *args], check=True)


def probe(args, data: Path, tasks: dict, out: Path) -> dict:
    """VRE's reader on `data`: {task: array} or {task: "error text"}."""
    subprocess.run([args.vre_python, str(HERE / "vre_reader_probe.py"), "--repo", args.vre_repo, "--data", str(data),
                    "--tasks", json.dumps(tasks), "--out", str(out)], check=True, capture_output=True, text=True)
    with np.load(out) as f:
        return {k: f[k] for k in f.files}


def vre_value(kind: str, stored: np.ndarray, n_classes: int) -> np.ndarray:
    """What VRE's representation of `kind` holds in memory for our stored frames [T,H,W,C]."""
    if kind == "hsv" or (kind == "edges" and stored.dtype == np.uint8 and stored.max() > 1):
        return stored.astype(np.float32) / 255
    if kind == "semantic":
        return np.eye(n_classes, dtype=np.float32)[stored[..., 0]]
    return stored.astype(np.float32) if stored.dtype != np.uint8 or kind != "image" else stored


def check_ours(args, work: Path) -> list[dict]:
    recipe = {"resolution": [180, 240], "shard_frames": 4, "experts": {
        "rgb": {"type": "color/rgb"}, "hsv": {"type": "color/hsv"},
        "edges": {"type": "edges/canny", "params": {"low": 100, "high": 200}},
        "depth": {"type": "depth/hf", "weights": str(build_depth_anything(work / "tiny-depth"))},
        "normals": {"type": "normals/svd", "deps": ["depth"]}}}
    if (SHARED / "weights").is_dir():
        recipe["experts"].update({
            "pidinet": {"type": "edges/pidinet", "weights": str(SHARED / "weights" / "pidinet_bsds_table5.pth")},
            "semantic": {"type": "semantic/phgmae-distil",
                         "weights": str(SHARED / "weights" / "phgmae_distil_safeuav_430k.ckpt")},
            "roads": {"type": "map/binary", "deps": ["semantic"], "params": {"classes": ["road"]}}})
    (work / "recipe.yaml").write_text(json.dumps(recipe))
    vre_cli("run", str(work / "recipe.yaml"), str(clip_path(work)), "-o", str(work / "ours.zarr"),
            "--frames", f"0..{args.frames}", "--device", "cpu", "-q")
    export_dronescapes([work / "ours.zarr"], work / "ours_export", None, 1, None)
    store = VideoStore.open(work / "ours.zarr")
    tasks = {n: OURS[n] for n in store.names if n in OURS}
    loaded = probe(args, work / "ours_export" / "all", tasks, work / "ours_loaded.npz")
    rows = []
    for name, kind in tasks.items():
        arr = store.array(name)
        stored = arr[:args.frames]
        sample = np.load(next((work / "ours_export" / "all" / name).iterdir()))["arr_0"]
        row = {"modality": name, "type": arr.attrs.get("type"), "stored": f"{arr.dtype} {list(arr.shape[1:])}",
               "file": f"{sample.dtype} {list(sample.shape)}", "vre_kind": kind}
        if f"error:{name}" in loaded:
            row.update(loads=False, result=str(loaded[f"error:{name}"]))
        else:
            got = loaded[name]
            want = vre_value(kind, stored, len(arr.attrs.get("classes") or [])).reshape(got.shape)
            diff = float(np.nanmax(np.abs(got.astype(np.float64) - want.astype(np.float64))))
            row.update(loads=True, vre_shape=list(got.shape[1:]), max_abs_diff=diff,
                       result="same values" if diff <= 1e-6 else f"differs by up to {diff:.3g}")
        rows.append(row)
    return rows


def check_vre_round_trip(args, work: Path) -> list[dict]:
    import cv2

    from video_pipeline.video import Video

    frames_dir = work / "frames"
    frames_dir.mkdir()
    for i, frame in enumerate(Video.open(clip_path(work)).read(range(args.frames), size=(180, 240))):
        cv2.imwrite(str(frames_dir / f"{i}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    (work / "vre_cfg.yaml").write_text(VRE_CONFIG)
    (work / "vre_repo.py").write_text(VRE_REPOSITORY)
    vre_bin = str(Path(args.vre_python).with_name("vre"))
    subprocess.run([vre_bin, str(frames_dir), "-o", str(work / "vre_out"), "--config_path", str(work / "vre_cfg.yaml"),
                    "--no_vre_repository", "--external_repositories", f"{work / 'vre_repo.py'}:get_repository"],
                   check=True, capture_output=True, text=True)
    original = probe(args, work / "vre_out", VRE_KINDS, work / "vre_loaded.npz")
    import_vre(work / "vre_out", work / "vre.zarr", work / "vre_cfg.yaml")
    export_dronescapes([work / "vre.zarr"], work / "vre_export", None, 1, None)
    again = probe(args, work / "vre_export" / "all", VRE_KINDS, work / "vre_again.npz")
    rows = []
    store = VideoStore.open(work / "vre.zarr")
    for name in VRE_KINDS:
        src = np.load(next((work / "vre_out" / name / "npz").iterdir()))["arr_0"]
        out = np.load(next((work / "vre_export" / "all" / name).iterdir()))["arr_0"]
        row = {"representation": name, "vre_file": f"{src.dtype} {list(src.shape)}",
               "stored": f"{store.array(name).dtype} {list(store.array(name).shape[1:])}",
               "exported_file": f"{out.dtype} {list(out.shape)}"}
        if name in original and name in again:
            same = original[name].shape == again[name].shape and np.array_equal(original[name], again[name])
            row.update(loads=True, result="identical to VRE's reader on VRE's own output" if same else "differs")
        else:
            row.update(loads=False, result=str(again.get(f"error:{name}", original.get(f"error:{name}"))))
        rows.append(row)
    return rows


def check_same_frames(args, work: Path) -> list[dict]:
    """Our experts against VRE's on the same decoded frames (A's store, B's VRE run), as exported."""
    pairs = {"rgb": ("rgb", "rgb"), "hsv": ("hsv", "hsv"), "canny edges": ("edges", "edges_canny")}
    rows = []
    for what, (ours, theirs) in pairs.items():
        diffs, agree = [], []
        for t in range(args.frames):
            a = np.load(work / "ours_export" / "all" / ours / f"ours_{t}.npz")["arr_0"].astype(np.float64)
            b = np.load(work / "vre_out" / theirs / "npz" / f"{t}.npz")["arr_0"].astype(np.float64)
            diffs.append(np.abs(a - b).max())
            agree.append((np.abs(a - b) < 1e-6).mean())
        rows.append({"modality": what, "max_abs_diff": round(float(max(diffs)), 4),
                     "pixels_equal": f"{100 * float(np.mean(agree)):.2f}%"})
    return rows


def table(rows: list[dict]) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vre-python", required=True, help="python of an environment with VRE installed")
    parser.add_argument("--vre-repo", required=True, help="VRE's repository (a bare git directory)")
    parser.add_argument("--work", help="folder for the stores and exports (default: a temporary one)")
    parser.add_argument("--frames", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        result = {"ours_in_vre_reader": check_ours(args, work), "vre_round_trip": check_vre_round_trip(args, work)}
        result["same_frames"] = check_same_frames(args, work)
        (work / "conformance.json").write_text(json.dumps(result, indent=1))
        print("A. our export in VRE's reader\n\n" + table(result["ours_in_vre_reader"]))
        print("\nB. VRE output -> vre import vre -> vre export dronescapes -> VRE's reader\n\n"
              + table(result["vre_round_trip"]))
        print("\nC. our experts against VRE's on the same frames, as exported\n\n" + table(result["same_frames"]))


if __name__ == "__main__":
    main()
