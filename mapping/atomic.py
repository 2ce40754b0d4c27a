"""Atomic directory writes (re-exported from :mod:`sensors.atomic`, the lowest layer)."""

from sensors.atomic import atomic_directory

__all__ = ["atomic_directory"]
