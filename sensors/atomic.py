"""Atomic directory writes: a map is either completely written or not there at all."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_directory(dest: Path | str) -> Iterator[Path]:
    """Write a directory atomically.

    Yields a fresh temporary directory next to ``dest`` (same filesystem). When the
    ``with`` block finishes without an exception the temporary directory replaces
    ``dest`` by rename (an existing ``dest`` is moved aside first and deleted after);
    on an exception (or Ctrl-C) it is removed and ``dest`` is left untouched.
    """
    dest = Path(dest).resolve()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        yield tmp
        _fsync_tree(tmp)
        old = None
        if dest.exists():
            old = dest.parent / f".{dest.name}.old-{os.getpid()}"
            if old.exists():
                shutil.rmtree(old)
            os.replace(dest, old)
        os.replace(tmp, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fsync_tree(root: Path) -> None:
    """Flush file contents to disk before the rename makes them visible."""
    for p in root.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
