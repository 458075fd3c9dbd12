"""Run one node of video-representations-extractor (VRE) on given inputs: the oracle we compare with.

Runs under the Python of a separate virtual environment with VRE installed from PyPI
(`pip install video-representations-extractor`), never under ours; nothing of VRE is imported by
the project. Usage:

    VRE_PYTHON benchmarks/vre_oracle.py NODE[;NODE...] INPUTS.npz OUTPUTS.npz [PARAMS_JSON]

INPUTS.npz holds `frames` (uint8 [N,H,W,3]) and, for nodes with dependencies, their arrays under
the dependency's name (depth [N,H,W,1], raw Mask2Former label maps uint8 [N,H,W], normals
[N,H,W,3]). OUTPUTS.npz gets, under each node's name, VRE's output [N,H,W,C] as VRE computes it
in memory. PARAMS_JSON holds the nodes' parameters: one set for every node, or {node: params}.
NODE is a VRE type (`color/rgb`, `color/hsv`, `edges/canny`, `normals/depth-svd`,
`soft-segmentation/python-halftone`, `soft-segmentation/generalized-boundaries`, and the learned
`edges/dexined`, `optical-flow/rife`, whose params carry `weights`: a state dict file loaded into
VRE's model instead of its released weights) or `mapper:NAME`
for a derived task of the `semantic_mapper` example (its file, from VRE's git repository, lies in
the folder $VRE_SEMANTIC_MAPPER).
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

# VRE type -> (module, class, dependencies it takes by default) of its built-in repository (imported
# one by one: the whole repository needs GPU builds of torchvision operators).
REPRESENTATIONS = {
    "color/rgb": ("vre_repository.color.rgb", "RGB", []),
    "color/hsv": ("vre_repository.color.hsv", "HSV", ["rgb"]),
    "edges/canny": ("vre_repository.edges.canny", "Canny", []),
    "normals/depth-svd": ("vre_repository.normals.depth_svd", "DepthNormalsSVD", []),
    "soft-segmentation/python-halftone": ("vre_repository.soft_segmentation.halftone", "Halftone", []),
    "soft-segmentation/generalized-boundaries": ("vre_repository.soft_segmentation.generalized_boundaries",
                                                 "GeneralizedBoundaries", []),
    "edges/dexined": ("vre_repository.edges.dexined", "DexiNed", []),
    "optical-flow/rife": ("vre_repository.optical_flow.rife", "FlowRife", []),
}


def run_representation(node: str, inputs: dict, params: dict) -> np.ndarray:
    """A representation of VRE's built-in repository, computed on the frames (and its dependency)."""
    import importlib

    from vre.utils import MemoryData, ReprOut

    module, name, default_deps = REPRESENTATIONS[node]
    cls = getattr(importlib.import_module(module), name)
    deps = params.pop("dependencies", default_deps)
    if deps:  # VRE checks its dependencies' types; the data itself comes in below
        from vre_repository.color.rgb import RGB
        from vre_repository.depth import DepthRepresentation

        params["dependencies"] = [RGB(d) if d == "rgb" else DepthRepresentation(d, min_depth=0, max_depth=1)
                                  for d in deps]
    weights = params.pop("weights", None)  # learned nodes: a state dict file, loaded into VRE's model
    rep = cls(name="oracle", **params)
    if weights is not None:
        import torch

        rep.vre_setup(load_weights=False)
        state = torch.load(weights, map_location="cpu")
        if node == "optical-flow/rife":  # only IFNet computes the flow; its file's keys carry `module.`
            rep.model.flownet.load_state_dict({k.removeprefix("module."): v for k, v in state.items()})
        else:
            rep.model.load_state_dict(state)
    inputs.setdefault("rgb", inputs["frames"])
    frames = inputs["frames"]
    ixs = list(range(len(frames)))
    dep_data = [ReprOut(frames=frames, output=MemoryData(inputs[d]), key=ixs) for d in deps]
    return np.asarray(rep.compute(frames, ixs, dep_data or None).output)


def run_mapper(name: str, inputs: dict) -> np.ndarray:
    """A derived task of VRE's semantic_mapper example, from its dependencies' data, frame by frame.

    Label maps (raw Mask2Former or converted, uint8 [N,H,W]) are one-hot encoded as VRE's readers
    hand them to `merge_fn`; a dependency missing from `inputs` that is itself a derived task is
    computed first (its argmax kept), so `semantic_output` runs on VRE's own converted maps.
    """
    from vre.utils import MemoryData

    sys.path.insert(0, os.environ["VRE_SEMANTIC_MAPPER"])
    import semantic_mapper  # noqa: E402  (VRE's example, from its repository)

    task = semantic_mapper.get_new_semantic_mapped_tasks()[name]
    for dep in task.dependencies:
        if dep.name not in inputs:
            inputs[dep.name] = run_mapper(dep.name, inputs).argmax(-1).astype(np.uint8)
    out = []
    for i in range(len(inputs["frames"])):
        dep_data = []
        for dep in task.dependencies:
            data = inputs[dep.name][i]
            if data.dtype == np.uint8 and data.ndim == 2:  # a label map: one-hot over its classes
                data = np.eye(len(dep.classes), dtype=np.float32)[data]
            dep_data.append(MemoryData(data.astype(np.float32)))
        out.append(np.asarray(task.merge_fn(dep_data)))
    return np.stack(out)


def main() -> None:
    nodes, src, dst = sys.argv[1:4]
    params = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
    inputs = dict(np.load(src))
    names = nodes.split(";")
    per_node = bool(params) and set(params) <= set(names)  # {node: its params} or one set for all
    outputs = {}
    for node in names:
        node_params = dict(params.get(node, {}) if per_node else params)
        outputs[node] = run_mapper(node[len("mapper:"):], inputs) if node.startswith("mapper:") else \
            run_representation(node, inputs, node_params)
    np.savez(dst, **outputs)


if __name__ == "__main__":
    main()
