"""The command line on a synthetic corpus: summary, density table, and clear errors."""

import pytest

from tinylm import cli, data
from tinylm.data import Corpus, Poem


@pytest.fixture
def synthetic(tmp_path, monkeypatch):
    """Point the data folder at tmp_path and serve a tiny corpus instead of the real one."""
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path))
    poems = [Poem(f"题{i}", "某", "春江花月夜，风山水云天。") for i in range(20)]
    train, val = data.split_poems(poems, 0.1)
    corpus = Corpus(train, val, data.CleaningReport(poems_in=21, duplicates=1, poems_out=20),
                    "random", 0.1, 1337)
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
    monkeypatch.setenv(data.MIRROR_ENV, str(tmp_path / "no-such-mirror"))
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "data"))
    assert cli.main(["data", "--tokenizer", "char"]) == 1
    assert data.MIRROR_ENV in capsys.readouterr().err


def test_unknown_tokenizer_is_rejected_by_argparse(capsys):
    with pytest.raises(SystemExit):
        cli.main(["data", "--tokenizer", "sentencepiece"])
    assert "invalid choice" in capsys.readouterr().err


def test_warm_prepares_the_data_then_trains_each_run(monkeypatch, capsys):
    from tinylm import checkpoints
    from tinylm.train import RUNS

    prepared, trained = [], []
    runs = [RUNS["char-ci"], RUNS["mistral-ci"]]
    monkeypatch.setattr(checkpoints, "profile_runs", lambda profile=None: runs)
    monkeypatch.setattr(data, "prepare_all", lambda names, *args: prepared.append(names))
    monkeypatch.setattr(cli, "is_finished", lambda cfg: cfg.run_name == "char-ci")
    monkeypatch.setattr(cli, "train", lambda cfg, **kwargs: trained.append(cfg.run_name))
    assert cli.main(["warm", "--profile", "ci"]) == 0
    out = capsys.readouterr().out
    assert prepared and trained == ["char-ci", "mistral-ci"]
    assert "char-ci         already trained" in out and "mistral-ci      trained in" in out


@pytest.mark.parametrize("argv", [
    ["sample", "-n", "0"], ["sample", "-n", "-1"], ["sample", "--max-new-tokens", "-3"],
    ["sample", "--beams", "0"], ["sample", "--top-k", "-2"], ["eval", "--samples", "-1"],
    ["train", "--steps", "0"], ["sample", "-n", "two"],
])
def test_bad_counts_are_argument_errors(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error: argument" in err
    assert "use an integer ≥" in err or "is not an integer" in err
