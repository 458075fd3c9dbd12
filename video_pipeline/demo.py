"""`vre demo`: make a short clip, run the quickstart recipe on it, show what was stored."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from video_pipeline.bundled import bundled_recipe
from video_pipeline.describe import describe_store
from video_pipeline.errors import VreError
from video_pipeline.recipe import load_recipe
from video_pipeline.runner import RunOptions, run
from video_pipeline.synth import make_clip


def quickstart_recipe() -> Path:
    """Path of the bundled recipes/quickstart.yaml."""
    return bundled_recipe("quickstart")


def make_demo_clip(path: Path) -> Path:
    """Write the demo clip at `path`; an existing file there is kept if it is that very clip (an
    earlier demo), and refused otherwise: the demo never writes over a user's file."""
    fresh = make_clip(path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}"))
    try:
        if path.exists():
            if not path.is_file() or path.read_bytes() != fresh.read_bytes():
                raise VreError(f"{path}: exists and is not the demo clip; vre never writes over a file "
                               f"it did not make: choose another -o folder")
            return path
        os.replace(fresh, path)
    finally:
        fresh.unlink(missing_ok=True)
    return path


def demo(folder: Path | None = None, device: str | None = None) -> Path:
    """Write demo.mp4 (48 frames, 180x320) and demo.zarr into `folder` (default: a new temp folder)."""
    folder = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="vre-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    clip = make_demo_clip(folder / "demo.mp4")
    recipe_path = quickstart_recipe()
    store_path = folder / "demo.zarr"
    print(f"clip:   {clip}\nrecipe: {recipe_path}")
    stats = run(load_recipe(recipe_path), clip, store_path, RunOptions(device=device))
    print(f"store:  {store_path}  ({stats.frames} frames in {stats.wall:.1f} s)\n")
    print(describe_store(store_path))
    print(f"\nnext: vre preview {store_path} -o {folder / 'preview.png'}\n"
          f"      vre view {store_path}          # scrub the frames in a browser\n"
          f"      vre train --example pretrain > {folder / 'pretrain.yaml'}   # train on this store")
    return store_path
