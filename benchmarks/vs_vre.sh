#!/usr/bin/env bash
# Side by side: this package's `vre run` against video-representations-extractor 1.18.6 on the same
# clip and the same three outputs (rgb, hsv, Canny edges), one run after the other.
#
#   bash benchmarks/vs_vre.sh [CLIP.mp4] [WORKDIR]
#
# CLIP: default WORKDIR/survey300.mp4, made from the real Toledo photos in ../shared if absent
#       (300 frames, 960x540 H.264; benchmarks/make_clip.py).
# WORKDIR: default ./vs_vre_work (stores and outputs are replaced on every run).
# VRE_VENV: the virtual environment holding video-representations-extractor (default
#       WORKDIR/vre-venv); created when `$VRE_VENV/bin/python -c "import vre"` fails: torch 2.13.0
#       first (CPU wheels), then video-representations-extractor 1.18.6, then torchvision 0.28.0 and
#       opencv-python 4.12.0.88 with torch held at its version.
# PYTHON: the interpreter with this package installed (default: python on PATH).
#
# Prints, per tool: wall seconds, frames/s, bytes on disk, and the ratios; a line to paste into
# docs/benchmarks.md with the machine, the load average and the date.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
work="$(mkdir -p "${2:-vs_vre_work}" && cd "${2:-vs_vre_work}" && pwd)"
clip="${1:-$work/survey300.mp4}"
py="${PYTHON:-python}"
vre_venv="${VRE_VENV:-$work/vre-venv}"

for tool in ffmpeg ffprobe bc; do  # video-representations-extractor reads videos through ffmpeg
    command -v $tool >/dev/null || { echo "$tool not found: install it (apt-get install ffmpeg bc)" >&2; exit 2; }
done
if ! "$vre_venv/bin/python" -c "import vre" 2>/dev/null; then
    echo "installing video-representations-extractor 1.18.6 into $vre_venv" >&2
    python3 -m venv "$vre_venv"
    "$vre_venv/bin/pip" install -q torch==2.13.0 --extra-index-url https://download.pytorch.org/whl/cpu
    "$vre_venv/bin/pip" install -q video-representations-extractor==1.18.6
    "$vre_venv/bin/pip" install -q torch==2.13.0 torchvision==0.28.0 opencv-python==4.12.0.88 \
        --extra-index-url https://download.pytorch.org/whl/cpu
fi

if [ ! -f "$clip" ]; then
    "$py" "$here/make_clip.py" "$clip" --frames 300
fi
n_frames=$("$py" -c "import sys; from video_pipeline.video import Video; print(Video.open(sys.argv[1]).n_frames)" "$clip")

# seconds of wall time of a command (its output kept in WORKDIR/<name>.log)
timed() {
    local name=$1; shift
    local t0 t1
    t0=$(date +%s.%N)
    "$@" >"$work/$name.log" 2>&1 || { echo "$name failed, see $work/$name.log" >&2; tail -5 "$work/$name.log" >&2; exit 1; }
    t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc -l
}
bytes() { du -sb "$1" | cut -f1; }

rm -rf "$work/ours.zarr" "$work/ours_jxl.zarr" "$work/vre_out"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
t_ours=$(timed ours "$py" -m video_pipeline.cli run "$repo/recipes/cpu-fast.yaml" "$clip" -o "$work/ours.zarr" -q)
t_rerun=$(timed ours_rerun "$py" -m video_pipeline.cli run "$repo/recipes/cpu-fast.yaml" "$clip" -o "$work/ours.zarr" -q)
t_jxl=$(timed ours_jxl "$py" -m video_pipeline.cli run "$here/vs_vre/jpegxl.yaml" "$clip" -o "$work/ours_jxl.zarr" -q)
t_vre=$(timed vre "$vre_venv/bin/vre" "$clip" -o "$work/vre_out" --config_path "$here/vs_vre/vre_cfg.yaml" \
        --no_vre_repository --external_repositories "$here/vs_vre/repository.py:get_repository")
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

b_ours=$(bytes "$work/ours.zarr"); b_jxl=$(bytes "$work/ours_jxl.zarr"); b_vre=$(bytes "$work/vre_out")
row() { printf "%-34s %8.1f s %8.1f frames/s %9.1f MB\n" "$1" "$2" "$(echo "$n_frames / $2" | bc -l)" "$(echo "$3 / 1000000" | bc -l)"; }
echo "clip: $clip ($n_frames frames); recipe: rgb, hsv, edges/canny"
row "vre run (default codec)" "$t_ours" "$b_ours"
row "vre run (codec: jpegxl)" "$t_jxl" "$b_jxl"
row "video-representations-extractor" "$t_vre" "$b_vre"
printf "rerun of the finished store: %.2f s\n" "$t_rerun"
printf "speed: %.1fx (default codec), %.1fx (jpegxl) faster; disk: %.2f (default), %.2f (jpegxl) of VRE's\n" \
    "$(echo "$t_vre / $t_ours" | bc -l)" "$(echo "$t_vre / $t_jxl" | bc -l)" \
    "$(echo "$b_ours / $b_vre" | bc -l)" "$(echo "$b_jxl / $b_vre" | bc -l)"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load $load_before -> $load_after; $(date -u +%Y-%m-%dT%H:%MZ)"
