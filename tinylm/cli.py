"""Command line: ``python -m tinylm data|train|sample|eval|demo|warm|runs``."""

from __future__ import annotations

import argparse
import ast
import errno
import math
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch

# run_files and sampling by module: a test patches is_finished or sample_poems where it is defined.
from tinylm import cleaning, data, download, poetry, pretrained, run_files, sampling
from tinylm.archive import (
    ArchiveError,
    ImportResult,
    Manifest,
    export_runs,
    import_runs,
    profile_run_names,
    untrained_runs,
)
from tinylm.hardware import NotEnoughMemory, resolve_device
from tinylm.lock import FolderLocked
from tinylm.model import GPT
from tinylm.profiles import PROFILES, get_profile
from tinylm.runs import MAX_SEED, RUNS, RUNS_DIR_ENV, TrainConfig, config_fields, runs_dir
from tinylm.tokenizers import (
    MAX_BPE_VOCAB_SIZE,
    REPORTED_DENSITY,
    TOKENIZER_NAMES,
    Tokenizer,
    TokenizerUnavailable,
)
from tinylm.train import TrainingDiverged, TrainResult, train


def int_at_least(low: int):
    """An argparse type: an integer ≥ low, or an error that states the valid range."""
    return int_in(low)


def int_in(low: int, high: int | None = None):
    """An argparse type: an integer from low to high (no upper end: None), else an error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is too small: use an integer ≥ {low}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"{value} is too large: use an integer ≤ {high}")
        return value

    parse.__name__ = f"integer ≥ {low}" if high is None else f"integer in [{low}, {high}]"
    return parse


def number_in(low: float, high: float = math.inf, *, low_included: bool = True):
    """An argparse type: a finite number from low (included or not) to high, else an error."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        above_low = value >= low if low_included else value > low
        if not (math.isfinite(value) and above_low and value <= high):
            raise argparse.ArgumentTypeError(f"{text} is out of range: use a number in {shown}")
        return value

    shown = f"{'[' if low_included else '('}{low:g}, {high:g}{']' if high < math.inf else ')'}"
    parse.__name__ = f"number in {shown}"  # what argparse names in its messages
    return parse


def format_summary(packed: dict[str, data.PackedData]) -> str:
    """The corpus summary and one row per prepared tokenization, as printed by the CLI."""
    meta = next(iter(packed.values())).meta
    c, n = meta["cleaning"], meta["counts"]
    manifest = download.load_manifest()
    lines = [
        f"全唐诗 (Complete Tang Poems), chinese-poetry @ {manifest.commit[:12]}, "
        f"sha256-verified in {download.raw_dir()}",
        f"  poems read                      {c['poems_in']:>9,}",
        f"  editorial notes removed         {c['notes_removed']:>9,}",
        f"  titles cleaned of notes         {c['titles_cleaned']:>9,}",
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
    lines.append(f"  packed into {download.data_dir() / 'processed'}")
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
        label = {
            "char": "characters (ours)",
            "bpe": "byte-level BPE (ours)",
            "gpt2": "GPT-2 (tiktoken gpt2)",
        }[name]
        lines.append(
            f"  {label:<30}{p.meta['vocab_size']:>9,}{tokens_per_char(p):>13.2f}  measured here"
        )
    for name, vocab, ratio in REPORTED_DENSITY:
        lines.append(f"  {name:<30}{vocab:>9,}{ratio:>13.2f}  reported in the talk")
    return "\n".join(lines)


def cmd_data(args: argparse.Namespace) -> None:
    """Fetch, verify, clean and pack the corpus; print the summary."""
    names = TOKENIZER_NAMES if args.tokenizer == "all" else (args.tokenizer,)
    start = time.perf_counter()
    packed = data.prepare_all(names, args.split, args.bpe_vocab, args.force)
    print(format_summary(packed))
    print(f"  ready in {time.perf_counter() - start:.1f} s")


def cmd_demo(args: argparse.Namespace) -> None:
    """Everything the course has built so far, without a browser."""
    profile = get_profile()
    print(f"TinyLM course demo: profile '{profile.name}' ({profile.description})\n")
    packed = data.prepare_all(TOKENIZER_NAMES)
    print(format_summary(packed))
    print()
    print(format_density(packed))
    example = packed["char"].tokenizer
    print(
        f"\nA training example ends with the end-of-text token "
        f"{example.decode([example.eot_id])!r}."
    )
    print(
        f"\nThe '{profile.name}' profile's model: run {profile.train_run}, trained once and then "
        f"loaded from {RUNS[profile.train_run].out_dir}."
    )
    model, tokenizer = pretrained.get(profile=profile.name)
    print("\nThree poems it wrote:\n")
    print("\n\n".join(sampling.sample_poems(model, tokenizer, n=3)))
    print("\nOpen notebooks/ with `make lab` for the lessons.")


def parse_overrides(pairs: Sequence[str]) -> dict:
    """key=value pairs as TrainConfig overrides; values are Python literals, else strings."""
    valid = config_fields()
    overrides = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or key not in valid:
            raise ValueError(
                f"cannot use {pair!r} as an override: write key=value with a key "
                f"of TrainConfig: {', '.join(valid)}"
            )
        try:
            overrides[key] = ast.literal_eval(text)  # 3e-4, 64, None, True, (0.9, 0.95)
        except (ValueError, SyntaxError):
            overrides[key] = text  # bfloat16, cuda:1, auto
    return overrides


def format_result(result: TrainResult, seconds: float) -> str:
    """The last losses of a run and where its files are."""
    last = result.history[-1] if result.history else {}
    evals = [r for r in result.history if r["val_loss"] is not None]
    lines = [
        f"  step {last.get('step', '?')} in {seconds / 60:.1f} min "
        f"(this call; {last.get('elapsed_s', 0) / 60:.1f} min in all)"
    ]
    if evals:
        lines.append(
            f"  train loss {evals[-1]['eval_train_loss']:.3f}, val loss "
            f"{evals[-1]['val_loss']:.3f} (nats per token, fixed eval batches)"
        )
    lines.append(
        f"  log {result.out_dir / 'log.jsonl'}; checkpoint {result.out_dir / 'checkpoint'}"
        f"; final model {result.out_dir / 'model'}"
    )
    return "\n".join(lines)


def cmd_train(args: argparse.Namespace) -> None:
    """Train a run of tinylm.runs.RUNS (the profile's by default), resuming if it can."""
    cfg: TrainConfig = replace(
        RUNS[args.run or get_profile().train_run], **parse_overrides(args.overrides)
    )
    done = not args.no_resume and run_files.is_finished(cfg)
    print(
        f"run {cfg.run_name}: model {cfg.model}, tokenizer {cfg.tokenizer}, batch "
        f"{cfg.batch_size} x {cfg.grad_accum}, {cfg.max_steps} steps"
        + (" (already finished: loading it)" if done else "")
    )
    start = time.perf_counter()
    result = train(cfg, resume=not args.no_resume, max_steps=args.steps)
    print(format_result(result, time.perf_counter() - start))
    print("\nThree poems it wrote:\n")
    print("\n\n".join(sampling.sample_poems(result.model, result.tokenizer, n=3)))


def cmd_warm(args: argparse.Namespace) -> None:
    """Prepare the data and train every run the profile's notebooks use, before a workshop."""
    profile = get_profile(args.profile)
    runs = pretrained.profile_runs(profile.name)
    print(
        f"profile {profile.name}: preparing the data, then {len(runs)} runs "
        f"({', '.join(cfg.run_name for cfg in runs)})"
    )
    data.prepare_all(TOKENIZER_NAMES)
    start = time.perf_counter()
    width = max(len(cfg.run_name) for cfg in runs) + 2
    for cfg in runs:
        done = run_files.is_finished(cfg)
        run_start = time.perf_counter()
        pretrained.trained(cfg)
        print(
            f"  {cfg.run_name:<{width}}"
            + ("already trained" if done else f"trained in {time.perf_counter() - run_start:.0f} s")
        )
    print(
        f"every notebook of the {profile.name} profile now loads its models instead of "
        f"training them ({time.perf_counter() - start:.0f} s)"
    )


def load_cli_model(run: str | None, folder: str | None) -> tuple[Path, GPT, Tokenizer]:
    """The model folder (or its model/), else the run's final model, with its tokenizer.

    Without either, the profile's run. A damaged run model's error says how to write it again.
    It goes on the device training picks (`resolve_device`: MPS only if its self-check passes).
    """
    if folder:
        directory = Path(folder)
        directory = directory / "model" if (directory / "model").is_dir() else directory
        model, tokenizer = run_files.load_model(directory)
        return directory, model.to(resolve_device("auto")), tokenizer
    run = run or get_profile().train_run
    directory = RUNS[run].out_dir / "model"
    if not directory.is_dir():
        raise ValueError(
            f"run {run} has no final model in {directory} yet: train it first "
            f"with `python -m tinylm train --run {run}`"
        )
    try:
        model, tokenizer = run_files.load_model(directory)
    except ValueError as error:
        raise ValueError(
            f"{error}. Write the final model again from the run's checkpoint with "
            f"`python -m tinylm train --run {run}`, or retrain the run from "
            f"scratch with `python -m tinylm train --run {run} --no-resume`."
        ) from None
    return directory, model.to(resolve_device("auto")), tokenizer


def cmd_sample(args: argparse.Namespace) -> None:
    """Write poems with a trained run's final model or a model folder."""
    _, model, tokenizer = load_cli_model(args.run, args.model)
    warn_unknown_characters(tokenizer, args.prompt or [])
    if args.beams > 1:
        poems = sampling.beam_poems(model, tokenizer, args.prompt, args.max_new_tokens, args.beams)
    else:
        poems = sampling.sample_poems(
            model,
            tokenizer,
            args.prompt,
            args.n,
            args.max_new_tokens,
            args.temperature,
            args.top_k or None,
            args.seed,
            top_p=args.top_p,
            repetition_penalty=args.repetition_penalty,
        )
    print("\n\n".join(poems))


def warn_unknown_characters(tokenizer: Tokenizer, prompts: Sequence[str]) -> None:
    """Say on stderr which prompt characters a character-level model has never seen."""
    count_unknown = getattr(tokenizer, "count_unknown", None)
    if count_unknown is None:
        return  # a byte-level tokenizer encodes any text
    unknown = count_unknown("".join(prompts))
    if unknown:
        shown = " ".join(repr(ch) for ch in list(unknown)[:10])
        print(
            f"warning: the model never saw {sum(unknown.values())} character(s) of the prompt "
            f"({shown}): each is <unk> to it, so expect a poor poem. It knows the characters "
            "of the Tang poems it was trained on.",
            file=sys.stderr,
        )


def check_report_path(out: Path) -> None:
    """Refuse, before any work, a report path that cannot take a new file: a folder, a device
    such as /dev/null (the report is renamed into place, which would replace it), a missing or
    read-only folder."""
    problem = None
    if out.is_dir():
        problem = "it is a folder"
    elif out.exists() and not out.is_file():
        problem = "it is a device or a pipe, not a file"
    elif not out.parent.is_dir():
        problem = f"there is no folder {out.parent}"
    else:
        partial = out.with_name(out.name + ".part")  # the name the report is first written to
        try:
            partial.touch()
            partial.unlink()
        except OSError as error:
            problem = f"{partial.name} cannot be created there ({error.strerror})"
    if problem:
        raise ValueError(
            f"cannot write the report to {out}: {problem}; pass --out a file name in a folder "
            "you can write to"
        )


def cmd_eval(args: argparse.Namespace) -> None:
    """Score a model's poems and its bits per character; write the report as JSON."""
    directory, model, tokenizer = load_cli_model(args.run, args.checkpoint)
    out = (
        Path(args.out)
        if args.out
        else (directory.parent if directory.name == "model" else directory) / "eval.json"
    )
    check_report_path(out)  # said now, not after minutes of work
    packed = data.prepare(tokenizer.name, bpe_vocab_size=tokenizer.vocab_size)
    judge = poetry.PoemJudge.from_training(cleaning.load_corpus().train)
    report, documents = poetry.judge_model(
        model, tokenizer, judge, args.samples, args.temperature, args.top_k or None, seed=args.seed
    )
    report = {
        "model": str(directory),
        "tokenizer": tokenizer.name,
        "parameters": model.num_parameters(),
        "val_bits_per_char": poetry.validation_bits_per_character(model, packed),
        **report,
        "examples": documents[:5],
    }
    data.write_json(report, out)
    for key in (
        "val_bits_per_char",
        "finished",
        "regulated",
        "rhymes",
        "tone_agreement",
        "copied_verses",
        "longest_copied_mean",
    ):
        value = report[key]
        print(f"{key:<22}{'-' if value is None else f'{value:.3f}'}")
    print(f"report written to {out}")


def add_eval_parser(sub: argparse._SubParsersAction) -> None:
    """``python -m tinylm eval [--run NAME | --checkpoint DIR] [--samples N] [--out FILE]``."""
    p = sub.add_parser(
        "eval",
        help="judge a model's poems (form, rhyme, 平仄, copying) and "
        "its bits per character; write a JSON report",
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--run", choices=sorted(RUNS), help="this run's final model (default: the profile's run)"
    )
    source.add_argument("--checkpoint", help="a model folder, or a run folder holding model/")
    p.add_argument(
        "--samples", type=int_at_least(1), default=200, help="poems to write (default: %(default)s)"
    )
    p.add_argument("--temperature", type=number_in(0), default=0.8, help="(default: %(default)s)")
    p.add_argument(
        "--top-k", type=int_at_least(0), default=200, help="0 = all (default: %(default)s)"
    )
    p.add_argument("--seed", type=int_in(0, MAX_SEED), default=0, help="(default: %(default)s)")
    p.add_argument(
        "--out", help="where to write the JSON report (default: eval.json in the run folder)"
    )
    p.set_defaults(func=cmd_eval)


def add_train_parser(sub: argparse._SubParsersAction) -> None:
    """``python -m tinylm train [--run NAME] [--steps N] [--no-resume] [key=value ...]``."""
    p = sub.add_parser("train", help="train a run (the profile's by default), resuming if it can")
    p.add_argument(
        "--run",
        choices=sorted(RUNS),
        help="a run of tinylm.runs.RUNS (default: the profile's: char-ci, char-cpu, "
        "char-cpu-fp32 or char-gpu)",
    )
    p.add_argument(
        "--steps",
        type=int_at_least(1),
        help="stop after this step (the schedule still spans max_steps); run again to resume",
    )
    p.add_argument(
        "--no-resume",
        action="store_true",
        help="start over, deleting the run's checkpoint, log and model",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="TrainConfig fields to change, e.g. lr=3e-4 max_steps=100 dtype=bfloat16",
    )
    p.set_defaults(func=cmd_train)


def add_sample_parser(sub: argparse._SubParsersAction) -> None:
    """``python -m tinylm sample [--run NAME | --model DIR] [--prompt TEXT] [--top-p P] …``."""
    p = sub.add_parser("sample", help="write poems with a trained model")
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--run",
        choices=sorted(RUNS),
        help="use this run's final model (default: the profile's run)",
    )
    source.add_argument(
        "--model", help="a model folder (config.json, model.safetensors, tokenizer.json)"
    )
    p.add_argument(
        "--prompt",
        action="append",
        help="start of a poem, e.g. a title; repeat for several (default: poems from scratch)",
    )
    p.add_argument(
        "-n", type=int_at_least(1), default=5, help="poems per prompt (default: %(default)s)"
    )
    p.add_argument(
        "--temperature", type=number_in(0), default=0.8, help="0 = greedy (default: %(default)s)"
    )
    p.add_argument(
        "--top-k",
        type=int_at_least(0),
        default=200,
        help="sample among the k most likely tokens; 0 = all (default: %(default)s)",
    )
    p.add_argument(
        "--top-p",
        type=number_in(0, 1, low_included=False),
        help="nucleus sampling: sample among the most "
        "likely tokens holding this much probability, e.g. 0.9 (default: off)",
    )
    p.add_argument(
        "--repetition-penalty",
        type=number_in(0, low_included=False),
        default=1.0,
        help="> 1 makes tokens already written less likely (default: %(default)s = off)",
    )
    p.add_argument(
        "--beams",
        type=int_at_least(1),
        default=1,
        help="> 1: beam search with this "
        "many beams, one poem per prompt; -n, temperature, top-k/p are then unused "
        "(default: %(default)s = sampling)",
    )
    p.add_argument(
        "--max-new-tokens", type=int_at_least(1), default=200, help="(default: %(default)s)"
    )
    p.add_argument("--seed", type=int_in(0, MAX_SEED), default=1337, help="(default: %(default)s)")
    p.set_defaults(func=cmd_sample)


def format_megabytes(size: int) -> str:
    """A size in bytes as megabytes, the unit run files and archives are measured in."""
    return f"{size / 1e6:,.1f} MB"


def format_export(manifest: Manifest, path: Path, seconds: float) -> str:
    """What `runs export` wrote: the archive, its runs and sizes, and the command to import it."""
    whose = f" (the {manifest.profile} profile's)" if manifest.profile else ""
    contents = (
        "models, logs and optimizer states"
        if manifest.with_optimizer
        else "models and logs; no optimizer state (--with-optimizer adds it)"
    )
    width = max(len(run.name) for run in manifest.runs) + 2
    return "\n".join(
        [
            f"exported {len(manifest.runs)} runs{whose} to {path}: "
            f"{format_megabytes(path.stat().st_size)} in {seconds:.1f} s, {contents}",
            *(f"  {run.name:<{width}}{format_megabytes(run.size):>10}" for run in manifest.runs),
            f"on every other machine: python -m tinylm runs import {path.name}",
        ]
    )


def format_import(result: ImportResult, path: Path, seconds: float) -> str:
    """What `runs import` did: each run installed or kept, and what the profile still lacks."""
    manifest = result.manifest
    whose = f" of the {manifest.profile} profile" if manifest.profile else ""
    width = max(len(run.name) for run in manifest.runs) + 2
    lines = [
        f"imported {path} ({len(manifest.runs)} runs{whose}, exported by tinylm "
        f"{manifest.tinylm_version}) into {result.runs_dir} in {seconds:.1f} s:"
    ]
    for run in manifest.runs:
        done = "installed" if run.name in result.installed else "already here, same config: kept"
        lines.append(f"  {run.name:<{width}}{format_megabytes(run.size):>10}  {done}")
    profile = get_profile()
    missing = untrained_runs(profile_run_names(profile.name))
    if missing:
        lines.append(
            f"the {profile.label} profile here still lacks {len(missing)} runs "
            f"({', '.join(missing)}): `python -m tinylm warm` trains them"
        )
    else:
        lines.append(
            f"every run of the {profile.label} profile is trained: the notebooks load them"
        )
    return "\n".join(lines)


def cmd_runs_export(args: argparse.Namespace) -> None:
    """Pack trained runs (the profile's, by default) into one archive for other machines."""
    profile = None if args.runs else get_profile(args.profile)
    names = args.runs or profile_run_names(profile.name)
    start = time.perf_counter()
    manifest = export_runs(
        args.file,
        names,
        with_optimizer=args.with_optimizer,
        profile=profile.label if profile else None,
    )
    print(format_export(manifest, Path(args.file), time.perf_counter() - start))


def cmd_runs_import(args: argparse.Namespace) -> None:
    """Check a runs archive whole, then install its runs into the runs folder."""
    start = time.perf_counter()
    result = import_runs(args.file)
    print(format_import(result, Path(args.file), time.perf_counter() - start))


def add_runs_parser(sub: argparse._SubParsersAction) -> None:
    """``python -m tinylm runs export FILE [--profile P | --runs NAME ...] [--with-optimizer]``
    and ``python -m tinylm runs import FILE``."""
    p = sub.add_parser(
        "runs", help="move trained runs between machines: export them to one file, import it"
    )
    actions = p.add_subparsers(dest="runs_command", required=True)
    export = actions.add_parser(
        "export", help="pack trained runs (by default the profile's, as `warm` trains them)"
    )
    export.add_argument("file", help="the archive to write, e.g. runs-cpu.tar")
    which = export.add_mutually_exclusive_group()
    which.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        help="this profile's runs (default: TINYLM_PROFILE, else by the hardware)",
    )
    which.add_argument("--runs", nargs="+", metavar="NAME", help="these runs instead")
    export.add_argument(
        "--with-optimizer",
        action="store_true",
        help="also pack each run's last checkpoint with its optimizer state (only needed to "
        "resume training; about 4x the size)",
    )
    export.set_defaults(func=cmd_runs_export)
    imported = actions.add_parser("import", help="check an archive whole, then install its runs")
    imported.add_argument("file", help="an archive written by `python -m tinylm runs export`")
    imported.set_defaults(func=cmd_runs_import)


def os_error_message(error: OSError) -> str:
    """One line for a file-system error: what failed where, and the setting that moves it.

    A read-only or full runs or data folder names TINYLM_RUNS_DIR or TINYLM_DATA_DIR.
    """
    if error.filename is None:  # raised by tinylm with its own message
        return str(error)
    path = Path(error.filename)
    line = f"{error.strerror or type(error).__name__}: {path}"
    for folder, variable in (
        (runs_dir(), RUNS_DIR_ENV),
        (download.data_dir(), download.DATA_DIR_ENV),
    ):
        if not path.resolve().is_relative_to(folder.resolve()):
            continue
        if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            existing = next(p for p in (folder, *folder.parents) if p.exists())
            return (
                f"{line}. Make {existing} writable, or set {variable} to a folder you can write to."
            )
        if error.errno == errno.ENOSPC:
            return f"{line}. Free some space, or set {variable} to a folder on another disk."
        if error.errno in (errno.ENOTDIR, errno.EEXIST):
            return f"{line}. A file stands where a folder belongs: move it, or set {variable}."
    return line


def is_out_of_memory(error: BaseException) -> bool:
    """True for an allocation that failed: MemoryError, CUDA's OutOfMemoryError, or the CPU
    allocator's RuntimeError ("can't allocate memory")."""
    return isinstance(error, (MemoryError, torch.OutOfMemoryError)) or (
        "can't allocate memory" in str(error)
    )


def out_of_memory_message(error: BaseException) -> str:
    """One line for an allocation that failed: how much, and what to ask for instead."""
    asked = re.search(r"allocate (\d+) bytes", str(error))
    amount = f" ({int(asked.group(1)) / 2**30:,.1f} GiB at once)" if asked else ""
    return (
        f"out of memory{amount}: ask for less at a time: fewer poems (-n, --samples), fewer "
        "--beams or --max-new-tokens, or a smaller batch_size, block_size or eval_batches"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m tinylm``."""
    parser = argparse.ArgumentParser(prog="python -m tinylm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_data = sub.add_parser("data", help="fetch, verify, clean and pack the corpus")
    p_data.add_argument("--tokenizer", choices=(*TOKENIZER_NAMES, "all"), default="all")
    p_data.add_argument(
        "--split",
        choices=cleaning.SPLIT_METHODS,
        default="random",
        help="random (seeded) or the talk's 'last 10%%' of the file order",
    )
    p_data.add_argument(
        "--bpe-vocab",
        type=int_in(256, MAX_BPE_VOCAB_SIZE),
        default=data.DEFAULT_BPE_VOCAB,
        help="vocabulary size of the byte-level BPE (default: %(default)s)",
    )
    p_data.add_argument("--force", action="store_true", help="rebuild even if up to date")
    p_data.set_defaults(func=cmd_data)
    p_demo = sub.add_parser(
        "demo", help="prepare everything, train the profile's model, print what the course built"
    )
    p_demo.set_defaults(func=cmd_demo)
    p_warm = sub.add_parser(
        "warm",
        help="prepare the data and train every run the profile's notebooks use (before a workshop)",
    )
    p_warm.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        help="ci, cpu or gpu (default: TINYLM_PROFILE, else by the hardware)",
    )
    p_warm.set_defaults(func=cmd_warm)
    add_train_parser(sub)
    add_sample_parser(sub)
    add_eval_parser(sub)
    add_runs_parser(sub)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except OSError as error:
        print(f"error: {os_error_message(error)}", file=sys.stderr)
        return 1
    except (
        ArchiveError,
        download.DataError,
        TokenizerUnavailable,
        ValueError,
        TrainingDiverged,
        FolderLocked,
        NotEnoughMemory,
    ) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (MemoryError, RuntimeError) as error:
        if not is_out_of_memory(error):
            raise
        print(f"error: {out_of_memory_message(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C: the usual way to stop, not a crash
        print(
            "interrupted. A training run resumes from its last checkpoint when you run the same "
            "command again.",
            file=sys.stderr,
        )
        return 130
    return 0
