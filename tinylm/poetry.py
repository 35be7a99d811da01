"""Poem structure: split a poem into verses and name its form (五绝, 七绝, 五律, 七律).

A Tang poem's lines come in couplets; each half of a couplet is a verse (句) of five or seven
characters. A quatrain (绝句, jueju) has four verses, a regulated verse (律诗, lüshi) eight.
"""

from __future__ import annotations

import re

_VERSE_END = re.compile(r"[，。！？；：、\n]+")

FORMS = ("五绝", "七绝", "五律", "七律")
FORM_NAMES = {
    "五绝": "five-character quatrain (五言绝句)",
    "七绝": "seven-character quatrain (七言绝句)",
    "五律": "five-character regulated verse (五言律诗)",
    "七律": "seven-character regulated verse (七言律诗)",
    "其他": "other forms (古体诗 old-style, 排律 long regulated, mixed lengths)",
}


def verses(content: str) -> list[str]:
    """Split a poem body into its verses (句) at punctuation and line breaks."""
    return [v for v in _VERSE_END.split(content) if v]


def classify_form(content: str) -> str:
    """Name the form of a poem body: one of FORMS, or 其他 when it is none of them."""
    parts = verses(content)
    lengths = {len(v) for v in parts}
    if len(lengths) != 1 or len(parts) not in (4, 8):
        return "其他"
    size = {5: "五", 7: "七"}.get(lengths.pop())
    if size is None:
        return "其他"
    return size + ("绝" if len(parts) == 4 else "律")
