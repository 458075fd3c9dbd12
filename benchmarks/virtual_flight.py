"""A virtual flight over one real photo, and its exact optical flow stored beside the experts'.

    python benchmarks/virtual_flight.py clip ../shared/data/uav_toledo/DJI_0061.jpg flight.mp4
    vre run recipes/uav-offline.yaml flight.mp4 -o flight.zarr
    python benchmarks/virtual_flight.py flow flight.zarr

`clip` slides a window over the photo (downscaled by `--scale` first) by `--step` (dy, dx) pixels a
frame; `flow` writes the window's motion as the modality `flow_true` (float16 [T, H, W, 2], dx, dy
from frame t to t + 1, in store pixels), so `vre consistency --flow flow_true` measures temporal
consistency along the true motion instead of an estimate. Use the same --step, --size and --scale
for both, and a store resolution equal to --size.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from video_pipeline.store import ArraySpec, VideoStore
from video_pipeline.synth import flight_flow, make_flight_clip


def clip(photo: Path, out: Path, frames: int, size: tuple[int, int], step: tuple[float, float], scale: float) -> Path:
    """The clip of `frames` windows of `size` (H, W) moving `step` px/frame over `photo` resized by `scale`."""
    image = cv2.imread(str(photo), cv2.IMREAD_COLOR)
    if image is None:
        raise SystemExit(f"{photo}: cannot read the photo")
    small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    with tempfile.TemporaryDirectory() as tmp:
        scaled = Path(tmp) / "photo.png"
        cv2.imwrite(str(scaled), small)
        return make_flight_clip(scaled, out, frames, size, step, fps=2)


def store_flow(store_path: Path, step: tuple[float, float]) -> None:
    """Write `flow_true` for every frame of the store."""
    store = VideoStore.open(store_path, "r+")
    t, (h, w) = store.n_frames, store.meta["resolution"]
    flow = flight_flow((h, w), step).astype(np.float16)
    store.write_array(ArraySpec("flow_true", 2, "float16", {"type": "synthetic", "kind": "flow", "channels": 2,
                                                            "step": list(step)}),
                      np.broadcast_to(flow, (t, h, w, 2)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    c = sub.add_parser("clip", help="write the virtual flight clip")
    c.add_argument("photo", type=Path)
    c.add_argument("out", type=Path)
    c.add_argument("--frames", type=int, default=24)
    c.add_argument("--size", type=int, nargs=2, default=[360, 480], metavar=("H", "W"))
    c.add_argument("--scale", type=float, default=0.5, help="resize the photo first (default: half)")
    f = sub.add_parser("flow", help="store the flight's exact flow as flow_true")
    f.add_argument("store", type=Path)
    for a in (c, f):
        a.add_argument("--step", type=float, nargs=2, default=[2.0, 5.0], metavar=("DY", "DX"))
    args = p.parse_args(argv)
    if args.what == "clip":
        print(clip(args.photo, args.out, args.frames, tuple(args.size), tuple(args.step), args.scale))
    else:
        store_flow(args.store, tuple(args.step))
    return 0


if __name__ == "__main__":
    sys.exit(main())
