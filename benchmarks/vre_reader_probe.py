"""Load a folder of per-task .npz files with VRE's own reader; run in VRE's environment.

    /path/to/vre-venv/bin/python benchmarks/vre_reader_probe.py --repo VRE_GIT_DIR --data DIR \
        --tasks '{"rgb": "image", "depth": "depth", ...}' --out loaded.npz

The reader is `MultiTaskDataset` from `examples/vre_reader/` of the VRE repository (and
`BinaryMapper` from `examples/semantic_mapper/` for binary maps); both are taken from the
repository snapshot `--repo` (a bare git directory) at run time, never copied into this project.
Each task is read with VRE's representation class for its kind. Writes, per task, the stacked
arrays VRE's reader returns (`<task>`), or the error it raised (`error:<task>`), and the file
names in reader order (`names:<task>`); prints one line per task.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

READER_FILES = ("examples/vre_reader/multitask_dataset.py", "examples/vre_reader/multitask_statistics.py",
                "examples/semantic_mapper/semantic_mapper.py")
DRONESCAPES_CLASSES = ["land", "forest", "residential", "road", "little-objects", "water", "sky", "hill"]


def extract_reader(git_dir: str, into: Path) -> None:
    """Write the reader modules of the VRE snapshot into `into` and put it on sys.path."""
    for path in READER_FILES:
        text = subprocess.run(["git", "--git-dir", git_dir, "show", f"HEAD:{path}"], check=True,
                              capture_output=True, text=True).stdout
        (into / Path(path).name).write_text(text)
    sys.path.insert(0, str(into))


def representation(name: str, kind: str, classes: list[str]):
    """VRE's representation class for one of our kinds (the one its Dronescapes readers use)."""
    from vre_repository.color.hsv import HSV
    from vre_repository.color.rgb import RGB
    from vre_repository.depth import DepthRepresentation
    from vre_repository.edges.canny import Canny
    from vre_repository.normals import NormalsRepresentation
    from vre_repository.semantic_segmentation import SemanticRepresentation

    palette = [[i * 37 % 256, i * 91 % 256, i * 151 % 256] for i in range(len(classes))]
    if kind == "image":
        return RGB(name)
    if kind == "hsv":
        return HSV(name, dependencies=[RGB("rgb")])
    if kind == "edges":
        return Canny(name=name, threshold1=100, threshold2=200, aperture_size=3, l2_gradient=True)
    if kind == "depth":
        return DepthRepresentation(name, min_depth=0, max_depth=float("inf"))
    if kind == "normals":
        return NormalsRepresentation(name)
    if kind == "semantic":
        return SemanticRepresentation(name, classes=classes, color_map=palette, disk_data_argmax=True)
    if kind == "binary":
        from semantic_mapper import BinaryMapper

        source = SemanticRepresentation("source", classes=DRONESCAPES_CLASSES,
                                        color_map=[[0, 0, 0]] * 8, disk_data_argmax=True)
        mapping = [{"others": DRONESCAPES_CLASSES[1:], name: DRONESCAPES_CLASSES[:1]}]
        return BinaryMapper(name, [source], mapping, mode="all_agree")
    raise ValueError(f"no VRE reader class for kind {kind!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--tasks", required=True, help='JSON {task: kind} or {task: [kind, classes]}')
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        extract_reader(args.repo, Path(tmp))
        from multitask_dataset import MultiTaskDataset

        out = {}
        for task, spec in json.loads(args.tasks).items():
            kind, classes = (spec, DRONESCAPES_CLASSES) if isinstance(spec, str) else spec
            try:
                rep = representation(task, kind, classes)
                reader = MultiTaskDataset(Path(args.data), task_names=[task], task_types={task: rep},
                                          normalization=None, handle_missing_data="raise", cache_task_stats=False)
                items = [reader[i] for i in range(len(reader))]
                out[task] = np.stack([item[0][task].numpy() for item in items])
                out[f"names:{task}"] = np.array([item[1] for item in items])
                print(f"{task}: loaded {out[task].shape} {out[task].dtype}")
            except Exception as err:  # noqa: BLE001 -- what VRE's reader raises is the finding
                out[f"error:{task}"] = np.array(f"{type(err).__name__}: {err}")
                print(f"{task}: {type(err).__name__}: {err}")
        np.savez(args.out, **out)


if __name__ == "__main__":
    main()
