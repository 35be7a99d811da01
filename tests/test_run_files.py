"""A run folder's files read back with care: torn log, trainer state, model against tokenizer."""

import json

import pytest
import torch

from tinylm.model import GPT, GPTConfig
from tinylm.run_files import (
    LOG_FILE,
    STATE_FILE,
    TOKENIZER_FILE,
    load_checkpoint,
    load_model,
    load_trainer_state,
    read_log,
    save_checkpoint,
)
from tinylm.runs import TrainConfig
from tinylm.tokenizers import CharTokenizer

TINY = GPTConfig(vocab_size=32, block_size=8, n_layer=1, n_head=1, n_embd=8)


def state(step: int) -> dict:
    """A trainer state with every key a resume reads."""
    return {"step": step, "optimizer": {}, "rng": [], "train_config": {}, "elapsed_s": 1.5}


def write_log(folder, lines: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LOG_FILE).write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def test_a_torn_last_log_line_is_left_out_with_a_warning(tmp_path):
    records = [json.dumps({"step": s, "val_loss": None}) for s in (0, 10)]
    write_log(tmp_path, [*records, '{"step": 20, "val_lo'])
    with pytest.warns(UserWarning, match="last line is cut short"):
        assert [r["step"] for r in read_log(tmp_path)] == [0, 10]


def test_a_damaged_log_line_before_the_last_names_the_file_and_the_line(tmp_path):
    write_log(tmp_path, [json.dumps({"step": 0}), "garbage", json.dumps({"step": 20})])
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

    monkeypatch.setattr("tinylm.run_files.torch.save", disk_full)
    with pytest.raises(OSError, match=r"could not write a checkpoint into .*disk full.*MB"):
        save_checkpoint(tmp_path, model, state(20))
    assert not (tmp_path / "checkpoint.tmp").exists()
    assert {p: p.read_bytes() for p in (tmp_path / "checkpoint").iterdir()} == before
