"""Resolve a recipe's `weights:` spec to a local file or folder, with an identity and a checksum.

A spec is one of (checked in this order):
  - an http(s) URL with a checksum, `https://host/file.pth#sha256=<hex>` (or `sha256=` given by the
    caller): downloaded once into `$VRE_CACHE/downloads/<sha256>/` (default cache
    ~/.cache/video-pipeline), verified before it is moved into place;
  - a local file or folder (a `from_pretrained` layout); relative paths are taken from `base_dir`
    (the recipe's folder). An existing local path wins over a Hugging Face id of the same spelling;
  - a Hugging Face model id, `org/name` or `org/name@revision`, fetched through huggingface_hub's own
    cache; when the hub is unreachable (`HF_HUB_OFFLINE=1`, or a quick connection probe fails) only
    the cache is used, so a missing weight fails at once instead of after network timeouts.
Every failure is a `WeightsError` with one line naming the expert, what was looked for and how to
provide it.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import re
import socket
import tempfile
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from video_pipeline.errors import WeightsError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".ckpt")
DOWNLOAD_TIMEOUT_S = 10.0   # per socket operation, not for the whole transfer
PROBE_TIMEOUT_S = 3.0
_HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# Formats no expert here loads: skipping them keeps a snapshot to the PyTorch weights.
_HF_IGNORE = ["*.h5", "*.msgpack", "*.onnx", "*.onnx_data", "*.ot", "*.tflite", "*.gguf",
              "*.mlmodel", "onnx/*", "coreml/*", "openvino/*", "tf_model*", "flax_model*", "rust_model*"]

_file_sha_cache: dict[tuple[str, int, int], str] = {}
_hub_reachable_cache: dict[str, bool] = {}


@dataclass(frozen=True)
class ResolvedWeights:
    """A weights spec made local: `path` (file or folder), a stable `identity`, and the checksum
    (sha256 of the file; for a folder, of its weight files combined; None for a folder without any)."""

    path: Path
    identity: str
    sha256: str | None

    def to_attrs(self) -> dict:
        """Provenance for the store: {"id": ..., "sha256": ...}."""
        return {"id": self.identity, "sha256": self.sha256}


def resolve(spec: str, *, expert: str, sha256: str | None = None,
            base_dir: Path | None = None) -> ResolvedWeights:
    """Make the weights `spec` of `expert` available locally (see the module docstring).

    `sha256`: expected checksum (required for a URL unless the spec carries `#sha256=`); a local file
    or folder whose checksum differs is refused.
    """
    spec = str(spec).strip()
    if sha256 is not None:
        sha256 = sha256.strip().lower()
    if urllib.parse.urlsplit(spec).scheme in ("http", "https"):
        return _resolve_url(spec, expert, sha256)
    path = Path(spec).expanduser()
    if not path.is_absolute():
        path = Path(base_dir or Path.cwd()) / path
    if path.exists():
        return _resolve_local(path.resolve(), expert, sha256)
    if _HF_ID.match(spec) and not spec.lower().endswith(WEIGHT_SUFFIXES):
        return _resolve_hf(spec, expert, sha256)
    relative = not Path(spec).expanduser().is_absolute()
    where = (f" ('{spec}' is relative to {'the recipe folder ' if base_dir else ''}"
             f"{os.path.abspath(base_dir or Path.cwd())})") if relative else ""
    raise WeightsError(f"expert '{expert}': weights {os.path.abspath(path)} not found{where}; "
                       f"fix weights: in the recipe (a file, a folder, a URL or a Hugging Face id)")


def file_sha256(path: Path) -> str:
    """sha256 hex of a file, remembered per (path, size, mtime) for this process."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _file_sha_cache:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _file_sha_cache[key] = digest.hexdigest()
    return _file_sha_cache[key]


def folder_sha256(folder: Path) -> str | None:
    """Combined sha256 of the weight files under `folder` (None if it has none).

    The digest covers `relative/path <file sha256>` lines in sorted order. Files that are symlinks into
    a Hugging Face blob store are named by their content's sha256 already, so they are not re-read.
    """
    lines = []
    for file in sorted(p for p in folder.rglob("*") if p.suffix in WEIGHT_SUFFIXES and p.is_file()):
        blob = Path(os.path.realpath(file)).name
        digest = blob if file.is_symlink() and _SHA256.match(blob) else file_sha256(file)
        lines.append(f"{file.relative_to(folder).as_posix()} {digest}")
    if not lines:
        return None
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def load_checkpoint(path: str | Path) -> dict:
    """A torch checkpoint as a dict, loaded on CPU with `weights_only=True` (no arbitrary code runs).

    A file that needs unsafe unpickling, is not a torch file or is not a dict is a `WeightsError`.
    """
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise WeightsError(f"checkpoint {path} stores Python objects that need unsafe unpickling, which "
                           f"is refused ({str(err).splitlines()[-1].strip()}); re-save it with only "
                           f"tensors, numbers, strings, lists and dicts") from None
    except (RuntimeError, OSError, EOFError, ValueError) as err:
        raise WeightsError(f"checkpoint {path} cannot be read as a torch file "
                           f"({type(err).__name__}: {str(err).splitlines()[0]})") from None
    if not isinstance(ckpt, dict):
        raise WeightsError(f"checkpoint {path} holds a {type(ckpt).__name__}, expected a dict")
    return ckpt


def cache_dir() -> Path:
    """The download cache: `$VRE_CACHE`, default ~/.cache/video-pipeline."""
    return Path(os.environ.get("VRE_CACHE") or Path.home() / ".cache" / "video-pipeline").expanduser()


def _check_sha(expected: str | None, actual: str | None, expert: str, what: str) -> None:
    if expected is not None and expected != actual:
        raise WeightsError(f"expert '{expert}': {what} has sha256 {actual}, expected {expected}; "
                           f"use the right file or fix the checksum in the recipe")


def _resolve_local(path: Path, expert: str, sha256: str | None) -> ResolvedWeights:
    digest = folder_sha256(path) if path.is_dir() else file_sha256(path)
    _check_sha(sha256, digest, expert, f"weights '{path}'")
    return ResolvedWeights(path, str(path), digest)


def _resolve_url(spec: str, expert: str, sha256: str | None) -> ResolvedWeights:
    url, _, fragment = spec.partition("#")
    given = fragment[len("sha256="):].lower() if fragment.startswith("sha256=") else None
    if given and sha256 and given != sha256:
        raise WeightsError(f"expert '{expert}': weights URL says sha256={given} but {sha256} is "
                           f"expected; keep one checksum")
    expected = given or sha256
    if not expected or not _SHA256.match(expected):
        raise WeightsError(f"expert '{expert}': weights URL {url} needs a sha256 checksum; append "
                           f"'#sha256=<64 hex digits>' to it (`sha256sum FILE` computes it)")
    name = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name or "weights"
    target = cache_dir() / "downloads" / expected / name
    # The folder is named by the checksum and files only ever arrive there verified (tmp + rename),
    # so a file present there is the right one.
    if not target.is_file():
        _download(url, target, expected, expert)
    return ResolvedWeights(target, url, expected)


def _download(url: str, target: Path, expected: str, expert: str) -> None:
    import urllib.error  # here, not at the top: urllib.request costs ~0.2 s of every `vre` start
    import urllib.request

    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            for block in iter(lambda: response.read(1 << 20), b""):
                digest.update(block)
                out.write(block)
        if digest.hexdigest() != expected:
            raise WeightsError(f"expert '{expert}': download of {url} has sha256 {digest.hexdigest()}, "
                               f"expected {expected}; the file changed upstream or the checksum is wrong")
        os.replace(tmp, target)
    except (urllib.error.URLError, OSError) as err:
        reason = err if isinstance(err, urllib.error.HTTPError) else getattr(err, "reason", None) or err
        raise WeightsError(f"expert '{expert}': cannot download {url} ({reason}); download it on a "
                           f"machine with internet and set weights: to the local file") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _hub_offline() -> bool:
    """True when `HF_HUB_OFFLINE` is set, or the hub (or the https proxy) does not answer quickly."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    proxy = urllib.request.getproxies().get("https")
    return not _reachable(proxy or endpoint)


def _reachable(url: str) -> bool:
    """Can a TCP connection to the URL's host be opened within PROBE_TIMEOUT_S? (cached per process)

    Runs in a daemon thread: name resolution has no timeout of its own and may hang.
    """
    if url not in _hub_reachable_cache:
        parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        result = [False]

        def probe():
            try:
                socket.create_connection((parts.hostname, port), timeout=PROBE_TIMEOUT_S).close()
                result[0] = True
            except OSError:
                pass

        thread = threading.Thread(target=probe, daemon=True)
        thread.start()
        thread.join(PROBE_TIMEOUT_S + 0.5)
        _hub_reachable_cache[url] = result[0]
    return _hub_reachable_cache[url]


def _resolve_hf(spec: str, expert: str, sha256: str | None) -> ResolvedWeights:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    repo_id, _, revision = spec.partition("@")
    offline = _hub_offline()
    fetch = f"`hf download {repo_id}" + (f" --revision {revision}`" if revision else "`")
    try:
        folder = Path(snapshot_download(repo_id, revision=revision or None, local_files_only=offline,
                                        ignore_patterns=_HF_IGNORE))
    except LocalEntryNotFoundError:
        state = "offline" if offline else "the download failed"
        raise WeightsError(
            f"expert '{expert}': weights '{spec}' are not in the Hugging Face cache "
            f"({constants.HF_HUB_CACHE}) and the hub is unreachable ({state}); download them on a "
            f"machine with internet ({fetch}) and copy the cache, or set weights: to a local folder"
        ) from None
    except GatedRepoError:
        raise WeightsError(f"expert '{expert}': Hugging Face repo '{repo_id}' is gated; accept its "
                           f"licence on huggingface.co and log in (`hf auth login`)") from None
    except RevisionNotFoundError:
        raise WeightsError(f"expert '{expert}': revision '{revision}' of Hugging Face repo '{repo_id}' "
                           f"does not exist; fix weights: in the recipe") from None
    except RepositoryNotFoundError:
        raise WeightsError(f"expert '{expert}': Hugging Face repo '{repo_id}' does not exist (or is "
                           f"private); fix weights: in the recipe") from None
    except (HfHubHTTPError, OSError) as err:
        raise WeightsError(f"expert '{expert}': cannot fetch '{spec}' from the Hugging Face hub "
                           f"({type(err).__name__}: {str(err).splitlines()[0]}); retry, or set "
                           f"weights: to a local folder") from None
    digest = folder_sha256(folder)
    _check_sha(sha256, digest, expert, f"weights '{spec}'")
    # The snapshot folder is named by the commit: the identity pins the exact revision used.
    return ResolvedWeights(folder, f"{repo_id}@{folder.name}", digest)
