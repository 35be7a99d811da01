"""The command line on a synthetic corpus: data, train, sample, eval, warm, and clear errors."""

import errno
import json
import os
from pathlib import Path

import pytest
from synthetic import synthetic_corpus

from tinylm import cleaning, cli, data, download, poetry, pretrained, run_files, sampling
from tinylm.model import GPT, GPTConfig
from tinylm.run_files import TOKENIZER_FILE
from tinylm.runs import RUNS
from tinylm.tokenizers import CharTokenizer


@pytest.fixture
def synthetic(corpus, tmp_path, monkeypatch):
    """Point the data folder at tmp_path and serve the synthetic corpus instead of the real one."""
    monkeypatch.setenv(download.DATA_DIR_ENV, str(tmp_path))
    # Patched on data, not on tinylm.cleaning where it is defined: data.py imports the name
    # (`from tinylm.cleaning import load_corpus`), so only its own copy reaches data.prepare.
    monkeypatch.setattr(data, "load_corpus", lambda *args, **kwargs: corpus)
    return corpus


def test_data_command_prints_summary(synthetic, capsys):
    assert cli.main(["data", "--tokenizer", "char"]) == 0
    out = capsys.readouterr().out
    assert "poems kept" in out and "char" in out and "tokens/char" in out
    assert data.is_prepared("char")


def test_density_table_has_measured_and_reported_rows(synthetic):
    packed = data.prepare_all(["char"])
    table = cli.format_density(packed)
    assert "measured here" in table and "reported in the talk" in table
    assert cli.tokens_per_char(packed["char"]) == 1.0


def test_errors_are_messages_not_tracebacks(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(download.MIRROR_ENV, str(tmp_path / "no-such-mirror"))
    monkeypatch.setenv(download.DATA_DIR_ENV, str(tmp_path / "data"))
    assert cli.main(["data", "--tokenizer", "char"]) == 1
    assert download.MIRROR_ENV in capsys.readouterr().err


def test_unknown_tokenizer_is_rejected_by_argparse(capsys):
    with pytest.raises(SystemExit):
        cli.main(["data", "--tokenizer", "sentencepiece"])
    assert "invalid choice" in capsys.readouterr().err


def test_warm_prepares_the_data_then_trains_each_run(monkeypatch, capsys):
    prepared, trained = [], []
    runs = [RUNS["char-ci"], RUNS["mistral-ci"]]
    monkeypatch.setattr(pretrained, "profile_runs", lambda profile=None: runs)
    monkeypatch.setattr(data, "prepare_all", lambda names, *args: prepared.append(names))
    monkeypatch.setattr(run_files, "is_finished", lambda cfg: cfg.run_name == "char-ci")
    monkeypatch.setattr(pretrained, "trained", lambda cfg, **kwargs: trained.append(cfg.run_name))
    assert cli.main(["warm", "--profile", "ci"]) == 0
    out = capsys.readouterr().out
    assert prepared and trained == ["char-ci", "mistral-ci"]
    assert "char-ci     already trained" in out and "mistral-ci  trained in" in out  # aligned


@pytest.mark.parametrize(
    "argv",
    [
        ["sample", "-n", "0"],
        ["sample", "-n", "-1"],
        ["sample", "--max-new-tokens", "-3"],
        ["sample", "--beams", "0"],
        ["sample", "--top-k", "-2"],
        ["eval", "--samples", "-1"],
        ["train", "--steps", "0"],
        ["sample", "-n", "two"],
    ],
)
def test_bad_counts_are_argument_errors(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error: argument" in err
    assert "use an integer ≥" in err or "is not an integer" in err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["sample", "--temperature", "nan"], "nan is out of range: use a number in [0, inf)"),
        (["sample", "--temperature", "-1"], "out of range"),
        (["sample", "--repetition-penalty", "nan"], "use a number in (0, inf)"),
        (["sample", "--repetition-penalty", "0"], "out of range"),
        (["sample", "--top-p", "0"], "use a number in (0, 1]"),
        (["sample", "--top-p", "inf"], "out of range"),
        (["eval", "--temperature", "nan"], "out of range"),
        (["sample", "--seed", str(2**64)], "is too large: use an integer ≤"),
        (["eval", "--seed", "-1"], "is too small"),
        (["sample", "--temperature", "warm"], "'warm' is not a number"),
    ],
)
def test_bad_numbers_are_argument_errors_before_any_work(argv, says, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2 and says in capsys.readouterr().err


def refuse_writes_under(folder: Path, monkeypatch) -> None:
    """Make creating folders and files under `folder` fail as a read-only folder would.

    Simulated: CI's containers run as root, who may write into any folder.
    """
    real_mkdir, real_open = Path.mkdir, os.open

    def refused(path) -> bool:
        return Path(path).resolve().is_relative_to(folder.resolve())

    def mkdir(self, *args, **kwargs):
        if refused(self) and not self.exists():
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    def open_file(path, flags, *args, **kwargs):
        if refused(path) and flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    monkeypatch.setattr(os, "open", open_file)


@pytest.mark.parametrize("existing", [False, True])
def test_a_read_only_runs_folder_is_one_line_naming_the_variable(
    tmp_path, monkeypatch, capsys, existing
):
    """Issue 14, case 6: mkdir and write_log ended in a PermissionError traceback."""
    runs = tmp_path / "runs"
    monkeypatch.setenv("TINYLM_RUNS_DIR", str(runs))
    if existing:  # the run's folder is there, but nothing can be written into it
        (runs / "char-ci").mkdir(parents=True)
    refuse_writes_under(runs, monkeypatch)
    assert cli.main(["train", "--run", "char-ci"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: Permission denied: {runs / 'char-ci'}")
    writable = runs if existing else tmp_path  # the nearest folder that exists
    assert f"Make {writable} writable, or set TINYLM_RUNS_DIR" in err


def test_a_read_only_data_folder_is_one_line_naming_the_variable(
    synthetic, tmp_path, monkeypatch, capsys
):
    refuse_writes_under(tmp_path, monkeypatch)
    assert cli.main(["data", "--tokenizer", "char"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"set {download.DATA_DIR_ENV} to a folder you can write" in err


def test_other_os_errors_keep_their_message():
    assert cli.os_error_message(FileNotFoundError("model.safetensors is missing")) == (
        "model.safetensors is missing"
    )
    full = OSError(errno.ENOSPC, "No space left on device", str(download.data_dir() / "x.bin"))
    assert "set TINYLM_DATA_DIR to a folder on another disk" in cli.os_error_message(full)


def test_bpe_vocabularies_below_the_byte_values_are_argument_errors(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["data", "--tokenizer", "bpe", "--bpe-vocab", "0"])
    assert exit_info.value.code == 2 and "use an integer ≥ 256" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["a folder", "no parent"])
def test_eval_checks_its_out_file_before_the_work(tmp_path, capsys, where):
    model_dir = tmp_path / "model"
    GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=32)).save_pretrained(
        model_dir
    )
    CharTokenizer([chr(0x4E00 + i) for i in range(62)]).save(model_dir / TOKENIZER_FILE)
    out = tmp_path if where == "a folder" else tmp_path / "missing" / "eval.json"
    before = sorted(tmp_path.rglob("*"))
    assert cli.main(["eval", "--checkpoint", str(model_dir), "--out", str(out)]) == 1
    assert f"cannot write the report to {out}" in capsys.readouterr().err
    assert sorted(tmp_path.rglob("*")) == before


def tiny_model_folder(folder: Path) -> Path:
    """A model folder of a tiny untrained GPT whose tokenizer knows 62 Chinese characters."""
    GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=32)).save_pretrained(
        folder
    )
    CharTokenizer([chr(0x4E00 + i) for i in range(62)]).save(folder / TOKENIZER_FILE)
    return folder


def test_a_prompt_the_model_cannot_read_is_warned_about(tmp_path, capsys):
    model = tiny_model_folder(tmp_path / "model")
    argv = ["sample", "--model", str(model), "-n", "1", "--max-new-tokens", "2"]
    assert cli.main([*argv, "--prompt", "hello 一"]) == 0
    err = capsys.readouterr().err
    assert "the model never saw 6 character(s) of the prompt ('h' 'e' 'l' 'o' ' ')" in err
    assert cli.main([*argv, "--prompt", "一丁"]) == 0
    assert capsys.readouterr().err == ""


def test_running_out_of_memory_is_one_line_that_says_what_to_lower(tmp_path, monkeypatch, capsys):
    def too_many(*args, **kwargs):
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
            "memory: you tried to allocate 8000000000 bytes. Error code 12"
        )

    monkeypatch.setattr(sampling, "sample_poems", too_many)
    model = tiny_model_folder(tmp_path / "model")
    assert cli.main(["sample", "--model", str(model), "-n", "1000000000"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: out of memory (7.5 GiB at once): ask for less at a time")
    assert err.count("\n") == 1


def test_other_runtime_errors_are_not_taken_for_memory(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("something else")

    monkeypatch.setattr(sampling, "sample_poems", broken)
    model = tiny_model_folder(tmp_path / "model")
    with pytest.raises(RuntimeError, match="something else"):
        cli.main(["sample", "--model", str(model)])


def test_a_runs_folder_that_is_a_file_names_the_variable(tmp_path, monkeypatch):
    (tmp_path / "runs").write_text("not a folder")
    monkeypatch.setenv("TINYLM_RUNS_DIR", str(tmp_path / "runs"))
    error = NotADirectoryError(errno.ENOTDIR, "Not a directory", str(tmp_path / "runs" / "x"))
    assert "A file stands where a folder belongs: move it, or set TINYLM_RUNS_DIR." in (
        cli.os_error_message(error)
    )


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "x"}, "LOCAL_RANK='x' is not an integer"),
        ({"RANK": "0", "WORLD_SIZE": "2"}, "start them with torchrun"),
    ],
)
def test_torchrun_variables_set_by_hand_are_one_clear_line(
    env, says, workspace, monkeypatch, capsys
):
    for name in ("MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["train", "--run", "char-ci", "--steps", "1"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes (Linux, macOS)")
def test_eval_never_renames_its_report_over_a_device_or_pipe(tmp_path, capsys):
    """--out /dev/null, run as root, replaced the device with a regular file."""
    model = tiny_model_folder(tmp_path / "model")
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    assert cli.main(["eval", "--checkpoint", str(model), "--out", str(pipe)]) == 1
    assert "it is a device or a pipe, not a file" in capsys.readouterr().err
    assert pipe.is_fifo()
    with pytest.raises(ValueError, match="is not a file"):
        data.write_json({}, pipe)
    assert pipe.is_fifo() and not (tmp_path / "pipe.part").exists()


def test_eval_checks_it_can_create_its_report_before_the_work(tmp_path, monkeypatch, capsys):
    model = tiny_model_folder(tmp_path / "model")

    def read_only(path, *args, **kwargs):  # a read-only folder, even for root
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(Path, "touch", read_only)
    monkeypatch.setattr(data, "prepare", lambda *a, **k: pytest.fail("the work began"))
    assert cli.main(["eval", "--checkpoint", str(model), "--out", str(tmp_path / "e.json")]) == 1
    assert "e.json.part cannot be created there (Permission denied)" in capsys.readouterr().err


def test_a_bpe_vocabulary_above_the_courses_largest_is_an_argument_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["data", "--tokenizer", "bpe", "--bpe-vocab", "1000000000"])
    assert exit_info.value.code == 2 and "use an integer ≤ 65536" in capsys.readouterr().err


def test_ctrl_c_is_one_line_and_the_shells_exit_code(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sampling, "sample_poems", interrupted)
    model = tiny_model_folder(tmp_path / "model")
    assert cli.main(["sample", "--model", str(model)]) == 130
    err = capsys.readouterr().err
    assert err.startswith("interrupted.") and err.count("\n") == 1


def test_sample_says_how_to_write_a_damaged_run_model_again(workspace, one_thread, capsys):
    args = ["batch_size=4", "block_size=32", "max_steps=2", "warmup_steps=1", "eval_batches=1"]
    assert cli.main(["train", "--run", "char-ci", *args]) == 0
    weights = RUNS["char-ci"].out_dir / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # cut short
    capsys.readouterr()
    assert cli.main(["sample", "--run", "char-ci"]) == 1
    err = capsys.readouterr().err
    assert "model.safetensors is damaged" in err and "Traceback" not in err
    assert "`python -m tinylm train --run char-ci`" in err and "--no-resume" in err
    assert cli.main(["sample", "--model", str(RUNS["char-ci"].out_dir)]) == 1  # the run folder
    err = capsys.readouterr().err
    assert "model/model.safetensors is damaged or incomplete" in err and "Traceback" not in err


def test_cli_overrides_are_literals_or_strings():
    assert cli.parse_overrides(
        [
            "lr=3e-4",
            "dtype=bfloat16",
            "block_size=None",
            "betas=(0.9, 0.95)",
            "compile=True",
            "parallel=fsdp",
        ]
    ) == {
        "lr": 3e-4,
        "dtype": "bfloat16",
        "block_size": None,
        "betas": (0.9, 0.95),
        "compile": True,
        "parallel": "fsdp",
    }
    with pytest.raises(ValueError, match="learning_rate=1.*max_steps"):
        cli.parse_overrides(["learning_rate=1"])


# A char-ci run small enough to train from the command line in a test.
TINY_RUN = [
    "batch_size=4",
    "block_size=32",
    "max_steps=4",
    "warmup_steps=1",
    "eval_interval=2",
    "eval_batches=1",
]


def test_cli_train_then_sample(workspace, one_thread, capsys):
    args = TINY_RUN
    assert cli.main(["train", "--run", "char-ci", "--steps", "2", *args]) == 0
    assert cli.main(["train", "--run", "char-ci", *args]) == 0
    out = capsys.readouterr().out
    assert "step 4" in out and "val loss" in out and "poems it wrote" in out
    assert (
        cli.main(
            ["sample", "--run", "char-ci", "-n", "2", "--prompt", "春江", "--max-new-tokens", "8"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("春江") and out.count("春江") >= 2


def test_cli_eval_writes_a_json_report(workspace, one_thread, capsys, monkeypatch, tmp_path):
    corpus = synthetic_corpus()
    monkeypatch.setattr(cleaning, "load_corpus", lambda: corpus)
    tones = poetry.ToneTable(dict.fromkeys("春江花月夜风", "平") | dict.fromkeys("山水云天", "仄"))
    monkeypatch.setattr(
        poetry.PoemJudge,
        "from_training",
        classmethod(lambda cls, poems: cls(tones, poetry.CopyDetector([p.content for p in poems]))),
    )
    args = TINY_RUN
    assert cli.main(["train", "--run", "char-ci", *args]) == 0
    out = tmp_path / "eval.json"
    assert cli.main(["eval", "--run", "char-ci", "--samples", "3", "--out", str(out)]) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["poems"] == 3 and report["tokenizer"] == "char"
    assert report["val_bits_per_char"] > 0 and len(report["examples"]) == 3
    assert "report written to" in capsys.readouterr().out


def test_cli_errors_are_messages(workspace, one_thread, capsys):
    assert cli.main(["train", "--run", "char-ci", "lr=-1"]) == 1
    assert "TrainConfig.lr" in capsys.readouterr().err
    assert cli.main(["sample", "--model", "/no/such/model"]) == 1
    assert "error:" in capsys.readouterr().err
