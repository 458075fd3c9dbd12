"""Small folders in the layouts users bring: the public Dronescapes tree and a VRE output folder.

Both are written here, by plain numpy and zipfile, the way their own tools write them, with every
irregularity the import must take: part0/part1 subfolders, `_annotated_only` copies, split lists,
reader caches, VRE's metadata files, logs, pictures and `_extra` files.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

H, W = 12, 20
BARSANA = "barsana_DJI_0500_0501_combined_sliced_2700_14700"
COMANA = "comana_DJI_0881_full"
# split folder -> video -> frames
PUBLIC_SPLITS = {"train_set": {BARSANA: [0, 1, 2, 3], COMANA: [10, 11]},
                 "test_set": {BARSANA: [4, 5], COMANA: [12]},
                 "test_set_annotated_only": {BARSANA: [4]}}
PUBLIC_LISTS = {"train_files_6.txt": [f"{COMANA}/11", f"{BARSANA}/0", f"{BARSANA}/1", f"{BARSANA}/2",
                                      f"{BARSANA}/3", f"{COMANA}/10"],
                "test_files_3.txt": [f"{BARSANA}/4", f"{BARSANA}/5", f"{COMANA}/12"]}
MAPILLARY = "semantic_mask2former_swin_mapillary_49189528_0"
COCO = "semantic_mask2former_coco_47429163_0"


def savez(path: Path, arr: np.ndarray, compressed: bool, when=(2023, 4, 5, 6, 7, 8)) -> None:
    """Write `arr` as np.savez(_compressed) of numpy 1.x did: one zip entry `arr_0.npy` stamped
    with the local time of writing (`when`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    method = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", compression=method, allowZip64=True) as zf:
        with zf.open(zipfile.ZipInfo("arr_0.npy", date_time=when), "w", force_zip64=True) as f:
            np.lib.format.write_array(f, arr, allow_pickle=False)


def public_frame(video: str, frame: int) -> dict[str, tuple[np.ndarray, bool]]:
    """Every modality of one frame of the public tree: name -> (array, written compressed); the
    second video has only three modalities (the public folders differ in what they hold per scene)."""
    rng = np.random.default_rng([len(video), frame])
    mapillary = rng.integers(0, 65, (H, W), dtype=np.uint8)
    mapillary[0, 0] = 64
    coco = rng.integers(0, 133, (H, W)).astype(np.uint16)
    coco[0, 0] = 132
    frame_files = {
        "rgb": (rng.integers(0, 256, (H, W, 3), dtype=np.uint8), False),
        "depth_marigold": (rng.random((H, W, 1)).astype(np.float16), False),
        "depth_sfm_manual202204": ((rng.random((H, W)) * 300).astype(np.float32), True),
        "normals_svd(depth_marigold)": (rng.random((H, W, 3)).astype(np.float16), False),
        "semantic_segprop8": (rng.integers(0, 8, (H, W), dtype=np.uint8), True),
        MAPILLARY: (mapillary, True),
        COCO: (coco, True),
        "buildings": (rng.random((H, W)) > 0.7, True),
    }
    if video == COMANA:
        return {k: frame_files[k] for k in ("rgb", "semantic_segprop8", "buildings")}
    return frame_files


def public_tree(root: Path) -> dict[str, bytes]:
    """Write a small public Dronescapes tree under `root`; returns {relative path: bytes} of the
    files an import must reproduce (every frame file and split list, not the strays)."""
    for split, videos in PUBLIC_SPLITS.items():
        for video, frames in videos.items():
            for i, frame in enumerate(frames):
                for name, (arr, compressed) in public_frame(video, frame).items():
                    part = f"part{i % 2}/" if split == "train_set" and name == "rgb" else ""
                    savez(root / split / name / f"{part}{video}_{frame}.npz", arr, compressed,
                          when=(2023, 4, 5, 6, 7 + i, (2 * frame + len(split)) % 60))
    for name, lines in PUBLIC_LISTS.items():
        (root / name).write_text("".join(f"{line}\n" for line in lines))
    kept = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    # strays: VRE's reader cache in a split folder, a readme, an editor's file
    np.savez(root / "train_set" / ".task_statistics.npz", rgb=np.zeros(4), depth_marigold=np.zeros(4))
    (root / "README.md").write_text("Dronescapes\n")
    (root / "test_set" / "rgb" / ".DS_Store").write_bytes(b"\0\1")
    return kept


# ---------------------------------------------------------------------------------------- VRE
VRE_CONFIG = """\
default_io_parameters: {binary_format: npz, image_format: not-set, compress: true}
representations:
  rgb: {type: color/rgb, dependencies: [], parameters: {}}
  hsv: {type: color/hsv, dependencies: [rgb], parameters: {}}
  edges_canny: {type: edges/canny, dependencies: [], parameters: {threshold1: 100, threshold2: 200}}
  depth_marigold: {type: depth/marigold, dependencies: [], parameters: {variant: marigold-lcm-v1-0}}
  normals_svd(depth_marigold): {type: normals/depth-svd, dependencies: [depth_marigold], parameters: {window_size: 11}}
  semantic_mask2former_mapillary_49189528_0:
    type: semantic-segmentation/mask2former
    dependencies: []
    parameters: {model_id: "49189528_0", disk_data_argmax: true}
"""


def vre_frame(frame: int) -> dict[str, np.ndarray]:
    """What VRE writes for one frame of each representation of VRE_CONFIG."""
    rng = np.random.default_rng(frame)
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    return {"rgb": rgb,
            "hsv": rng.random((H, W, 3)).astype(np.float32),
            "edges_canny": (rng.random((H, W, 1)) > 0.8).astype(np.float32),
            "depth_marigold": rng.random((H, W, 1)).astype(np.float32),
            "normals_svd(depth_marigold)": rng.random((H, W, 3)).astype(np.float32),
            "semantic_mask2former_mapillary_49189528_0": rng.integers(0, 65, (H, W), dtype=np.uint8)}


def vre_output(root: Path, frames: list[int], n_video: int, killed: int | None = None) -> Path:
    """Write what `vre VIDEO -o root --frames ...` leaves for VRE_CONFIG: per representation
    npz/<frame>.npz and .repr_metadata.json (run_stats over all `n_video` frames), .logs/ with the
    run metadata; plus a png/ folder and an `_extra.npz`. `killed`: a frame whose file exists but
    whose metadata entry was never written (a run killed between the two)."""
    run_id = "a2ADcbdK1v"
    for frame in frames + ([killed] if killed is not None else []):
        for name, arr in vre_frame(frame).items():
            (root / name / "npz").mkdir(parents=True, exist_ok=True)
            np.savez_compressed(root / name / "npz" / f"{frame}.npz", arr)
    for name in vre_frame(0):
        stats = {str(f): ({"duration": 0.01, "run_id": run_id, "formats": ["npz"]} if f in frames else None)
                 for f in range(n_video)}
        (root / name / ".repr_metadata.json").write_text(json.dumps({"name": name, "run_stats": stats}, indent=4))
    (root / "rgb" / "png").mkdir()
    (root / "rgb" / "png" / f"{frames[0]}.png").write_bytes(b"\x89PNG")
    np.savez(root / "semantic_mask2former_mapillary_49189528_0" / "npz" / f"{frames[0]}_extra.npz", np.zeros(3))
    logs = root / ".logs"
    logs.mkdir()
    run = {"id": run_id, "runtime_args": {"video_path": "/videos/flight.mp4", "video_shape": f"({n_video}, {H}, {W}, 3)",
                                          "video_fps": "29.97", "representations": list(vre_frame(0)),
                                          "frames": frames},
           "data_writers": {}, "run_stats": {}, "total": {}}
    (logs / f"run_metadata-{run_id}-2026-12-03T13:07:25.820.json").write_text(json.dumps(run, indent=4))
    (logs / f"logs-{run_id}-2026-12-03T13:07:25.820.txt").write_text("")
    (logs / f"graph-{run_id}-2026-12-03T13:07:25.820").write_text("digraph {}\n")
    return root
