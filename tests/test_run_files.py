"""A run folder's files, written and read back with care: the folder's own files only, a torn
log, the trainer state, the model against its tokenizer, a full disk."""

import json
import os
from pathlib import Path

import pytest
import torch

from tinylm.model import GPT, GPTConfig
from tinylm.run_files import (
    LOG_FILE,
    STATE_FILE,
    TOKENIZER_FILE,
    check_run_folder,
    find_checkpoint,
    load_checkpoint,
    load_model,
    load_trainer_state,
    read_log,
    save_checkpoint,
    save_model,
    saved_config,
    start_over,
    write_log,
)
from tinylm.runs import TrainConfig
from tinylm.tokenizers import CharTokenizer

TINY = GPTConfig(vocab_size=32, block_size=8, n_layer=1, n_head=1, n_embd=8)


def state(step: int) -> dict:
    """A trainer state with every key a resume reads."""
    config = {"max_steps": 100}
    return {"step": step, "optimizer": {}, "rng": [], "train_config": config, "elapsed_s": 1.5}


def write_lines(folder, lines: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LOG_FILE).write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def test_a_torn_last_log_line_is_left_out_with_a_warning(tmp_path):
    records = [json.dumps({"step": s, "val_loss": None}) for s in (0, 10)]
    write_lines(tmp_path, [*records, '{"step": 20, "val_lo'])
    with pytest.warns(UserWarning, match="last line is cut short"):
        assert [r["step"] for r in read_log(tmp_path)] == [0, 10]


def test_a_damaged_log_line_before_the_last_names_the_file_and_the_line(tmp_path):
    write_lines(tmp_path, [json.dumps({"step": 0}), "garbage", json.dumps({"step": 20})])
    with pytest.raises(ValueError, match=r"log.jsonl, line 2, is not a log record.*--no-resume"):
        read_log(tmp_path)


@pytest.mark.parametrize("saved", [{"step": 3}, [1, 2], {**state(3), "step": "3"}])
def test_a_trainer_state_without_its_keys_is_refused(tmp_path, saved):
    torch.save(saved, tmp_path / STATE_FILE)
    with pytest.raises(ValueError, match="is not a trainer state"):
        load_trainer_state(tmp_path)


def test_a_checkpoint_without_its_keys_falls_back_to_the_previous_one(tmp_path):
    model = GPT(TINY)
    save_checkpoint(tmp_path, model, state(10))
    save_checkpoint(tmp_path, model, state(20))  # the step-10 one is now checkpoint.old
    torch.save({"step": 20}, tmp_path / "checkpoint" / STATE_FILE)
    with pytest.warns(UserWarning, match="resuming from the previous checkpoint"):
        folder, loaded, _ = load_checkpoint(tmp_path, TrainConfig("tiny", dropout=0.0))
    assert folder.name == "checkpoint.old" and loaded["step"] == 10


def test_a_model_with_fewer_rows_than_its_tokenizer_is_refused(tmp_path):
    GPT(TINY).save_pretrained(tmp_path)  # 32 rows
    CharTokenizer([chr(0x4E00 + i) for i in range(40)]).save(tmp_path / TOKENIZER_FILE)
    with pytest.raises(ValueError, match="32 token rows and a tokenizer of 4[0-9] tokens"):
        load_model(tmp_path)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"n_layer": 100_000}, "describes a model of .* parameters, but model.safetensors holds"),
        ({"block_size": 10**8}, "the config does not belong to these weights"),
        (None, "holds NoneType, not a model's config"),
    ],
)
def test_a_config_that_does_not_fit_its_weights_is_refused_before_allocating(
    tmp_path, monkeypatch, change, says
):
    GPT(TINY).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))
    written = None if change is None else {**config, **change}
    (tmp_path / "config.json").write_text(json.dumps(written), encoding="utf-8")

    def no_model(self, config):
        raise AssertionError("a model was built")

    monkeypatch.setattr(GPT, "__init__", no_model)
    with pytest.raises(ValueError, match=says):
        GPT.from_pretrained(tmp_path)


def test_a_full_disk_while_checkpointing_is_one_message_and_leaves_no_partial_files(
    tmp_path, monkeypatch
):
    model = GPT(TINY)
    save_checkpoint(tmp_path, model, state(10))
    before = {p: p.read_bytes() for p in (tmp_path / "checkpoint").iterdir()}

    def disk_full(*args, **kwargs):
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match=r"could not write a checkpoint into .*disk full.*MB"):
        save_checkpoint(tmp_path, model, state(20))
    assert not (tmp_path / "checkpoint.tmp").exists()
    assert {p: p.read_bytes() for p in (tmp_path / "checkpoint").iterdir()} == before


def test_a_full_disk_while_writing_the_final_model_is_one_message_and_leaves_no_partial_files(
    tmp_path, monkeypatch
):
    tokenizer = CharTokenizer([chr(0x4E00 + i) for i in range(30)])

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(CharTokenizer, "save", disk_full)
    with pytest.raises(OSError, match=r"could not write the final model into .*free about"):
        save_model(tmp_path, GPT(TINY), tokenizer, TrainConfig("x"))
    assert list(tmp_path.iterdir()) == []


def test_a_log_that_cannot_be_rewritten_leaves_no_partial_file(tmp_path, monkeypatch):
    def disk_full(*args, **kwargs):
        (tmp_path / (LOG_FILE + ".part")).write_bytes(b"{")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("pathlib.Path.write_text", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_log(tmp_path, [{"step": 0}])
    assert list(tmp_path.iterdir()) == []


def a_finished_run(folder):
    """A run folder as training leaves it: checkpoints, final model, log, lock, an eval report."""
    model, tokenizer = GPT(TINY), CharTokenizer([chr(0x4E00 + i) for i in range(30)])
    save_checkpoint(folder, model, state(10))
    save_checkpoint(folder, model, state(20))
    save_model(folder, model, tokenizer, TrainConfig("x"))
    write_lines(folder, [json.dumps({"step": 0})])
    (folder / "lock").touch()
    (folder / "eval.json").write_text("{}")


def test_start_over_removes_what_the_run_wrote_and_nothing_else(tmp_path):
    a_finished_run(tmp_path)
    (tmp_path / "notes.txt").write_text("a user's notes")
    start_over(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.json", "lock", "notes.txt"]


@pytest.mark.parametrize("where", ["model", "checkpoint", "checkpoint.old"])
def test_a_users_file_in_a_folder_the_run_replaces_is_refused_and_kept(tmp_path, where):
    a_finished_run(tmp_path)
    (tmp_path / where / "notes.txt").write_text("a user's notes")
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(ValueError, match=rf"{where} holds notes.txt, which a run does not write"):
        start_over(tmp_path)
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize("name", ["model", "checkpoint", "checkpoint.tmp", "log.jsonl", "lock"])
def test_a_link_where_the_run_writes_is_refused(tmp_path, name):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("a user's file")
    run = tmp_path / "run"
    run.mkdir()
    (run / name).symlink_to(elsewhere / ("keep.txt" if "." in name or name == "lock" else ""))
    with pytest.raises(ValueError, match="is a link .*a run writes and deletes only inside"):
        start_over(run)
    assert (elsewhere / "keep.txt").read_text() == "a user's file"


@pytest.mark.parametrize(("name", "kind"), [("model", "a file"), ("log.jsonl", "a folder")])
def test_a_file_where_the_run_keeps_a_folder_is_refused(tmp_path, name, kind):
    (tmp_path / name).mkdir() if kind == "a folder" else (tmp_path / name).write_text("x")
    with pytest.raises(ValueError, match=f"is {kind}, which is not what a run writes there"):
        check_run_folder(tmp_path)


def test_a_run_folder_may_itself_be_a_link(tmp_path):
    (tmp_path / "disk").mkdir()
    (tmp_path / "run").symlink_to(tmp_path / "disk", target_is_directory=True)
    a_finished_run(tmp_path / "run")
    check_run_folder(tmp_path / "run")
    start_over(tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "disk").iterdir()) == ["eval.json", "lock"]


def test_weights_holding_nan_are_refused_on_loading(tmp_path):
    model = GPT(TINY)
    with torch.no_grad():
        model.transformer.h[0].mlp.c_fc.weight[0, 0] = float("nan")
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="holds NaN or infinite numbers"):
        GPT.from_pretrained(tmp_path)


def test_loading_a_folder_that_is_not_there_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope is not a folder: give a model folder"):
        load_model(tmp_path / "nope")


@pytest.mark.parametrize("step", [-5, 101, 10**6])
def test_a_trainer_state_whose_step_is_not_one_of_its_runs_is_refused(tmp_path, step):
    save_checkpoint(tmp_path, GPT(TINY), state(step))
    with pytest.raises(ValueError, match=f"its step {step} is not one of its run's steps"):
        load_trainer_state(tmp_path / "checkpoint")


def test_a_checkpoint_missing_a_file_falls_back_to_the_previous_one(tmp_path):
    save_checkpoint(tmp_path, GPT(TINY), state(10))
    save_checkpoint(tmp_path, GPT(TINY), state(20))
    (tmp_path / "checkpoint" / "config.json").unlink()
    with pytest.warns(UserWarning, match="resuming from the previous checkpoint"):
        folder, loaded, _ = load_checkpoint(tmp_path, TrainConfig("x"))
    assert folder.name == "checkpoint.old" and loaded["step"] == 10


@pytest.mark.parametrize("text", ["[1]", "null", "{"])
def test_a_finished_runs_config_that_is_not_an_object_is_named(tmp_path, text):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "train_config.json").write_text(text)
    with pytest.raises(ValueError, match=r"train_config.json is damaged .*--no-resume"):
        saved_config(tmp_path)


def test_a_save_cut_short_leaves_the_old_or_the_new_checkpoint(tmp_path, monkeypatch):
    """Killed while checkpoint.tmp is written, or between the two renames: a whole one is left."""
    model = GPT(TINY)
    save_checkpoint(tmp_path, model, state(5))
    real_save, real_replace = torch.save, os.replace

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", killed)  # killed while writing checkpoint.tmp
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, model, state(6))
    assert find_checkpoint(tmp_path) == tmp_path / "checkpoint"
    assert load_trainer_state(tmp_path / "checkpoint")["step"] == 5
    monkeypatch.setattr(torch, "save", real_save)
    moved = []

    def killed_between_the_two_moves(src, dst):
        if Path(src).is_dir():
            if moved:
                raise KeyboardInterrupt
            moved.append(src)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", killed_between_the_two_moves)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, model, state(6))
    monkeypatch.setattr(os, "replace", real_replace)
    assert not (tmp_path / "checkpoint").exists()
    assert find_checkpoint(tmp_path) == tmp_path / "checkpoint.old"
    folder, resumed, _ = load_checkpoint(tmp_path, TrainConfig("x"))  # what a resume reads
    assert folder == tmp_path / "checkpoint.old" and resumed["step"] == 5
