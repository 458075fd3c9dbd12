"""`vre run --ray`: against a local Ray instance (2 CPUs) started here; the same store as one worker,
a dead actor's job retried elsewhere, interrupted runs resumed by another backend."""
from __future__ import annotations

import signal

import pytest
import zarr

from test_parallel import assert_same_store, basic_experts, kill_midway, logged_pids, store_recipe, wait_gone
from video_pipeline.recipe import load_recipe
from video_pipeline.runner import RunOptions, run, store_paths

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'video-pipeline[ray]')")


@pytest.fixture(scope="module")
def ray_address():
    """One local Ray instance for the module (its start-up takes seconds)."""
    import logging

    # two logical GPUs (no hardware needed): actors of learned experts ask for them
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, logging_level=logging.ERROR)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def ray_run(recipe_path, video, out, **kw) -> int:
    """What `vre run RECIPE VIDEO -o OUT --ray -q` does; returns its exit code."""
    from video_pipeline.cli import report_runs
    from video_pipeline.parallel import run_parallel

    options = RunOptions(ray="auto", progress=False, **kw)
    return report_runs(run_parallel(load_recipe(recipe_path), store_paths([video], out), options))


def test_ray_writes_the_single_worker_store(ray_address, tmp_path, clip):
    log = tmp_path / "pids.log"
    recipe = store_recipe(tmp_path, basic_experts(log))
    ref, out = tmp_path / "ref.zarr", tmp_path / "ray.zarr"
    run(load_recipe(recipe), clip, ref, RunOptions(progress=False))
    log.unlink()
    assert ray_run(recipe, clip, out) == 0
    assert_same_store(ref, out)
    pids = logged_pids(log)
    assert len(pids) == 2 and sum(pids.values()) == 48  # two actors (2 CPUs), each frame computed once
    before = log.read_text()
    assert ray_run(recipe, clip, out) == 0 and log.read_text() == before  # nothing left to do


def test_learned_experts_run_on_gpu_actors_one_gpu_each(ray_address, tmp_path, clip):
    log = tmp_path / "gpus.log"
    recipe = store_recipe(tmp_path, f"  d: {{type: test/learned, params: {{log: {log}}}}}\n")
    recipe.write_text(recipe.read_text().replace("experts:", "device: cuda\nexperts:"))
    assert ray_run(recipe, clip, tmp_path / "s.zarr") == 0
    calls = {tuple(line.split()) for line in log.read_text().splitlines()}
    assert {(gpu, device) for _, gpu, device in calls} == {("0", "cuda"), ("1", "cuda")}
    assert len({pid for pid, _, _ in calls}) == 2  # two actors, one GPU each


def test_a_dead_actors_job_is_retried_on_another(ray_address, tmp_path, clip):
    marker = tmp_path / "died"
    recipe = store_recipe(tmp_path, "  rgb: {type: color/rgb}\n"
                                    f"  dies: {{type: test/exit-at, params: {{call: 2, marker: {marker}}}}}\n")
    ref, out = tmp_path / "ref.zarr", tmp_path / "ray.zarr"
    assert ray_run(recipe, clip, out) == 0
    assert marker.exists()  # an actor did die in its second call
    run(load_recipe(recipe), clip, ref, RunOptions(progress=False))  # the marker keeps this one alive
    assert_same_store(ref, out)


def test_killed_local_run_is_resumed_by_ray(ray_address, tmp_path, clip):
    log = tmp_path / "pids.log"
    recipe = store_recipe(tmp_path, basic_experts(log, delay=0.03))
    ref, out = tmp_path / "ref.zarr", tmp_path / "s.zarr"
    code, _ = kill_midway(["run", str(recipe), str(clip), "-o", str(out), "--workers", "2", "-q"],
                          out / "_progress" / "plus", 6, signal.SIGKILL)
    assert code == -signal.SIGKILL
    wait_gone(logged_pids(log))
    assert 0 < zarr.open_group(str(out), mode="r")["_progress/plus"][:].sum() < 6
    assert ray_run(recipe, clip, out) == 0
    run(load_recipe(recipe), clip, ref, RunOptions(progress=False))
    assert_same_store(ref, out)


def test_interrupted_ray_run_is_resumed_locally(ray_address, tmp_path, clip):
    log = tmp_path / "pids.log"
    recipe = store_recipe(tmp_path, basic_experts(log, delay=0.03))
    ref, out = tmp_path / "ref.zarr", tmp_path / "s.zarr"
    code, stderr = kill_midway(["run", str(recipe), str(clip), "-o", str(out), "--ray", ray_address, "-q"],
                               out / "_progress" / "plus", 6, signal.SIGINT)
    assert code == 130 and "interrupted" in stderr, stderr
    wait_gone(logged_pids(log))  # the driver killed its actors before exiting
    assert 0 < zarr.open_group(str(out), mode="r")["_progress/plus"][:].sum() < 6
    run(load_recipe(recipe), clip, out, RunOptions(progress=False))
    run(load_recipe(recipe), clip, ref, RunOptions(progress=False))
    assert_same_store(ref, out)
