"""Check a scene graph against the ground truth of a generated scene (``sensors.scenes``).

Objects (ScanNet-style, on ground-truth surface points):

- the ground-truth mesh is sampled uniformly (one point per ``spacing_m``^2), each point
  labelled with its triangle's instance;
- only *observed* points count: those within ``tolerance_m`` of the reconstructed
  surface (the map cannot be blamed for what no camera saw);
- each point takes the scene-graph node of the nearest reconstructed surface node
  (-1 when that node belongs to no node: dropped as noise or artefact);
- IoU(instance, node) = |points of the instance given to the node| / |points of the
  instance or given to the node|; instances and nodes are matched one to one, greedily
  by IoU; an instance is *found* when matched at IoU >= ``iou_threshold``.
  Recall = found / observed non-structure instances (at least ``min_points`` points).

Relations: predicted relations whose two ends are matched map to instance pairs and
are compared with the generator's ``scene.relations`` (``on``, ``inside``, ``next_to``,
``against``). Relations with an unmatched end are false positives. ``next_to`` and
``near`` are compared as unordered pairs. The generator lists ``next_to`` only for
chairs beside the table; a predicted ``next_to`` between two instances whose boxes
satisfy the generator's own definition (footprints disjoint, at most 0.5 m apart,
overlapping in height) but that it did not list is neither right nor wrong (not
counted). ``near`` has no ground truth of its own: its recall is measured on the
``next_to`` pairs (everything next to something is near it) and a predicted ``near``
is wrong when the two instances' boxes are more than ``near_far_m`` apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

from scenegraph.geometry import box_gap, interval_overlap
from scenegraph.graph import SceneGraph


@dataclass
class RelationScore:
    """Precision / recall of one relation."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    ignored: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    def to_json(self) -> dict:
        return {
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "ignored": self.ignored,
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
        }


@dataclass
class SceneCheck:
    """Result of :func:`check_against_scene`.

    Attributes:
        recall: found / observed non-structure instances.
        precision: matched object nodes / object nodes.
        instance_iou: {instance name: best IoU with its matched node (0 if unmatched)}.
        matches: {instance name: node name} for the matched instances.
        relations: {relation: RelationScore} for on, inside, next_to, against, near.
        unobserved: instance names with too few observed points (not counted).
        node_overlap: {node name: (instance name with the largest share of the node's
            points, that share)} for every object node, to see what unmatched nodes are.
    """

    recall: float
    precision: float
    iou_threshold: float
    instance_iou: dict[str, float]
    matches: dict[str, str]
    relations: dict[str, RelationScore] = field(default_factory=dict)
    unobserved: list[str] = field(default_factory=list)
    node_overlap: dict[str, tuple[str, float]] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "object_recall": round(self.recall, 4),
            "object_precision": round(self.precision, 4),
            "iou_threshold": self.iou_threshold,
            "instance_iou": {k: round(v, 4) for k, v in self.instance_iou.items()},
            "matches": dict(self.matches),
            "relations": {k: v.to_json() for k, v in self.relations.items()},
            "unobserved": list(self.unobserved),
            "node_overlap": {k: [v[0], round(v[1], 4)] for k, v in self.node_overlap.items()},
        }

    def summary(self) -> str:
        found = sum(v >= self.iou_threshold for v in self.instance_iou.values())
        lines = [
            (
                f"objects: recall {self.recall:.2f} at IoU >= {self.iou_threshold} "
                f"({found}/{len(self.instance_iou)}), precision {self.precision:.2f}"
            )
        ]
        for name, r in self.relations.items():
            lines.append(f"{name:>8}: precision {r.precision:.2f} recall {r.recall:.2f} (tp {r.tp}, fp {r.fp}, fn {r.fn})")
        return "\n".join(lines)


def sample_surface(mesh, triangle_instance: np.ndarray, spacing_m: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Uniform random points on a legacy Open3D mesh, about one per ``spacing_m``^2.

    Returns (P, 3) float64 points and (P,) int64 instance of each.
    """
    v = np.asarray(mesh.vertices)
    t = np.asarray(mesh.triangles, dtype=np.int64)
    a, b, c = v[t[:, 0]], v[t[:, 1]], v[t[:, 2]]
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    n = max(1, int(area.sum() / spacing_m**2))
    rng = np.random.default_rng(seed)
    tri = rng.choice(len(t), size=n, p=area / area.sum())
    r1, r2 = rng.random(n), rng.random(n)
    s = np.sqrt(r1)
    pts = (1 - s)[:, None] * a[tri] + (s * (1 - r2))[:, None] * b[tri] + (s * r2)[:, None] * c[tri]
    return pts, np.asarray(triangle_instance, dtype=np.int64)[tri]


def _gt_next_to(a, b) -> bool:
    """The generator's next_to definition on two instances' boxes (``sensors.scenes``)."""
    if box_gap(a.bbox_min[:2], a.bbox_max[:2], b.bbox_min[:2], b.bbox_max[:2]) == 0.0:
        return False
    if box_gap(a.bbox_min[:2], a.bbox_max[:2], b.bbox_min[:2], b.bbox_max[:2]) > 0.5:
        return False
    return interval_overlap(a.bbox_min[2], a.bbox_max[2], b.bbox_min[2], b.bbox_max[2]) > 0


def check_against_scene(
    graph: SceneGraph,
    scene,
    iou_threshold: float = 0.5,
    spacing_m: float = 0.02,
    tolerance_m: float | None = None,
    min_points: int = 20,
    near_far_m: float = 1.2,
) -> SceneCheck:
    """Object recall and relation precision / recall of ``graph`` against ``scene`` (a
    ``sensors.scenes.SyntheticScene``); see the module docstring for the protocol.

    ``graph`` must be fresh from :func:`scenegraph.build.build_scene_graph` (it needs the
    in-memory ``node_points`` / ``node_object``, which files do not keep).
    """
    if graph.node_points is None or graph.node_object is None:
        raise ValueError("check_against_scene needs a graph built in this process (node_points / node_object)")
    node = float(graph.metadata.get("node_size_m", 0.02))
    tol = tolerance_m if tolerance_m is not None else 1.5 * node
    pts, inst = sample_surface(scene.mesh, scene.triangle_instance, spacing_m)
    d, nearest = cKDTree(graph.node_points).query(pts, k=1)
    observed = d <= tol
    pts, inst, pred = pts[observed], inst[observed], graph.node_object[nearest[observed]]

    n_inst = len(scene.instances)
    node_ids = sorted(graph.graph.nodes)
    col = {nid: k for k, nid in enumerate(node_ids)}
    pcol = np.array([col.get(int(p), -1) for p in pred]) if len(pred) else np.zeros(0, np.int64)
    # contingency: instance x node (+1 column for "no node")
    C = np.zeros((n_inst, len(node_ids) + 1), np.int64)
    np.add.at(C, (inst, np.where(pcol >= 0, pcol, len(node_ids))), 1)
    inst_total = C.sum(axis=1)
    node_total = C[:, :-1].sum(axis=0)
    inter = C[:, :-1]
    union = inst_total[:, None] + node_total[None, :] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)

    # one-to-one greedy matching by IoU
    match_node: dict[int, int] = {}
    used_nodes: set[int] = set()
    for i, j in zip(*np.unravel_index(np.argsort(-iou, axis=None), iou.shape)):
        if iou[i, j] <= 0:
            break
        if i in match_node or j in used_nodes:
            continue
        obj = graph.object(node_ids[j])
        if obj.is_structure != scene.instances[i].is_structure:
            continue
        match_node[int(i)] = int(j)
        used_nodes.add(int(j))

    counted = [i for i in range(n_inst) if not scene.instances[i].is_structure and inst_total[i] >= min_points]
    unobserved = [scene.instances[i].name for i in range(n_inst) if not scene.instances[i].is_structure and inst_total[i] < min_points]
    inst_iou = {scene.instances[i].name: float(iou[i, match_node[i]]) if i in match_node else 0.0 for i in counted}
    found = [i for i in counted if inst_iou[scene.instances[i].name] >= iou_threshold]
    objects = [o for o in graph.objects if not o.is_structure]
    good = {node_ids[match_node[i]] for i in found}
    precision = sum(o.id in good for o in objects) / len(objects) if objects else 1.0
    matches = {scene.instances[i].name: graph.object(node_ids[match_node[i]]).name for i in found}

    # node id -> instance id for nodes matched well enough (structure: any overlap match)
    node_inst: dict[int, int] = {}
    for i, j in match_node.items():
        if scene.instances[i].is_structure or iou[i, j] >= iou_threshold:
            node_inst[node_ids[j]] = i
    present = {i for i in range(n_inst) if inst_total[i] >= min_points}
    rel_scores = _check_relations(graph, scene, node_inst, present, near_far_m)
    overlap = {}
    for j, nid in enumerate(node_ids):
        o = graph.object(nid)
        if not o.is_structure and node_total[j] > 0:
            i = int(np.argmax(inter[:, j]))
            overlap[o.name] = (scene.instances[i].name, float(inter[i, j] / node_total[j]))
    return SceneCheck(
        node_overlap=overlap,
        recall=len(found) / len(counted) if counted else 1.0,
        precision=precision,
        iou_threshold=iou_threshold,
        instance_iou=inst_iou,
        matches=matches,
        relations=rel_scores,
        unobserved=unobserved,
    )


def _check_relations(graph: SceneGraph, scene, node_inst: dict[int, int], present: set[int], near_far_m: float) -> dict[str, RelationScore]:
    inst = scene.instances
    gt = {r: set() for r in ("on", "inside", "next_to", "against")}
    for s, r, o in scene.relations:
        if s in present and o in present and r in gt:
            gt[r].add((s, o) if r != "next_to" else frozenset((s, o)))
    out: dict[str, RelationScore] = {}
    for r in ("on", "inside", "next_to", "against", "near"):
        sc = RelationScore()
        truth = gt["next_to"] if r == "near" else gt[r]
        pred: set = set()
        for rel in graph.relations(r):
            if r in ("next_to", "near") and rel.subject > rel.object:
                continue  # stored both ways; count each pair once
            s, o = node_inst.get(rel.subject), node_inst.get(rel.object)
            if s is None or o is None:
                sc.fp += 1
                continue
            key = frozenset((s, o)) if r in ("next_to", "near") else (s, o)
            if key in pred:
                continue
            pred.add(key)
            if key in truth:
                sc.tp += 1
            elif r == "next_to" and _gt_next_to(inst[s], inst[o]):
                sc.ignored += 1
            elif r == "near":
                far = box_gap(inst[s].bbox_min, inst[s].bbox_max, inst[o].bbox_min, inst[o].bbox_max) > near_far_m
                if far:
                    sc.fp += 1
                else:
                    sc.ignored += 1
            else:
                sc.fp += 1
        sc.fn = len(truth - pred)
        out[r] = sc
    return out
