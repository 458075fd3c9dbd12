"""Conformance with the authors' tool: our extended-Dronescapes nodes next to VRE's, on the same inputs.

    python benchmarks/dronescapes_conformance.py [--frames 3] [--size 540 720] [--vre-python PATH]
                                                 [--vre-git-dir DIR] [--json OUT.json]

Real frames: the first `--frames` photos of ../shared/data/uav_toledo, resized to `--size` (H W).
Both tools run every node they both have on those frames: ours through our experts (the classes the
runner calls), VRE's through benchmarks/vre_oracle.py in VRE's own virtual environment. Learned
models whose weights are not available offline (Marigold, DPT, Mask2Former) are not run by either
tool: their outputs are replaced by inputs both tools are given alike, so the nodes *derived* from
them are compared exactly. DexiNed and RIFE, whose released weights are not available offline either,
run in both tools on the same random weights saved in the released file layout (tests/tiny_models.py):
- depth: an oblique ground plane (30 degrees pitch, the dataset's camera) modulated by the smoothed
  grey level of the frame, scaled to [0, 1] (stands in for depth_marigold);
- raw Mask2Former label maps: blocks of the frame crossed with its hue, labelled by each model with
  classes drawn around a shared theme (see `stand_in_labels`), so the models agree and disagree.
Prints a markdown table (node, what is compared, agreement) and writes the figures as JSON.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from experts.color import rgb_to_hsv  # noqa: E402
from experts.maps import load_table  # noqa: E402
from experts.normals import CAMERAS, camera_rays  # noqa: E402
from video_pipeline import registry  # noqa: E402
from video_pipeline.expert import OutputSpec  # noqa: E402
from video_pipeline.video import partner_frames  # noqa: E402

SHARED = REPO.parent / "shared"
RECIPE = REPO / "recipes" / "dronescapes.yaml"
RAW = ("semantic_mask2former_mapillary_49189528_0", "semantic_mask2former_coco_47429163_0",
       "semantic_mask2former_mapillary_49189528_1")
MAPPED = ("semantic_mask2former_swin_mapillary_converted", "semantic_mask2former_r50_mapillary_converted",
          "semantic_mask2former_swin_coco_converted", "semantic_output", "buildings", "sky-and-water",
          "transportation", "containing", "vegetation", "buildings(nearby)", "safe-landing-no-sseg",
          "safe-landing-semantics")
NOT_COMPARED = {
    "depth_marigold": "Marigold weights (prs-eth) are not available offline; depth/marigold is checked "
                      "against diffusers' own pipeline on a tiny random model instead",
    "depth_dpt": "DPT-Large weights are not available offline",
    "semantic_mask2former_mapillary_49189528_0": "Mask2Former weights are not available offline",
    "semantic_mask2former_coco_47429163_0": "Mask2Former weights are not available offline",
    "semantic_mask2former_mapillary_49189528_1": "VRE's R50 model is not on the hub (substitute: Swin-L "
                                                 "Mapillary panoptic); no weights offline either",
    "normals_svd(depth_dpt)": "same expert and camera as normals_svd(depth_marigold) (compared), on DPT depth",
    "edges_gb": "VRE has no such node: the edges are ours (the generalized boundary strength of softseg_gb's "
                "layers, from the paper); softseg_gb, their only input, is compared",
}


def load_frames(n: int, size: tuple[int, int]) -> np.ndarray:
    """uint8 [n, H, W, 3]: the first n Toledo photos (sorted by name), resized (area) to size = (H, W)."""
    paths = sorted((SHARED / "data" / "uav_toledo").glob("*.jpg"))[:n]
    if len(paths) < n:
        sys.exit(f"conformance: need {n} photos in {SHARED / 'data' / 'uav_toledo'}, found {len(paths)}")
    return np.stack([cv2.resize(cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB), size[::-1],
                                interpolation=cv2.INTER_AREA) for p in paths])


def stand_in_depth(frames: np.ndarray) -> np.ndarray:
    """float32 [N, H, W, 1] in [0.05, 1]: an oblique plane seen by the dataset's camera, bumped by the
    smoothed grey level of each frame (larger = farther), then spread over [0.05, 1] per frame as
    Marigold's affine-invariant depth spreads over [0, 1]."""
    n, h, w, _ = frames.shape
    u, v = camera_rays(h, w, *CAMERAS["dronescapes"])
    pitch = math.radians(30)
    plane = 30.0 / (math.cos(pitch) * v + math.sin(pitch)) * np.ones_like(u)
    out = []
    for frame in frames:
        grey = cv2.GaussianBlur(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float64), (0, 0), 6) / 255
        depth = plane * (1 - 0.15 * grey)
        out.append(0.05 + 0.95 * (depth - depth.min()) / (depth.max() - depth.min()))
    return np.stack(out).astype(np.float32)[..., None]


def stand_in_labels(frames: np.ndarray, classes: list[tuple[str, ...]], seed: int = 0) -> list[np.ndarray]:
    """One uint8 [N, H, W] raw label map per model (`classes`: each model's class names).

    Cells are 30-pixel blocks crossed with 4 hue bins of the frame. Each cell draws a theme: one of
    the recipe's binary maps (buildings, sky-and-water, ...) or none; each model then labels the
    cell with a raw class its list for that theme names (4 times in 5) or any class, so the models
    agree and disagree as real ones do and every derived map gets pixels of both values.
    """
    import yaml

    nodes = yaml.safe_load(RECIPE.read_text())["experts"]
    themes = [nodes[name]["params"]["classes"] for name in ("buildings", "sky-and-water", "transportation",
                                                            "containing", "vegetation")]
    n, h, w, _ = frames.shape
    hue = rgb_to_hsv(frames)[..., 0].astype(np.int64) * 4 // 256
    yy, xx = np.mgrid[0:h, 0:w]
    cell = ((yy // 30) * (w // 30 + 1) + xx // 30)[None] * 4 + hue + np.arange(n)[:, None, None] * 10**6
    cells, inverse = np.unique(cell, return_inverse=True)
    rng = np.random.default_rng(seed)
    theme = rng.integers(0, len(themes) + 1, len(cells))
    maps = []
    for m, names in enumerate(classes):
        table = rng.integers(0, len(names), len(cells))
        on_theme = (theme < len(themes)) & (rng.random(len(cells)) < 0.8)
        for i in np.flatnonzero(on_theme):
            table[i] = names.index(rng.choice(themes[theme[i]][m]))
        maps.append(table[inverse.reshape(cell.shape)].astype(np.uint8))
    return maps


def run_oracle(python: str, nodes: list[str], inputs: dict, params: dict | None, env: dict) -> dict:
    """VRE's outputs for `nodes` (see vre_oracle.py), from one VRE process."""
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(src, **inputs)
        r = subprocess.run([python, str(REPO / "benchmarks" / "vre_oracle.py"), ";".join(nodes), str(src), str(dst),
                            json.dumps(params or {})], capture_output=True, text=True, env={**os.environ, **env})
        if r.returncode != 0:
            sys.exit(f"conformance: VRE failed on {nodes}: {r.stderr.strip().splitlines()[-1]}")
        return dict(np.load(dst))


def recipe_node(name: str, inputs: dict[str, np.ndarray], specs: dict[str, OutputSpec],
                weights: Path | None = None, **params) -> np.ndarray:
    """Our recipe node `name` (params from recipes/dronescapes.yaml, updated by `params`) on
    dependency arrays [N,H,W,C]; a learned node loads `weights` (set up on the CPU).
    `next_frames`/`next_sign` pass through."""
    import yaml

    snippet = yaml.safe_load(RECIPE.read_text())["experts"][name]
    expert = registry.get_expert(snippet["type"])(**{**snippet.get("params", {}), **params})
    deps = snippet.get("deps", [])
    expert.bind(name, deps=tuple(deps), weights_path=weights)
    expert.output({d: specs[d] for d in deps})
    if weights is not None:
        expert.setup("cpu")
    frames = inputs.get("frames")
    if frames is None:  # a derived node: no expert of this kind reads the frames
        frames = np.zeros((*inputs[deps[0]].shape[:3], 3), np.uint8)
    extra = {k: inputs[k] for k in ("next_frames", "next_sign") if k in inputs}
    return expert(frames, {**{d: inputs[d] for d in deps}, **extra})


def angles_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angles between (n + 1) / 2 encoded normals [..., 3] (float), in degrees."""
    a, b = a.astype(np.float32) * 2 - 1, b.astype(np.float32) * 2 - 1
    cos = (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--size", type=int, nargs=2, default=(540, 720), metavar=("H", "W"))
    parser.add_argument("--vre-python", default=os.environ.get("VRE_PYTHON", str(SHARED.resolve().parent / "vre-venv/bin/python")))
    parser.add_argument("--vre-git-dir", default=os.environ.get("VRE_GIT_DIR", str(
        SHARED.resolve().parent / ".mirror" / "Meehai+video-representations-extractor" / "repo")))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not Path(args.vre_python).is_file():
        sys.exit(f"conformance: no VRE python at {args.vre_python}: install video-representations-extractor "
                 f"in a separate venv and pass --vre-python")
    t0 = time.time()
    frames = load_frames(args.frames, tuple(args.size))
    rows: list[tuple[str, str, str]] = []
    figures: dict[str, dict] = {}

    def row(node: str, compared: str, agreement: str, **numbers) -> None:
        rows.append((node, compared, agreement))
        figures[node] = numbers
        print(f"{node}: {agreement}", file=sys.stderr)

    # --- on the frames ----------------------------------------------------------------------------
    theirs = run_oracle(args.vre_python, ["color/rgb", "color/hsv"], {"frames": frames}, None, {})
    equal = float(np.mean(theirs["color/rgb"] == frames))
    row("rgb", "pixels", f"{equal:.2%} equal", equal=equal)
    hsv_ours = recipe_node("hsv", {"frames": frames}, {}).astype(np.int32)
    hsv_vre = np.round(theirs["color/hsv"] * np.float32(255)).astype(np.int32)
    diff = np.abs(hsv_ours - hsv_vre)
    hue = np.minimum(diff[..., 0], 256 - diff[..., 0])  # hue is circular
    diff[..., 0] = hue
    row("hsv", "VRE's [0, 1] floats x 255, rounded, vs our uint8",
        f"{np.mean(diff == 0):.2%} equal, {np.mean(diff <= 1):.2%} within 1, max {diff.max()} (of 255)",
        equal=float(np.mean(diff == 0)), within_1=float(np.mean(diff <= 1)), max=int(diff.max()))
    canny = run_oracle(args.vre_python, ["edges/canny"], {"frames": frames},
                       {"threshold1": 100, "threshold2": 200, "aperture_size": 3, "l2_gradient": True}, {})
    ours = recipe_node("edges_canny", {"frames": frames}, {})[..., 0]
    equal = float(np.mean(ours == canny["edges/canny"][..., 0].astype(np.uint8)))
    row("edges_canny", "pixels (0/1)", f"{equal:.4%} equal", equal=equal)

    small = np.stack([cv2.resize(f, (426, 240), interpolation=cv2.INTER_AREA) for f in frames])
    halftone = run_oracle(args.vre_python, ["soft-segmentation/python-halftone"], {"frames": small},
                          {"sample": 3, "scale": 1, "percentage": 91, "angles": [0, 15, 30, 45], "antialias": False,
                           "resolution": [240, 426]}, {})["soft-segmentation/python-halftone"]
    ours = recipe_node("halftone1", {"frames": small}, {})
    equal = float(np.mean(ours == np.round(halftone * np.float32(255)).astype(np.uint8)))
    row("halftone1", "pixels at 240x426 (the node's resolution), VRE's floats x 255", f"{equal:.4%} equal",
        equal=equal)

    theirs = run_oracle(args.vre_python, ["soft-segmentation/generalized-boundaries"], {"frames": frames},
                        {"use_median_filtering": True, "adjust_to_rgb": True, "max_channels": 3},
                        {})["soft-segmentation/generalized-boundaries"]
    ours = recipe_node("softseg_gb", {"frames": frames}, {}).astype(np.float32)
    diff = np.abs(ours - theirs)
    per_frame = diff.reshape(len(diff), -1).max(1)
    same = float(np.mean(per_frame < 1e-3))
    row("softseg_gb", "values in [0, 1], VRE's defaults (median filtering, fitted to RGB, 3 layers)",
        f"max abs diff {diff.max():.2e}, mean {diff.mean():.2e}; {same:.0%} of frames within 1e-3 "
        f"(our float16 storage)", max_abs=float(diff.max()),
        mean_abs=float(diff.mean()), frames_within_1e_3=same)

    # --- learned nodes on the same random weights, saved as the released files --------------------
    sys.path.insert(0, str(REPO / "tests"))
    from tiny_models import build_dexined, build_rife  # noqa: E402

    with tempfile.TemporaryDirectory() as tmp:
        weights = build_dexined(Path(tmp) / "dexined")
        theirs = run_oracle(args.vre_python, ["edges/dexined"], {"frames": frames},
                            {"weights": str(weights)}, {})["edges/dexined"]
        ours = recipe_node("edges_dexined", {"frames": frames}, {}, weights).astype(np.float32)
        theirs = np.stack([cv2.resize(t, frames.shape[2:0:-1], interpolation=cv2.INTER_LINEAR) for t in theirs])
        diff = np.abs(ours[..., 0] - theirs)
        row("edges_dexined", "values, same random weights in the released layout, VRE's map resized to the frame",
            f"max abs diff {diff.max():.2e}, mean {diff.mean():.2e} (values in [{theirs.min():.2f}, {theirs.max():.2f}])",
            max_abs=float(diff.max()), mean_abs=float(diff.mean()))
        weights = build_rife(Path(tmp) / "rife")
        # VRE's frame step `delta` and `uhd`; frames paired as our runner pairs them (partner_frames)
        for delta, uhd in ((1, False), (2, False), (-1, True)):
            theirs = run_oracle(args.vre_python, ["optical-flow/rife"], {"frames": frames},
                                {"compute_backward_flow": False, "uhd": uhd, "delta": delta, "weights": str(weights)},
                                {})["optical-flow/rife"]
            partner, sign = partner_frames(np.arange(len(frames)), len(frames), delta)
            both = np.flatnonzero(sign == 1)  # frames VRE also pairs with frame i + delta
            ours = recipe_node("opticalflow_rife", {"frames": frames[both], "next_frames": frames[partner[both]],
                                                    "next_sign": sign[both]}, {}, weights, delta=delta, uhd=uhd)
            theirs = np.stack([cv2.resize(t, frames.shape[2:0:-1], interpolation=cv2.INTER_LINEAR) for t in theirs[both]])
            diff = np.abs(ours.astype(np.float32) - theirs)
            name = "opticalflow_rife" if (delta, uhd) == (1, False) else f"opticalflow_rife (delta {delta}{', uhd' if uhd else ''})"
            row(name, "values, same random weights in the released layout, frames i and i + delta "
                "(where VRE pairs a frame with the video's last/first instead, left out), VRE's map resized to the frame",
                f"max abs diff {diff.max():.2e} on values up to {np.abs(theirs).max():.2f}, mean {diff.mean():.2e} "
                f"({len(both)} frame{'s' * (len(both) != 1)})", max_abs=float(diff.max()), mean_abs=float(diff.mean()),
                max_value=float(np.abs(theirs).max()))

    # --- on the stand-in depth ---------------------------------------------------------------------
    depth = stand_in_depth(frames)
    normals_vre = run_oracle(args.vre_python, ["normals/depth-svd"], {"frames": frames, "depth_marigold": depth},
                             {"sensor_fov": 75, "sensor_size": [3840, 2160], "window_size": 11,
                              "dependencies": ["depth_marigold"]}, {})["normals/depth-svd"]
    depth_spec = OutputSpec(channels=1, kind="depth", value_range=(0.0, 1.0), quantity="relative_depth")
    normals = recipe_node("normals_svd(depth_marigold)", {"depth_marigold": depth}, {"depth_marigold": depth_spec})
    stored_vre = normals_vre.astype(np.float16)  # both stores keep float16 (VRE: output_dtype float16)
    a = angles_deg(normals, stored_vre)
    row("normals_svd(depth_marigold)", "angle between normals (same depth input)",
        f"median {np.median(a):.4f} deg, p99 {np.percentile(a, 99):.4f} deg, max {a.max():.2f} deg",
        median_deg=float(np.median(a)), p99_deg=float(np.percentile(a, 99)), max_deg=float(a.max()))

    # --- derived tasks on stand-in label maps -------------------------------------------------------
    with tempfile.TemporaryDirectory() as sm:
        for source in ("examples/semantic_mapper/semantic_mapper.py", "examples/vre_reader/multitask_dataset.py",
                       "examples/vre_reader/multitask_statistics.py"):
            r = subprocess.run(["git", f"--git-dir={args.vre_git_dir}", "show", f"HEAD:{source}"], capture_output=True)
            if r.returncode != 0:
                sys.exit(f"conformance: cannot read {source} from VRE's repository {args.vre_git_dir}")
            (Path(sm) / source.rsplit("/", 1)[1]).write_bytes(r.stdout)
        tables = {"mapillary": load_table("mapillary-to-dronescapes"), "coco": load_table("coco-to-dronescapes")}
        classes = [tables["mapillary"].source_classes, tables["coco"].source_classes,
                   tables["mapillary"].source_classes]
        raw = dict(zip(RAW, stand_in_labels(frames, classes)))
        inputs = {"frames": frames, **raw, "depth_marigold": depth, "normals_svd(depth_marigold)": normals}
        theirs = run_oracle(args.vre_python, [f"mapper:{m}" for m in MAPPED], inputs, None,
                            {"VRE_SEMANTIC_MAPPER": sm})
    specs = {name: OutputSpec(channels=1, kind="semantic", classes=c) for name, c in zip(RAW, classes)}
    specs.update({"depth_marigold": depth_spec, "normals_svd(depth_marigold)": OutputSpec(3, "normals")})
    arrays = {**{k: v[..., None] for k, v in raw.items()}, "depth_marigold": depth,
              "normals_svd(depth_marigold)": normals}
    for name in MAPPED:  # in dependency order: each result feeds the next ones
        out = recipe_node(name, arrays, specs)
        spec = OutputSpec(channels=1, kind="semantic", classes=tables["coco"].target_classes) \
            if name.startswith("semantic") else OutputSpec(channels=1, kind="binary")
        arrays[name], specs[name] = out, spec
        vre = theirs[f"mapper:{name}"]
        vre = vre.argmax(-1) if vre.shape[-1] > 1 else vre[..., 0]
        equal = float(np.mean(out[..., 0] == vre))
        share = float(np.mean(vre > 0)) if not name.startswith("semantic") else None
        detail = f"{equal:.4%} equal" + (f" ({share:.1%} of pixels are 1)" if share is not None else "")
        row(name, "pixels (class ids)" if name.startswith("semantic") else "pixels (0/1)", detail,
            equal=equal, ones=share)
    for node, why in NOT_COMPARED.items():
        rows.append((node, "not compared", why))

    load = os.getloadavg()[0]
    print(f"\n{args.frames} Toledo frames at {args.size[0]}x{args.size[1]}; {time.time() - t0:.0f} s; "
          f"load average {load:.1f}\n")
    print("| node | compared | agreement |\n|---|---|---|")
    for node, compared, agreement in rows:
        print(f"| `{node}` | {compared} | {agreement} |")
    if args.json:
        args.json.write_text(json.dumps({"frames": args.frames, "size": args.size, "figures": figures}, indent=1))


if __name__ == "__main__":
    main()
