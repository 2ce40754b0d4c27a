"""How good the map is, measured: reconstruction (accuracy, completion, F-score) and
trajectory (ATE, RPE) metrics, with JSON / PNG reports.

Nothing heavy is imported here: Open3D and matplotlib are imported inside the
functions that use them.
"""

from eval.depth_metrics import DEPTH_CAPS, DepthMetrics, depth_metrics, format_depth_table, mean_metrics
from eval.recon import (
    DEFAULT_NUM_SAMPLES,
    DEFAULT_THRESHOLDS_M,
    Culling,
    ReconErrors,
    ReconMetrics,
    Surface,
    distance_to_surface,
    evaluate_reconstruction,
    load_surface,
    metrics_from_errors,
    sample_surface,
    visibility,
)
from eval.report import (
    plot_recon_errors,
    plot_traj_errors,
    to_jsonable,
    write_json,
    write_recon_report,
    write_traj_report,
)
from eval.traj import (
    ErrorStats,
    TrajErrors,
    TrajectoryAlignment,
    TrajMetrics,
    associate,
    evaluate_trajectory,
    relative_pose_errors,
    umeyama,
)

__all__ = [
    "DEFAULT_NUM_SAMPLES",
    "DEFAULT_THRESHOLDS_M",
    "TrajectoryAlignment",
    "Culling",
    "ErrorStats",
    "ReconErrors",
    "ReconMetrics",
    "Surface",
    "TrajErrors",
    "TrajMetrics",
    "associate",
    "distance_to_surface",
    "evaluate_reconstruction",
    "evaluate_trajectory",
    "load_surface",
    "metrics_from_errors",
    "plot_recon_errors",
    "plot_traj_errors",
    "relative_pose_errors",
    "sample_surface",
    "to_jsonable",
    "umeyama",
    "visibility",
    "write_json",
    "write_recon_report",
    "write_traj_report",
]
