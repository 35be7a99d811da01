"""Synthetic inputs shared by the tests: a small corpus of fake five-character quatrains."""

import numpy as np

from tinylm import data, runs
from tinylm.data import Poem


def synthetic_corpus(n: int = 60) -> data.Corpus:
    """n fake quatrains from a 12-character alphabet, split 90/10 like the real corpus."""
    rng = np.random.default_rng(0)
    chars = list("春江花月夜风山水云天人归")
    poems = [Poem(f"题{i}", "某", "，".join("".join(rng.choice(chars, 5)) for _ in range(4)) + "。")
             for i in range(n)]
    train, val = data.split_poems(poems, 0.1)
    return data.Corpus(train, val, data.CleaningReport(poems_in=n, poems_out=n), "random", 0.1,
                       1337)


def packed_synthetic_corpus(tmp_path, monkeypatch) -> None:
    """Data and runs folders under tmp_path, with the synthetic poems packed as characters."""
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "data"))
    monkeypatch.setenv(runs.RUNS_DIR_ENV, str(tmp_path / "runs"))
    data.prepare("char", corpus=synthetic_corpus())
