"""Time the cold data pipeline: mirror/upstream → verified raw files → three packed tokenizations.

Run it with `make bench` or `python bench/data_prep.py`. It works in a fresh temporary data
folder (so nothing is cached; under $TMPDIR), prints a table and writes JSON to
``data/reference/bench_data_prep.json`` (or ``--out``). It never asserts a timing.
``--tokenizers char`` times the pipeline with fewer tokenizations (the BPE is trained only when
``bpe`` is among them), e.g. for a quick check that the script runs.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import torch
from common import machine, save_result

from tinylm import cleaning, data, download
from tinylm.reference import REFERENCE_DIR
from tinylm.timing import timed
from tinylm.tokenizers import TOKENIZER_NAMES, BPETokenizer


def run(bpe_vocab: int, tokenizers: tuple[str, ...]) -> dict:
    """Every stage of the cold pipeline, timed, in a throwaway data folder."""
    with tempfile.TemporaryDirectory() as tmp:
        os.environ[download.DATA_DIR_ENV] = tmp
        stages = {}
        _, stages["fetch + verify (59 files)"] = timed(download.fetch, "tang", progress=False)
        _, stages["fetch again (all verified, skipped)"] = timed(
            download.fetch, "tang", progress=False
        )
        poems, stages["load JSON"] = timed(cleaning.load_poems)
        poems, stages["traditional → simplified (OpenCC t2s)"] = timed(
            cleaning.to_simplified, poems
        )
        (poems, _), stages["clean"] = timed(cleaning.clean_poems, poems)
        (poems, _), stages["dedupe"] = timed(cleaning.deduplicate, poems)
        corpus, stages["corpus total (load_corpus)"] = timed(cleaning.load_corpus)
        if "bpe" in tokenizers:
            train_texts = [p.text for p in corpus.train]
            _, stages[f"train BPE {bpe_vocab} (tinylm.bpe)"] = timed(
                BPETokenizer.train, train_texts, bpe_vocab
            )
        for name in tokenizers:
            _, stages[f"prepare {name} (tokenizer + encode + pack)"] = timed(
                data.prepare, name, bpe_vocab_size=bpe_vocab, corpus=corpus
            )
        os.environ.pop(download.DATA_DIR_ENV)
        _, total = timed(_cold_all, tmp, bpe_vocab, tokenizers)
        stages[f"cold pipeline, mirror → {len(tokenizers)} packed tokenizations"] = total
    return stages


def _cold_all(tmp: str, bpe_vocab: int, tokenizers: tuple[str, ...]) -> None:
    """The whole job as `python -m tinylm data` runs it, from an empty folder."""
    os.environ[download.DATA_DIR_ENV] = str(Path(tmp) / "cold")
    try:
        data.prepare_all(tokenizers, bpe_vocab_size=bpe_vocab)
    finally:
        os.environ.pop(download.DATA_DIR_ENV)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bpe-vocab", type=int, default=data.DEFAULT_BPE_VOCAB)
    parser.add_argument(
        "--tokenizers",
        default=",".join(TOKENIZER_NAMES),
        help="comma-separated tokenizations to prepare (default: %(default)s)",
    )
    parser.add_argument("--out", type=Path, default=REFERENCE_DIR / "bench_data_prep.json")
    args = parser.parse_args()
    tokenizers = tuple(name.strip() for name in args.tokenizers.split(","))
    unknown = sorted(set(tokenizers) - set(TOKENIZER_NAMES))
    if unknown:
        parser.error(f"unknown tokenizers {unknown}; choose from {list(TOKENIZER_NAMES)}")
    stages = run(args.bpe_vocab, tokenizers)
    width = max(map(len, stages))
    for stage, seconds in stages.items():
        print(f"{stage:<{width}}  {seconds:8.2f} s")
    result = {
        "benchmark": "data_prep",
        "machine": machine(torch.device("cpu")),
        "mirror": bool(os.environ.get(download.MIRROR_ENV)),
        "tokenizers": list(tokenizers),
        "bpe_vocab": args.bpe_vocab,
        "seconds": {k: round(v, 3) for k, v in stages.items()},
    }
    print(f"saved {save_result(result, args.out)}")


if __name__ == "__main__":
    main()
