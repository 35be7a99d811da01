"""Plot helpers: a font for Chinese, bertviz offline, attention stripes, the reference runs.

`reference_runs` and `reference_files` read what bench/ recorded in data/reference/ (loss
curves, throughput, poem reports), filtered by the kind of device it ran on, so that a
notebook never shows a CPU run where it means a GPU one.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from IPython.display import HTML
from matplotlib import font_manager

from tinylm.poetry import VERSE_BREAKS
from tinylm.reference import REFERENCE_DIR

# Fonts with Chinese glyphs found on common systems (Linux packages, macOS, Windows), used only
# when the course's own font (below) is missing.
CJK_FONTS = (
    "Noto Sans CJK SC",
    "Noto Sans SC",
    "Source Han Sans SC",
    "WenQuanYi Micro Hei",
    "WenQuanYi Zen Hei",
    "PingFang SC",
    "Heiti SC",
    "STHeiti",
    "Hiragino Sans GB",
    "Microsoft YaHei",
    "SimHei",
    "Arial Unicode MS",
)


def course_font_path() -> Path | None:
    """The Noto Sans SC file that the dependency pylopdf-fonts-zh-cn ships (SIL OFL 1.1), if any."""
    try:
        import pylopdf_fonts_zh_cn
    except ImportError:
        return None
    path = Path(pylopdf_fonts_zh_cn.sans_path())
    return path if path.is_file() else None


def use_cjk_font() -> str | None:
    """Make matplotlib draw Chinese labels; return the font's name, or None if there is none.

    The course installs Noto Sans SC with its dependencies, so every machine draws the same
    glyphs, a bare Linux box included. Without it, a CJK font installed on the system is used;
    with neither, a warning says what to install (labels then show boxes).
    """
    path = course_font_path()
    if path is not None:
        font_manager.fontManager.addfont(str(path))
        name = font_manager.FontProperties(fname=str(path)).get_name()
    else:
        installed = {f.name for f in font_manager.fontManager.ttflist}
        name = next((n for n in CJK_FONTS if n in installed), None)
        if name is None:
            warnings.warn(
                "No font with Chinese glyphs found: Chinese labels will show as boxes. "
                "Reinstall the course (`make setup`) to get Noto Sans SC, or install a "
                "CJK font such as `fonts-noto-cjk`.",
                stacklevel=2,
            )
            return None
    plt.rcParams["font.family"] = [name, "sans-serif"]  # glyphs it lacks (↵, ⟨⟩) from DejaVu
    return name


# bertviz, offline -------------------------------------------------------------------------
# bertviz's head_view loads require.js, d3 and jQuery from a CDN, so behind a firewall it shows
# "require is not defined". The course ships d3 5.7.0 (BSD-3-Clause) and jQuery 3.7.1 slim (MIT)
# in tinylm/vendor/, with their licences, and inlines them into the view instead.
VENDOR_DIR = Path(__file__).parent / "vendor"
VENDOR_SCRIPTS = ("d3-5.7.0.min.js", "jquery-3.7.1.slim.min.js")
_CDN_REQUIRE = re.compile(r'<script src="https://[^"]*require[^"]*"></script>')
_AMD_PREAMBLE = re.compile(
    r"require\.config\(\{.*?\}\);\s*requirejs\(\[[^\]]*\],\s*function\s*"
    r"\(\$, d3\)\s*\{",
    re.S,
)


def offline_scripts() -> str:
    """d3 and jQuery in one script that defines no globals and hides any AMD loader from them."""
    libs = "\n".join(
        f"(function () {{\n{(VENDOR_DIR / name).read_text(encoding='utf-8')}\n}}).call(tinylm);"
        for name in VENDOR_SCRIPTS
    )
    return (
        "var tinylm = {}, define, module, exports;  // libraries then attach to `tinylm`\n"
        f"{libs}\ntinylm.$ = jQuery.noConflict(true);\n"
    )


def head_view(attention: Sequence[torch.Tensor], tokens: Sequence[str], decimals: int = 3) -> HTML:
    """bertviz's head_view, rendered with the vendored scripts so it works with no network.

    attention: one (1, n_head, T, T) tensor per layer; weights are rounded to `decimals` places
    to keep the output small.
    """
    from bertviz import head_view as bertviz_head_view

    rounded = [torch.round(a.detach().double().cpu(), decimals=decimals) for a in attention]
    html = bertviz_head_view(rounded, list(tokens), html_action="return").data
    html, n_cdn = _CDN_REQUIRE.subn("", html)
    html, n_amd = _AMD_PREAMBLE.subn("(function ($, d3) {", html)
    end = html.rindex("});")
    if (n_cdn, n_amd) != (1, 1):
        raise RuntimeError(
            "bertviz's head_view output changed shape: tinylm.viz.head_view "
            "cannot make it offline; pin bertviz==1.4.1."
        )
    body = html[:end] + "})(tinylm.$, tinylm.d3);" + html[end + 3 :]
    head, script = body.split('<script type="text/javascript">', 1)
    return HTML(
        f'{head}<script type="text/javascript">\n(function () {{\n{offline_scripts()}'
        f"{script.rsplit('</script>', 1)[0]}\n}})();\n</script>\n"
    )


# Attention stripes ---------------------------------------------------------------------------
# A trained model's attention maps show vertical stripes: keys that most queries attend to,
# whatever they are. In notebook 03 they fall on position 0 (the end-of-text token a poem starts
# after) and on the punctuation that closes each verse. `stripe_mass` measures them per head.
PUNCTUATION = tuple(VERSE_BREAKS)  # verse ends and line breaks, as poetry.verses splits


@dataclass(frozen=True)
class StripeMass:
    """Mean attention mass per (layer, head) on position 0 and on punctuation, and its baseline.

    `first` and `punctuation` are (n_layer, n_head) tensors: the weight a query puts on key 0,
    and on the punctuation keys after it, averaged over the queries 1 .. T-1 (query 0 can only
    attend to itself) and over the batch. `first_uniform` and `punctuation_uniform` are what
    the same keys would get if every query spread its weight evenly over the keys it may see
    (query i: 1 / (i + 1) each), so ``first / first_uniform`` is how many times its fair share a
    head gives the first token.
    """

    first: torch.Tensor
    punctuation: torch.Tensor
    first_uniform: float
    punctuation_uniform: float

    @property
    def first_excess(self) -> torch.Tensor:
        """`first` as a multiple of what uniform causal attention gives position 0."""
        return self.first / self.first_uniform

    @property
    def punctuation_excess(self) -> torch.Tensor:
        """`punctuation` as a multiple of what uniform causal attention gives punctuation."""
        if self.punctuation_uniform == 0:
            return torch.full_like(self.punctuation, float("nan"))  # no punctuation key
        return self.punctuation / self.punctuation_uniform


def is_punctuation(token: str, punctuation: Sequence[str] = PUNCTUATION) -> bool:
    """True for a token made only of punctuation marks and line breaks ("，", "。\\n")."""
    marks = set("".join(punctuation))
    return bool(token) and all(c in marks for c in token)


def stripe_mass(
    attention: Sequence[torch.Tensor],
    tokens: Sequence[str] | Sequence[Sequence[str]],
    punctuation: Sequence[str] = PUNCTUATION,
) -> StripeMass:
    """How much attention each head puts on position 0 and on punctuation, against uniform.

    attention: one (B, n_head, T, T) tensor of causal attention weights per layer (rows:
    queries, summing to 1), as `GPT.attention_maps` returns them. tokens: the T token strings
    of the sequence (for token ids, ``[tok.decode([i]) for i in ids]``), or one such list per
    batch row. A token counts as punctuation when it consists of `punctuation` marks only
    (by default ，。？！、；： and the newline); position 0 counts as the first token only, never
    as punctuation, so the two masses do not overlap.
    """
    if not attention:
        raise ValueError("attention is empty: pass one (B, n_head, T, T) tensor per layer")
    weights = torch.stack([a.detach().double().cpu() for a in attention])  # (L, B, H, T, T)
    if weights.dim() != 5 or weights.shape[-1] != weights.shape[-2]:
        raise ValueError(
            f"each layer's attention must be (B, n_head, T, T), got {tuple(attention[0].shape)}"
        )
    batch, length = weights.shape[1], weights.shape[-1]
    if length < 2:
        raise ValueError("need at least 2 positions: query 0 has no key to choose from")
    rows = [list(tokens)] * batch if all(isinstance(t, str) for t in tokens) else tokens
    rows = [list(row) for row in rows]
    if len(rows) != batch or any(len(row) != length for row in rows):
        raise ValueError(
            f"tokens must be {length} strings (or {batch} lists of {length}) for attention of "
            f"shape {tuple(attention[0].shape)}, got {[len(row) for row in rows]}"
        )
    marks = torch.tensor([[is_punctuation(t, punctuation) for t in row] for row in rows])
    marks[:, 0] = False  # (B, T): punctuation keys after position 0
    queries = weights[..., 1:, :]  # (L, B, H, T-1, T): query 0 has only itself
    first = queries[..., 0].mean(dim=(1, 3))
    on_marks = (queries * marks[None, :, None, None, :].double()).sum(-1).mean(dim=(1, 3))
    seen = torch.arange(2, length + 1, dtype=torch.float64)  # keys query i may see: i + 1
    marks_seen = marks.double().cumsum(-1)[:, 1:]  # (B, T-1): punctuation keys up to query i
    return StripeMass(
        first=first.float(),
        punctuation=on_marks.float(),
        first_uniform=(1 / seen).mean().item(),
        punctuation_uniform=(marks_seen / seen).mean().item(),
    )


# Recorded reference runs -------------------------------------------------------------------
# bench scripts write data/reference/<benchmark>_<device slug>.json, the slug being "cpu", "mps"
# or "cuda-<GPU name>" (bench/common.py: slug), and poem reports as eval_<run>_<slug>.json
# (bench/gpu_check.sh, or `python -m tinylm eval --run RUN --out ...` by hand).
DEVICE_KINDS = ("cuda", "cpu", "mps")


def recorded_on(path: Path, recorded: dict, prefix: str) -> str:
    """The kind of device (cuda, cpu, mps) a reference file was recorded on.

    The machine record inside the file decides; files without one (eval reports) go by the
    device slug at the end of their name (``<prefix>_[<run>_]<slug>.json``).
    """
    machine = recorded.get("machine") if isinstance(recorded, dict) else None
    if isinstance(machine, dict) and machine.get("device"):
        return str(machine["device"]).split(":")[0]
    slug = path.stem[len(prefix) + 1 :].rsplit("_", 1)[-1]
    return slug.split("-")[0]


def reference_files(prefix: str, kind: str = "cuda", folder: Path | None = None) -> dict[str, dict]:
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
