"""Plot helpers: a font that can draw Chinese characters, and the course's recurring charts."""

from __future__ import annotations

import warnings

import matplotlib.pyplot as plt
from matplotlib import font_manager

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
