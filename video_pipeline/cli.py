"""The `vre` command: argument parsing and the one place user errors become one line + exit code.

Each subcommand is a small function that imports what it needs lazily, so `vre run` on a finished
store never imports torch.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from video_pipeline import __version__
from video_pipeline.bundled import recipe_names, recipe_path
from video_pipeline.errors import Interrupted, VreError
from video_pipeline.yamlio import excerpt

FRAME_OPTIONS = ("--frames", "--fit-frames")
FRAME_SPEC = re.compile(r"^(\d*\.\.\d*|\d+)$")

# What Ctrl-C leaves behind, per command (commands that know more raise errors.Interrupted).
INTERRUPTED = {"run": "interrupted; finished shards are kept, rerun the same command to resume"}


def cmd_run(args) -> int:
    from video_pipeline.parallel import default_workers, run_parallel
    from video_pipeline.recipe import load_recipe
    from video_pipeline.runner import RunOptions, tune_malloc, run, store_paths

    tune_malloc()
    recipe = load_recipe(recipe_path(args.recipe))
    targets = store_paths(args.video, args.output)
    workers = args.workers or default_workers(recipe, args.device)
    if workers < 1:
        raise VreError(f"--workers must be at least 1, got {args.workers}")
    options = RunOptions(frame_spec=tuple(args.frames or ()), stride=args.stride, only=tuple(args.only or ()),
                         overwrite=args.overwrite, device=args.device, on_error=args.on_error,
                         progress=not args.quiet, workers=workers, ray=args.ray)
    if options.ray is not None or options.workers > 1:
        code = report_runs(run_parallel(recipe, targets, options))
    else:
        code = 0
        for video_path, out in targets:
            code = report_runs([(out, run(recipe, video_path, out, options))])
            if code:
                break
    if args.preview and not code:
        preview_stores([out for _, out in targets])
    return code


def preview_stores(stores) -> None:
    """`vre run --preview`: the collage of each store, beside it (`preview.default_output`)."""
    from video_pipeline.preview import default_output, make_preview
    from video_pipeline.store import VideoStore

    for out in stores:
        print(f"preview: {make_preview(VideoStore.open(out), default_output(Path(out)))}")


def report_runs(results) -> int:
    """Print one line per store run ([(store path, RunStats)]) and the skipped experts; the exit
    code: 3 if an expert was skipped, else 0."""
    code = 0
    for out, stats in results:
        if stats.frames == 0 and not stats.skipped:
            print(f"{out}: nothing to do (every asked frame is already stored)")
        else:
            rate = stats.frames / stats.wall if stats.wall else 0.0
            print(f"{out}: {stats.frames} frames in {stats.wall:.1f} s ({rate:.1f} frames/s)")
        for name, why in stats.skipped.items():
            print(f"skipped expert '{name}': {why}", file=sys.stderr)
            code = 3
    return code


def cmd_experts(args) -> int:
    from video_pipeline.describe import describe_experts

    print(describe_experts(args.type, as_json=args.json, plugins=args.plugins or ()))
    return 0


def cmd_inspect(args) -> int:
    from video_pipeline.describe import describe_store

    print(describe_store(args.store, as_json=args.json))
    return 0


def cmd_preview(args) -> int:
    from video_pipeline.preview import default_output, make_preview
    from video_pipeline.store import VideoStore
    from video_pipeline.video import parse_frames

    store = VideoStore.open(args.store)
    frames = parse_frames(args.frames, 1, store.n_frames) if args.frames else None
    if args.png:
        from video_pipeline.pngs import write_png_folders

        written = write_png_folders(store, Path(args.png), frames)
        print(f"{args.png}: " + ", ".join(f"{name}/ {count} PNGs" for name, count in written.items()))
        if not args.output:
            return 0
    out = Path(args.output) if args.output else default_output(Path(args.store))
    path = make_preview(store, out, frames=frames)
    print(path)
    return 0


def cmd_view(args) -> int:
    from video_pipeline.view import ViewServer

    server = ViewServer(args.store, port=args.port)
    print(f"{args.store}: {server.url}  (Ctrl-C stops)", flush=True)
    if args.open:
        import webbrowser

        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped")
    finally:
        server.close()
    return 0

def cmd_verify(args) -> int:
    from video_pipeline.verify import format_result, verify_store

    code = 0
    for store in args.store:
        result = verify_store(Path(store), repair=not args.no_repair)
        if result["damaged"]:
            print(f"vre: {format_result(result)}", file=sys.stderr)
            code = 3
        else:
            print(format_result(result))
    return code


def cmd_stats(args) -> int:
    from video_pipeline.dataset import compute_stats, format_stats

    for store in args.store:
        stats = compute_stats(store, recompute=args.recompute)
        print(json.dumps(stats, indent=1) if args.json else format_stats(store, stats))
    return 0


def cmd_export(args) -> int:
    from video_pipeline.export import export_dronescapes

    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise VreError(f"{out}: exists and is not a folder; -o names the folder the dataset is written to")

    summary = export_dronescapes([Path(s) for s in args.store], Path(args.output),
                                 splits=[Path(f) for f in args.splits] if args.splits else None, n_jobs=args.jobs,
                                 modalities=args.modalities)
    print(json.dumps(summary))
    return 0


def cmd_import(args) -> int:
    from video_pipeline.importer import ignored_line, import_dronescapes, import_vre, parse_class_options

    classes = parse_class_options(args.classes)
    if args.format == "vre":
        summary = import_vre(Path(args.directory), Path(args.output), Path(args.config) if args.config else None,
                             classes)
    else:
        summary = import_dronescapes(Path(args.directory), Path(args.output), classes)
    print(json.dumps(summary))
    if summary["ignored"]:
        print(ignored_line(summary["ignored"]), file=sys.stderr)
    if summary["skipped"]:
        print(f"skipped {len(summary['skipped'])} files that could not be used (listed under \"skipped\"), "
              f"first: {summary['skipped'][0]['path']}: {summary['skipped'][0]['why']}", file=sys.stderr)
    return 0 if not summary["skipped"] else 3


def print_example_or_need_config(args) -> bool:
    """`--example NAME`: print that bundled config and say so; without it a CONFIG is required."""
    if args.example:
        from video_pipeline.bundled import example_config

        sys.stdout.write(example_config(args.example).read_text())
        return True
    if not args.config:
        from video_pipeline.bundled import example_names

        raise VreError(f"vre {args.command}: give a CONFIG.yaml, or start from an example: vre {args.command} "
                       f"--example NAME > my.yaml (examples: {', '.join(example_names())})")
    return False


def cmd_train(args) -> int:
    if print_example_or_need_config(args):
        return 0
    from video_pipeline.phgmae.train import main as train_main

    return train_main(args.config, resume=args.resume, device=args.device)


def cmd_ensemble(args) -> int:
    from video_pipeline.phgmae.ensemble import main as ensemble_main

    return ensemble_main(args)


def cmd_evaluate(args) -> int:
    from video_pipeline.phgmae.evaluate import main as evaluate_main

    return evaluate_main(args)


def cmd_distill(args) -> int:
    if print_example_or_need_config(args):
        return 0
    from video_pipeline.phgmae.distill import main as distill_main

    return distill_main(args.config, device=args.device)


def cmd_consistency(args) -> int:
    from video_pipeline.phgmae.consistency import main as consistency_main

    return consistency_main(args)


def cmd_analyze(args) -> int:
    from video_pipeline.phgmae.analysis import main as analysis_main

    return analysis_main(args)


def cmd_bench(args) -> int:
    from video_pipeline.bench.pipeline import bench
    from video_pipeline.runner import tune_malloc

    tune_malloc()
    print(bench(recipe_path(args.recipe), args.video, frames=args.frames, device=args.device,
                workers=args.workers, keep=args.keep, as_json=args.json))
    return 0


def cmd_demo(args) -> int:
    from video_pipeline.demo import demo

    demo(Path(args.output) if args.output else None, device=args.device)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vre", description="Turn videos into multi-modal zarr datasets "
                                "with a graph of pretrained experts; train PHG-MAE models on them.")
    p.add_argument("--version", action="version", version=f"video-pipeline {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks of errors (anywhere on the line)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run a recipe on videos (or image folders) into zarr stores")
    r.add_argument("recipe")
    r.add_argument("video", nargs="+", help="video file(s) or folder(s) of images")
    r.add_argument("-o", "--output", help="store path (default: <video stem>.zarr in the current folder)")
    r.add_argument("--frames", nargs="+", metavar="A..B|I", help="A..B (end-exclusive) or a list of frame indices")
    r.add_argument("--stride", type=int, default=1, help="every K-th selected frame")
    r.add_argument("--only", nargs="+", metavar="NAME", help="compute only these experts (and missing deps)")
    r.add_argument("--overwrite", action="store_true", help="recompute what is asked even if stored")
    r.add_argument("--device", help="auto|cpu|cuda|cuda:N|mps (overrides the recipe's default)")
    r.add_argument("--workers", type=int, default=None,
                   help="worker processes, each owning whole shards (default: one per GPU for "
                        "learned experts on a multi-GPU machine, else 1)")
    r.add_argument("--ray", nargs="?", const="auto", default=None, metavar="ADDRESS",
                   help="run on a Ray cluster (local instance if no address)")
    r.add_argument("--on-error", choices=("stop", "skip"), default="stop",
                   help="an expert fails: stop (default, keeps finished shards) or skip it and its dependents")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    r.add_argument("--preview", action="store_true", help="at the end, the collage of every modality "
                   "beside each store (<store>.preview.mp4, as `vre preview` makes it)")
    r.set_defaults(func=cmd_run)

    e = sub.add_parser("experts", help="list registered expert types, their parameters and outputs")
    e.add_argument("type", nargs="?", help="show only this type (e.g. edges/canny)")
    e.add_argument("--plugins", nargs="+", metavar="FILE", help="also list the experts these loose "
                   "Python files register (as a recipe's plugins: list)")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_experts)

    i = sub.add_parser("inspect", help="modalities, shapes, completion and provenance of a store")
    i.add_argument("store")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_inspect)

    v = sub.add_parser("preview", help="collage of every modality (mp4, or png for one frame)")
    v.add_argument("store")
    v.add_argument("-o", "--output", help="FILE.mp4 or FILE.png (default: <store>.preview.mp4 beside "
                   "the store); an existing file is replaced only if it is an earlier preview")
    v.add_argument("--frames", nargs="+", metavar="A..B|I")
    v.add_argument("--png", metavar="DIR", help="instead of the collage, one PNG per frame of each "
                   "modality: DIR/<modality>/<frame>.png, legends in DIR/legend/ (with -o: both)")
    v.set_defaults(func=cmd_preview)

    w = sub.add_parser("view", help="a local web page to scrub frames and blend modalities over the rgb")
    w.add_argument("store")
    w.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (0: any free one; default 8765)")
    w.add_argument("--open", action="store_true", help="also open the page in the default browser")
    w.set_defaults(func=cmd_view)

    ve = sub.add_parser("verify", help="read every stored frame, check its checksum, and unflag damaged "
                        "shards so the next `vre run` recomputes them")
    ve.add_argument("store", nargs="+")
    ve.add_argument("--no-repair", action="store_true", help="only report; leave the flags as they are")
    ve.set_defaults(func=cmd_verify)

    s = sub.add_parser("stats", help="per-channel statistics and class histograms (cached in the store)")
    s.add_argument("store", nargs="+")
    s.add_argument("--recompute", action="store_true")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_stats)

    x = sub.add_parser("export", help="export stores to another layout")
    xs = x.add_subparsers(dest="format", required=True)
    xd = xs.add_parser("dronescapes", help="DIR/<split>/<modality>/<video>_<frame>.npz")
    xd.add_argument("store", nargs="+")
    xd.add_argument("-o", "--output", required=True)
    xd.add_argument("--splits", action="append", metavar="FILE",
                    help="YAML file mapping videos and frame ranges to split names, or a .txt split list "
                         "(<video>/<frame> per line, one split named by the file); repeat for several")
    xd.add_argument("--modalities", nargs="+", help="export only these modalities")
    xd.add_argument("-j", "--jobs", type=int, default=2, help="parallel writer processes (joblib)")
    xd.set_defaults(func=cmd_export)

    m = sub.add_parser("import", help="import a dataset layout into stores")
    ms = m.add_subparsers(dest="format", required=True)
    md = ms.add_parser("dronescapes", help="a directory in the Dronescapes layout -> one store per video")
    md.add_argument("directory", help="the folder holding the split folders (train_set, test_set, ...)")
    md.add_argument("-o", "--output", required=True, help="folder for the stores, one <video>.zarr each")
    mv = ms.add_parser("vre", help="an output folder of video-representations-extractor -> one store")
    mv.add_argument("directory", help="the folder given to `vre VIDEO -o DIR`")
    mv.add_argument("-o", "--output", required=True, help="the store to write (STORE.zarr)")
    mv.add_argument("--config", help="the VRE config YAML of the run: types, parameters, dependencies")
    for parser in (md, mv):
        parser.add_argument("--classes", nargs="+", metavar="MODALITY=SET",
                            help="class set of a class-map folder: dronescapes (8), mapillary (65), coco (133)")
        parser.set_defaults(func=cmd_import)

    t = sub.add_parser("train", help="train a PHG-MAE model (config YAML)")
    t.add_argument("config", nargs="?", help="training config YAML (docs/training.md)")
    t.add_argument("--example", metavar="NAME", help="print a bundled config to start from "
                   "(pretrain, teacher, distill) and exit")
    t.add_argument("--resume", help="checkpoint to resume from (default: the output folder's last.ckpt if any)")
    t.add_argument("--device")
    t.set_defaults(func=cmd_train)

    en = sub.add_parser("ensemble", help="inference-time ensembles over random masks, written into the store")
    en.add_argument("checkpoint")
    en.add_argument("store", nargs="+")
    en.add_argument("-k", "--k", type=int, default=8, help="masks per frame")
    en.add_argument("--aggregation", choices=("mean", "median", "vote", "learned"), default="mean")
    en.add_argument("--available", nargs="+", help="modalities treated as available (others always masked)")
    en.add_argument("--name", help="name of the written modality (default: ensemble_<node>)")
    en.add_argument("--seed", type=int, default=0)
    en.add_argument("--frames", nargs="+", metavar="A..B|I")
    en.add_argument("--batch-size", type=int, default=4)
    en.add_argument("--device")
    en.add_argument("--overwrite", action="store_true")
    en.add_argument("--node", nargs="+", help="output nodes to predict (default: the checkpoint's outputs)")
    en.add_argument("--min-confidence", type=float, help="pseudo-labels: keep pixels whose top probability reaches this")
    en.add_argument("--labels", help="pseudo-labels: keep this labelled modality on the frames that have it "
                                     "(the ensemble fills the others)")
    en.add_argument("--fit-frames", nargs="+", metavar="A..B|I", help="frames with targets to learn per-pass weights on")
    en.set_defaults(func=cmd_ensemble)

    ev = sub.add_parser("evaluate", help="a checkpoint (single pass, mask ensemble, student) against a labelled "
                                         "modality: per class, per scene, bootstrap intervals")
    ev.add_argument("checkpoint")
    ev.add_argument("store", nargs="+", help="stores (each one a scene)")
    ev.add_argument("--target", help="labelled modality: class map or probabilities (default: the node's own)")
    ev.add_argument("--node", help="class node to score (default: the checkpoint's first class output)")
    ev.add_argument("-k", "--k", type=int, default=1, help="passes of the mask ensemble (1: the full pass)")
    ev.add_argument("--aggregation", choices=("mean", "median", "vote"), default="mean")
    ev.add_argument("--available", nargs="+", help="inputs treated as available (others always masked)")
    ev.add_argument("--frames", nargs="+", metavar="A..B|I")
    ev.add_argument("--bootstrap", type=int, default=1000, help="bootstrap draws of the frames")
    ev.add_argument("--level", type=float, default=0.95, help="confidence level of the intervals")
    ev.add_argument("--seed", type=int, default=0, help="seed of the ensemble masks and of the bootstrap")
    ev.add_argument("--json", help="write every figure and interval to this JSON file")
    ev.add_argument("--batch-size", type=int, default=4)
    ev.add_argument("--device")
    ev.set_defaults(func=cmd_evaluate)

    an = sub.add_parser("analyze", help="modality importance, robustness curves, agreement of two modalities")
    ans = an.add_subparsers(dest="analysis", required=True)
    for kind, text in (("importance", "validation loss of each target with each input visible vs masked"),
                       ("robustness", "target metric as the number of masked inputs grows"),
                       ("loss-matrix", "loss of each target with one input alone visible (MR-MAE)")):
        a = ans.add_parser(kind, help=text)
        a.add_argument("checkpoint")
        a.add_argument("store", nargs="+")
        a.add_argument("-o", "--output", help="folder for the CSV, PNG and JSON (default: ./analysis_<ckpt>)")
        a.add_argument("--frames", nargs="+", metavar="A..B|I")
        a.add_argument("--masks", type=int, default=16, help="random masks (importance) or subsets per level")
        a.add_argument("--ensemble-k", type=int, default=0, help="robustness: also score a K-pass ensemble")
        a.add_argument("--map", metavar="TARGET", help="importance: also per-pixel maps for this target node")
        a.add_argument("--seed", type=int, default=0)
        a.add_argument("--batch-size", type=int, default=4)
        a.add_argument("--device")
        a.set_defaults(func=cmd_analyze)
    ag = ans.add_parser("agreement", help="mIoU / pixel agreement (or mean abs diff) of two stored modalities")
    ag.add_argument("store", nargs="+")
    ag.add_argument("--prediction", required=True)
    ag.add_argument("--target", required=True)
    ag.add_argument("--frames", nargs="+", metavar="A..B|I")
    ag.add_argument("--json", action="store_true")
    ag.set_defaults(func=cmd_analyze)

    d = sub.add_parser("distill", help="distill an ensemble into an RGB-only student (config YAML)")
    d.add_argument("config", nargs="?", help="distillation config YAML (docs/ensembles.md)")
    d.add_argument("--example", metavar="NAME", help="print a bundled config (distill) and exit")
    d.add_argument("--device")
    d.set_defaults(func=cmd_distill)

    c = sub.add_parser("consistency", help="temporal consistency of a modality along stored optical flow")
    c.add_argument("store", nargs="+")
    c.add_argument("--modality", required=True)
    c.add_argument("--flow", required=True)
    c.add_argument("--delta", type=int, default=1)
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_consistency)

    b = sub.add_parser("bench", help="per-stage throughput and peak memory of a recipe on a video")
    b.add_argument("recipe")
    b.add_argument("video")
    b.add_argument("--frames", nargs="+", metavar="A..B|I")
    b.add_argument("--device")
    b.add_argument("--workers", type=int, default=1)
    b.add_argument("--keep", help="keep the benchmark store at this path")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_bench)

    de = sub.add_parser("demo", help="make a short clip and run the quickstart recipe on it")
    de.add_argument("-o", "--output", help="folder for the clip and the store (default: a temp folder)")
    de.add_argument("--device")
    de.set_defaults(func=cmd_demo)
    finish(p)
    return p


# One example per command (the test suite checks every command has one), shown by `vre CMD -h`.
EXAMPLES = {
    "run": "vre run quickstart flight.mp4 --frames 0..100       # a bundled recipe by name\n"
           "  vre run my_recipe.yaml flight.mp4 -o flight.zarr --device cpu",
    "experts": "vre experts semantic/phgmae-distil\n  vre experts --plugins my_experts.py",
    "inspect": "vre inspect flight.zarr --json",
    "preview": "vre preview flight.zarr -o preview.mp4\n  vre preview flight.zarr --png png/ --frames 0..10",
    "view": "vre view flight.zarr --open",
    "verify": "vre verify flight.zarr --no-repair",
    "stats": "vre stats flight.zarr other.zarr",
    "export": "vre export dronescapes flight.zarr -o dataset/ --splits splits.yaml",
    "export dronescapes": "vre export dronescapes flight.zarr -o dataset/ --splits splits.yaml\n"
                          "  vre export dronescapes stores/*.zarr -o dataset/   # imported stores: their own splits",
    "import": "vre import dronescapes dronescapes/ -o stores/",
    "import dronescapes": "vre import dronescapes dronescapes/ -o stores/",
    "import vre": "vre import vre vre_output/ -o flight.zarr --config vre_cfg.yaml   # the cfg given to vre",
    "train": "vre train --example teacher > teacher.yaml && vre train teacher.yaml",
    "ensemble": "vre ensemble runs/teacher/best.ckpt flight.zarr -k 8",
    "evaluate": "vre evaluate runs/teacher/best.ckpt flight.zarr --target semantic -k 8",
    "analyze": "vre analyze importance runs/teacher/best.ckpt flight.zarr -o analysis/",
    "analyze importance": "vre analyze importance runs/teacher/best.ckpt flight.zarr -o analysis/",
    "analyze robustness": "vre analyze robustness runs/teacher/best.ckpt flight.zarr --ensemble-k 4",
    "analyze loss-matrix": "vre analyze loss-matrix runs/teacher/best.ckpt flight.zarr -o analysis/",
    "analyze agreement": "vre analyze agreement flight.zarr --prediction ensemble_semantic_output --target semantic",
    "distill": "vre distill --example distill > distill.yaml && vre distill distill.yaml",
    "consistency": "vre consistency flight.zarr --modality semantic --flow flow",
    "bench": "vre bench cpu-fast flight.mp4 --frames 0..64",
    "demo": "vre demo -o demo/",
}
# Help of positionals by name, where a command did not give its own.
POSITIONALS = {
    "recipe": "recipe YAML, or the name of a bundled recipe ({bundled})",
    "video": "video file or folder of images",
    "store": "a store made by `vre run` (a <name>.zarr folder)",
    "checkpoint": "a checkpoint of `vre train` or `vre distill` (.ckpt)",
    "config": "config YAML",
    "directory": "the folder to import",
}


def finish(parser: argparse.ArgumentParser, path: str = "") -> None:
    """Give every (sub)command its example and every positional a help text (see EXAMPLES)."""
    if path in EXAMPLES:  # (a command without one fails the test suite, never the parser)
        parser.epilog = "example:\n  " + EXAMPLES[path]
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                finish(sub, f"{path} {name}".strip())
        elif not action.option_strings and not action.help and action.dest in POSITIONALS:
            action.help = POSITIONALS[action.dest].replace("{bundled}", ", ".join(recipe_names()))


def frames_last(argv: list[str]) -> list[str]:
    """argv with every frame option (`--frames 0..2`, `--frames 1 5 9`) and the frame specs after it
    moved to the end, so a positional after it (`vre run r.yaml --frames 0..2 video.mp4`) is not
    taken for a frame. Specs are `A..B` (either end optional) or a frame number."""
    kept, moved, i = [], [], 0
    while i < len(argv):
        if argv[i] in FRAME_OPTIONS:
            j = i + 1
            while j < len(argv) and FRAME_SPEC.match(argv[j]):
                j += 1
            moved += argv[i:j]
            i = j
        else:
            kept.append(argv[i])
            i += 1
    return kept + moved


MAX_MESSAGE = 2000  # characters of an error line: a message never floods the terminal


def bounded(message: str) -> str:
    """`message` on one line, cut to MAX_MESSAGE characters."""
    message = " ".join(message.splitlines())
    return message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE] + " [...]"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # anywhere on the line, before or after the command
    args = parser.parse_args(frames_last([a for a in argv if a != "--debug"]))
    args.debug = debug
    try:
        return args.func(args)
    except VreError as err:
        if args.debug or os.environ.get("VRE_DEBUG"):
            raise
        print(f"vre: error: {bounded(str(err))}", file=sys.stderr)
        return err.exit_code
    except Interrupted as err:
        print(f"vre: {err}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"vre: {INTERRUPTED.get(args.command, 'interrupted')}", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except SystemExit as err:  # plugin or expert code calling sys.exit: never a silent success
        if args.debug or os.environ.get("VRE_DEBUG"):
            raise
        print(f"vre: error: code run by `vre {args.command}` (a plugin or expert?) called sys.exit"
              f"({excerpt(err.code)}) before the command finished; what it reported done before is "
              f"kept, the rest is not done (rerun with --debug for the traceback)", file=sys.stderr)
        return 1 if err.code in (None, 0) or not isinstance(err.code, int) else err.code
    except Exception as err:  # a bug, not a user error: still one line, the traceback on request
        if args.debug or os.environ.get("VRE_DEBUG"):
            raise
        print(f"vre: internal error: {type(err).__name__}: {bounded(str(err))} (rerun with --debug for the "
              f"traceback and report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
