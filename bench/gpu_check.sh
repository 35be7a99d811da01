#!/usr/bin/env bash
# The course's GPU figures in one run of at most 10 minutes on one H100/H200-class GPU.
#
#   bash bench/gpu_check.sh pack                  # where the data is: bundle what the GPU needs
#   OUT=/tmp/gpu_check bash bench/gpu_check.sh    # on the GPU machine, from the repository root
#
# It writes into $OUT (default /tmp/gpu_check) its log, gpu_check.log, and JSON files, each with
# the device's slug in its name (e.g. cuda-nvidia-h200). Copy the JSON files unchanged into
# data/reference/ of your checkout (`cp "$OUT"/*.json data/reference/`, or scp them from the GPU
# machine), then run `python bench/report.py`; the log stays out of data/reference/. The files:
#   machine_<slug>.json                the GPU, torch, CUDA, and the precision talk-30m and
#                                      talk-124m resolve to (dtype and compile "auto")
#   runs_<slug>.json                   talk-30m and talk-124m end to end (80.3M GPT-2 tokens each,
#                                      compile included): curve, final validation loss, tokens/s,
#                                      MFU (bench/record_runs.py)
#   eval_talk-30m_<slug>.json,         200 poems from each model judged by tinylm.poetry.PoemJudge
#   eval_talk-124m_<slug>.json         (python -m tinylm eval)
#   bench_train_throughput_<slug>.json the optimisation ladder with MFU, presets 30m and 124m
#   bench_generate_<slug>.json         generation with and without the KV cache
#   compare_nanogpt_<slug>.json        talk-30m and talk-124m beside nanoGPT's own runs of the
#                                      talk's recipe on an H200 (data/reference/gpu-nanogpt-h200):
#                                      tokens/s of both and the validation curves side by side
#                                      (bench/compare_nanogpt.py; written even if no run finished)
#
# The data goes in a file of its own: data/ is git-ignored, and the GPU machine may have no
# network, so `pack` (run where `make data` has run, or with TINYLM_DATA_MIRROR set) bundles
# into data/bench/gpu_check.tar.gz (about 22 MB): the packed GPT-2 tokens (data/processed/gpt2),
# the raw poems and 平仄 labels the poem judge reads (data/raw/chinese-poetry), tiktoken's GPT-2
# files, and wheels of OpenCC and pypinyin for a GPU image without them (CPython
# $GPU_PYTHON_VERSION, default 3.12). Copy that file to the same path in the GPU machine's
# checkout (for example `scp data/bench/gpu_check.tar.gz gpu:tinylm/data/bench/`); the run
# unpacks it. The GPU machine's python3 (or $PYTHON) needs torch with CUDA, numpy, tiktoken,
# tokenizers, regex, safetensors, tqdm and transformers.
#
# Each step has its own time limit, so one slow step cannot eat the others; the limits add up to
# 580 s. Estimates on an H200 (989 TFLOP/s dense bf16 on paper, ~790 measured): talk-124m is
# 80.3M tokens x 0.77 GFLOP (6 x 124M + attention) = 62 PFLOP, ~160 s at 40 % MFU, plus ~60 s of
# compiling (train and eval graphs), ~20 s writing 20 checkpoints of 1.5 GB and ~15 s starting;
# talk-30m is 15 PFLOP (the 50,304-row output layer is most of it), ~60 s at 25 % MFU plus ~50 s.
# A run stopped by its limit is not recorded or judged; its last log line is printed instead.
set -uo pipefail
cd "$(dirname "$0")/.." || exit

ARCHIVE=data/bench/gpu_check.tar.gz
BUNDLE=data/bench/gpu_check  # tiktoken/ and wheels/, unpacked from the archive
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

pack() {
    # What the GPU machine needs and cannot fetch, in one archive.
    rm -rf "$BUNDLE" && mkdir -p "$BUNDLE/tiktoken" "$BUNDLE/wheels" || return
    "$PYTHON" -m tinylm data --tokenizer gpt2 || return
    "$PYTHON" - "$BUNDLE/tiktoken" <<'EOF' || return
import os
import shutil
import sys
import tempfile

import tiktoken

from tinylm import download

download.fetch("strains", progress=False)  # the poem judge's tone labels
tiktoken.get_encoding("gpt2")  # now in tiktoken's cache, which is looked up as tiktoken does
cache = (os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
         or os.path.join(tempfile.gettempdir(), "data-gym-cache"))
for name in os.listdir(cache):
    shutil.copy(os.path.join(cache, name), sys.argv[1])
EOF
    local wanted
    wanted=$("$PYTHON" -c 'from importlib.metadata import version as v
print("opencc==" + v("opencc"), "pypinyin==" + v("pypinyin"))') || return
    # shellcheck disable=SC2086  # two requirements, split on purpose
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --implementation cp \
        --python-version "${GPU_PYTHON_VERSION:-3.12}" --platform manylinux2014_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
        -d "$BUNDLE/wheels" $wanted || return
    tar -czf "$ARCHIVE" data/raw/chinese-poetry data/processed/gpt2 "$BUNDLE" || return
    rm -rf "$BUNDLE"
    ls -l "$ARCHIVE"
}

if [ "${1:-}" = pack ]; then
    pack
    exit
fi

# Seconds per step: 10 + 10 + 15 + 120 + 265 + 10 + 40 + 75 + 25 + 10 = 580, under 600.
T_UNPACK=10 T_WHEELS=10 T_MACHINE=15 T_30M=120 T_124M=265 T_RECORD=10 T_EVAL=40 T_LADDER=75
T_GENERATE=25 T_COMPARE=10
RUNS=(talk-30m talk-124m)
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
WORK=$(mktemp -d)  # checkpoints (GBs) and installed wheels stay on the machine
trap 'rm -rf "$WORK"' EXIT
STEPS="$WORK/steps.txt"
export TINYLM_PROFILE=gpu TINYLM_RUNS_DIR="$WORK/runs"

step() {
    # step NAME SECONDS COMMAND...: COMMAND under a time limit; how it ended goes to $STEPS.
    local name=$1 limit=$2 start=$SECONDS rc
    shift 2
    echo "== $name (at most $limit s)"
    timeout --kill-after=2 "$limit" "$@"
    rc=$?
    printf '%-16s exit %3d after %3d s of %3d%s\n' "$name" "$rc" $((SECONDS - start)) "$limit" \
        "$( ((rc == 124 || rc == 137)) && echo ': stopped by its time limit')" | tee -a "$STEPS"
    return "$rc"
}

if [ -f "$ARCHIVE" ]; then
    step unpack "$T_UNPACK" tar -xzf "$ARCHIVE"
fi
if [ -d "$BUNDLE/tiktoken" ]; then
    export TIKTOKEN_CACHE_DIR="${TIKTOKEN_CACHE_DIR:-$PWD/$BUNDLE/tiktoken}"
fi
if ! "$PYTHON" -c 'import opencc, pypinyin' 2>/dev/null && [ -d "$BUNDLE/wheels" ]; then
    step wheels "$T_WHEELS" "$PYTHON" -m pip install --quiet --no-index --no-deps \
        --no-compile --target "$WORK/site" "$BUNDLE"/wheels/*.whl
    export PYTHONPATH="$WORK/site:$PYTHONPATH"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
rm -f "$OUT"/machine_*.json  # the one written next names the device
step machine "$T_MACHINE" "$PYTHON" bench/machine_info.py --device cuda --runs "${RUNS[@]}" \
    --out-dir "$OUT" || { echo "no CUDA GPU for torch here: stopping"; exit 1; }
for file in "$OUT"/machine_*.json; do SLUG=$(basename "$file" .json); done
SLUG=${SLUG#machine_}

finished=()
for run in "${RUNS[@]}"; do
    limit=$T_30M
    [ "$run" = talk-124m ] && limit=$T_124M
    step "$run" "$limit" "$PYTHON" -m tinylm train --run "$run"
    if [ -f "$TINYLM_RUNS_DIR/$run/model/train_config.json" ]; then
        finished+=("$run")
    else
        echo "$run did not finish; its last log record:"
        tail -n 1 "$TINYLM_RUNS_DIR/$run/log.jsonl" 2>/dev/null
    fi
done
if [ "${#finished[@]}" -gt 0 ]; then
    step record "$T_RECORD" "$PYTHON" bench/record_runs.py "${finished[@]}" \
        --out "$OUT/runs_$SLUG.json"
    judges=()
    for run in "${finished[@]}"; do  # side by side: nothing in them is timed
        step "eval $run" "$T_EVAL" "$PYTHON" -m tinylm eval --run "$run" --samples 200 \
            --out "$OUT/eval_${run}_$SLUG.json" &
        judges+=($!)
    done
    wait "${judges[@]}"
fi
step ladder "$T_LADDER" "$PYTHON" bench/train_throughput.py \
    --out "$OUT/bench_train_throughput_$SLUG.json"
step generate "$T_GENERATE" "$PYTHON" bench/generate.py --out "$OUT/bench_generate_$SLUG.json"
# tinylm's runs beside nanoGPT's on an H200; with no runs file it says so and shows nanoGPT's side.
step compare "$T_COMPARE" "$PYTHON" bench/compare_nanogpt.py --runs "$OUT/runs_$SLUG.json" \
    --out "$OUT/compare_nanogpt_$SLUG.json"

echo "== summary"
cat "$STEPS"
ls -l "$OUT"
echo "Copy the JSON files into data/reference/ unchanged, then run python bench/report.py."
