"""Make the benchmark clip: N frames of real drone footage as an H.264 mp4.

A virtual survey flight: a window slides across each of the real Toledo photos in turn
(../shared/data/uav_toledo/*.jpg, 1200x900), `per_photo` frames per photo.

    python benchmarks/make_clip.py OUT.mp4 [--frames 300] [--size 540 960] [--fps 30] [--photos DIR]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from video_pipeline.synth import flight_frames, write_clip

PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "uav_toledo"


def survey_frames(n_frames: int, size: tuple[int, int], per_photo: int = 50, photos_dir: Path = PHOTOS):
    """uint8 [n_frames, H, W, 3]: consecutive flights over consecutive photos."""
    photos = sorted(Path(photos_dir).glob("*.jpg"))
    if not photos:
        raise SystemExit(f"{photos_dir}: no photos (the real imagery lives in ../shared)")
    chunks, t = [], 0
    while t < n_frames:
        n = min(per_photo, n_frames - t)
        photo = photos[(t // per_photo) % len(photos)]
        step = (0.0, min(4.0, (1200 - size[1] - 2) / max(n - 1, 1)))
        chunks.append(flight_frames(photo, n, size, step))
        t += n
    return np.concatenate(chunks)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--size", type=int, nargs=2, default=(540, 960))
    p.add_argument("--fps", type=float, default=30)
    p.add_argument("--photos", type=Path, default=PHOTOS, help="folder of the Toledo photos")
    a = p.parse_args()
    path = write_clip(survey_frames(a.frames, tuple(a.size), photos_dir=a.photos), a.out, fps=a.fps)
    print(path, path.stat().st_size / 1e6, "MB")


if __name__ == "__main__":
    main()
