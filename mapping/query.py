"""Open-vocabulary queries over a feature grid: relevancy per voxel, then ranked 3D regions.

Relevancy (LERF, Kerr et al. 2023, section 3.4): with unit voxel embedding phi, query
embedding q and canonical negatives n_1..n_K ("object", "things", "stuff", "texture"),

    relevancy = min_k  exp(phi.q / T) / (exp(phi.q / T) + exp(phi.n_k / T))
              = sigmoid((phi.q - max_k phi.n_k) / T),

a number in (0, 1) that is 0.5 where the query is exactly as similar as the closest
negative, so scores are comparable across queries. T = 0.1 (LERF's factor 10).

Reference names (``reference_names``, default the 1000 ImageNet class names): each voxel's
similarity to the name it matches best among a large vocabulary joins the negatives,

    relevancy = sigmoid((phi.q - max(max_k phi.n_k, max_j phi.r_j)) / T),

the query's own name left out when it is one of them. A voxel is then relevant where the
query describes it better than any other name does, not merely where it is closer to the
query than to "object" or "stuff"; "chair" has to beat "folding chair" and "dining table" on
the chair beside the table. Measured on redkitchen with ``lite``
(benchmarks/bench_semantic.py, six scored queries, maps of 46 / 85 / 69 / 27 keyframes, see
its docstring), top-1 50, 17, 17, 17 % without and 50, 50, 50, 33 % with (mean 25 -> 46 %),
top-3 67, 67, 50, 33 % without and 50, 67, 50, 50 % with (mean 54 % both).

Regions: voxels whose relevancy reaches the threshold (the larger of ``threshold`` and
the point ``relative_threshold`` of the way from the median to the maximum relevancy of
the map: the peaks of this query's relevancy field, whatever its absolute level)
are grouped into connected components on the voxel lattice (26-neighbourhood, bridging
gaps of up to ``2 * link_radius`` empty voxels). A component holding several relevancy
peaks at least ``split_radius_m`` apart (two screens side by side on one wall, a chair
touching the table) is split around them: each voxel joins its nearest peak of the
component (peaks are the voxels whose relevancy is the highest within ``split_radius_m``
in their component, thinned greedily from the strongest). Each part with at least ``min_voxels``
voxels is a :class:`Region`: weighted centroid (by relevancy above the threshold),
axis-aligned box of its voxels, score, voxel count. The score starts from the mean
relevancy of its ``peak_voxels`` most relevant voxels (a robust maximum, ``peak``) and is
shrunk towards the map's median relevancy by the evidence behind it:
``score = median + (peak - median) W / (W + support_weight)`` with W the summed fusion
weight of its voxels, so that a speck seen once from afar cannot outrank an object seen
well from many keyframes at the same peak. Regions are ranked by score.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

DEFAULT_NEGATIVES: tuple[str, ...] = ("object", "things", "stuff", "texture")
"""LERF's canonical negative phrases."""

ENCODER_QUERY_DEFAULTS: dict[str, dict] = {
    "lite": {"reference_names": "imagenet"},
    "*": {"reference_names": None},
}
"""Per-encoder defaults of the "auto" :class:`QueryConfig` fields, by encoder kind ("lite",
"clip", "openclip"; "*" for any other).

``reference_names``: the ImageNet names were chosen on redkitchen with ``lite`` (module
docstring: top-1 25 -> 46 % over four keyframe densities), where they make up for lite's crop
embeddings sitting close to generic words. With perfect features (``--features oracle``,
lite's text space, ``benchmarks/bench_semantic_eval.py``, five generated rooms, 35 plain
queries) plain queries hit top-1 / top-3 100 / 100 % with and without them, while lite's own
features on the same rooms go 3 / 11 % without and 3 / 20 % with: their gain is lite's, not the
ranking's, so other encoders keep LERF's canonical negatives alone (the published setting for
CLIP) until measured with real weights."""


@dataclass
class QueryConfig:
    """How relevancy is computed and turned into regions."""

    negatives: tuple[str, ...] = DEFAULT_NEGATIVES
    """Canonical negative phrases for text queries."""
    temperature: float = 0.1
    """Softmax temperature of the pairwise query-vs-negative comparison (LERF: 0.1)."""
    threshold: float = 0.0
    """Absolute relevancy a voxel needs to join a region. 0.5 means "more like the query than
    any negative", LERF's reading for CLIP; the offline lite encoder's relevancies for objects
    that are present peak at 0.2-0.95 (its image embeddings sit close to generic words such as
    "object"), so the default relies on the relative threshold and leaves 0.5 to the user."""
    relative_threshold: float = 0.5
    """Also require relevancy >= median + this * (max - median) (0 disables)."""
    link_radius: int = 1
    """Voxels are dilated by this many voxels before labelling: gaps of up to 2 * link_radius
    empty voxels still join two parts of one region (0: plain 26-connectivity)."""
    split_radius_m: float | None = 0.3
    """Peaks of one component at least this far apart (metres) become separate regions; None: no split."""
    min_voxels: int = 2
    """Smaller components are dropped as noise."""
    peak_voxels: int = 5
    """A region's score is the mean relevancy of its this many most relevant voxels."""
    min_weight: float = 0.0
    """Voxels with less accumulated fusion weight take no part in queries."""
    support_weight: float = 1.0
    """Evidence prior W0 of a region's score, in fusion-weight units: the score is shrunk from
    its peak relevancy towards the median relevancy of the map by the factor W / (W + W0), W
    the summed fusion weight of the region's voxels (0: no shrinkage). A region seen briefly,
    from far or at a grazing angle (a few voxels of weight ~0.1 each, half the map's voxels
    weigh less than ~0.4) keeps little of its margin; one seen well by several keyframes
    (W >> 1) keeps it almost all. On redkitchen this stopped 2-voxel specks from outranking
    the mug they stand next to."""
    reference_names: str | tuple[str, ...] | None = "auto"
    """A vocabulary whose best match per voxel is one more negative of text queries (see the
    module docstring): "imagenet" (the first name of each ImageNet-1k class), a tuple of
    names, None (canonical negatives only), or "auto": the map encoder's default from
    :data:`ENCODER_QUERY_DEFAULTS` (:meth:`for_encoder`; ``SemanticMap`` resolves it)."""
    torch_threads: int | None = 1
    """torch intra-op threads while a query is embedded (restored afterwards); None: unchanged.
    One short text through MiniLM is too small to split: on the shared 2-core machine one
    thread took 45-55 ms per query and two threads 250-1000 ms (thread wake-up under load)."""

    def __post_init__(self) -> None:
        self.negatives = tuple(self.negatives)
        if not self.negatives or not all(isinstance(n, str) and n.strip() for n in self.negatives):
            raise ValueError(f"negatives must be non-empty strings, got {self.negatives!r}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0 <= self.relative_threshold < 1:
            raise ValueError(f"relative_threshold must be in [0, 1), got {self.relative_threshold}")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ValueError(f"torch_threads must be >= 1 or None, got {self.torch_threads}")
        if self.split_radius_m is not None and not self.split_radius_m > 0:
            raise ValueError(f"split_radius_m must be > 0 or None, got {self.split_radius_m}")
        if self.support_weight < 0:
            raise ValueError(f"support_weight must be >= 0, got {self.support_weight}")
        if isinstance(self.reference_names, (list, tuple)):
            self.reference_names = tuple(self.reference_names)
            if len(self.reference_names) < 2 or not all(isinstance(n, str) and n.strip() for n in self.reference_names):
                raise ValueError(f"reference_names must be at least 2 non-empty strings, got {self.reference_names!r}")
        elif self.reference_names is not None and self.reference_names not in ("imagenet", "auto"):
            raise ValueError(
                f"reference_names must be 'imagenet', 'auto', a tuple of names or None, got {self.reference_names!r}"
            )
        if self.link_radius < 0 or self.min_voxels < 1 or self.peak_voxels < 1:
            raise ValueError("link_radius must be >= 0, min_voxels and peak_voxels >= 1")

    def for_encoder(self, encoder_name: str) -> QueryConfig:
        """This config with its "auto" fields set to ``encoder_name``'s defaults
        (:data:`ENCODER_QUERY_DEFAULTS`, by the encoder kind before ":"; others: the "*" entry)."""
        if self.reference_names != "auto":
            return self
        kind = str(encoder_name).split(":", 1)[0]
        defaults = ENCODER_QUERY_DEFAULTS.get(kind, ENCODER_QUERY_DEFAULTS["*"])
        return replace(self, reference_names=defaults["reference_names"])


@dataclass
class RankedAnswer:
    """What every 3D query answer shares (``semmap query`` prints and serialises voxel
    regions and scene-graph objects alike).

    Attributes:
        rank: 1 for the best answer.
        score: how well it answers the query, in (0, 1).
        centroid: (3,) world-frame centre, metres.
        bbox_min, bbox_max: (3,) axis-aligned box, world frame, metres.
        voxel_count: voxels (or surface nodes) in it.
    """

    rank: int
    score: float
    centroid: np.ndarray
    bbox_min: np.ndarray
    bbox_max: np.ndarray
    voxel_count: int

    def to_dict(self) -> dict:
        """The shared fields (``semmap query --json``) as plain JSON types."""
        return {
            "rank": int(self.rank),
            "score": float(self.score),
            "centroid": [float(x) for x in self.centroid],
            "bbox_min": [float(x) for x in self.bbox_min],
            "bbox_max": [float(x) for x in self.bbox_max],
            "voxel_count": int(self.voxel_count),
        }


@dataclass
class Region(RankedAnswer):
    """One ranked answer to a query: a connected group of relevant voxels.

    Attributes:
        rank: 1 for the best region.
        score: mean relevancy of the region's most relevant voxels, in (0, 1).
        centroid: (3,) world-frame centre, metres (relevancy-weighted mean of voxel centres).
        bbox_min, bbox_max: (3,) axis-aligned box of the region's voxels (outer faces), metres.
        voxel_count: voxels in the region.
        max_relevancy: the highest voxel relevancy in it.
        voxels: (voxel_count,) rows of the feature grid in the region.
    """

    max_relevancy: float
    voxels: np.ndarray = field(repr=False)

    def to_dict(self) -> dict:
        """Plain JSON types (no voxel list)."""
        return {**super().to_dict(), "max_relevancy": float(self.max_relevancy)}

    def contains(self, point: np.ndarray) -> bool:
        """True if a world point (metres) lies in the region's box."""
        p = np.asarray(point, np.float64)
        return bool(np.all(p >= self.bbox_min) and np.all(p <= self.bbox_max))


def resolve_reference_names(names: str | tuple[str, ...] | None) -> tuple[str, ...]:
    """The names of ``QueryConfig.reference_names`` ("imagenet": the first name of each
    ImageNet-1k class, duplicates dropped; None: none; "auto" must be resolved first with
    ``QueryConfig.for_encoder``)."""
    if names is None:
        return ()
    if names == "auto":
        raise ValueError("reference_names 'auto' depends on the encoder: resolve it with QueryConfig.for_encoder(name)")
    if names == "imagenet":
        from mapping.encoders.imagenet_labels import imagenet_class_names

        return tuple(dict.fromkeys(c[0] for c in imagenet_class_names()))
    return tuple(names)


@dataclass
class ReferenceMatch:
    """Each voxel's two best matches among the reference names (:func:`best_match`).

    Attributes:
        names: the M reference names.
        best, second: (N,) float32 highest and second-highest cosine per voxel.
        best_index: (N,) int64 index into ``names`` of the best match.
    """

    names: tuple[str, ...]
    best: np.ndarray
    second: np.ndarray
    best_index: np.ndarray

    def floor(self, query: str) -> np.ndarray:
        """(N,) the best match per voxel among the names other than ``query`` itself
        (case-insensitive): a query that is one of the names does not compete with itself."""
        key = query.strip().lower()
        own = [i for i, n in enumerate(self.names) if n.lower() == key]
        if not own:
            return self.best
        return np.where(np.isin(self.best_index, own), self.second, self.best)


def best_match(
    embeddings: np.ndarray, names: tuple[str, ...], name_embeddings: np.ndarray, chunk: int = 8192
) -> ReferenceMatch:
    """The two best matches of each unit row of ``embeddings`` (N, D) among the unit rows of
    ``name_embeddings`` (M >= 2, D), in chunks of ``chunk`` rows (no (N, M) matrix is kept)."""
    v = np.asarray(name_embeddings, np.float32)
    if len(v) != len(names) or len(v) < 2:
        raise ValueError(f"need at least 2 reference names with one embedding each, got {len(names)} and {len(v)}")
    n = len(embeddings)
    best, second, index = np.empty(n, np.float32), np.empty(n, np.float32), np.empty(n, np.int64)
    for a in range(0, n, chunk):
        sims = embeddings[a : a + chunk] @ v.T
        top2 = np.argpartition(-sims, 1, axis=1)[:, :2]
        vals = np.take_along_axis(sims, top2, axis=1)
        first = np.argmax(vals, axis=1)
        rows = np.arange(len(sims))
        best[a : a + chunk] = vals[rows, first]
        second[a : a + chunk] = vals[rows, 1 - first]
        index[a : a + chunk] = top2[rows, first]
    return ReferenceMatch(tuple(names), best, second, index)


def lerf_relevancy(
    embeddings: np.ndarray,
    query: np.ndarray,
    negatives: np.ndarray,
    temperature: float = 0.1,
    floor: np.ndarray | None = None,
) -> np.ndarray:
    """Relevancy of each voxel to a query against canonical negatives (see module docstring).

    Args:
        embeddings: (N, D) float32 unit voxel embeddings (zero rows give 0.5).
        query: (D,) unit query embedding.
        negatives: (K, D) unit negative embeddings, K >= 1.
        temperature: softmax temperature.
        floor: optional (N,) per-voxel similarity that also counts as a negative (the best
            reference-name match, :meth:`ReferenceMatch.floor`).

    Returns:
        (N,) float32 relevancy in (0, 1).
    """
    q = np.asarray(query, np.float32).reshape(1, -1)
    neg = np.asarray(negatives, np.float32).reshape(-1, q.shape[1])
    if embeddings.shape[1] != q.shape[1]:
        raise ValueError(f"embeddings have dimension {embeddings.shape[1]}, the query {q.shape[1]}")
    if len(neg) == 0:
        raise ValueError("at least one negative is needed")
    sims = embeddings @ np.concatenate([q, neg]).T  # (N, 1 + K): one matmul
    closest = sims[:, 1:].max(axis=1)
    if floor is not None:
        closest = np.maximum(closest, np.asarray(floor, np.float32).reshape(-1))
    margin = (sims[:, 0] - closest) / temperature
    return (1.0 / (1.0 + np.exp(-margin))).astype(np.float32)


def region_threshold(relevancy: np.ndarray, config: QueryConfig) -> float:
    """The relevancy a voxel needs to join a region (see module docstring; relative part off at 0)."""
    if relevancy.size == 0 or config.relative_threshold <= 0:
        return config.threshold
    hi, mid = float(relevancy.max()), float(np.median(relevancy))
    return max(config.threshold, mid + config.relative_threshold * (hi - mid))


def connected_components(coords: np.ndarray, link_radius: int = 1) -> np.ndarray:
    """Label voxels that touch (26-neighbourhood) or are separated by <= 2 ``link_radius`` empty voxels.

    Args:
        coords: (M, 3) integer voxel indices (unique).
        link_radius: dilation radius in voxels before labelling (0: plain 26-connectivity).

    Returns:
        (M,) int64 component labels 0..C-1.
    """
    from scipy import ndimage

    coords = np.asarray(coords, np.int64).reshape(-1, 3)
    if len(coords) == 0:
        return np.zeros(0, np.int64)
    lo = coords.min(axis=0)
    c = coords - lo
    shape = tuple(int(s) for s in c.max(axis=0) + 1)
    occ = np.zeros(shape, bool)
    occ[c[:, 0], c[:, 1], c[:, 2]] = True
    structure = np.ones((3, 3, 3), bool)
    # dilating every voxel by r (Chebyshev) joins two voxels with a gap of g empty voxels iff g <= 2 r
    grown = ndimage.binary_dilation(occ, structure, iterations=link_radius) if link_radius > 0 else occ
    labels, _ = ndimage.label(grown, structure)
    lab = labels[c[:, 0], c[:, 1], c[:, 2]]
    _, dense = np.unique(lab, return_inverse=True)
    return dense.astype(np.int64)


def split_by_peaks(points: np.ndarray, values: np.ndarray, labels: np.ndarray, radius: float) -> np.ndarray:
    """Split labelled point groups around their peaks.

    Args:
        points: (M, 3) positions, metres.
        values: (M,) the field whose peaks seed the parts (relevancy).
        labels: (M,) group of each point (connected components).
        radius: a peak is the highest point within ``radius`` of its group; kept peaks are
            at least ``radius`` apart (greedy, strongest first).

    Returns:
        (M,) int64 new labels 0..P-1: each point joins the nearest kept peak of its group
        (every group keeps its strongest point as a peak, so no point is left without one).
    """
    from scipy.spatial import cKDTree

    m = len(points)
    if m == 0:
        return np.zeros(0, np.int64)
    labels = np.asarray(labels, np.int64)
    tree = cKDTree(points)
    pairs = tree.query_pairs(radius, output_type="ndarray")  # (K, 2), i < j
    same = labels[pairs[:, 0]] == labels[pairs[:, 1]]
    a, b = pairs[same, 0], pairs[same, 1]
    # strict order (value, then index) so that a plateau gives one peak
    rank = np.empty(m, np.int64)
    rank[np.lexsort((np.arange(m), values))] = np.arange(m)
    beaten = np.zeros(m, bool)
    beaten[np.where(rank[a] < rank[b], a, b)] = True
    seeds = np.flatnonzero(~beaten)
    seeds = seeds[np.argsort(-rank[seeds])]  # strongest first
    # greedy thinning: a kept seed suppresses the weaker seeds of its group within the radius
    near = cKDTree(points[seeds]).query_ball_point(points[seeds], radius)
    suppressed = np.zeros(len(seeds), bool)
    kept = []
    for j in range(len(seeds)):
        if suppressed[j]:
            continue
        kept.append(seeds[j])
        nb = np.asarray(near[j], np.int64)
        suppressed[nb[labels[seeds[nb]] == labels[seeds[j]]]] = True
    kept_idx = np.asarray(kept, np.int64)
    # nearest kept peak of the same group: the group id as a 4th coordinate, far apart
    span = float(np.ptp(points, axis=0).max()) + 10.0 * radius + 1.0
    lifted = np.concatenate([points, labels[:, None] * span], axis=1)
    _, nearest = cKDTree(lifted[kept_idx]).query(lifted)
    return np.asarray(nearest, np.int64)


def find_regions(
    coords: np.ndarray,
    relevancy: np.ndarray,
    voxel_size_m: float,
    config: QueryConfig | None = None,
    top: int | None = None,
    candidates: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> list[Region]:
    """Group relevant voxels into ranked regions.

    Args:
        coords: (N, 3) integer voxel indices of the grid rows.
        relevancy: (N,) relevancy per row.
        voxel_size_m: voxel edge, metres.
        config: thresholds and clustering settings.
        top: return at most this many regions (None: all).
        candidates: (N,) bool, rows allowed to take part (default all).
        weights: (N,) fusion weight per row, for ``support_weight`` (default all 1).

    Returns:
        Regions ranked by score (best first), ``rank`` starting at 1.
    """
    config = config or QueryConfig()
    relevancy = np.asarray(relevancy, np.float32)
    allowed = np.ones(len(relevancy), bool) if candidates is None else np.asarray(candidates, bool)
    if not allowed.any():
        return []
    thr = region_threshold(relevancy[allowed], config)
    rows = np.flatnonzero(allowed & (relevancy >= thr))
    if len(rows) == 0:
        return []
    median = float(np.median(relevancy[allowed]))
    labels = connected_components(coords[rows], config.link_radius)
    if config.split_radius_m is not None:
        labels = split_by_peaks((coords[rows] + 0.5) * voxel_size_m, relevancy[rows], labels, config.split_radius_m)
    regions: list[Region] = []
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.r_[True, np.diff(labels[order]) != 0, True])
    for a, b in zip(bounds[:-1], bounds[1:]):
        members = rows[order[a:b]]
        if len(members) < config.min_voxels:
            continue
        r = relevancy[members]
        c = coords[members]
        peak = float(np.sort(r)[::-1][: config.peak_voxels].mean())
        if config.support_weight > 0:
            mass = float(weights[members].sum()) if weights is not None else float(len(members))
            peak = median + (peak - median) * mass / (mass + config.support_weight)
        w = (r - thr) + 1e-6
        centres = (c + 0.5) * voxel_size_m
        regions.append(
            Region(
                rank=0,
                score=peak,
                centroid=(centres * w[:, None]).sum(axis=0) / w.sum(),
                bbox_min=c.min(axis=0) * voxel_size_m,
                bbox_max=(c.max(axis=0) + 1) * voxel_size_m,
                voxel_count=int(len(members)),
                max_relevancy=float(r.max()),
                voxels=members,
            )
        )
    regions.sort(key=lambda reg: (-reg.score, -reg.voxel_count))
    for i, reg in enumerate(regions):
        reg.rank = i + 1
    return regions if top is None else regions[:top]
