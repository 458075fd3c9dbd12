"""Every registered built-in expert through the shared battery of `video_pipeline.testing`.

The battery is parametrized over the registry itself: a built-in type without an entry in `CASES`
fails, so no new expert escapes it. Learned experts run tiny randomly initialised models of their
real architecture, written to disk once per session and loaded through the expert's normal path.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from video_pipeline import registry
from video_pipeline.testing import ExpertCase, ExpertTests

# Built-ins are the types registered by the top-level `experts` package (plugins loaded by other
# tests of the session register elsewhere).
BUILTINS = [t for t in registry.list_experts() if registry.origin(t).startswith("experts.")]

# A dependency snippet's weights "tiny:NAME" is the tiny model `TinyModels.path(NAME)`.
PHGMAE_LABELS = {"type": "semantic/phgmae-distil", "weights": "tiny:phgmae", "params": {"size": [48, 64]}}
PHGMAE_PROBS = {**PHGMAE_LABELS, "params": {"size": [48, 64], "output": "probabilities"}}
DEPTH = {"type": "depth/hf", "weights": "tiny:depth"}  # relative inverse depth (Depth Anything)
DEPTH_RELATIVE = {**DEPTH, "params": {"normalization": "reciprocal"}}  # 1 / disparity: relative depth
NORMALS = {"type": "normals/svd", "deps": ["depth"], "params": {"window": 5}}

# type -> ExpertCase fields: the minimal configuration each built-in needs, and the parameter values
# it must refuse (in one line naming the parameter).
CASES: dict[str, dict] = {
    "color/rgb": {},
    "color/hsv": {"params": {"method": "float"}, "invalid_params": (("method", "pil"),)},
    "edges/canny": {"params": {"low": 50, "high": 150},
                    "invalid_params": (("low", 300), ("aperture", 4), ("blur", 4), ("blur", -1), ("source", "hsv"))},
    "edges/pidinet": {"weights": "tiny:pidinet"},
    # the architecture is fixed: a 64-pixel inference size keeps it fast
    "edges/dexined": {"weights": "tiny:dexined", "params": {"size": 64}, "frames_shape": (2, 32, 48),
                      "invalid_params": (("encoding", "probability"), ("size", 40))},
    "flow/farneback": {"params": {"levels": 2, "winsize": 9},
                       "invalid_params": (("pyr_scale", 1.0), ("levels", 0), ("poly_n", 6), ("scale", 0), ("delta", 0))},
    # RAFT's correlation pyramid needs frames of at least 64 pixels a side.
    "flow/raft": {"weights": "tiny:raft", "params": {"model": "small", "num_flow_updates": 2},
                  "frames_shape": (3, 64, 64), "invalid_params": (("model", "tiny"), ("num_flow_updates", 0), ("delta", 1.5))},
    # a step back in time: the battery's runs pair frames the other way
    "flow/rife": {"weights": "tiny:rife", "frames_shape": (3, 40, 56), "params": {"delta": -1},
                  "invalid_params": (("units", "normalised"), ("delta", 0))},
    "depth/hf": {"weights": "tiny:depth",
                 "invalid_params": (("normalization", "metric"), ("size", 8), ("quantity", "depth"))},
    "depth/marigold": {"weights": "tiny:marigold", "invalid_params": (("denoising_steps", 0), ("ensemble_size", 0),
                                                                       ("processing_resolution", 30))},
    "normals/svd": {"params": {"window": 5}, "deps": {"depth": DEPTH},
                    "invalid_params": (("window", 4), ("window", 1), ("fov_deg", 180.0), ("fov_deg", 0.0),
                                       ("fov_axis", "width"), ("sensor_size", [3840]),
                                       ("principal_point", "middle"), ("camera", "gopro"))},
    "semantic/hf": {"weights": "tiny:segformer", "invalid_params": (("output", "logits"),)},
    "semantic/phgmae-distil": {"weights": "tiny:phgmae", "params": {"size": [48, 64]},
                               "invalid_params": (("output", "logits"), ("size", [540]))},
    "softseg/generalized-boundaries": {"frames_shape": (2, 64, 96), "invalid_params": (("max_channels", 0),)},
    "edges/generalized-boundaries": {"frames_shape": (2, 64, 96),
                                     "deps": {"softseg": {"type": "softseg/generalized-boundaries"}}},
    "softseg/halftone": {"invalid_params": (("sample", 0), ("percentage", 101), ("angles", [0, 15, 30]))},
    "map/classes": {"params": {"table": "coco-to-dronescapes"},
                    "deps": {"coco": {"type": "semantic/hf", "weights": "tiny:segformer-coco"}},
                    "invalid_params": (("table", "no-such-table"),)},
    "map/vote": {"deps": {"labels": PHGMAE_LABELS, "probabilities": PHGMAE_PROBS}},
    "map/binary": {"params": {"classes": ["land", "road"]}, "deps": {"semantic": PHGMAE_LABELS},
                   "invalid_params": (("classes", []), ("classes", ["lava"]), ("mode", "most"))},
    "map/threshold": {"params": {"value": 0.5, "op": "ge", "quantity": "inverse_depth"}, "deps": {"depth": DEPTH},
                      "invalid_params": (("op", "eq"), ("quantity", "relative_depth"), ("quantity", "depth"))},
    "map/safe-landing": {"params": {"max_depth": 0.7},
                         "deps": {"normals": NORMALS, "depth": DEPTH_RELATIVE, "semantic": PHGMAE_LABELS},
                         "invalid_params": (("vertical_axis", "w"), ("safe_classes", ["lava"]))},
}


class TinyModels:
    """Tiny randomly initialised models in a session folder, built on first use (seeded)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.paths: dict[str, Path] = {}

    def path(self, name: str) -> Path:
        if name not in self.paths:
            import torch

            torch.manual_seed(0)
            self.paths[name] = getattr(self, "build_" + name.replace("-", "_"))(self.folder / name)
        return self.paths[name]

    @staticmethod
    def build_pidinet(path: Path) -> Path:
        """The real PiDiNet layout (its size is fixed by the architecture) with random weights."""
        import torch

        from experts.edges import pidinet_layout

        state = {f"module.{k}": torch.randn(shape) * 0.1 for k, shape in pidinet_layout().items()}
        torch.save({"epoch": 0, "state_dict": state}, path.with_suffix(".pth"))
        return path.with_suffix(".pth")

    @staticmethod
    def build_raft(path: Path) -> Path:
        import torch
        from torchvision.models.optical_flow import raft_small

        torch.save(raft_small(weights=None, progress=False).state_dict(), path.with_suffix(".pth"))
        return path.with_suffix(".pth")

    @staticmethod
    def build_depth(path: Path) -> Path:
        """Depth Anything (DINOv2 backbone + DPT head), 2 layers of width 32, 56-pixel inputs."""
        import transformers as tf

        backbone = tf.Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                                   intermediate_size=64, image_size=56, patch_size=14,
                                   out_features=["stage1", "stage2", "stage3", "stage4"],
                                   reshape_hidden_states=False)
        config = tf.DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32,
                                        neck_hidden_sizes=[8, 16, 16, 16], fusion_hidden_size=16,
                                        head_hidden_size=8, patch_size=14)
        tf.DepthAnythingForDepthEstimation(config).save_pretrained(path)
        tf.DPTImageProcessor(size={"height": 56, "width": 56}, keep_aspect_ratio=True,
                             ensure_multiple_of=14).save_pretrained(path)
        return path

    @staticmethod
    def build_dexined(path: Path) -> Path:
        from tiny_models import build_dexined

        return build_dexined(path)

    @staticmethod
    def build_rife(path: Path) -> Path:
        from tiny_models import build_rife

        return build_rife(path)

    @staticmethod
    def build_marigold(path: Path) -> Path:
        from tiny_models import build_marigold

        return build_marigold(path)

    @staticmethod
    def _segformer(path: Path, classes: list[str]) -> Path:
        import transformers as tf

        config = tf.SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1],
                                    hidden_sizes=[8, 16], patch_sizes=[7, 3], strides=[4, 2],
                                    num_attention_heads=[1, 1], mlp_ratios=[2, 2], decoder_hidden_size=16,
                                    id2label=dict(enumerate(classes)),
                                    label2id={c: i for i, c in enumerate(classes)})
        tf.SegformerForSemanticSegmentation(config).save_pretrained(path)
        tf.SegformerImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
        return path

    def build_segformer(self, path: Path) -> Path:
        return self._segformer(path, ["ground", "tree", "sky"])

    def build_segformer_coco(self, path: Path) -> Path:
        """A SegFormer whose classes are the source classes of the shipped COCO class table."""
        from experts.maps import load_table

        return self._segformer(path, list(load_table("coco-to-dronescapes").source_classes))

    @staticmethod
    def build_phgmae(path: Path) -> Path:
        """A PHG-MAE checkpoint in the released layout (rgb + 8-class semantic node), 2 filters wide."""
        import torch

        from video_pipeline.phgmae.model import build_model, to_checkpoint

        model_cfg = {"type": "safeuav", "parameters": {"in_channels": 11, "out_channels": 11, "num_filters": 2},
                     "hparams": {"data_shape": {"rgb": [3, 48, 64], "semantic_output": [8, 48, 64]}}}
        cfg = {"model": model_cfg, "data": {"parameters": {"task_names": ["rgb", "semantic_output"]}}}
        statistics = {"rgb": [[0.0] * 3, [255.0] * 3, [110.0, 120.0, 100.0], [60.0, 55.0, 65.0]]}
        torch.save(to_checkpoint(build_model(model_cfg), cfg, statistics), path.with_suffix(".ckpt"))
        return path.with_suffix(".ckpt")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> TinyModels:
    return TinyModels(tmp_path_factory.mktemp("tiny-models"))


def with_tiny_weights(entry, tiny: TinyModels):
    """A copy of a CASES entry with every "tiny:NAME" weights replaced by the model's path."""
    if isinstance(entry, dict):
        return {k: (str(tiny.path(v[5:])) if k == "weights" and str(v).startswith("tiny:")
                    else with_tiny_weights(v, tiny)) for k, v in entry.items()}
    return entry


def test_every_builtin_has_a_case_and_every_case_a_builtin():
    assert BUILTINS, "no built-in expert is registered (is the package installed?)"
    assert sorted(set(BUILTINS) - set(CASES)) == [], "add the new built-ins to CASES"
    assert sorted(set(CASES) - set(BUILTINS)) == [], "CASES names types that are not registered"
    no_refusals = [t for t in BUILTINS if registry.get_expert(t).parameters() and not CASES[t].get("invalid_params")]
    assert no_refusals == [], f"give invalid_params to the CASES of {no_refusals}"


class TestBuiltinExperts(ExpertTests):
    """The battery, once per registered built-in type."""

    @pytest.fixture(scope="class", params=BUILTINS)
    @classmethod
    def case(cls, request, tiny_models) -> ExpertCase:
        entry = CASES.get(request.param)
        if entry is None:
            pytest.fail(f"built-in expert {request.param} has no entry in CASES of {__file__}")
        return ExpertCase(request.param, **with_tiny_weights(entry, tiny_models))
