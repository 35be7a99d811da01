"""Time the cold data pipeline: mirror/upstream → verified raw files → three packed tokenizations.

Run it with `make bench` or `python bench/data_prep.py`. It works in a fresh temporary data
folder (so nothing is cached), prints a table and writes JSON to
``data/reference/bench_data_prep.json`` (or ``--out``). It never asserts a timing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from tinylm import data
from tinylm.tokenizers import BPETokenizer

ROOT = Path(__file__).resolve().parent.parent


def timed(fn, *args, **kwargs):
    """Run fn and return (result, seconds)."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def machine() -> dict:
    """What the figures were measured on."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                            capture_output=True).stdout.strip()
    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "commit": commit or None, "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version()}


def run(bpe_vocab: int) -> dict:
    """Every stage of the cold pipeline, timed, in a throwaway data folder."""
    with tempfile.TemporaryDirectory() as tmp:
        os.environ[data.DATA_DIR_ENV] = tmp
        stages = {}
        _, stages["fetch + verify (59 files)"] = timed(data.fetch, "tang", progress=False)
        _, stages["fetch again (all verified, skipped)"] = timed(data.fetch, "tang",
                                                                 progress=False)
        poems, stages["load JSON"] = timed(data.load_poems)
        poems, stages["traditional → simplified (OpenCC t2s)"] = timed(data.to_simplified, poems)
        (poems, _), stages["clean"] = timed(data.clean_poems, poems)
        (poems, _), stages["dedupe"] = timed(data.deduplicate, poems)
        corpus, stages["corpus total (load_corpus)"] = timed(data.load_corpus)
        train_texts = [p.text for p in corpus.train]
        _, stages[f"train BPE {bpe_vocab} (tinylm.bpe)"] = timed(BPETokenizer.train,
                                                                 train_texts, bpe_vocab)
        for name in ("char", "bpe", "gpt2"):
            _, stages[f"prepare {name} (tokenizer + encode + pack)"] = timed(
                data.prepare, name, bpe_vocab_size=bpe_vocab, corpus=corpus)
        os.environ.pop(data.DATA_DIR_ENV)
        _, total = timed(_cold_all, tmp, bpe_vocab)
        stages["cold pipeline, mirror → 3 packed tokenizations"] = total
    return stages


def _cold_all(tmp: str, bpe_vocab: int) -> None:
    """The whole job as `python -m tinylm data` runs it, from an empty folder."""
    os.environ[data.DATA_DIR_ENV] = str(Path(tmp) / "cold")
    try:
        data.prepare_all(("char", "bpe", "gpt2"), bpe_vocab_size=bpe_vocab)
    finally:
        os.environ.pop(data.DATA_DIR_ENV)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bpe-vocab", type=int, default=data.DEFAULT_BPE_VOCAB)
    parser.add_argument("--out", type=Path,
                        default=ROOT / "data" / "reference" / "bench_data_prep.json")
    args = parser.parse_args()
    stages = run(args.bpe_vocab)
    width = max(map(len, stages))
    for stage, seconds in stages.items():
        print(f"{stage:<{width}}  {seconds:8.2f} s")
    result = {"benchmark": "data_prep", "machine": machine(),
              "mirror": bool(os.environ.get(data.MIRROR_ENV)), "bpe_vocab": args.bpe_vocab,
              "seconds": {k: round(v, 3) for k, v in stages.items()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
