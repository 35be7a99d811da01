#!/usr/bin/env bash
# The course's GPU figures in one go, on a machine with one CUDA GPU and no network.
#
# It measures what docs/benchmarks.md lists as missing: the training ladder for the 30m and
# 124m presets (MFU), the talk's 30M run end to end (80M GPT-2 tokens, compile included, with
# its final validation loss) and generation with and without the KV cache. The packed data must
# travel with the repository (python -m tinylm data --tokenizer gpt2 makes data/processed/gpt2
# beforehand), and python3 must have torch with CUDA, numpy, tiktoken, safetensors, tqdm and
# transformers. Everything is written under $OUT (default /tmp/gpu_check); copy the JSON files
# to data/reference/ with their device in the name (e.g. bench_train_throughput_cuda-nvidia-
# h100-80gb-hbm3.json, runs_cuda-nvidia-h100-80gb-hbm3.json) and run `python bench/report.py`.
# About 10 minutes on an H100; each step has its own time limit so one slow step cannot eat
# the rest.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TINYLM_PROFILE=gpu
OUT=${OUT:-/tmp/gpu_check}
RUNS="$(mktemp -d)"  # the run's checkpoints stay on the machine
mkdir -p "$OUT"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" \
    | tee -a "$OUT/gpu.txt"

echo "== 1. training ladder (30m, 124m)"
timeout 240 python3 bench/train_throughput.py --out "$OUT/bench_train_throughput.json"

echo "== 2. the talk's 30M run, end to end"
start=$(date +%s)
TINYLM_RUNS_DIR="$RUNS" timeout 300 python3 -m tinylm train --run talk-30m
echo "talk-30m: $(( $(date +%s) - start )) s of wall time, data loading and compile included" \
    | tee -a "$OUT/gpu.txt"
TINYLM_RUNS_DIR="$RUNS" python3 bench/record_runs.py talk-30m --out "$OUT/runs.json"

echo "== 3. generation with and without the KV cache"
timeout 120 python3 bench/generate.py --out "$OUT/bench_generate.json"
rm -rf "$RUNS"
