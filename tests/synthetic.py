"""Synthetic inputs and small checks shared by the tests (fixtures are in conftest.py)."""

from pathlib import Path

import numpy as np

from tinylm import cleaning
from tinylm.cleaning import Poem


def synthetic_corpus(n: int = 60) -> cleaning.Corpus:
    """n fake quatrains from a 12-character alphabet, split 90/10 like the real corpus."""
    rng = np.random.default_rng(0)
    chars = list("春江花月夜风山水云天人归")
    poems = [
        Poem(f"题{i}", "某", "，".join("".join(rng.choice(chars, 5)) for _ in range(4)) + "。")
        for i in range(n)
    ]
    train, val = cleaning.split_poems(poems, 0.1)
    return cleaning.Corpus(
        train, val, cleaning.CleaningReport(poems_in=n, poems_out=n), "random", 0.1, 1337
    )


def folder_state(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under folder with its size and modification time: equal if nothing wrote."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
