"""tinylm.progress: text bars when asked for (saved notebooks), tqdm.auto's choice otherwise."""

from tqdm import std
from tqdm.auto import tqdm as auto_tqdm

from tinylm.progress import PROGRESS_ENV, progress_bar


def test_text_bar_when_asked(monkeypatch):
    monkeypatch.setenv(PROGRESS_ENV, "text")
    with progress_bar(range(3), disable=True) as bar:
        assert type(bar) is std.tqdm


def test_auto_bar_by_default(monkeypatch):
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    with progress_bar(range(3), disable=True) as bar:
        assert isinstance(bar, auto_tqdm)
