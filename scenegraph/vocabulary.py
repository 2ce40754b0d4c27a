"""Label vocabulary for naming objects: a default list of common indoor object names, extendable.

A user vocabulary file is plain text, one name per line (blank lines and ``#`` comments
ignored), or a JSON list of strings. ``load_vocabulary(path)`` returns the default list
extended by the file's names (duplicates dropped, order kept); ``extend=False`` uses the
file alone.
"""

from __future__ import annotations

import json
from pathlib import Path

DEFAULT_VOCABULARY: tuple[str, ...] = (
    "table", "desk", "chair", "sofa", "armchair", "stool", "bench", "bed", "pillow", "blanket",
    "shelf", "bookshelf", "cabinet", "cupboard", "drawer", "wardrobe", "counter", "kitchen counter",
    "sink", "refrigerator", "oven", "microwave", "stove", "dishwasher", "kettle", "toaster",
    "coffee machine", "mug", "cup", "glass", "bottle", "bowl", "plate", "pot", "pan", "jar",
    "box", "basket", "bag", "backpack", "book", "paper", "notebook", "magazine",
    "monitor", "television", "laptop", "computer", "keyboard", "mouse", "telephone", "printer",
    "lamp", "light", "clock", "picture", "mirror", "window", "door", "curtain", "plant",
    "vase", "trash can", "towel", "toy", "shoe", "radiator", "fan", "speaker", "whiteboard",
    "floor", "wall", "ceiling",
)
"""Default label candidates (object names plus the structure names)."""


def parse_vocabulary(text: str, where: str = "vocabulary") -> list[str]:
    """Names from a vocabulary file's text (JSON list, or one name per line with # comments)."""
    s = text.strip()
    if s.startswith("["):
        try:
            data = json.loads(s)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not a valid JSON list ({e})") from None
        if not all(isinstance(x, str) for x in data):
            raise ValueError(f"{where}: a JSON vocabulary must be a list of strings")
        names = data
    else:
        names = [line.split("#", 1)[0] for line in text.splitlines()]
    names = [" ".join(n.split()) for n in names]
    names = [n for n in names if n]
    if not names:
        raise ValueError(f"{where}: no names in the vocabulary")
    return list(dict.fromkeys(names))


def load_vocabulary(path: Path | str | None = None, extend: bool = True) -> list[str]:
    """The default vocabulary, extended by (or, ``extend=False``, replaced by) a file's names."""
    base = list(DEFAULT_VOCABULARY)
    if path is None:
        return base
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"vocabulary file not found: {p}")
    names = parse_vocabulary(p.read_text(), str(p))
    return list(dict.fromkeys(base + names)) if extend else names
