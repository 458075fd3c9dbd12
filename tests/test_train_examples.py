"""The training configs shipped in recipes/train/: each one trains a few steps on a tiny generated
store with the modalities it names; `vre train` shows steps within an epoch, names its output
folder, and says on Ctrl-C what was kept."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import RECIPES, write_store
from video_pipeline import cli
from video_pipeline.bundled import example_config, example_names
from video_pipeline.phgmae import train as train_mod

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = ["land", "forest", "residential", "road", "little-objects", "water", "sky", "hill"]


def tiny_store(path: Path, n: int = 48, size=(32, 48), seed: int = 0) -> Path:
    """Every modality the examples name: rgb, hsv, edges, flow, and 8-class probabilities under
    `semantic` and `ensemble_semantic_output`, all derived from one random class map."""
    rng = np.random.default_rng(seed)
    h, w = size
    sem = rng.integers(0, 8, (n, h // 8, w // 8)).repeat(8, 1).repeat(8, 2)
    colours = rng.integers(0, 256, (8, 3))
    rgb = colours[sem].astype(np.uint8)
    probs = np.eye(8, dtype=np.float16)[sem] * 0.9 + np.float16(0.1 / 8)
    semantic = {"kind": "semantic", "channels": 8, "classes": CLASSES}
    return write_store(path, {
        "rgb": (rgb, {"kind": "image", "channels": 3}),
        "hsv": (rgb[..., ::-1].copy(), {"kind": "image", "channels": 3}),
        "edges": ((sem != np.roll(sem, 1, 2))[..., None].astype(np.uint8), {"kind": "binary", "channels": 1}),
        "flow": (rng.normal(0, 1, (n, h, w, 2)).astype(np.float16), {"kind": "flow", "channels": 2}),
        "semantic": (probs, semantic),
        "ensemble_semantic_output": (probs, semantic)}, shard_frames=16)


def shrunk(name: str, folder: Path, **changes) -> Path:
    """The shipped config `name` in `folder` with its stores made there and a short schedule."""
    cfg = yaml.safe_load(example_config(name).read_text())
    for store in {s for split in ("train", "validation") for s in cfg["data"][split]["stores"]}:
        tiny_store(folder / store)
    cfg.update({"epochs": 1, "batch_size": 2, "steps_per_epoch": 2, **changes})
    cfg["data"].update(crop=[32, 32], num_workers=0)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_the_examples_are_the_files_in_recipes_train():
    assert set(example_names()) == {p.stem for p in (RECIPES / "train").glob("*.yaml")} >= {"pretrain", "teacher", "distill"}


@pytest.mark.parametrize("name", example_names())
def test_each_shipped_config_trains_on_a_tiny_store(name, tmp_path, capsys):
    assert cli.main([("distill" if name == "distill" else "train"), "--example", name]) == 0
    assert capsys.readouterr().out == example_config(name).read_text()
    config = shrunk(name, tmp_path)
    command = "distill" if name == "distill" else "train"
    assert cli.main([command, str(config)]) == 0
    out = tmp_path / yaml.safe_load(config.read_text())["output"]
    assert (out / "last.ckpt").is_file() and len((out / "metrics.jsonl").read_text().splitlines()) == 1
    captured = capsys.readouterr()
    assert f"output: {out}" in captured.out
    assert "epoch 1/1" in captured.err and "1/2" in captured.err  # the bar moved within the epoch


def interrupt_on_second_call(monkeypatch, attr: str) -> None:
    """train_mod.<attr> raises KeyboardInterrupt on its second call (Ctrl-C in the second epoch)."""
    real = getattr(train_mod, attr)
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, attr, interrupted)


def test_ctrl_c_in_train_names_the_checkpoint_and_the_epoch_it_holds(tmp_path, capsys, monkeypatch):
    config = shrunk("pretrain", tmp_path, epochs=3)
    interrupt_on_second_call(monkeypatch, "train_one_epoch")
    assert cli.main(["train", str(config)]) == 130
    err = capsys.readouterr().err.strip().splitlines()[-1]
    out = tmp_path / "runs" / "pretrain"
    assert err == (f"vre: interrupted; {out / 'last.ckpt'} holds epoch 1 (the epoch under way is lost); "
                   f"rerun the same command to resume from it")
    assert "shards" not in err
    monkeypatch.setattr(train_mod, "train_one_epoch", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    config2 = shrunk("pretrain", tmp_path / "fresh")
    assert cli.main(["train", str(config2)]) == 130
    assert "before the first epoch ended" in capsys.readouterr().err


def test_ctrl_c_in_distill_says_what_was_kept_and_that_a_rerun_starts_over(tmp_path, capsys, monkeypatch):
    config = shrunk("distill", tmp_path, epochs=3)
    interrupt_on_second_call(monkeypatch, "train_loader")
    assert cli.main(["distill", str(config)]) == 130
    out = tmp_path / "runs" / "student"
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"vre: interrupted; {out / 'last.ckpt'} holds epoch 1 (the epoch under way is lost); "
        f"rerunning the command starts over")
