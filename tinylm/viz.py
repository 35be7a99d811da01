"""Plot helpers: a font that can draw Chinese characters, and the recorded reference runs.

`reference_runs` and `reference_files` read what bench/ recorded in data/reference/ (loss
curves, throughput, poem reports), filtered by the kind of device it ran on, so that a
notebook never shows a CPU run where it means a GPU one.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib import font_manager

from tinylm.data import PROJECT_ROOT

# Fonts with Chinese glyphs found on common systems (Linux packages, macOS, Windows).
CJK_FONTS = (
    "Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Micro Hei",
    "WenQuanYi Zen Hei", "PingFang SC", "Heiti SC", "STHeiti", "Hiragino Sans GB",
    "Microsoft YaHei", "SimHei", "Arial Unicode MS",
)


def use_cjk_font() -> str | None:
    """Make matplotlib draw Chinese labels with an installed CJK font; return its name.

    Without one (e.g. a bare Linux box), plots still render but Chinese glyphs show as boxes:
    install one, for example `sudo apt install fonts-noto-cjk` or `fonts-wqy-microhei`.
    """
    installed = {f.name for f in font_manager.fontManager.ttflist}
    for name in CJK_FONTS:
        if name in installed:
            plt.rcParams["font.sans-serif"] = [name, *plt.rcParams["font.sans-serif"]]
            plt.rcParams["axes.unicode_minus"] = False
            return name
    warnings.filterwarnings("ignore", message="Glyph .* missing from font")
    return None


# Recorded reference runs -------------------------------------------------------------------
# bench scripts write data/reference/<benchmark>_<device slug>.json, the slug being "cpu", "mps"
# or "cuda-<GPU name>" (bench/machine_info.py), and poem reports as eval_<run>_<slug>.json
# (bench/gpu_check.sh, or `python -m tinylm eval --run RUN --out ...` by hand).
REFERENCE_DIR = PROJECT_ROOT / "data" / "reference"
DEVICE_KINDS = ("cuda", "cpu", "mps")


def recorded_on(path: Path, recorded: dict, prefix: str) -> str:
    """The kind of device (cuda, cpu, mps) a reference file was recorded on.

    The machine record inside the file decides; files without one (eval reports) go by the
    device slug at the end of their name (``<prefix>_[<run>_]<slug>.json``).
    """
    machine = recorded.get("machine") if isinstance(recorded, dict) else None
    if isinstance(machine, dict) and machine.get("device"):
        return str(machine["device"]).split(":")[0]
    slug = path.stem[len(prefix) + 1:].rsplit("_", 1)[-1]
    return slug.split("-")[0]


def reference_files(prefix: str, kind: str = "cuda", folder: Path | None = None
                    ) -> dict[str, dict]:
    """The recorded JSON files ``<prefix>_*.json`` of data/reference made on this kind of device.

    Returns {file name: contents}, sorted by name; empty when none is recorded. `kind` is
    "cuda" (any GPU), "cpu" or "mps". A CPU file is never returned for "cuda", whatever its
    name says, and the other way round: the machine record inside a file wins over its name.
    """
    if kind not in DEVICE_KINDS:
        raise ValueError(f"kind must be one of {DEVICE_KINDS}, not {kind!r}")
    found = {}
    for path in sorted((folder or REFERENCE_DIR).glob(f"{prefix}_*.json")):
        try:
            recorded = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON ({error}): copy it again") from error
        if recorded_on(path, recorded, prefix) == kind:
            found[path.name] = recorded
    return found


def reference_runs(kind: str = "cuda", folder: Path | None = None) -> dict[str, dict]:
    """Finished training runs recorded on this kind of device (bench/record_runs.py's files).

    Reads data/reference/runs_<slug>.json and returns {run name: record}: final losses, tokens,
    wall time, throughput and the evaluation curve (``record["curve"]``: lists "step",
    "tokens", "val_loss", "eval_train_loss"), plus "machine" (the machine record: device_name,
    date, ...) and "file" (where it came from). A run recorded on several machines of the kind
    keeps its most recent record. Empty when none is recorded: no GPU run is, until someone
    runs bench/gpu_check.sh on a GPU and copies its JSON files into data/reference/.
    """
    runs: dict[str, dict] = {}
    for name, recorded in reference_files("runs", kind, folder).items():
        machine = recorded.get("machine", {})
        for record in recorded.get("results", []):
            record = {**record, "machine": machine, "file": name}
            seen = runs.get(record["run"])
            if seen is None or machine.get("date", "") >= seen["machine"].get("date", ""):
                runs[record["run"]] = record
    return runs
