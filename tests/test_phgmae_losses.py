"""Per-node losses: known values, safety on empty selections and missing targets; metrics."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from video_pipeline.phgmae.losses import IGNORE_INDEX, LossSpec, combine, losses_to_floats, node_loss
from video_pipeline.phgmae.metrics import ClassMetrics, confusion_matrix, iou_f1

B, K, H, W = 3, 4, 5, 6


def logits(seed=0, requires_grad=True):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, K, H, W, generator=g).requires_grad_(requires_grad)


def labels(seed=1):
    return torch.randint(0, K, (B, H, W), generator=torch.Generator().manual_seed(seed))


def probs(seed=2):
    return torch.randn(B, K, H, W, generator=torch.Generator().manual_seed(seed)).softmax(1)


ALL = torch.ones(B)
NONE = torch.zeros(B)


def test_known_values():
    pred, tgt = logits(), labels()
    value, count = node_loss(LossSpec("ce"), pred, tgt, ALL)
    assert torch.allclose(value, F.cross_entropy(pred, tgt)) and count.item() == B * H * W
    weights = (0.1, 2.0, 1.0, 0.5)
    value, _ = node_loss(LossSpec("ce", class_weights=weights), pred, tgt, ALL)
    assert torch.allclose(value, F.cross_entropy(pred, tgt, weight=torch.tensor(weights)))
    x, y = torch.randn(B, 2, H, W), torch.randn(B, 2, H, W)
    assert torch.allclose(node_loss(LossSpec("l1"), x, y, ALL)[0], (x - y).abs().mean())
    assert torch.allclose(node_loss(LossSpec("l2"), x, y, ALL)[0], (x - y).square().mean())


def test_kl_with_temperature():
    pred, p = logits(), probs()
    # T = 1: the mean KL(p || softmax(pred)) per pixel
    value, _ = node_loss(LossSpec("kl"), pred, p, ALL)
    expected = (p * (p.log() - pred.log_softmax(1))).sum(1).mean()
    assert torch.allclose(value, expected, atol=1e-6)
    # T = 2: p^(1/2) renormalized against softmax(pred / 2), times 4; zero when they agree
    value, _ = node_loss(LossSpec("kl", temperature=2.0), pred, p, ALL)
    q = (p.log() / 2).softmax(1)
    expected = 4 * (q * (q.log() - (pred / 2).log_softmax(1))).sum(1).mean()
    assert torch.allclose(value, expected, atol=1e-6)
    same, _ = node_loss(LossSpec("kl", temperature=2.0), p.log().detach(), p, ALL)
    assert abs(same.item()) < 1e-6


@pytest.mark.parametrize("kind", ["ce", "kl", "l1", "l2"])
def test_nothing_selected_is_zero_with_zero_gradients(kind):
    pred = logits()
    target = {"ce": labels(), "kl": probs()}.get(kind, torch.randn(B, K, H, W))
    value, count = node_loss(LossSpec(kind), pred, target, NONE)
    assert value.item() == 0.0 and count.item() == 0
    total = combine({"a": (value, count)}, {"a": LossSpec(kind)})
    total.backward()
    assert total.item() == 0.0 and torch.equal(pred.grad, torch.zeros_like(pred))


@pytest.mark.parametrize("kind", ["ce", "kl", "l1", "l2"])
def test_missing_pixels_are_ignored_not_nan(kind):
    pred = logits()
    if kind == "ce":
        target = labels()
        target[0] = IGNORE_INDEX                  # sample 0: no labels at all
        target[1, :2] = IGNORE_INDEX
        keep = target != IGNORE_INDEX
    else:
        target = probs() if kind == "kl" else torch.randn(B, K, H, W)
        target[0] = float("nan")                  # sample 0: absent (the store's NaN fill)
        target[1, :, :2] = float("nan")
        target[2, 1, 0, 0] = float("nan")         # one channel missing: that pixel is missing
        keep = torch.isfinite(target).all(1)
    value, count = node_loss(LossSpec(kind), pred, target, ALL)
    assert torch.isfinite(value) and count.item() == keep.sum().item()
    value.backward()
    assert torch.isfinite(pred.grad).all()
    assert torch.equal(pred.grad[0], torch.zeros_like(pred.grad[0]))   # no target: no gradient
    # equals the loss over the present pixels alone
    fresh = logits()
    sel = keep.unsqueeze(1).expand_as(fresh)
    if kind == "ce":
        ref = F.cross_entropy(fresh.permute(0, 2, 3, 1)[keep], target[keep])
    elif kind == "kl":
        p_sel, l_sel = target.permute(0, 2, 3, 1)[keep], fresh.permute(0, 2, 3, 1)[keep]
        ref = (p_sel * (p_sel.log() - l_sel.log_softmax(1))).sum(1).mean()
    else:
        d = (fresh - target.nan_to_num(0))[sel]
        ref = d.abs().mean() if kind == "l1" else d.square().mean()
    assert torch.allclose(value, ref, atol=1e-6)


def test_only_masked_samples_count():
    pred, tgt = torch.randn(B, 1, H, W), torch.randn(B, 1, H, W)
    value, count = node_loss(LossSpec("l1"), pred, tgt, torch.tensor([False, True, False]))
    assert torch.allclose(value, (pred[1] - tgt[1]).abs().mean()) and count.item() == H * W


def test_combine_is_a_weighted_mean_over_counted_nodes():
    specs = {"a": LossSpec("l2", weight=1.0), "b": LossSpec("l2", weight=3.0),
             "c": LossSpec("l2", weight=2.0), "d": LossSpec("l2", weight=0.0)}
    one = torch.tensor(1.0)
    losses = {"a": (torch.tensor(2.0), one), "b": (torch.tensor(4.0), one),
              "c": (torch.tensor(0.0), torch.tensor(0.0)),          # nothing counted: left out
              "d": (torch.tensor(100.0), one)}                      # weight 0: left out
    assert combine(losses, specs).item() == pytest.approx((2 + 12) / 4)
    assert combine({}, specs).item() == 0.0
    assert losses_to_floats(losses) == {"a": 2.0, "b": 4.0, "c": None, "d": 100.0}


def test_invalid_specs():
    with pytest.raises(ValueError, match="loss type"):
        LossSpec("huber")
    with pytest.raises(ValueError, match="temperature"):
        LossSpec("kl", temperature=0)


def test_confusion_iou_f1_known_values():
    target = torch.tensor([0, 0, 1, 1, 2, 255])
    pred = torch.tensor([0, 1, 1, 1, 0, 2])
    cm = confusion_matrix(pred, target, 4)
    assert cm.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    iou, f1 = iou_f1(cm)
    assert iou[:3].tolist() == pytest.approx([1 / 3, 2 / 3, 0.0]) and math.isnan(iou[3])
    assert f1[:3].tolist() == pytest.approx([0.5, 0.8, 0.0]) and math.isnan(f1[3])


def test_scene_means_are_means_of_per_scene_class_means():
    m = ClassMetrics(("a", "b"))
    # scene s1: perfect on class a only (class b absent everywhere: not counted) -> 1.0
    m.update(["s1"], torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long))
    # scene s2, two frames: half the pixels right -> IoU a = 1/3 and b = 1/3
    m.update(["s2", "s2"], torch.tensor([[[0, 1]], [[0, 1]]]), torch.tensor([[[0, 0]], [[1, 1]]]))
    s = m.summary()
    assert s["scene_miou"] == pytest.approx({"s1": 1.0, "s2": 1 / 3})
    assert s["miou_scenes"] == pytest.approx((1 + 1 / 3) / 2)
    # pooled: a has TP 5, FP 1, FN 1 -> 5/7; b has TP 1, FP 1, FN 1 -> 1/3
    assert s["iou"] == pytest.approx({"a": 5 / 7, "b": 1 / 3})
    assert s["miou"] == pytest.approx((5 / 7 + 1 / 3) / 2)
    assert ClassMetrics(("a",)).summary()["miou"] is None
    assert np.isfinite(s["mf1"])
