"""The shape of the code: no import cycle among the project's modules, the core never imports the
built-in experts, and `vre run` does each piece of set-up work once (its one front door)."""
from __future__ import annotations

import ast
import sys
from collections import Counter
from pathlib import Path

from conftest import REPO, write_recipe
from video_pipeline import registry, video, weights
from video_pipeline.cli import main
from video_pipeline.store import VideoStore

PACKAGES = ("video_pipeline", "experts")
PLUGIN = REPO / "tests" / "plugins" / "counting.py"


def project_modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the project's packages."""
    out = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imported_names(module: str, source: str, is_package: bool, modules: dict[str, Path]):
    """(dotted name, line) of everything `module` (its `source`) imports, at any depth of the file
    (imports inside functions count: they run too), and `importlib.import_module("...")` literals."""
    tree = ast.parse(source, module)
    package = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[:len(package) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield (full if full in modules else base), node.lineno
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            yield node.args[0].value, node.lineno


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {project module it imports: line of the first such import}."""
    modules = project_modules()
    graph = {}
    for name, path in modules.items():
        edges = graph[name] = {}
        for target, line in imported_names(name, path.read_text(), path.name == "__init__.py", modules):
            while target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in modules and target != name:
                edges.setdefault(target, line)
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_detector_finds_a_cycle_and_a_core_import_of_experts():
    graph = {"video_pipeline.a": {"video_pipeline.b": 3}, "video_pipeline.b": {"video_pipeline.c": 1},
             "video_pipeline.c": {"video_pipeline.a": 9}, "video_pipeline.d": {"video_pipeline.a": 2}}
    assert cycles(graph) == [["video_pipeline.a", "video_pipeline.b", "video_pipeline.c"]]
    assert cycles({"a": {"b": 1}, "b": {}}) == []
    modules = {"video_pipeline.x": Path("x.py"), "video_pipeline.y": Path("y.py"),
               "experts.semantic": Path("s.py")}
    source = "from . import y\ndef f():\n    from experts.semantic import CLASSES\n"
    assert list(imported_names("video_pipeline.x", source, False, modules)) == [
        ("video_pipeline.y", 1), ("experts.semantic", 3)]


def test_no_import_cycle_among_the_projects_modules():
    graph = import_graph()
    assert len(graph) > 40 and graph["video_pipeline.cli"]  # the whole tree was read
    found = cycles(graph)
    assert not found, "import cycles: " + "; ".join(
        ", ".join(f"{m}:{line} -> {t}" for m in c for t, line in graph[m].items() if t in c) for c in found)


def test_the_core_never_imports_the_builtin_experts():
    """video_pipeline finds experts only through the registry's discovery (entry points, plugin
    files): it never names the `experts` package in an import."""
    graph = import_graph()
    bad = [f"{m}:{line} imports {t}" for m, edges in graph.items() if m.startswith("video_pipeline")
           for t, line in edges.items() if t.split(".")[0] == "experts"]
    assert not bad, bad


def test_vre_run_with_frames_does_each_piece_of_setup_once(tmp_path, clip, monkeypatch, capsys):
    """`vre run --frames` on a fresh store and on an existing one: the video is demuxed once (not
    at all when the store holds its index), the store opened once, each weight resolved once,
    each expert built once."""
    registry.load_plugin_file(PLUGIN)
    plugin = sys.modules[next(m for m in sys.modules if m.startswith("vre_plugin_counting"))]
    counts = Counter()
    out = tmp_path / "s.zarr"

    def counted(key, fn):
        def wrapper(*args, **kwargs):
            counts[key(*args, **kwargs)] += 1
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(video, "demux_index", counted(lambda *a, **k: "demux", video.demux_index))
    monkeypatch.setattr(weights, "resolve", counted(lambda spec, **k: f"resolve {k['expert']}", weights.resolve))
    store_open = VideoStore.open.__func__
    monkeypatch.setattr(VideoStore, "open", classmethod(counted(
        lambda cls, path, mode="r": f"open {Path(path).name}", store_open)))
    value = tmp_path / "value.txt"
    value.write_text("0.25")
    recipe = write_recipe(tmp_path / "r.yaml", f"plugins: [{PLUGIN}]\nshard_frames: 8\nexperts:\n"
                                               f"  early: {{type: test/weighted, weights: {value}}}\n"
                                               f"  late: {{type: test/weighted-late, weights: {value}}}\n"
                                               f"  plus: {{type: test/plus-one, deps: [early]}}\n")
    for frames, demuxed in (("4..20", 1), ("20..30", 0)):
        counts.clear()
        plugin.BUILT.clear()
        assert main(["run", str(recipe), str(clip), "-o", str(out), "--frames", frames, "-q"]) == 0
        assert counts == Counter({"open s.zarr": 1, "resolve early": 1, "resolve late": 1,
                                  **({"demux": demuxed} if demuxed else {})}), (frames, counts)
        assert plugin.BUILT == {"Weighted": 1, "WeightedLate": 1}
    capsys.readouterr()
    store = VideoStore.open(out)
    assert store.done_frames("plus").nonzero()[0].tolist() == list(range(4, 30))
    assert float(store.read("late", [29])[0, 0, 0, 0]) == 0.25
