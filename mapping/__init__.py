"""Where frames become a map: TSDF geometry, depth filling, encoders, feature fusion, queries."""

from mapping.tsdf import TSDFConfig, TSDFMap

__all__ = ["TSDFConfig", "TSDFMap"]
