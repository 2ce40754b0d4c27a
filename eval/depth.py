"""Old name of :mod:`eval.depth_metrics`; kept only until ``semmap/stages/depth.py`` imports
``eval.depth_metrics`` (its owner's file), then to be deleted. Use :mod:`eval.depth_metrics`
(metric definitions) and :mod:`eval.depth_protocols` (evaluation runs over a source)."""

from eval.depth_metrics import depth_metrics

__all__ = ["depth_metrics"]
