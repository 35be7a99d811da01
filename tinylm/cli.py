"""Command line: ``python -m tinylm data|demo``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from tinylm import data
from tinylm.profiles import get_profile
from tinylm.tokenizers import REPORTED_DENSITY, TokenizerUnavailable

TOKENIZERS = ("char", "bpe", "gpt2")


def format_summary(packed: dict[str, data.PackedData]) -> str:
    """The corpus summary and one row per prepared tokenization, as printed by the CLI."""
    meta = next(iter(packed.values())).meta
    c, n = meta["cleaning"], meta["counts"]
    manifest = data.load_manifest()
    lines = [
        f"全唐诗 (Complete Tang Poems), chinese-poetry @ {manifest.commit[:12]}, "
        f"sha256-verified in {data.raw_dir()}",
        f"  poems read                      {c['poems_in']:>9,}",
        f"  editorial notes removed         {c['notes_removed']:>9,}",
        f"  poems with lost characters (□)  {-c['placeholder_poems']:>9,}",
        f"  empty poems                     {-c['empty_poems']:>9,}",
        f"  duplicate bodies                {-c['duplicates']:>9,}",
        f"  poems kept                      {c['poems_out']:>9,}",
        f"  split '{meta['split']}': {n['train_poems']:,} train / {n['val_poems']:,} val poems, "
        f"{n['train_chars'] + n['val_chars']:,} characters (繁→简 with OpenCC t2s)",
        "",
        f"  {'tokenizer':<10}{'vocab':>8}{'dtype':>8}{'train tokens':>14}{'val tokens':>12}"
        f"{'tokens/char':>13}{'<unk> in val':>14}",
    ]
    for name, p in packed.items():
        n = p.meta["counts"]
        lines.append(
            f"  {name:<10}{p.meta['vocab_size']:>8,}{p.meta['dtype']:>8}{n['train_tokens']:>14,}"
            f"{n['val_tokens']:>12,}{tokens_per_char(p):>13.2f}{n['val_unknown_tokens']:>14,}"
        )
    lines.append(f"  packed into {data.data_dir() / 'processed'}")
    return "\n".join(lines)


def tokens_per_char(packed: data.PackedData) -> float:
    """Tokens per character of training text, end-of-text tokens not counted."""
    n = packed.meta["counts"]
    return (n["train_tokens"] - n["train_poems"]) / n["train_chars"]


def format_density(packed: dict[str, data.PackedData]) -> str:
    """The talk's density table: measured rows for our tokenizers, reported rows for the rest."""
    lines = [
        "Tokens per Chinese character (the talk's 编码密度 table)",
        f"  {'tokenizer':<30}{'vocab':>9}{'tokens/char':>13}  source",
    ]
    for name, p in packed.items():
        label = {"char": "characters (ours)", "bpe": "byte-level BPE (ours)",
                 "gpt2": "GPT-2 (tiktoken gpt2)"}[name]
        lines.append(f"  {label:<30}{p.meta['vocab_size']:>9,}{tokens_per_char(p):>13.2f}"
                     "  measured here")
    for name, vocab, ratio in REPORTED_DENSITY:
        lines.append(f"  {name:<30}{vocab:>9,}{ratio:>13.2f}  reported in the talk")
    return "\n".join(lines)


def cmd_data(args: argparse.Namespace) -> None:
    """Fetch, verify, clean and pack the corpus; print the summary."""
    names = TOKENIZERS if args.tokenizer == "all" else (args.tokenizer,)
    start = time.perf_counter()
    packed = data.prepare_all(names, args.split, args.bpe_vocab, args.force)
    print(format_summary(packed))
    print(f"  ready in {time.perf_counter() - start:.1f} s")


def cmd_demo(args: argparse.Namespace) -> None:
    """Everything the course has built so far, without a browser."""
    profile = get_profile()
    print(f"TinyLM course demo: profile '{profile.name}' ({profile.description})\n")
    packed = data.prepare_all(TOKENIZERS)
    print(format_summary(packed))
    print()
    print(format_density(packed))
    example = packed["char"].tokenizer
    print(f"\nA training example ends with the end-of-text token "
          f"{example.decode([example.eot_id])!r}; open notebooks/ with `make lab` for the lessons.")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m tinylm``."""
    parser = argparse.ArgumentParser(prog="python -m tinylm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_data = sub.add_parser("data", help="fetch, verify, clean and pack the corpus")
    p_data.add_argument("--tokenizer", choices=(*TOKENIZERS, "all"), default="all")
    p_data.add_argument("--split", choices=data.SPLIT_METHODS, default="random",
                        help="random (seeded) or the talk's 'last 10%%' of the file order")
    p_data.add_argument("--bpe-vocab", type=int, default=data.DEFAULT_BPE_VOCAB,
                        help="vocabulary size of the byte-level BPE (default: %(default)s)")
    p_data.add_argument("--force", action="store_true", help="rebuild even if up to date")
    p_data.set_defaults(func=cmd_data)
    p_demo = sub.add_parser("demo", help="prepare everything and print what the course built")
    p_demo.set_defaults(func=cmd_demo)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (data.DataError, TokenizerUnavailable, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
