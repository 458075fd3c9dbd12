#!/usr/bin/env bash
# GPU figures (docs/benchmarks.md): a CUDA test run, PHG-MAE-Distil throughput at batch 1 and 16, and
# the pipeline-vs-bare ratio with a tiny depth model. Run from the repo root on a CUDA machine with no
# network: wheels missing there in .gpud/*.whl, ../shared assets copied into .gpud/assets.
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpud/*.whl || exit 1
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target /tmp/site2 . >/dev/null 2>&1 || exit 1
export PYTHONPATH=/tmp/site2:/tmp/site
mkdir -p ../shared/weights ../shared/data/uav_toledo /tmp/w
cp .gpud/assets/*.ckpt .gpud/assets/*.pth ../shared/weights/ && cp .gpud/assets/*.jpg ../shared/data/uav_toledo/
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
echo "== pytest --device cuda"
timeout 240 python3 -m pytest -q -p no:cacheprovider --device cuda tests/test_builtin_experts.py \
  tests/test_expert_edges.py tests/test_expert_flow.py tests/test_expert_semantic.py tests/test_expert_depth.py \
  tests/test_phgmae_model.py 2>&1 | tail -15
echo "== clip"
python3 benchmarks/make_clip.py /tmp/w/survey300.mp4 --frames 300
W=$PWD/../shared/weights
for b in 1 16; do
  printf 'resolution: [540, 960]\nexperts:\n  semantic: {type: semantic/phgmae-distil, weights: %s, batch_size: %s}\n' "$W/phgmae_distil_safeuav_430k.ckpt" $b > /tmp/w/distil$b.yaml
  echo "== vre bench distil batch $b"
  timeout 120 python3 -m video_pipeline.cli bench /tmp/w/distil$b.yaml /tmp/w/survey300.mp4 --device cuda 2>&1 | tail -12
done
python3 benchmarks/tiny_depth.py /tmp/w/tiny_depth >/dev/null 2>&1
printf 'resolution: [540, 960]\nexperts:\n  semantic: {type: semantic/phgmae-distil, weights: %s}\n  depth: {type: depth/hf, weights: /tmp/w/tiny_depth}\n' "$W/phgmae_distil_safeuav_430k.ckpt" > /tmp/w/gpu.yaml
echo "== bench_gpu distil + tiny depth"
timeout 150 python3 -m video_pipeline.bench.gpu /tmp/w/gpu.yaml /tmp/w/survey300.mp4 --json > $OUT/bench_gpu.json
python3 -c "import json; from video_pipeline.bench.gpu import format_report; print(format_report(json.load(open('$OUT/bench_gpu.json'))))"
