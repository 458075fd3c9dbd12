"""weights.resolve: local files and folders, URLs through a real local HTTP server, the Hugging Face
cache offline, and safe checkpoint loading."""
from __future__ import annotations

import functools
import hashlib
import http.server
import os
import threading
from pathlib import Path

import pytest
import torch

from video_pipeline import weights
from video_pipeline.errors import WeightsError


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message, f"not one line: {message!r}"
    return message


# ----------------------------------------------------------------------------------- local paths
def test_local_file_relative_to_base_dir(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "w.pth").write_bytes(b"weights v1")
    got = weights.resolve("models/w.pth", expert="depth", base_dir=tmp_path)
    assert got.path == (tmp_path / "models" / "w.pth").resolve()
    assert got.identity == str(got.path)
    assert got.sha256 == sha(b"weights v1")
    assert got.to_attrs() == {"id": str(got.path), "sha256": sha(b"weights v1")}


def test_local_file_checksum_is_recomputed_after_a_change(tmp_path):
    path = tmp_path / "w.pth"
    path.write_bytes(b"first")
    assert weights.resolve(str(path), expert="e").sha256 == sha(b"first")
    path.write_bytes(b"second!")
    os.utime(path, ns=(1, 1))  # a different mtime even on coarse-clock filesystems
    assert weights.resolve(str(path), expert="e").sha256 == sha(b"second!")


def test_local_file_with_a_wrong_checksum_is_refused(tmp_path):
    (tmp_path / "w.pth").write_bytes(b"weights")
    assert weights.resolve("w.pth", expert="e", base_dir=tmp_path, sha256=sha(b"weights")).sha256
    with pytest.raises(WeightsError) as err:
        weights.resolve("w.pth", expert="edges", base_dir=tmp_path, sha256="0" * 64)
    message = one_line(err)
    assert "expert 'edges'" in message and "0" * 64 in message and sha(b"weights") in message


def test_local_folder_hashes_its_weight_files_only(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert weights.resolve(str(folder), expert="e").sha256 is None  # no weight file
    (folder / "model.safetensors").write_bytes(b"tensor bytes")
    first = weights.resolve(str(folder), expert="e")
    assert first.path == folder.resolve() and first.identity == str(folder.resolve())
    assert first.sha256 is not None
    (folder / "config.json").write_text('{"changed": true}')
    assert weights.resolve(str(folder), expert="e").sha256 == first.sha256
    (folder / "model.safetensors").write_bytes(b"other tensor bytes")
    assert weights.resolve(str(folder), expert="e").sha256 != first.sha256


def test_missing_local_path_names_expert_path_and_base_dir(tmp_path):
    with pytest.raises(WeightsError) as err:
        weights.resolve("missing/model.ckpt", expert="semantic", base_dir=tmp_path)
    message = one_line(err)
    assert "expert 'semantic'" in message and str(tmp_path / "missing" / "model.ckpt") in message
    assert f"'missing/model.ckpt' is relative to the recipe folder {tmp_path}" in message


# ----------------------------------------------------------------------------------------- URLs
class _Server:
    """A real HTTP server on localhost serving `folder`, counting GET requests per path."""

    def __init__(self, folder: Path):
        self.hits: dict[str, int] = {}
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path, monkeypatch):
    served = tmp_path / "served"
    served.mkdir()
    (served / "model.pth").write_bytes(b"remote weights" * 1000)
    monkeypatch.setenv("VRE_CACHE", str(tmp_path / "cache"))
    srv = _Server(served)
    yield srv
    srv.close()


def test_url_is_downloaded_verified_and_then_served_from_the_cache(server, tmp_path):
    digest = sha(b"remote weights" * 1000)
    url = f"{server.url}/model.pth"
    got = weights.resolve(f"{url}#sha256={digest}", expert="depth")
    assert got.path == tmp_path / "cache" / "downloads" / digest / "model.pth"
    assert got.path.read_bytes() == b"remote weights" * 1000
    assert got.identity == url and got.sha256 == digest
    assert server.hits == {"/model.pth": 1}
    again = weights.resolve(url, expert="depth", sha256=digest)  # checksum as an argument
    assert again == got and server.hits == {"/model.pth": 1}   # no second download
    assert [p.name for p in got.path.parent.iterdir()] == ["model.pth"]  # no temporary leftovers


def test_url_with_a_wrong_checksum_leaves_nothing_in_the_cache(server, tmp_path):
    url = f"{server.url}/model.pth#sha256={'a' * 64}"
    with pytest.raises(WeightsError) as err:
        weights.resolve(url, expert="depth")
    message = one_line(err)
    assert "expert 'depth'" in message and "a" * 64 in message
    assert server.hits == {"/model.pth": 1}
    folder = tmp_path / "cache" / "downloads" / ("a" * 64)
    assert list(folder.iterdir()) == []


def test_url_needs_a_checksum(server):
    with pytest.raises(WeightsError) as err:
        weights.resolve(f"{server.url}/model.pth", expert="flow")
    assert "sha256" in one_line(err) and server.hits == {}


def test_url_checksums_in_spec_and_argument_must_agree(server):
    with pytest.raises(WeightsError, match="keep one checksum"):
        weights.resolve(f"{server.url}/model.pth#sha256={'a' * 64}", expert="e", sha256="b" * 64)


def test_url_that_cannot_be_fetched(server):
    with pytest.raises(WeightsError) as err:
        weights.resolve(f"{server.url}/absent.pth#sha256={'c' * 64}", expert="edges")
    message = one_line(err)
    assert "expert 'edges'" in message and "absent.pth" in message and "404" in message


# ------------------------------------------------------------------------------ Hugging Face ids
@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache; the hub counts as unreachable without touching the network."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(weights, "_reachable", lambda url: False)
    return cache


@pytest.mark.parametrize("how", ["env", "probe"])
def test_missing_hub_model_offline_is_one_clear_line(hf_cache, monkeypatch, how):
    if how == "env":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        monkeypatch.setattr(weights, "_reachable", lambda url: pytest.fail("probed while HF_HUB_OFFLINE=1"))
    with pytest.raises(WeightsError) as err:
        weights.resolve("depth-anything/Depth-Anything-V2-Small-hf", expert="depth")
    message = one_line(err)
    assert message.startswith("expert 'depth': weights 'depth-anything/Depth-Anything-V2-Small-hf'")
    assert "not in the Hugging Face cache" in message and "offline" in message
    assert "hf download depth-anything/Depth-Anything-V2-Small-hf" in message
    assert "set weights: to a local folder" in message


def test_hub_model_in_the_cache_resolves_offline(hf_cache, tmp_path):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = hf_cache / "models--org--tiny"
    blob_data = b"safetensors payload"
    (repo / "blobs").mkdir(parents=True)
    (repo / "blobs" / sha(blob_data)).write_bytes(blob_data)
    (repo / "blobs" / "c0ffee").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").symlink_to(Path("../../blobs") / sha(blob_data))
    (snapshot / "config.json").symlink_to(Path("../../blobs/c0ffee"))

    got = weights.resolve("org/tiny", expert="semantic")
    assert got.path == snapshot and got.identity == f"org/tiny@{commit}"
    # The blob-name shortcut gives the checksum that hashing a plain copy of the folder gives.
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "model.safetensors").write_bytes(blob_data)
    assert got.sha256 == weights.folder_sha256(plain)
    assert weights.resolve(f"org/tiny@{commit}", expert="semantic").path == snapshot


def test_existing_local_folder_wins_over_a_hub_id(hf_cache, tmp_path):
    (tmp_path / "org" / "tiny").mkdir(parents=True)
    got = weights.resolve("org/tiny", expert="e", base_dir=tmp_path)
    assert got.path == (tmp_path / "org" / "tiny").resolve()


# --------------------------------------------------------------------------------- checkpoints
class Opaque:
    """A Python object: needs unsafe unpickling to load."""


def test_load_checkpoint_reads_tensors_and_plain_containers(tmp_path):
    path = tmp_path / "ok.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "hyper_parameters": {"cfg": {"lr": 1e-4}}}, path)
    ckpt = weights.load_checkpoint(path)
    assert torch.equal(ckpt["state_dict"]["w"], torch.ones(2))
    assert ckpt["hyper_parameters"]["cfg"]["lr"] == 1e-4


def test_load_checkpoint_refuses_unsafe_pickles(tmp_path):
    path = tmp_path / "unsafe.ckpt"
    torch.save({"state_dict": {}, "extra": Opaque()}, path)
    with pytest.raises(WeightsError) as err:
        weights.load_checkpoint(path)
    message = one_line(err)
    assert str(path) in message and "unsafe unpickling" in message


@pytest.mark.parametrize("content", ["not a torch file", "tensor"])
def test_load_checkpoint_needs_a_torch_dict(tmp_path, content):
    path = tmp_path / "bad.ckpt"
    if content == "tensor":
        torch.save(torch.zeros(3), path)
    else:
        path.write_text(content)
    with pytest.raises(WeightsError) as err:
        weights.load_checkpoint(path)
    assert str(path) in one_line(err)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_missing_weights_in_a_run_leave_no_store_and_name_the_recipe_line(tmp_path, clip, workers, capsys):
    from video_pipeline import cli

    recipe = tmp_path / "r.yaml"
    recipe.write_text("experts:\n  rgb: {type: color/rgb}\n"
                      "  semantic: {type: semantic/phgmae-distil, weights: ../missing/distil.ckpt}\n")
    out = tmp_path / "out" / "clip.zarr"
    assert cli.main(["run", str(recipe), str(clip), "-o", str(out), "--workers", workers, "-q"]) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert f"{recipe}:3: expert 'semantic': weights {tmp_path.parent / 'missing' / 'distil.ckpt'} not found" in err
    assert f"'../missing/distil.ckpt' is relative to the recipe folder {tmp_path}" in err
    assert not out.exists()  # no empty store left behind
    out.mkdir(parents=True)  # a folder that existed before is never removed
    assert cli.main(["run", str(recipe), str(clip), "-o", str(out), "-q"]) != 0
    assert out.is_dir()
