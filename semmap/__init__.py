"""semmap: the application layer (CLI, configuration, end-to-end pipeline)."""

from semmap.pipeline import MapConfig, MapResult, build_map, save_map

__all__ = ["MapConfig", "MapResult", "build_map", "save_map"]
