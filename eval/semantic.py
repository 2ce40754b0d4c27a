"""3D semantic segmentation of a map against labelled ground truth (mIoU, f-mIoU, mAcc).

The protocol of the open-vocabulary mapping papers (ConceptFusion, ConceptGraphs, HOV-SG on
Replica; ScanNet label meshes), with the choices they differ on written into the report:

- **Ground truth**: the points of a PLY mesh or cloud with an integer label property,
  world frame of the map, metres. A *vertex* property labels the vertices (ScanNet
  ``*_vh_clean_2.labels.ply``: ``label``; :func:`sensors.synthetic.write_labelled_ground_truth`:
  ``label``); a *face* property labels the face centroids (Replica ``habitat/mesh_semantic.ply``:
  ``object_id``, mapped to classes through ``info_semantic.json``). Points whose label is not in
  the class list (ScanNet 0 = unannotated) are ignored.
- **Class list** (:class:`ClassList`): JSON (``{"classes": [{"id", "name"}]}``, Replica's
  ``info_semantic.json`` with its ``objects`` -> ``class_id``, ``{id: name}`` or a list of names)
  or ScanNet's ``scannetv2-labels.combined.tsv`` (``nyu40id`` -> ``nyu40class``).
- **Prediction** (voxel level, default): each class name is embedded with the map's encoder
  in every prompt template (``"a photo of a {}."``; several templates are averaged, CLIP-style
  ensembling); each semantic voxel takes the class whose embedding is most cosine-similar to its
  fused feature; each GT point takes the class of the nearest voxel centre within
  ``max_distance_m``. *Object level* (``object_level=True``): each GT point takes the class of
  the scene-graph object it falls in: the objects whose box grown by 2 cm holds it (floor and
  walls: grown by ``max_distance_m`` and within it of their plane) are candidates, and the one
  whose embedding best matches the nearest voxel feature wins (the saved graph keeps boxes, not
  member points; without a feature nearby the smallest box wins); an object's class is the best
  match of its embedding (structure without an embedding: of its kind's name, "floor", "wall").
- **Unmatched** points (no voxel within ``max_distance_m`` / in no object box) are reported as
  a share and either counted as wrong (``unmatched="wrong"``: a false negative of their class,
  nobody's false positive) or left out (``"exclude"``).
- **Metrics** over the classes present in the GT (at least one counted point): IoU_c =
  TP / (TP + FP + FN), mIoU = their mean, f-mIoU = their mean weighted by GT point share,
  mAcc = mean of TP / GT points per class; overall accuracy besides. A class that is predicted
  but absent from the GT is not averaged (its false positives still lower the other classes'
  recall).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DEFAULT_TEMPLATE = "a photo of a {}."
UNMATCHED_MODES = ("wrong", "exclude")


@dataclass
class ClassList:
    """Class ids and names of a labelled GT, and optionally instance -> class ids (Replica).

    Attributes:
        ids: (K,) int64 class ids.
        names: K class names.
        instance_class: {instance / object id: class id} when the label property holds
            instance ids (Replica ``object_id``), else None.
        source: the file it was read from.
    """

    ids: np.ndarray
    names: list[str]
    instance_class: dict[int, int] | None = None
    source: str = ""

    def __post_init__(self) -> None:
        self.ids = np.asarray(self.ids, dtype=np.int64)
        if len(self.ids) != len(self.names) or len(self.ids) == 0:
            raise ValueError(f"{self.source or 'class list'}: needs as many ids as names, at least one")
        if len(np.unique(self.ids)) != len(self.ids):
            raise ValueError(f"{self.source or 'class list'}: duplicate class ids")

    def name_of(self, class_id: int) -> str:
        return self.names[int(np.flatnonzero(self.ids == class_id)[0])]

    @classmethod
    def load(cls, path: Path | str, ignore: tuple[str, ...] = ()) -> ClassList:
        """Read a class list (see the module docstring for the formats). ``ignore``: class names left out."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"class list {path} does not exist")
        if path.suffix.lower() in (".tsv", ".txt", ".csv"):
            out = cls._from_table(path)
        else:
            try:
                doc = json.loads(path.read_text())
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: not valid JSON ({e})") from None
            out = cls.from_json(doc, str(path))
        if ignore:
            keep = [k for k, n in enumerate(out.names) if n not in ignore]
            out = cls(out.ids[keep], [out.names[k] for k in keep], out.instance_class, out.source)
        return out

    @classmethod
    def from_json(cls, doc, source: str = "class list") -> ClassList:
        instance_class = None
        if isinstance(doc, dict) and isinstance(doc.get("classes"), list):
            try:
                pairs = [(int(c["id"]), str(c["name"])) for c in doc["classes"]]
                if isinstance(doc.get("objects"), list):  # Replica info_semantic.json
                    instance_class = {int(o["id"]): int(o["class_id"]) for o in doc["objects"]}
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{source}: 'classes' entries need 'id' and 'name' ({e})") from None
        elif isinstance(doc, dict):
            try:
                pairs = [(int(k), str(v)) for k, v in doc.items()]
            except ValueError:
                raise ValueError(f"{source}: expected {{class id: name}}, 'classes' or a list of names") from None
        elif isinstance(doc, list) and all(isinstance(n, str) for n in doc):
            pairs = list(enumerate(doc))
        else:
            raise ValueError(f"{source}: expected {{class id: name}}, {{'classes': [...]}} or a list of names")
        pairs = sorted(pairs)
        return cls(np.array([p[0] for p in pairs]), [p[1] for p in pairs], instance_class, source)

    @classmethod
    def _from_table(cls, path: Path) -> ClassList:
        with path.open(newline="") as f:
            rows = list(csv.reader(f, delimiter="\t" if path.suffix.lower() != ".csv" else ","))
        if not rows:
            raise ValueError(f"{path}: empty class table")
        head = [h.strip().lower() for h in rows[0]]
        if "nyu40id" in head and "nyu40class" in head:  # ScanNet scannetv2-labels.combined.tsv
            i, n = head.index("nyu40id"), head.index("nyu40class")
        else:
            i, n = 0, 1
            if not rows[0][0].strip().lstrip("-").isdigit():
                rows = rows[1:]
            else:
                head = None
        pairs: dict[int, str] = {}
        for r in rows[1:] if head else rows:
            if len(r) > max(i, n) and r[i].strip().lstrip("-").isdigit():
                pairs.setdefault(int(r[i]), r[n].strip())
        if not pairs:
            raise ValueError(f"{path}: no (id, name) rows (ScanNet TSV needs nyu40id and nyu40class columns)")
        ids = sorted(pairs)
        return cls(np.array(ids), [pairs[k] for k in ids], None, str(path))


def load_labelled_points(
    path: Path | str, classes: ClassList, label_attr: str = "label", sample_spacing_m: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) float64 GT points (world, metres) and (N,) int64 class ids, from a labelled PLY.

    ``label_attr`` is looked up on the vertices, then on the faces (face centroids become the
    points). Values are mapped through ``classes.instance_class`` when it is given. Points
    whose class is not in ``classes`` are dropped. ``sample_spacing_m``: instead of vertices /
    face centroids, sample the triangles uniformly by area (about one point per spacing^2,
    ``scenegraph.evaluate.sample_surface``, seed 0), each point taking its triangle's label (the
    majority of its vertices' labels for vertex labels): meshes whose vertices are sparse or
    bunched at object boundaries (generated rooms, a cylinder's two rims) then weigh surface
    area, not vertex count.

    Raises:
        FileNotFoundError / ValueError: no file, no such property (the message lists the
        properties there are), or no point with a listed class.
    """
    from sensors.ply import read_ply

    ply = read_ply(path)
    vert = ply.get("vertex", {})
    if not {"x", "y", "z"} <= set(vert):
        raise ValueError(f"{path}: no vertex x, y, z")
    xyz = np.stack([vert["x"], vert["y"], vert["z"]], axis=1).astype(np.float64)
    faces = ply.get("face", {})
    idx = faces.get("vertex_indices", faces.get("vertex_index"))
    if label_attr in vert or label_attr in faces:
        from sensors.ply import faces_as_triangles

        tri, src = faces_as_triangles(idx) if idx is not None else (None, None)
        if sample_spacing_m is not None and tri is None:
            raise ValueError(f"{path}: surface sampling needs faces, and the file has none")
        if label_attr in vert:
            vlab = np.asarray(vert[label_attr]).astype(np.int64)
            if sample_spacing_m is None:
                pts, raw = xyz, vlab
            else:
                t = vlab[tri]
                raw = np.where(t[:, 1] == t[:, 2], t[:, 1], t[:, 0])  # majority of 3 (first when all differ)
        else:
            if tri is None:
                raise ValueError(f"{path}: faces have {label_attr!r} but no vertex_indices")
            raw = np.asarray(faces[label_attr]).astype(np.int64)[src]
            if sample_spacing_m is None:
                pts = xyz[tri].mean(axis=1)
        if sample_spacing_m is not None:
            import open3d as o3d

            from scenegraph.evaluate import sample_surface

            if not sample_spacing_m > 0:
                raise ValueError(f"sample spacing must be > 0 m, got {sample_spacing_m}")
            mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(xyz), o3d.utility.Vector3iVector(tri.astype(np.int32)))
            pts, raw = sample_surface(mesh, raw, sample_spacing_m)
    else:
        have = [f"vertex.{k}" for k in vert] + [f"face.{k}" for k in ply.get("face", {})]
        raise ValueError(f"{path}: no label property {label_attr!r} (has {', '.join(have)}); set --label-attr")
    if classes.instance_class is not None:
        lut = classes.instance_class
        raw = np.array([lut.get(int(v), -(2**31)) for v in raw], dtype=np.int64) if len(raw) else raw
    keep = np.isin(raw, classes.ids)
    if not keep.any():
        raise ValueError(f"{path}: no point carries a class of {classes.source or 'the class list'}")
    return pts[keep], raw[keep]


@dataclass
class SemanticMetrics:
    """Segmentation metrics over the classes present in the GT (see the module docstring).

    Attributes:
        class_ids, class_names: the class list (K).
        gt_points: (K,) counted GT points per class.
        iou, accuracy: (K,) per class, NaN for classes absent from the GT.
        miou, fmiou, macc, overall_accuracy: the averages.
        unmatched_share: share of GT points (of the listed classes) with no prediction.
        unmatched: "wrong" or "exclude", how they were counted.
        confusion: (K, K + 1) counted points, GT class x predicted class (last column: unmatched).
    """

    class_ids: np.ndarray
    class_names: list[str]
    gt_points: np.ndarray
    iou: np.ndarray
    accuracy: np.ndarray
    miou: float
    fmiou: float
    macc: float
    overall_accuracy: float
    unmatched_share: float
    unmatched: str
    confusion: np.ndarray

    def to_dict(self) -> dict:
        present = self.gt_points > 0
        return {
            "mIoU": self.miou,
            "f-mIoU": self.fmiou,
            "mAcc": self.macc,
            "overall_accuracy": self.overall_accuracy,
            "unmatched_share": self.unmatched_share,
            "unmatched": self.unmatched,
            "classes_present": int(present.sum()),
            "per_class": {
                n: {"id": int(i), "gt_points": int(g), "iou": float(u), "accuracy": float(a)}
                for i, n, g, u, a, p in zip(self.class_ids, self.class_names, self.gt_points, self.iou, self.accuracy, present)
                if p
            },
            "confusion": {"rows_gt_cols_pred": [*self.class_names, "unmatched"], "counts": self.confusion.tolist()},
        }

    def summary(self) -> str:
        lines = [
            f"mIoU {self.miou:.3f}  f-mIoU {self.fmiou:.3f}  mAcc {self.macc:.3f}  overall acc "
            f"{self.overall_accuracy:.3f}  over {int((self.gt_points > 0).sum())} classes; unmatched "
            f"{100 * self.unmatched_share:.1f} % of GT points (counted {self.unmatched})"
        ]
        for n, g, u, a in zip(self.class_names, self.gt_points, self.iou, self.accuracy):
            if g > 0:
                lines.append(f"  {n:<24} IoU {u:.3f}  acc {a:.3f}  ({g} points)")
        return "\n".join(lines)


def segmentation_metrics(
    gt: np.ndarray, pred: np.ndarray, class_ids: np.ndarray, class_names: list[str] | None = None, unmatched: str = "wrong"
) -> SemanticMetrics:
    """Metrics of predicted class ids against GT class ids, per point.

    Args:
        gt: (N,) GT class ids (every one in ``class_ids``).
        pred: (N,) predicted class ids; -1 (or any id not in ``class_ids``) = unmatched.
        class_ids: (K,) the class list.
        unmatched: "wrong" (an unmatched point is a false negative of its class) or "exclude".
    """
    if unmatched not in UNMATCHED_MODES:
        raise ValueError(f"unmatched must be one of {UNMATCHED_MODES}, got {unmatched!r}")
    gt, pred, class_ids = (np.asarray(a, dtype=np.int64).reshape(-1) for a in (gt, pred, class_ids))
    if gt.shape != pred.shape:
        raise ValueError(f"gt and pred differ in length: {len(gt)} vs {len(pred)}")
    K = len(class_ids)
    names = list(class_names) if class_names is not None else [str(i) for i in class_ids]
    order = np.argsort(class_ids)
    gi = np.searchsorted(class_ids[order], gt)
    if np.any(gi >= K) or np.any(class_ids[order][np.minimum(gi, K - 1)] != gt):
        raise ValueError("gt has class ids outside the class list")
    gi = order[gi]
    pi = np.searchsorted(class_ids[order], pred)
    matched = (pi < K) & (class_ids[order][np.minimum(pi, K - 1)] == pred)
    pi = np.where(matched, order[np.minimum(pi, K - 1)], K)
    n_all = len(gt)
    share = float((~matched).sum() / n_all) if n_all else 0.0
    if unmatched == "exclude":
        gi, pi = gi[matched], pi[matched]
    C = np.zeros((K, K + 1), np.int64)
    np.add.at(C, (gi, pi), 1)
    tp = np.diag(C[:, :K]).astype(np.float64)
    gt_n = C.sum(axis=1)
    fp = C[:, :K].sum(axis=0) - tp
    fn = gt_n - tp
    present = gt_n > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(present, tp / (tp + fp + fn), np.nan)
        acc = np.where(present, tp / gt_n, np.nan)
    total = gt_n.sum()
    return SemanticMetrics(
        class_ids=class_ids,
        class_names=names,
        gt_points=gt_n,
        iou=iou,
        accuracy=acc,
        miou=float(np.mean(iou[present])) if present.any() else float("nan"),
        fmiou=float(np.sum(gt_n[present] / total * iou[present])) if present.any() else float("nan"),
        macc=float(np.mean(acc[present])) if present.any() else float("nan"),
        overall_accuracy=float(tp.sum() / total) if total else float("nan"),
        unmatched_share=share,
        unmatched=unmatched,
        confusion=C,
    )


def class_text_embeddings(encoder, names: list[str], templates: tuple[str, ...] = (DEFAULT_TEMPLATE,)) -> np.ndarray:
    """(K, D) unit embeddings of the class names: the mean over ``templates`` of each
    ``template.format(name)`` embedding, renormalised (one template: just that embedding)."""
    if not templates or not all("{}" in t for t in templates):
        raise ValueError(f"prompt templates must each contain '{{}}', got {templates!r}")
    acc = np.zeros((len(names), encoder.dim), np.float64)
    for t in templates:
        acc += encoder.encode_text([t.format(n) for n in names])
    return (acc / np.maximum(np.linalg.norm(acc, axis=1, keepdims=True), 1e-12)).astype(np.float32)


@dataclass
class SemanticEvaluation:
    """Result of :func:`evaluate_semantic`: metrics, protocol, and the points for the error view.

    ``points`` (N, 3), ``gt`` (N,) and ``pred`` (N,) class ids (-1 = unmatched), before exclusion.
    """

    metrics: SemanticMetrics
    protocol: dict
    points: np.ndarray = field(repr=False)
    gt: np.ndarray = field(repr=False)
    pred: np.ndarray = field(repr=False)

    def to_dict(self) -> dict:
        return {"protocol": self.protocol, **self.metrics.to_dict()}

    def summary(self) -> str:
        return self.metrics.summary()


def evaluate_semantic(
    map_dir: Path | str,
    gt_path: Path | str,
    classes: Path | str | ClassList,
    label_attr: str = "label",
    templates: tuple[str, ...] = (DEFAULT_TEMPLATE,),
    max_distance_m: float = 0.05,
    unmatched: str = "wrong",
    object_level: bool = False,
    device: str = "cpu",
    encoder=None,
    sample_spacing_m: float | None = None,
) -> SemanticEvaluation:
    """Label every GT point from the map and score it (see the module docstring).

    Args:
        map_dir: a map written by ``semmap map --encoder ...`` (and ``semmap graph`` for
            ``object_level``).
        gt_path: labelled PLY, in the map's world frame.
        classes: a class-list file or :class:`ClassList`.
        label_attr: the PLY property holding the labels.
        templates: prompt templates of the class names (several: averaged).
        max_distance_m: a GT point farther than this from every voxel centre (grown box) is unmatched.
        unmatched: "wrong" or "exclude".
        object_level: label by scene-graph objects instead of voxels.
        device: torch device of the encoder; ``encoder``: use this one (the map's by default).
        sample_spacing_m: sample the GT surface uniformly instead of using its vertices
            (see :func:`load_labelled_points`).
    """
    from scipy.spatial import cKDTree

    if max_distance_m <= 0:
        raise ValueError(f"max distance must be > 0 m, got {max_distance_m}")
    if unmatched not in UNMATCHED_MODES:
        raise ValueError(f"--unmatched must be one of {UNMATCHED_MODES}, got {unmatched!r}")
    map_dir = Path(map_dir)
    cl = classes if isinstance(classes, ClassList) else ClassList.load(classes)
    points, gt = load_labelled_points(gt_path, cl, label_attr, sample_spacing_m)
    from mapping.semantic_map import SemanticMap

    smap = SemanticMap.load(map_dir, encoder=encoder, device=device)
    text = class_text_embeddings(smap.encoder, cl.names, tuple(templates))
    pred = np.full(len(points), -1, np.int64)
    ok = smap.usable
    centres = (smap.coords[ok] + 0.5) * smap.voxel_size_m
    d, idx = cKDTree(centres).query(points, k=1, distance_upper_bound=max_distance_m)
    hit = np.isfinite(d)
    if object_level:
        feature = np.zeros((len(points), smap.dim), np.float32)
        feature[hit] = smap.unit_embeddings[ok][idx[hit]]
        n_objects = _label_by_objects(
            map_dir, points, cl, text, max_distance_m, smap.encoder, tuple(templates), pred, feature
        )
        what = (
            f"scene-graph objects ({n_objects}): candidates are the objects whose box grown by 2 cm holds the point "
            "(structure: grown by max_distance_m and within it of its plane); the one whose embedding best matches "
            "the nearest voxel feature wins (no feature nearby: the smallest box); its class is its embedding's best match"
        )
    else:
        voxel_class = cl.ids[np.argmax(smap.unit_embeddings[ok] @ text.T, axis=1)]
        pred[hit] = voxel_class[idx[hit]]
        what = f"nearest semantic voxel centre ({int(ok.sum())} voxels of {smap.voxel_size_m} m) within max_distance_m"
    metrics = segmentation_metrics(gt, pred, cl.ids, cl.names, unmatched)
    protocol = {
        "map": str(map_dir),
        "ground_truth": str(gt_path),
        "label_attribute": label_attr,
        "classes": cl.source,
        "classes_listed": len(cl.ids),
        "gt_points": int(len(points)),
        "encoder": smap.encoder_name,
        "prompt_templates": list(templates),
        "ensembling": "mean of unit text embeddings over the templates, renormalised" if len(templates) > 1 else "none",
        "level": "object" if object_level else "voxel",
        "assignment": what,
        "max_distance_m": max_distance_m,
        "unmatched": unmatched,
        "averaging": "over classes with at least one counted GT point; f-mIoU weights by GT point share",
        "points": (
            "GT vertices (vertex labels) or face centroids (face labels)"
            if sample_spacing_m is None
            else f"GT surface sampled uniformly, one point per {sample_spacing_m} m squared, triangle labels"
        )
        + "; labels outside the class list ignored",
    }
    return SemanticEvaluation(metrics, protocol, points, gt, pred)


def _label_by_objects(
    map_dir: Path, points, cl: ClassList, text, grow_m: float, encoder, templates, pred, voxel_feature,
    box_grow_m: float = 0.02,
) -> int:
    """Object-level labels into ``pred`` (see the module docstring); returns the object count.

    ``voxel_feature``: (N, D) the map's feature at each point (zero rows where none), which
    decides between several objects whose boxes hold a point. Object boxes grow by at most
    ``box_grow_m`` (their surface nodes are 2 cm apart; more would take in the table top around
    a mug), floor and walls by ``grow_m``.
    """
    from scenegraph.graph import SceneGraph

    path = map_dir / "scene_graph.json"
    if not path.is_file():
        raise FileNotFoundError(f"{map_dir} has no scene_graph.json (run `semmap graph {map_dir}`) for --object-level")
    graph = SceneGraph.load(path)
    objs = list(graph.objects)
    kinds = sorted({o.kind for o in objs if o.embedding is None})
    kind_emb = dict(zip(kinds, class_text_embeddings(encoder, kinds, templates))) if kinds else {}
    has_feature = np.linalg.norm(voxel_feature, axis=1) > 0
    best = np.full(len(points), -np.inf)
    for o in objs:
        emb = np.asarray(o.embedding if o.embedding is not None else kind_emb[o.kind], np.float32)
        c = cl.ids[int(np.argmax(text @ emb))]
        g = grow_m if o.is_structure else min(grow_m, box_grow_m)
        lo, hi = np.asarray(o.bbox_min) - g, np.asarray(o.bbox_max) + g
        inside = np.all((points >= lo) & (points <= hi), axis=1)
        if o.is_structure and o.plane is not None:
            plane = np.asarray(o.plane, np.float64)
            inside &= np.abs(points @ plane[:3] + plane[3]) <= grow_m
        # candidates compete by how well the object's embedding matches the feature there;
        # without a feature, the smaller box wins (scores below any cosine)
        score = np.where(has_feature, voxel_feature @ emb, -2.0 - float(np.prod(hi - lo)))
        take = inside & (score > best)
        pred[take], best[take] = c, score[take]
    return len(objs)


def write_semantic_report(result: SemanticEvaluation, out_dir: Path | str) -> list[Path]:
    """``semantic_metrics.json``, ``semantic_iou.png`` (per-class IoU) and ``semantic_errors.png``
    (top-down: correct, wrong, unmatched GT points) in ``out_dir``."""
    from eval.report import write_json

    out_dir = Path(out_dir)
    paths = [write_json(result.to_dict(), out_dir / "semantic_metrics.json")]
    paths.append(plot_class_iou(result.metrics, out_dir / "semantic_iou.png"))
    paths.append(plot_semantic_errors(result, out_dir / "semantic_errors.png"))
    return paths


def plot_class_iou(metrics: SemanticMetrics, path: Path | str) -> Path:
    """Bar chart of per-class IoU (classes present in the GT, by GT share), mIoU as a line."""
    from eval.report import _new_figure, _save_figure

    present = np.flatnonzero(metrics.gt_points > 0)
    present = present[np.argsort(-metrics.gt_points[present], kind="stable")]
    fig = _new_figure((max(4.0, 0.45 * len(present) + 1.5), 3.2))
    ax = fig.add_subplot(1, 1, 1)
    ax.bar(np.arange(len(present)), metrics.iou[present], color="tab:blue")
    ax.axhline(metrics.miou, color="tab:red", lw=1, label=f"mIoU {metrics.miou:.2f}")
    ax.set_xticks(np.arange(len(present)), [metrics.class_names[k] for k in present], rotation=60, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("IoU")
    ax.legend(fontsize=8)
    return _save_figure(fig, Path(path))


def plot_semantic_errors(result: SemanticEvaluation, path: Path | str, max_points: int = 200_000) -> Path:
    """Top-down view of the GT points: green correct, red wrong, grey unmatched."""
    from eval.report import _new_figure, _save_figure, top_down_axes

    pts = result.points
    rng = np.random.default_rng(0)
    keep = np.arange(len(pts)) if len(pts) <= max_points else np.sort(rng.choice(len(pts), max_points, replace=False))
    _, a, b = top_down_axes(pts)
    fig = _new_figure((6.0, 5.0))
    ax = fig.add_subplot(1, 1, 1)
    state = np.where(result.pred[keep] < 0, 2, np.where(result.pred[keep] == result.gt[keep], 0, 1))
    for s, colour, name in ((2, "0.7", "unmatched"), (0, "tab:green", "correct"), (1, "tab:red", "wrong")):
        m = keep[state == s]
        ax.scatter(pts[m, a], pts[m, b], s=0.5, c=colour, linewidths=0, rasterized=True, label=f"{name} ({len(m)})")
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_title(f"{result.protocol['level']} labels: mIoU {result.metrics.miou:.2f}", fontsize=10)
    ax.set_xlabel(f"{'xyz'[a]} (m)")
    ax.set_ylabel(f"{'xyz'[b]} (m)")
    ax.legend(fontsize=8, markerscale=10, loc="upper right")
    return _save_figure(fig, Path(path))
