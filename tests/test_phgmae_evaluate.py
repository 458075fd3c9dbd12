"""`vre evaluate`: bootstrap intervals that cover the true value, paired comparisons that see a real
difference, and the command on a tiny checkpoint (table, JSON, refusals)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.test_phgmae_ensemble import CLASSES, small_store, tiny_checkpoint
from video_pipeline.cli import main as vre_main
from video_pipeline.phgmae import evaluate as ev
from video_pipeline.phgmae.metrics import ClassMetrics

K = 4


def population(rng, frames: int, pixels: int = 300) -> np.ndarray:
    """int64 [frames, K, K] confusions: per frame random class shares and a random accuracy
    (Beta(4, 2)); a wrong pixel goes to another class uniformly."""
    shares = rng.dirichlet(np.full(K, 2.0), frames)                                   # [F, K]
    counts = np.stack([rng.multinomial(pixels, s) for s in shares])                   # [F, K]
    accuracy = rng.beta(4, 2, frames)
    correct = rng.binomial(counts, accuracy[:, None])                                 # [F, K]
    cm = np.zeros((frames, K, K), np.int64)
    for t in range(K):
        cm[:, t, t] = correct[:, t]
        others = [c for c in range(K) if c != t]
        wrong = np.stack([rng.multinomial(n, np.full(K - 1, 1 / (K - 1))) for n in counts[:, t] - correct[:, t]])
        cm[:, t, others] = wrong
    return cm


def scores(cm: np.ndarray, scenes: list[str]) -> ev.FrameScores:
    return ev.FrameScores(cm, tuple(scenes), tuple(range(len(scenes))), tuple(f"c{i}" for i in range(K)))


def test_intervals_cover_the_true_value_of_a_synthetic_population():
    """Two scenes of 3000 frames each are the population (their figures are the true values); 120
    samples of 25 frames per scene: the 90% intervals of the per-scene mIoU, the pooled mIoU and a
    class IoU cover the truth in about 90% of the samples (80..98%), and are not trivially wide."""
    rng = np.random.default_rng(0)
    pop = {s: population(rng, 3000) for s in ("a", "b")}
    truth = ev.statistics({s: cm.sum(0) for s, cm in pop.items()})
    covered = {"miou_scenes": 0, "miou": 0, "c1": 0}
    widths = []
    samples = 120
    for r in range(samples):
        picks = {s: cm[rng.choice(len(cm), 25, replace=False)] for s, cm in pop.items()}
        summary = ev.summarize(scores(np.concatenate(list(picks.values())), ["a"] * 25 + ["b"] * 25),
                               bootstrap=300, level=0.9, seed=r)
        for key, value, f in (("miou_scenes", truth["miou_scenes"], summary["miou_scenes"]),
                              ("miou", truth["miou"], summary["miou"]), ("c1", truth["iou"][1], summary["iou"]["c1"])):
            lo, hi = f["ci"]
            covered[key] += lo <= value <= hi
        widths.append(summary["miou_scenes"]["ci"][1] - summary["miou_scenes"]["ci"][0])
    rates = {k: v / samples for k, v in covered.items()}
    assert all(0.8 <= r <= 0.98 for r in rates.values()), rates
    assert 0.005 < float(np.mean(widths)) < 0.1


def test_point_figures_match_class_metrics_and_scenes_are_kept():
    rng = np.random.default_rng(1)
    pred = torch.from_numpy(rng.integers(0, K, (6, 8, 8)))
    target = torch.where(torch.rand(6, 8, 8, generator=torch.Generator().manual_seed(0)) < 0.6, pred,
                         torch.from_numpy(rng.integers(0, K, (6, 8, 8))))
    target[0, 0] = 255                                                             # unlabelled pixels
    scenes = ["x", "x", "y", "y", "y", "x"]
    metrics = ClassMetrics([f"c{i}" for i in range(K)])
    metrics.update(scenes, pred, target)
    expected = metrics.summary()
    s = ev.summarize(scores(ev.frame_confusions(pred, target, K), scenes), bootstrap=50)
    assert s["miou"]["value"] == pytest.approx(expected["miou"])
    assert s["miou_scenes"]["value"] == pytest.approx(expected["miou_scenes"])
    assert {k: v["value"] for k, v in s["scene_miou"].items()} == pytest.approx(expected["scene_miou"])
    lo, hi = s["miou_scenes"]["ci"]
    assert lo <= s["miou_scenes"]["value"] <= hi and s["scenes"] == ["x", "y"]


def test_paired_comparison_sees_a_real_improvement_and_not_a_null_one():
    rng = np.random.default_rng(2)
    cm = population(rng, 30)
    better = cm.copy()
    for t in range(K):                                   # move 30% of each frame's errors to the diagonal
        wrong = cm[:, t].copy()
        wrong[:, t] = 0
        fixed = (0.3 * wrong).astype(np.int64)
        better[:, t] -= fixed
        better[:, t, t] += fixed.sum(1)
    a, b = scores(better, ["s"] * 30), scores(cm, ["s"] * 30)
    up = ev.compare(a, b, bootstrap=400)
    assert up["value"] > 0 and up["ci"][0] > 0 and up["p_not_better"] < 0.01
    same = ev.compare(b, b, bootstrap=100)
    assert same["value"] == 0 and same["ci"] == [0.0, 0.0] and same["p_not_better"] == 1.0


def test_vre_evaluate_prints_a_table_and_writes_json(tmp_path, capsys):
    store = small_store(tmp_path / "scene1.zarr")
    ckpt = tiny_checkpoint(tmp_path / "m.ckpt")
    out = tmp_path / "eval.json"
    assert vre_main(["evaluate", str(ckpt), str(store), "--target", "semantic", "-k", "3", "--bootstrap", "50",
                     "--frames", "0..4", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "mIoU (mean of scenes)" in text and "IoU water" in text and "scene scene1" in text
    data = json.loads(out.read_text())
    assert data["written_by"] == "vre evaluate" and data["k"] == 3 and data["frames"] == 4
    assert data["frame_numbers"] == [0, 1, 2, 3] and set(data["iou"]) == set(CLASSES)
    lo, hi = data["miou_scenes"]["ci"]
    assert 0 <= lo <= data["miou_scenes"]["value"] <= hi <= 1
    assert vre_main(["evaluate", str(ckpt), str(store), "--target", "semantic", "--bootstrap", "20",
                     "--json", str(out)]) == 0                                  # its own file: replaced
    foreign = tmp_path / "notes.json"
    foreign.write_text("{}")
    assert vre_main(["evaluate", str(ckpt), str(store), "--target", "semantic", "--json", str(foreign)]) == 2
    assert "not written by vre evaluate" in capsys.readouterr().err and foreign.read_text() == "{}"
    assert vre_main(["evaluate", str(ckpt), str(store), "--target", "rgbx"]) == 2
    assert "no 'rgbx' to score against" in capsys.readouterr().err
