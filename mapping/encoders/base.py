"""The image-text encoder interface shared by every backend.

An encoder maps RGB images and strings into one embedding space: rows are
float32 and L2-normalised, so a dot product is a cosine similarity. Input
checks, batching, ``torch.inference_mode`` and normalisation live here, once;
a backend only implements ``_encode_image_batch`` and ``_encode_text_batch``.

torch is imported inside the methods, so importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

if TYPE_CHECKING:
    import torch

T = TypeVar("T")


def resolve_device(device: str) -> torch.device:
    """A torch device from a user string: "cpu", "cuda", "cuda:1", "CUDA:0" (Open3D style), "mps".

    Raises:
        ValueError: the string is not a device, or names an accelerator that is not available.
    """
    import torch

    try:
        dev = torch.device(str(device).strip().lower())
    except RuntimeError as e:
        raise ValueError(f"invalid device {device!r}: {e}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available (torch {torch.__version__})")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} requested but MPS is not available")
    return dev


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads, restoring the setting after (None: unchanged)."""
    if n is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def check_images(images: Sequence[np.ndarray], where: str = "encode_images") -> list[np.ndarray]:
    """Validate a list of RGB images; returns it as a list.

    Each image must be an (H, W, 3) uint8 numpy array with H, W >= 1.

    Raises:
        TypeError: not a list/tuple, or an element is not a numpy array of dtype uint8.
        ValueError: the list is empty, or an image has the wrong shape.
    """
    if isinstance(images, np.ndarray):
        raise TypeError(
            f"{where}: expected a list of (H, W, 3) uint8 arrays, got one array of shape {images.shape}; "
            "wrap it in a list"
        )
    if not isinstance(images, (list, tuple)):
        raise TypeError(f"{where}: expected a list of (H, W, 3) uint8 arrays, got {type(images).__name__}")
    if len(images) == 0:
        raise ValueError(f"{where}: got an empty list of images")
    for i, im in enumerate(images):
        if not isinstance(im, np.ndarray):
            raise TypeError(f"{where}: image {i} is a {type(im).__name__}, expected a numpy array (H, W, 3) uint8")
        if im.dtype != np.uint8:
            raise TypeError(f"{where}: image {i} has dtype {im.dtype}, expected uint8 RGB (0..255)")
        if im.ndim != 3 or im.shape[2] != 3 or im.shape[0] < 1 or im.shape[1] < 1:
            raise ValueError(f"{where}: image {i} has shape {im.shape}, expected (H, W, 3) with H, W >= 1")
    return list(images)


def check_texts(texts: Sequence[str], where: str = "encode_text") -> list[str]:
    """Validate a list of non-empty strings; returns it as a list.

    Raises:
        TypeError: a bare string (instead of a list), or a non-string element.
        ValueError: the list is empty, or a string is empty/whitespace.
    """
    if isinstance(texts, str):
        raise TypeError(f"{where}: expected a list of strings, got the string {texts!r}; wrap it in a list")
    if not isinstance(texts, (list, tuple)):
        raise TypeError(f"{where}: expected a list of strings, got {type(texts).__name__}")
    if len(texts) == 0:
        raise ValueError(f"{where}: got an empty list of texts")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"{where}: text {i} is a {type(t).__name__}, expected str")
        if not t.strip():
            raise ValueError(f"{where}: text {i} is empty")
    return list(texts)


def l2_normalize(x: torch.Tensor, what: str = "rows", offset: int = 0) -> np.ndarray:
    """(N, D) tensor -> (N, D) float32 numpy rows of unit length.

    Raises:
        RuntimeError: a row is not finite or has (near) zero norm, which would give a
            meaningless direction; the message names ``what`` and the row indices
            (plus ``offset``, the batch start).
    """
    import torch

    x = x.detach().to(torch.float32)
    norms = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    bad = ~torch.isfinite(norms[:, 0]) | (norms[:, 0] < 1e-12)
    if bool(bad.any()):
        idx = [offset + i for i in torch.nonzero(bad)[:, 0].tolist()]
        raise RuntimeError(f"encoder produced non-finite or zero embeddings for {what} {idx[:10]}")
    return np.ascontiguousarray((x / norms).cpu().numpy(), dtype=np.float32)


class Encoder(ABC):
    """An image-text embedding model.

    Attributes:
        name: the full spec string ("lite", "clip:/models/clip-b32", ...). Maps store it,
            so a map built with one encoder is never queried with another.
        dim: embedding dimension D.
        device: torch device the model runs on.
        batch_size: images or texts per forward pass.
    """

    #: the registry prefix ("lite", "clip", ...); set by subclasses.
    kind: str = ""

    def __init__(self, name: str, dim: int, device: str = "cpu", batch_size: int = 32) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.name = name
        self.dim = int(dim)
        self.device = resolve_device(device)
        self.batch_size = int(batch_size)

    @classmethod
    def from_spec(cls, argument: str, device: str = "cpu", **options: Any) -> Encoder:
        """Build from the part of a spec after "<kind>:" (may be empty)."""
        return cls(argument, device=device, **options)  # type: ignore[call-arg]

    # -- public API -------------------------------------------------------------------
    def encode_images(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Embed RGB images.

        Args:
            images: list of N arrays (H_i, W_i, 3) uint8 RGB; sizes may differ.

        Returns:
            (N, dim) float32, rows L2-normalised.
        """
        images = check_images(images)
        return self._run_batched(images, self._encode_image_batch, "images")

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """Embed strings.

        Args:
            texts: list of N non-empty strings.

        Returns:
            (N, dim) float32, rows L2-normalised.
        """
        texts = check_texts(texts)
        return self._run_batched(texts, self._encode_text_batch, "texts")

    # -- backend hooks -----------------------------------------------------------------
    @abstractmethod
    def _encode_image_batch(self, images: list[np.ndarray]) -> torch.Tensor:
        """At most ``batch_size`` validated images -> (B, dim) tensor, any norm."""

    @abstractmethod
    def _encode_text_batch(self, texts: list[str]) -> torch.Tensor:
        """At most ``batch_size`` validated strings -> (B, dim) tensor, any norm."""

    # -- shared machinery -----------------------------------------------------------------
    def _run_batched(self, items: list[T], fn: Callable[[list[T]], torch.Tensor], what: str) -> np.ndarray:
        import torch

        out = np.empty((len(items), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(items), self.batch_size):
                batch = items[start : start + self.batch_size]
                emb = fn(batch)
                if tuple(emb.shape) != (len(batch), self.dim):
                    raise RuntimeError(
                        f"{self.name}: backend returned shape {tuple(emb.shape)} for {len(batch)} {what}, "
                        f"expected ({len(batch)}, {self.dim})"
                    )
                out[start : start + len(batch)] = l2_normalize(emb, what, offset=start)
        return out

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, "
            f"device={str(self.device)!r}, batch_size={self.batch_size})"
        )


_VOCABULARY_CACHE: dict[tuple[str, tuple[str, ...]], np.ndarray] = {}


def vocabulary_embeddings(encoder, names: Sequence[str]) -> np.ndarray:
    """(V, D) float32 unit text embeddings of a fixed list of names (label or reference
    vocabularies), kept in memory per encoder name (a few sets per process). An encoder with
    an ``encode_vocabulary`` method embeds them (the lite encoder keeps them on disk too);
    any other object with ``encode_text`` works."""
    key = (getattr(encoder, "name", str(id(encoder))), tuple(names))
    if key not in _VOCABULARY_CACHE:
        if len(_VOCABULARY_CACHE) >= 4:
            _VOCABULARY_CACHE.clear()
        embed = getattr(encoder, "encode_vocabulary", None) or encoder.encode_text
        _VOCABULARY_CACHE[key] = np.asarray(embed(list(key[1])), np.float32)
    return _VOCABULARY_CACHE[key]
