"""Fixtures shared by the tests: the synthetic corpus, its packed data and run folders, 1 thread.

Every test that trains uses `workspace`: the data and runs folders under the test's tmp_path,
with the synthetic poems (tests/synthetic.py) packed as characters, so no test needs the real
corpus or writes into the project's data/ or runs/.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from synthetic import synthetic_corpus

from tinylm import cleaning, data, download, runs


@pytest.fixture
def corpus() -> cleaning.Corpus:
    """60 fake five-character quatrains from a 12-character alphabet, split 90/10."""
    return synthetic_corpus()


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp_path as TINYLM_DATA_DIR/TINYLM_RUNS_DIR's parent, the synthetic poems packed in it.

    Child processes inherit both variables, so they see the same folders.
    """
    monkeypatch.setenv(download.DATA_DIR_ENV, str(tmp_path / "data"))
    monkeypatch.setenv(runs.RUNS_DIR_ENV, str(tmp_path / "runs"))
    data.prepare("char", corpus=synthetic_corpus())
    return tmp_path


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One CPU thread for the test (tiny models train faster, and timings stay apart)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
