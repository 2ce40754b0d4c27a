"""A semantic map: TSDF geometry + fused feature layer + metadata, loaded from a map directory.

``semmap map SOURCE --encoder ... --out DIR`` writes the directory (atomically, map.json
last); :meth:`SemanticMap.load` reads it and answers text and image queries without the
source data and without running the image encoder again (only the text encoder, for text
queries). Files read:

- ``map.json``: written last by ``semmap map``; its absence means an unfinished map;
- ``features.npz`` / ``features.json``: the feature grid (``mapping.fusion``) and its
  metadata (encoder name and dim, voxel size, keyframes, bytes per voxel);
- ``tsdf.npz`` / ``tsdf.json`` and ``mesh.ply``: geometry, loaded only when asked for.

Query path: the unit voxel embeddings are computed once, as an (N, D) float32 matrix;
relevancy of a query is one matrix product with the query and negative embeddings
(negative text embeddings are cached per map, and so is each voxel's best match among the
reference names, ``QueryConfig.reference_names``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mapping.encoders.base import torch_threads, vocabulary_embeddings
from mapping.fusion import FeatureGrid
from mapping.mapformat import (
    MAP_META_FILE,
    NUMBER,
    ArraySpec,
    MapFormatError,
    check_fields,
    check_format_version,
    check_list_of,
    read_json_file,
    read_map_json,
    read_npz,
    require_equal,
)
from mapping.query import (
    QueryConfig,
    ReferenceMatch,
    Region,
    best_match,
    find_regions,
    lerf_relevancy,
    region_threshold,
    resolve_reference_names,
)

if TYPE_CHECKING:
    from mapping.encoders.base import Encoder
    from mapping.tsdf import TSDFMap

FEATURES_FILE = "features.npz"
FEATURES_META_FILE = "features.json"
SEMANTIC_FORMAT_VERSION = 1

FEATURE_ARRAYS = {
    "keys": ArraySpec(("int64",), ("N",)),
    "embeddings": ArraySpec(("float16",), ("N", "D")),
    "weights": ArraySpec(("float32",), ("N",)),
    "counts": ArraySpec(("int32",), ("N",)),
    "voxel_size_m": ArraySpec(("float64",), ()),
}
"""The arrays of ``features.npz``: N semantic voxels, D embedding dimensions."""

FEATURE_FIELDS = {"format_version": int, "encoder": str, "dim": int, "voxel_size_m": NUMBER, "voxels": int,
                  "keyframes": list}
"""The fields of ``features.json`` that loading relies on."""


class NoFeatureLayer(ValueError):
    """The map was built without ``--encoder``: it has geometry but no semantic feature layer."""


def read_feature_layer(directory: Path, map_meta: dict) -> tuple[dict, FeatureGrid]:
    """``features.json`` and the feature grid of ``features.npz``, checked against each other and map.json.

    Returns:
        (features.json content, FeatureGrid).

    Raises:
        NoFeatureLayer: map.json lists no semantic stage.
        MapFormatError: a feature file is missing, damaged (truncated or garbage archive,
            arrays of the wrong dtype or shape, JSON that does not parse, fields missing or of
            the wrong type, an unknown format version), or disagrees with another file.
    """
    feat_npz, feat_json = directory / FEATURES_FILE, directory / FEATURES_META_FILE
    stage_meta = map_meta["stages"].get("semantic")
    if stage_meta is None:
        raise NoFeatureLayer(
            f"{directory} has no semantic feature layer ({MAP_META_FILE} lists no semantic stage); build it "
            "with semmap map SOURCE --encoder lite --out DIR"
        )
    check_fields(stage_meta, directory / MAP_META_FILE, {"encoder": str, "dim": int, "voxels": int}, "stages.semantic.")
    meta = read_json_file(feat_json)
    check_format_version(meta, feat_json, SEMANTIC_FORMAT_VERSION, "feature layer")
    check_fields(meta, feat_json, FEATURE_FIELDS)
    check_list_of(meta["keyframes"], feat_json, "keyframes", int)
    arrays = read_npz(feat_npz, FEATURE_ARRAYS)
    n, dim = arrays["_dims"]["N"], arrays["_dims"]["D"]
    require_equal(feat_npz, "the voxel count", n, meta["voxels"], FEATURES_META_FILE)
    require_equal(feat_npz, "the embedding dimension", dim, meta["dim"], FEATURES_META_FILE)
    require_equal(feat_json, "voxels", meta["voxels"], stage_meta["voxels"], MAP_META_FILE)
    require_equal(feat_json, "dim", meta["dim"], stage_meta["dim"], MAP_META_FILE)
    require_equal(feat_json, "encoder", meta["encoder"], stage_meta["encoder"], MAP_META_FILE)
    voxel = float(arrays["voxel_size_m"])
    if not abs(voxel - float(meta["voxel_size_m"])) <= 1e-9 or not voxel > 0:
        raise MapFormatError(feat_npz, f"voxel size {voxel} differs from {FEATURES_META_FILE} ({meta['voxel_size_m']})")
    for name in ("embeddings", "weights"):
        if not np.isfinite(arrays[name]).all():
            raise MapFormatError(feat_npz, f"array '{name}' has non-finite values")
    if (arrays["weights"] < 0).any() or (arrays["counts"] < 0).any():
        raise MapFormatError(feat_npz, "negative weights or counts")
    try:  # the arrays read and checked above, not a second read of the file
        grid = FeatureGrid.from_arrays(voxel, arrays["keys"], arrays["embeddings"], arrays["weights"], arrays["counts"])
    except ValueError as e:  # e.g. duplicate keys
        raise MapFormatError(feat_npz, str(e)) from None
    return meta, grid


@dataclass
class QueryResult:
    """Answer to one query.

    Attributes:
        query: the text, or "<image HxW>" for an image query.
        regions: ranked regions, best first.
        relevancy: (N,) float32 relevancy of every voxel (rows of the feature grid).
        threshold: relevancy a voxel needed to join a region.
        timings_s: "encode" (query embedding), "relevancy", "regions", seconds.
    """

    query: str
    regions: list[Region]
    relevancy: np.ndarray = field(repr=False)
    threshold: float
    timings_s: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "query": self.query,
            "threshold": self.threshold,
            "regions": [r.to_dict() for r in self.regions],
            "timings_s": dict(self.timings_s),
        }


class SemanticMap:
    """Feature grid + metadata (+ lazily loaded TSDF) that answers open-vocabulary queries.

    Args:
        grid: the fused feature layer.
        encoder_name: spec of the encoder the features came from ("lite", "clip:/path", ...).
        metadata: the map's metadata (features.json content, plus map.json as ``"map"``).
        directory: the map directory, when loaded from one (for the TSDF and mesh).
        encoder: the encoder to embed queries with (None: loaded from ``encoder_name`` on
            first use); its name and dim must match the map.
        query_config: relevancy and region settings.
    """

    def __init__(
        self,
        grid: FeatureGrid,
        encoder_name: str,
        metadata: dict | None = None,
        directory: Path | None = None,
        encoder: Encoder | None = None,
        query_config: QueryConfig | None = None,
    ) -> None:
        self.grid = grid
        self.encoder_name = encoder_name
        self.metadata = dict(metadata or {})
        self.directory = Path(directory) if directory is not None else None
        self.query_config = (query_config or QueryConfig()).for_encoder(encoder_name)  # per-encoder defaults
        self._encoder: Encoder | None = None
        self._device = "cpu"
        self._tsdf: TSDFMap | None = None
        self._negatives: tuple[tuple[str, ...], np.ndarray] | None = None
        self._reference: tuple[object, ReferenceMatch | None] | None = None
        self.unit_embeddings = grid.unit_embeddings()  # (N, D) float32, computed once
        self.coords = grid.coords()  # (N, 3) int64
        self.usable = (np.linalg.norm(self.unit_embeddings, axis=1) > 0) & (
            grid.weights >= self.query_config.min_weight
        )
        if encoder is not None:
            self.set_encoder(encoder)

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls,
        directory: Path | str,
        encoder: Encoder | None = None,
        device: str = "cpu",
        query_config: QueryConfig | None = None,
    ) -> SemanticMap:
        """Read a map directory written by ``semmap map --encoder ...``.

        Args:
            directory: the map directory.
            encoder: encoder for queries (default: the map's own, loaded on first query on ``device``).
            device: torch device for a lazily loaded encoder.
            query_config: relevancy and region settings.

        Raises:
            FileNotFoundError: the directory does not exist.
            MapFormatError: no map.json (an unfinished or interrupted write), a damaged or
                inconsistent file (see :func:`read_feature_layer`).
            ValueError: no feature layer (built without --encoder), or an encoder whose name
                or dimension differs from the map's.
        """
        directory = Path(directory)
        map_meta = read_map_json(directory)
        meta, grid = read_feature_layer(directory, map_meta)
        meta["map"] = map_meta
        m = cls(grid, str(meta["encoder"]), meta, directory, encoder, query_config)
        m._device = device
        return m

    # ------------------------------------------------------------------ parts
    @property
    def dim(self) -> int:
        return self.grid.dim

    @property
    def voxel_size_m(self) -> float:
        return self.grid.voxel_size_m

    @property
    def keyframes(self) -> list[int]:
        return list(self.metadata.get("keyframes", []))

    def set_encoder(self, encoder: Encoder) -> None:
        """Use ``encoder`` for queries.

        Raises:
            ValueError: its name or dimension differs from the encoder that built the map.
        """
        if encoder.dim != self.dim:
            raise ValueError(
                f"encoder {encoder.name!r} has dimension {encoder.dim}, but this map was built with "
                f"{self.encoder_name!r} (dimension {self.dim}); query it with the same encoder"
            )
        if encoder.name != self.encoder_name:
            raise ValueError(
                f"this map was built with encoder {self.encoder_name!r}, not {encoder.name!r}: embeddings of "
                "different encoders are not comparable; query it with the same encoder"
            )
        self._encoder = encoder
        self._negatives = None
        self._reference = None

    @property
    def encoder(self) -> Encoder:
        """The query encoder (the map's own, loaded on first use)."""
        if self._encoder is None:
            from mapping.encoders import load_encoder

            self.set_encoder(load_encoder(self.encoder_name, device=self._device))
        assert self._encoder is not None
        return self._encoder

    @property
    def tsdf(self) -> TSDFMap:
        """The TSDF geometry, loaded from the map directory on first use."""
        if self._tsdf is None:
            if self.directory is None:
                raise ValueError("this semantic map was not loaded from a directory; it has no TSDF")
            from mapping.tsdf import TSDFMap

            self._tsdf = TSDFMap.load(self.directory)
        return self._tsdf

    @property
    def mesh_path(self) -> Path:
        if self.directory is None:
            raise ValueError("this semantic map was not loaded from a directory; it has no mesh")
        return self.directory / "mesh.ply"

    def memory_bytes(self) -> int:
        """Stored feature-layer bytes (see ``FeatureGrid.bytes_per_voxel``)."""
        return self.grid.memory_bytes()

    # ------------------------------------------------------------------ queries
    def _negative_embeddings(self) -> np.ndarray:
        negs = self.query_config.negatives
        if self._negatives is None or self._negatives[0] != negs:
            self._negatives = (negs, self.encoder.encode_text(list(negs)))
        return self._negatives[1]

    def _reference_match(self) -> ReferenceMatch | None:
        """Each voxel's best reference-name matches (None when there are no reference names)."""
        key = self.query_config.reference_names
        if self._reference is None or self._reference[0] != key:
            names = resolve_reference_names(key)
            match = (
                best_match(self.unit_embeddings, names, vocabulary_embeddings(self.encoder, names)) if names else None
            )
            self._reference = (key, match)
        return self._reference[1]

    def relevancy(
        self, query_embedding: np.ndarray, negatives: np.ndarray | None = None, text: str | None = None
    ) -> np.ndarray:
        """(N,) float32 LERF relevancy of every voxel to a unit query embedding (D,).

        ``negatives`` (K, D) default to the text embeddings of ``query_config.negatives``,
        together with each voxel's best reference-name match other than ``text`` (a text
        query's negatives); given explicitly, they are the only negatives. Voxels without
        features (or below ``min_weight``) get 0.
        """
        q = np.asarray(query_embedding, np.float32).reshape(-1)
        if q.shape[0] != self.dim:
            raise ValueError(f"query embedding has dimension {q.shape[0]}, the map {self.dim}")
        floor = None
        if negatives is None:
            negatives, match = self._negative_embeddings(), self._reference_match()
            floor = match.floor(text or "") if match is not None else None
        rel = lerf_relevancy(self.unit_embeddings, q, negatives, self.query_config.temperature, floor)
        rel[~self.usable] = 0.0
        return rel

    def _query_threads(self):
        """Context: ``query_config.torch_threads`` torch threads, restored after."""
        return torch_threads(self.query_config.torch_threads)

    def prepare(self) -> None:
        """Load the query encoder, embed the negatives and match the voxels to the reference
        names now (else done by the first query)."""
        with self._query_threads():
            self._negative_embeddings()
            self._reference_match()

    def query(self, text: str, top: int = 5) -> QueryResult:
        """Rank 3D regions for a free-text query ("coffee mug").

        ``timings_s["encode"]`` is the query's text embedding only: loading the encoder and
        embedding the negatives happen once per map (:meth:`prepare`, or the first query).

        Raises:
            ValueError: empty text, or top < 1.
        """
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"query text must be a non-empty string, got {text!r}")
        if top < 1:
            raise ValueError(f"top must be >= 1, got {top}")
        self.prepare()
        with self._query_threads():
            t0 = time.perf_counter()
            q = self.encoder.encode_text([text.strip()])[0]
            t_encode = time.perf_counter() - t0
        return self._answer(text.strip(), q, None, top, t_encode)

    def query_image(self, crop: np.ndarray, top: int = 5) -> QueryResult:
        """Rank 3D regions that look like an image crop ((H, W, 3) uint8 RGB).

        The negative is the map's own mean embedding (weighted by fusion weight): image-image
        similarities live on a different scale than image-text ones, so the text negatives
        would not be comparable; relevancy 0.5 then means "as similar as the average voxel".
        """
        if top < 1:
            raise ValueError(f"top must be >= 1, got {top}")
        encoder = self.encoder
        with self._query_threads():
            t0 = time.perf_counter()
            q = encoder.encode_images([crop])[0]
            t_encode = time.perf_counter() - t0
        mean = self.mean_embedding()
        if mean is None:
            raise ValueError("the map has no usable features to compare an image query with")
        h, w = crop.shape[:2]
        return self._answer(f"<image {h}x{w}>", q, mean[None], top, t_encode)

    def mean_embedding(self) -> np.ndarray | None:
        """(D,) float32 unit mean of the usable voxel embeddings, weighted by fusion weight:
        what the whole map looks like (None when no voxel is usable)."""
        mean = (self.unit_embeddings[self.usable] * self.grid.weights[self.usable, None]).sum(axis=0)
        norm = float(np.linalg.norm(mean))
        return (mean / norm).astype(np.float32) if norm > 0 else None

    def _answer(self, label: str, q: np.ndarray, neg: np.ndarray | None, top: int, t_encode: float) -> QueryResult:
        t1 = time.perf_counter()
        rel = self.relevancy(q, neg, label)
        t2 = time.perf_counter()
        regions = find_regions(
            self.coords, rel, self.voxel_size_m, self.query_config, top, self.usable, self.grid.weights
        )
        t3 = time.perf_counter()
        thr = region_threshold(rel[self.usable], self.query_config) if self.usable.any() else 1.0
        return QueryResult(label, regions, rel, thr, {"encode": t_encode, "relevancy": t2 - t1, "regions": t3 - t2})
