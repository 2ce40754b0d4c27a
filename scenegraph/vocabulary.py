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

TYPICAL_SIZE_M: dict[str, float] = {
    "table": 1.4, "desk": 1.3, "chair": 0.5, "sofa": 2.0, "armchair": 0.8, "stool": 0.4, "bench": 1.4,
    "bed": 2.0, "pillow": 0.5, "blanket": 1.5, "shelf": 1.0, "bookshelf": 1.0, "cabinet": 1.0,
    "cupboard": 1.0, "drawer": 0.5, "wardrobe": 1.2, "counter": 2.0, "kitchen counter": 2.5, "sink": 0.6,
    "refrigerator": 0.8, "oven": 0.6, "microwave": 0.5, "stove": 0.7, "dishwasher": 0.6, "kettle": 0.25,
    "toaster": 0.3, "coffee machine": 0.35, "mug": 0.1, "cup": 0.09, "glass": 0.08, "bottle": 0.08,
    "bowl": 0.18, "plate": 0.25, "pot": 0.3, "pan": 0.4, "jar": 0.1, "box": 0.4, "basket": 0.4, "bag": 0.4,
    "backpack": 0.35, "book": 0.25, "paper": 0.3, "notebook": 0.25, "magazine": 0.28, "monitor": 0.55,
    "television": 1.1, "laptop": 0.35, "computer": 0.45, "keyboard": 0.45, "mouse": 0.11, "telephone": 0.2,
    "printer": 0.45, "lamp": 0.35, "light": 0.4, "clock": 0.3, "picture": 0.6, "mirror": 0.7, "window": 1.2,
    "door": 0.9, "curtain": 1.5, "plant": 0.4, "vase": 0.15, "trash can": 0.35, "towel": 0.5, "toy": 0.25,
    "shoe": 0.28, "radiator": 0.9, "fan": 0.4, "speaker": 0.2, "whiteboard": 1.5,
}
"""Typical longest horizontal side of the default names' objects, metres (common-sense
values: a dining table 1.4, a chair 0.5, a mug 0.1), the size prior of scene-graph
queries (:mod:`scenegraph.query`). Structure names have none; a name missing here (a
user's own) contributes no prior."""


KIND_OF: dict[str, tuple[str, ...]] = {
    "desk": ("table",),
    "armchair": ("chair",),
    "bookshelf": ("shelf",),
    "kitchen counter": ("counter",),
    "laptop": ("computer",),
    "kettle": ("pot",),
}
"""Name -> the more general default names it is a kind of: WordNet hypernym chains
between two default names (desk.n.01 < table.n.02, armchair.n.01 < chair.n.01,
bookshelf.n.01 < shelf.n.01, laptop.n.01 < ... < computer.n.01, kettle.n.01 < pot.n.01),
and a compound's head noun ("kitchen counter" is a counter).
A query for "table" also accepts what looks like a desk (:mod:`scenegraph.query`); a
query for "desk" does not accept any table."""


def kinds_of(name: str, names: tuple[str, ...] | list[str] | None = None, kind_of: dict[str, tuple[str, ...]] | None = None) -> tuple[str, ...]:
    """The names (of ``names``, default all of ``kind_of``) that are kinds of ``name``:
    its hyponyms, transitively ("table" -> ("desk",)); () for a name without any."""
    kind_of = KIND_OF if kind_of is None else kind_of
    out: list[str] = []
    frontier = [name]
    while frontier:
        parent = frontier.pop()
        for child, parents in kind_of.items():
            if parent in parents and child not in out and child != name:
                out.append(child)
                frontier.append(child)
    return tuple(n for n in out if names is None or n in names)


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
