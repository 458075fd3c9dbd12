"""Human- and JSON-readable descriptions: `vre experts` (from the registry) and `vre inspect`."""
from __future__ import annotations

import json
import typing

from video_pipeline import registry
from video_pipeline.errors import VreError
from video_pipeline.recipe import type_name
from video_pipeline.store import VideoStore


def expert_info(type_name_: str) -> dict:
    """Parameters (type, default), dependencies, weights and outputs of one registered type."""
    cls = registry.get_expert(type_name_)
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:
        hints = {}
    params = {}
    for name, p in cls.parameters().items():
        params[name] = {"type": type_name(hints.get(name, typing.Any)),
                        "default": None if p.default is p.empty else p.default,
                        "required": p.default is p.empty}
    doc = (cls.__doc__ or "").strip().splitlines()
    return {"output": default_output(cls), "type": type_name_, "summary": doc[0] if doc else "", "module": registry.origin(type_name_),
            "params": params, "deps": "any number" if cls.n_deps is None else cls.n_deps,
            "dep_kinds": list(cls.dep_kinds), "default_weights": cls.default_weights,
            "weights_required": cls.uses_torch and cls.default_weights is None,
            "needs_next_frame": cls.needs_next_frame, "batch_size": cls.batch_size,
            "learned": cls.uses_torch}


def default_output(cls) -> dict | str:
    """The output spec with default parameters, or why it depends on the recipe."""
    if cls.n_deps != 0:
        return "follows its dependencies"
    if cls.output_needs_weights:
        return "follows its weights (e.g. the model's classes or depth quantity)"
    if any(p.default is p.empty for p in cls.parameters().values()):
        return "follows its parameters"
    out = cls().output({})
    return {"kind": out.kind, "channels": out.channels, "dtype": out.dtype,
            "classes": list(out.classes), "value_range": out.value_range, "quantity": out.quantity}


def describe_experts(only: str | None = None, as_json: bool = False, plugins=()) -> str:
    """The `vre experts` listing, generated from the registry (after importing the loose `plugins`
    files, as a recipe's `plugins:` list would)."""
    for path in plugins:
        registry.load_plugin_file(path)
    names = registry.list_experts()
    if only:
        try:
            registry.get_expert(only)
        except KeyError as err:
            raise VreError(err.args[0]) from None
        names = [only]
    infos = [expert_info(n) for n in names]
    if as_json:
        return json.dumps(infos, indent=1)
    lines = []
    for info in infos:
        lines.append(f"{info['type']}  —  {info['summary']}")
        deps = info["deps"]
        kinds = f" ({' or '.join(info['dep_kinds'])})" if info["dep_kinds"] else ""
        extras = [f"deps: {deps}{kinds}", f"batch_size: {info['batch_size']}"]
        if info["default_weights"]:
            extras.append(f"weights: {info['default_weights']} unless the recipe names others")
        elif info["weights_required"]:
            extras.append("weights: REQUIRED (the recipe's weights: a file, folder, URL or hub id)")
        if info["needs_next_frame"]:
            extras.append("uses a second frame (the next one unless its parameters say otherwise)")
        lines.append("    " + "; ".join(extras))
        out = info["output"]
        if isinstance(out, dict):
            rng = f" in {list(out['value_range'])}" if out["value_range"] else ""
            cls_names = f", classes {', '.join(out['classes'])}" if out["classes"] else ""
            quantity = f" ({out['quantity']})" if out.get("quantity") else ""
            lines.append(f"    writes: {out['kind']}{quantity} {out['dtype']} x{out['channels']}{rng}{cls_names}")
        else:
            lines.append(f"    writes: {out}")
        for pname, p in info["params"].items():
            default = "required" if p["required"] else f"default {p['default']!r}"
            lines.append(f"    {pname}: {p['type']} ({default})")
        lines.append("")
    return "\n".join(lines).rstrip()


def describe_store(path, as_json: bool = False) -> str:
    """The `vre inspect` report of a store."""
    store = VideoStore.open(path, "r")
    summary = store.summary()
    if as_json:
        return json.dumps(summary, indent=1)
    v = summary["video"] or {}
    lines = [f"{summary['path']}  (video-pipeline {summary['version']}, created {summary['created']})",
             f"video: {v.get('path')}  {v.get('n_frames')} frames  {v.get('height')}x{v.get('width')}  "
             f"{v.get('fps', 0):.3g} fps   shard_frames: {summary['shard_frames']}",
             f"recipe sha256: {summary['recipe_sha256']}", ""]
    header = f"{'modality':<24}{'type':<24}{'shape':<22}{'dtype':<9}{'frames':>13}{'MB':>9}"
    lines += [header, "-" * len(header)]
    for name, m in summary["modalities"].items():
        shape = "x".join(str(s) for s in m["shape"])
        frames = f"{m['frames_done']}/{m['n_frames']}"
        lines.append(f"{name:<24}{(m['type'] or '?'):<24}{shape:<22}{m['dtype']:<9}{frames:>13}"
                     f"{m['bytes'] / 1e6:>9.1f}")
        w = m.get("weights")
        if w:
            lines.append(f"{'':<24}weights: {w.get('id')} (sha256 {str(w.get('sha256'))[:12]})")
        if m.get("deps"):
            lines.append(f"{'':<24}deps: {', '.join(m['deps'])}")
        if m.get("skipped"):
            lines.append(f"{'':<24}SKIPPED: {m['skipped']}")
    return "\n".join(lines)
