"""Any transformers depth-estimation model (``"hf:<name-or-local-path>"``).

Loads ``AutoModelForDepthEstimation`` and the model's own ``AutoImageProcessor``
from a local directory (written by ``save_pretrained``) or the Hugging Face cache;
nothing is downloaded unless ``allow_download=True``.

Output kind, when not given explicitly, is inferred from the config:

==========================  =====================================================
model_type                  output kind
==========================  =====================================================
depth_anything (V1/V2)      ``depth_estimation_type == "metric"`` -> "metric"
                            (the metric indoor/outdoor heads: sigmoid * max_depth);
                            "relative" -> "relative_inverse" (disparity-like)
prompt_depth_anything       as depth_anything
zoedepth                    "metric" (metric bins head)
glpn                        "metric" (trained on NYU/KITTI: sigmoid * max_depth)
depth_pro                   "metric" (the processor's post-processing uses the
                            predicted field of view at the frame's size)
dpt                         "relative_inverse" (MiDaS-style DPT-large/hybrid). DPT
                            checkpoints fine-tuned on NYU or KITTI are metric:
                            pass ``output_kind="metric"`` for those.
anything else               must be given as ``output_kind``
==========================  =====================================================

The prediction is brought back to the frame's size with bilinear interpolation
in the model's own output space (depth for metric/relative models, inverse depth
for disparity models), after the processor's own post-processing (e.g. ZoeDepth's
padding removal).
"""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path

import numpy as np

from mapping.depth.base import OUTPUT_KINDS, DepthEstimator
from sensors.resize import resize_map
from sensors.camera import Camera

_METRIC_MODEL_TYPES = ("zoedepth", "glpn", "depth_pro")
_DEPTH_ANYTHING_TYPES = ("depth_anything", "prompt_depth_anything")


class DepthModelLoadError(OSError):
    """A transformers depth model could not be loaded (message says where from and why)."""


def infer_output_kind(config) -> tuple[str | None, str]:
    """Output kind of a transformers depth model from its config.

    Args:
        config: a transformers ``PretrainedConfig``.
    Returns:
        (kind or None if unknown, a short reason for messages).
    """
    model_type = getattr(config, "model_type", "")
    if model_type in _DEPTH_ANYTHING_TYPES:
        est = getattr(config, "depth_estimation_type", "relative")
        if est == "metric":
            return "metric", f"{model_type} with depth_estimation_type='metric'"
        return "relative_inverse", f"{model_type} with depth_estimation_type={est!r} predicts relative disparity"
    if model_type in _METRIC_MODEL_TYPES:
        return "metric", f"{model_type} predicts metric depth"
    if model_type == "dpt":
        return "relative_inverse", "dpt (MiDaS-style) predicts relative inverse depth"
    return None, f"unknown model_type {model_type!r}"


def _load_error(source: str, e: Exception, allow_download: bool) -> DepthModelLoadError:
    p = Path(source)
    if p.is_dir():
        present = sorted(x.name for x in p.iterdir())
        listing = ", ".join(present[:8]) + (f", ... ({len(present)} entries)" if len(present) > 8 else "")
        hint = (
            f"{p} is a directory but does not hold a loadable depth model and image processor "
            f"(found: {listing or 'nothing'}; expected config.json, model weights and "
            f"preprocessor_config.json as written by save_pretrained)"
        )
    elif allow_download:
        hint = f"{source!r} is neither a local directory nor a downloadable Hugging Face model"
    else:
        hint = (
            f"{source!r} is not a local directory and is not in the Hugging Face cache; loading is offline. "
            f"Download it where there is internet (e.g. `huggingface-cli download {source}`) and pass the "
            f"directory, or pass allow_download=True"
        )
    return DepthModelLoadError(f"cannot load depth model {source!r}: {hint} ({type(e).__name__}: {e})")


class HFDepthEstimator(DepthEstimator):
    """A transformers depth-estimation model with its own preprocessing.

    Args:
        source: a Hugging Face model name or a local directory.
        device: torch device ("cpu", "cuda", "cuda:0").
        output_kind: "metric", "relative" or "relative_inverse"; inferred from the
            config when None (see the module table).
        allow_download: allow transformers to fetch the model from the hub.
    """

    def __init__(
        self,
        source: str,
        device: str = "cpu",
        output_kind: str | None = None,
        allow_download: bool = False,
    ) -> None:
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        self.source = str(source)
        self.device = device
        local_only = not allow_download
        try:
            self.processor = AutoImageProcessor.from_pretrained(self.source, local_files_only=local_only)
            self.model = AutoModelForDepthEstimation.from_pretrained(self.source, local_files_only=local_only)
        except (OSError, ValueError, KeyError) as e:
            raise _load_error(self.source, e, allow_download) from e
        self.model.eval().to(device)
        self.model_type = getattr(self.model.config, "model_type", "")
        inferred, reason = infer_output_kind(self.model.config)
        if output_kind is None:
            if inferred is None:
                raise ValueError(
                    f"{self.source}: cannot tell whether this model outputs metric, relative or relative inverse "
                    f"depth ({reason}); pass output_kind=one of {OUTPUT_KINDS}"
                )
            if self.model_type == "dpt":
                warnings.warn(
                    f"{self.source}: assuming relative inverse depth ({reason}); pass output_kind='metric' "
                    f"for DPT checkpoints fine-tuned on NYU/KITTI",
                    stacklevel=2,
                )
            output_kind = inferred
        if output_kind not in OUTPUT_KINDS:
            raise ValueError(f"output_kind must be one of {OUTPUT_KINDS}, got {output_kind!r}")
        self.output_kind = output_kind
        self.name = f"hf:{self.source}"

    def _post_process(self, outputs, size_hw: tuple[int, int]):
        """The processor's own post-processing, without its (bicubic) resize where avoidable."""
        pp = getattr(self.processor, "post_process_depth_estimation", None)
        if pp is None:
            return outputs.predicted_depth[0]
        params = inspect.signature(pp).parameters
        kwargs = {}
        if "source_sizes" in params:  # ZoeDepth: removes its reflection padding
            kwargs["source_sizes"] = [size_hw]
        if self.model_type == "depth_pro":  # metric scale needs the output size (field of view)
            kwargs["target_sizes"] = [size_hw]
        return pp(outputs, **kwargs)[0]["predicted_depth"]

    def _predict(self, rgb: np.ndarray, camera: Camera) -> np.ndarray:
        import torch

        inputs = self.processor(images=rgb, return_tensors="pt")
        inputs = {k: v.to(self.device) if hasattr(v, "to") else v for k, v in inputs.items()}
        with torch.inference_mode():
            outputs = self.model(**inputs)
            pred = self._post_process(outputs, camera.shape)
        pred = pred.detach().float().cpu().numpy()
        pred = pred.reshape(pred.shape[-2:])
        return resize_map(pred, camera.shape, mode="bilinear")


def load_hf_depth_model(location: str, device: str = "cpu", **options) -> HFDepthEstimator:
    """Registry factory for ``"hf:<name-or-path>"``; options go to :class:`HFDepthEstimator`."""
    if not location:
        raise ValueError("hf depth model needs a name or path, e.g. 'hf:/models/depth-anything-v2-metric-indoor'")
    return HFDepthEstimator(location, device=device, **options)
