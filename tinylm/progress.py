"""Progress bars: live widgets in a running notebook, plain text in saved outputs.

tqdm.auto draws an ipywidgets bar in a notebook, but a saved notebook keeps only the widget's
last state as "0/300" on GitHub. With ``TINYLM_PROGRESS=text`` (set by bench/notebook_times.py
when it writes the committed outputs) the bars are tqdm's text bars, which read well anywhere.
"""

from __future__ import annotations

import os

from tqdm import std
from tqdm.auto import tqdm as auto_tqdm

PROGRESS_ENV = "TINYLM_PROGRESS"


def progress_bar(*args, **kwargs) -> std.tqdm:
    """A tqdm bar: text when TINYLM_PROGRESS=text, else tqdm.auto's choice (widgets in Jupyter)."""
    bar_class = std.tqdm if os.environ.get(PROGRESS_ENV) == "text" else auto_tqdm
    return bar_class(*args, **kwargs)
