"""The files of a run folder: checkpoints, the final model, the log, and whether to resume.

A run's folder ``runs/<run_name>/`` (``$TINYLM_RUNS_DIR/<run_name>/`` if that is set) holds:

- ``log.jsonl``: one JSON record per log or eval step, the same dicts as `TrainResult.history`:
  step, tokens (seen so far, all processes), lr, train_loss (mean over the steps since the
  last record, dropout on), val_loss and eval_train_loss (eval steps only: fixed validation and
  training batches, dropout off, so the two compare), grad_norm (mean, before clipping),
  tokens_per_s, mfu (None off known GPUs), elapsed_s, and micro_batch and grad_accum (how this
  process cut each step: the TrainConfig's, or split to fit its GPU, see
  `tinylm.hardware.micro_batch_layout`). Fields that do not apply are None.
- ``checkpoint/``: the model (config.json + model.safetensors) and ``trainer_state.pt``
  (optimizer, step, RNG states, TrainConfig, data meta, and the gradient scaler's state in
  fp16), enough to resume exactly; ``checkpoint.old/``, the one before it, to fall back on if
  the newest is found damaged.
- ``model/``: the final model, ``tokenizer.json`` and ``train_config.json``, once finished.
- ``lock`` and ``lock.json`` (who holds it), while a process trains the run: a second one is
  refused (`tinylm.lock`; the empty ``lock`` stays after a run on Linux and macOS).

A run writes and deletes nothing else, and nothing outside its folder: before it starts,
`check_run_folder` refuses links among those names (to somewhere else) and files in the
checkpoint and model folders that a run does not write, since it replaces those folders whole.
The run folder itself may be a link (say, to a bigger disk).

Every file is written under a temporary name and renamed, so a kill at any moment leaves the
old or the new copy whole. Resuming needs the same TrainConfig (`tinylm.runs.LAYOUT_FIELDS`
aside): a run asked for with another config is an error that names the fields that differ,
never a model trained some other way.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError

from tinylm.data import BatchSampler, write_json
from tinylm.lock import HOLDER_FILE, LOCK_FILE
from tinylm.model import CONFIG_FILE, GPT, WEIGHTS_FILE, GPTConfig
from tinylm.runs import TrainConfig, config_changes
from tinylm.tokenizers import Tokenizer, load_tokenizer

LOG_FILE = "log.jsonl"
CHECKPOINTS = ("checkpoint", "checkpoint.old")  # the newest first
STATE_FILE = "trainer_state.pt"
TOKENIZER_FILE = "tokenizer.json"
TRAIN_CONFIG_FILE = "train_config.json"
SHAPE_FIELDS = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "bias")

# The folders a run replaces whole, each with the files it writes there (and their .part
# names while they are written), and the run's own files beside them.
CHECKPOINT_FILES = (CONFIG_FILE, WEIGHTS_FILE, STATE_FILE)
MODEL_FILES = (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE, TRAIN_CONFIG_FILE)
RUN_FOLDERS = {
    **{name: CHECKPOINT_FILES for name in (*CHECKPOINTS, "checkpoint.tmp")},
    **{name: MODEL_FILES for name in ("model", "model.old", "model.tmp")},
}
RUN_FILES = (LOG_FILE, LOG_FILE + ".part", LOCK_FILE, HOLDER_FILE)


def replace_dir(src: Path, dst: Path, keep_old: bool = False) -> None:
    """Move the folder src to dst so that a kill at any moment leaves dst or dst.old complete.

    keep_old keeps the replaced folder as dst.old (a checkpoint to fall back on if dst is
    later found damaged).
    """
    old = dst.with_name(dst.name + ".old")
    if dst.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
    os.replace(src, dst)
    if not keep_old:
        shutil.rmtree(old, ignore_errors=True)


def find_checkpoint(out_dir: Path) -> Path | None:
    """The run's checkpoint folder, or its previous copy if a save was cut short; else None."""
    for name in CHECKPOINTS:
        if (out_dir / name / STATE_FILE).is_file():
            return out_dir / name
    return None


@contextmanager
def _written_whole(tmp: Path, what: str, kept: str, megabytes: float) -> Iterator[None]:
    """Writes into the folder tmp; if they fail (a full disk, most often), remove it and say so.

    torch.save and safetensors report a full disk as RuntimeError or SafetensorError, not
    OSError: all three become one OSError naming the run folder and the space to free.
    """
    try:
        yield
    except (OSError, RuntimeError, SafetensorError) as error:
        shutil.rmtree(tmp, ignore_errors=True)  # a half-written folder only fills the disk
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise OSError(
            f"could not write {what} into {tmp.parent} ({reason}): is its disk full? {kept}; "
            f"free about {megabytes:,.0f} MB there and run again to resume."
        ) from error


def save_checkpoint(out_dir: Path, model: GPT, state: dict) -> None:
    """Write model + trainer_state.pt to checkpoint.tmp, then swap it in for checkpoint/.

    The previous checkpoint stays as checkpoint.old, for `load_checkpoint` to fall back on.
    """
    tmp = out_dir / "checkpoint.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    megabytes = 12 * model.num_parameters(non_embedding=False) / 1e6  # fp32 weights, AdamW's 2
    with _written_whole(tmp, "a checkpoint", "The earlier checkpoints are intact", megabytes):
        model.save_pretrained(tmp)
        torch.save(state, tmp / STATE_FILE)
    replace_dir(tmp, out_dir / "checkpoint", keep_old=True)


# What trainer_state.pt must hold, and of which type, before a run resumes from it.
STATE_KEYS = {
    "step": int,
    "optimizer": dict,
    "rng": list,
    "train_config": dict,
    "elapsed_s": (int, float),
}


def load_trainer_state(checkpoint: Path) -> dict:
    """trainer_state.pt, read with weights_only=True: tensors and plain containers, no code."""
    path = checkpoint / STATE_FILE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as error:
        reason = str(error).split("\n", 1)[0].split(". ", 1)[0] or "ends too early"
        raise ValueError(
            f"{path} is damaged or incomplete ({type(error).__name__}: {reason})"
        ) from None
    missing = [
        key
        for key, kind in STATE_KEYS.items()
        if not isinstance(state, dict) or not isinstance(state.get(key), kind)
    ]
    if missing:
        raise ValueError(f"{path} is not a trainer state: {', '.join(missing)} missing or wrong")
    max_steps = state["train_config"].get("max_steps")
    if not isinstance(max_steps, int) or not 0 <= state["step"] <= max_steps:
        raise ValueError(
            f"{path} is not a trainer state: its step {state['step']} is not one of its run's "
            f"steps (0 to max_steps, {max_steps})"
        )
    return state


def load_checkpoint(out_dir: Path, cfg: TrainConfig) -> tuple[Path, dict, GPT] | None:
    """The newest readable checkpoint: (folder, trainer state, model), or None if there is none.

    A damaged checkpoint/ (say, a disk filled up) falls back to checkpoint.old with a warning;
    if no checkpoint can be read, the error names each damaged file and how to start over.
    """
    problems = []
    for folder in (out_dir / name for name in CHECKPOINTS):
        if not (folder / STATE_FILE).is_file():
            continue
        try:
            state = load_trainer_state(folder)
            model = GPT.from_pretrained(folder, dropout=cfg.dropout, attention=cfg.attention)
        except (ValueError, FileNotFoundError) as error:  # damaged, or a file missing
            problems.append(str(error))
            continue
        if problems:
            warnings.warn(
                f"{problems[0]}; resuming from the previous checkpoint, {folder} "
                f"(step {state['step']})",
                stacklevel=3,
            )
        return folder, state, model
    if problems:
        raise ValueError(
            f"cannot resume {out_dir}: {'; '.join(problems)}. No readable "
            "checkpoint is left: start the run over with resume=False "
            "(CLI: --no-resume)."
        )
    return None


def save_model(out_dir: Path, model: GPT, tokenizer: Tokenizer, cfg: TrainConfig) -> Path:
    """Write the finished model, its tokenizer and its TrainConfig to out_dir/model/."""
    tmp = out_dir / "model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    megabytes = 4 * model.num_parameters(non_embedding=False) / 1e6  # fp32 weights
    with _written_whole(tmp, "the final model", "The last checkpoint is intact", megabytes):
        model.save_pretrained(tmp)
        tokenizer.save(tmp / TOKENIZER_FILE)
        write_json(asdict(cfg), tmp / TRAIN_CONFIG_FILE)  # written last: marks the run finished
    replace_dir(tmp, out_dir / "model")
    return out_dir / "model"


def load_model(directory: str | Path) -> tuple[GPT, Tokenizer]:
    """A model folder written by train (or save_pretrained + tokenizer.json), in eval mode."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(
            f"{directory} is not a folder: give a model folder (config.json, model.safetensors, "
            "tokenizer.json), such as runs/<run_name>/model of a trained run"
        )
    if not (directory / TOKENIZER_FILE).is_file():
        raise FileNotFoundError(
            f"{directory / TOKENIZER_FILE} is missing: not a model folder "
            "written by tinylm.train (train the run first)"
        )
    model = GPT.from_pretrained(directory).eval()
    tokenizer = load_tokenizer(directory / TOKENIZER_FILE)
    if model.config.vocab_size < tokenizer.vocab_size:
        raise ValueError(
            f"{directory} holds a model of {model.config.vocab_size:,} token rows and a "
            f"tokenizer of {tokenizer.vocab_size:,} tokens: they do not belong together. Copy "
            "the model folder whole, or write it again from its run (python -m tinylm train)."
        )
    return model, tokenizer


def read_log(out_dir: Path, last_step: int | None = None) -> list[dict]:
    """The records of log.jsonl (those up to last_step, if given).

    A last line cut short (the machine lost power while a record was appended) is dropped with
    a warning: the records before it are whole, and resuming rewrites the log from its
    checkpoint. A damaged line anywhere else is an error naming the file and the line.
    """
    path = out_dir / LOG_FILE
    if not path.is_file():
        return []
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
        elif number == len(lines):
            warnings.warn(f"{path}: its last line is cut short; left out", stacklevel=2)
        else:
            raise ValueError(
                f"{path}, line {number}, is not a log record. Remove that line (or the log, "
                "which only records the run's progress) and run again, or start the run over "
                "(CLI: --no-resume)."
            )
    return [r for r in records if last_step is None or r["step"] <= last_step]


def write_log(out_dir: Path, records: list[dict]) -> None:
    """Rewrite log.jsonl with these records (used when resuming from an earlier step)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(r) + "\n" for r in records)
    partial = out_dir / (LOG_FILE + ".part")
    try:
        partial.write_text(lines, encoding="utf-8")
    except OSError:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, out_dir / LOG_FILE)


def append_log(out_dir: Path, record: dict) -> None:
    """Add one record to log.jsonl."""
    with open(out_dir / LOG_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def saved_config(out_dir: Path) -> dict | None:
    """The TrainConfig (as a dict) of the finished model in out_dir/model/, if there is one."""
    path = out_dir / "model" / TRAIN_CONFIG_FILE
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        saved = error
    if not isinstance(saved, dict):
        reason = saved if isinstance(saved, ValueError) else f"it holds {type(saved).__name__}"
        raise ValueError(
            f"{path} is damaged ({reason}); start the run over with resume=False (CLI: --no-resume)"
        ) from None
    return saved


def is_finished(cfg: TrainConfig) -> bool:
    """True when out_dir/model/ holds the final model of this config (LAYOUT_FIELDS aside)."""
    saved = saved_config(cfg.out_dir)
    return saved is not None and not config_changes(saved, cfg)


def check_run_folder(out_dir: Path) -> None:
    """Refuse a run folder where training would write or delete outside it, or delete your files.

    Every name the run writes must be absent or what the run writes there: no link (to
    somewhere else), a folder where it keeps a folder, and in the checkpoint and model folders,
    which it replaces whole, only the files it writes.
    """
    fix = f"Move it out of {out_dir}, or train under another run_name."
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir} is a file, not a run folder. {fix}")
    for name in (*RUN_FOLDERS, *RUN_FILES):
        path = out_dir / name
        if path.is_symlink():
            raise ValueError(
                f"{path} is a link (to {os.readlink(path)}): a run writes and deletes only "
                f"inside its own folder. {fix}"
            )
        if path.exists() and path.is_dir() != (name in RUN_FOLDERS):
            kind = "a folder" if path.is_dir() else "a file"
            raise ValueError(f"{path} is {kind}, which is not what a run writes there. {fix}")
    for name, files in RUN_FOLDERS.items():
        folder = out_dir / name
        if not folder.is_dir():
            continue
        foreign = sorted(
            path.name
            for path in folder.iterdir()
            if path.is_symlink()
            or not path.is_file()
            or path.name.removesuffix(".part") not in files
        )
        if foreign:
            raise ValueError(
                f"{folder} holds {', '.join(foreign)}, which a run does not write, and the "
                f"run replaces that folder whole. Move {'them' if len(foreign) > 1 else 'it'} "
                f"out of {out_dir}, or train under another run_name."
            )


def start_over(out_dir: Path) -> None:
    """Remove what an earlier run wrote in out_dir (checkpoints, final model, log): only that."""
    check_run_folder(out_dir)
    for name in RUN_FOLDERS:
        folder = out_dir / name
        if folder.is_dir():  # holds only the run's files: check_run_folder made sure
            for path in folder.iterdir():
                path.unlink()
            folder.rmdir()
    (out_dir / LOG_FILE).unlink(missing_ok=True)


def remove_unused_folder(out_dir: Path) -> None:
    """Remove a run folder that holds nothing but its lock (a run refused before it wrote)."""
    if out_dir.is_dir() and {p.name for p in out_dir.iterdir()} <= {LOCK_FILE, HOLDER_FILE}:
        for name in (LOCK_FILE, HOLDER_FILE):
            (out_dir / name).unlink(missing_ok=True)
        out_dir.rmdir()


def check_resumable(
    folder: Path,
    saved: dict,
    cfg: TrainConfig,
    saved_model: GPTConfig | None = None,
    config: GPTConfig | None = None,
) -> None:
    """Refuse to go on with a run folder trained with another TrainConfig or model shape.

    saved is the folder's TrainConfig as a dict; LAYOUT_FIELDS may differ. Resuming under
    another config would return a model that is not the run asked for (say, one trained past
    the new max_steps), so every other difference is an error that names the fields.
    """
    diffs = config_changes(saved, cfg)
    if saved_model is not None and config is not None:
        diffs += [
            f"model {name} {getattr(saved_model, name)} → {getattr(config, name)}"
            for name in SHAPE_FIELDS
            if getattr(saved_model, name) != getattr(config, name)
        ]
    if diffs:
        raise ValueError(
            f"cannot resume from {folder}: it was trained with another config "
            f"({'; '.join(diffs)}). Train this config under a new run_name, or "
            "start the run over with resume=False (CLI: --no-resume)."
        )


def rng_state(sampler: BatchSampler, device: torch.device) -> dict:
    """Every random number generator the run uses, so a resumed run draws the same numbers."""
    kind, key, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (kind, key.tolist(), pos, has_gauss, gauss),
        "torch": torch.get_rng_state(),
        "sampler": sampler.generator.get_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }


def set_rng_state(state: dict, sampler: BatchSampler, device: torch.device) -> None:
    """Restore what rng_state saved."""
    random.setstate(state["python"])
    kind, key, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.array(key, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    sampler.generator.set_state(state["sampler"])
    if device.type == "cuda" and state["cuda"] is not None:
        torch.cuda.set_rng_state(state["cuda"], device)
