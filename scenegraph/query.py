"""Queries against a scene graph: free text over objects, and relational phrases without an LLM.

Parsing (:func:`parse_query`): the text is lower-cased, punctuation and leading fillers
("find", "show me", "where is", articles) are dropped, and the first relation phrase
that has words on both sides splits it into ``subject relation object``:

=============  ===============================================================
relation       phrases (longest match first)
=============  ===============================================================
on             on top of, sitting on, standing on, lying on, resting on, placed on, on, onto, upon
supports       supporting, holding
under          underneath, beneath, under
below          below
above          above, over
inside         inside of, inside, within, in
contains       containing, contains
next_to        next to, beside, besides, adjacent to, alongside, by
near           close to, near to, nearby, near
against        leaning against, against
=============  ===============================================================

Optional copulas between subject and relation ("that is", "which is", "is") are
skipped. A text with a relation word but nothing on one side of it ("mug on", "on the
table") does not parse: the query falls back to a plain text search and says so.

Scores. A phrase's score for an object is the softmax over the graph's objects of
``cos(text embedding, object embedding) / temperature`` (which object the phrase means),
times, with ``GraphQueryConfig.contrast`` (default), the probability that the object is
better described by the phrase than by the names of a vocabulary (the one the labels
come from): a softmax over the phrase and the names of each name's similarity less its
mean over the scene's objects, as the labels are scored. The vocabulary names are the
canonical negatives of LERF-style relevancy: a fragment that resembles every phrase a
little (a table leg, for "chair" as for "table") scores low, an object that resembles
the phrase more than any other name scores high; the product is renormalised over the objects.
With ``GraphQueryConfig.kinds`` (default) a phrase that is a vocabulary name also stands for the
names that are kinds of it (``scenegraph.vocabulary.KIND_OF``, from WordNet: a desk is a
table): an object's similarity is the best of the phrase's and those names' (each less its
mean over the scene's objects), and those names are no negatives in the contrast. The
redkitchen table has monitors and a keyboard on it and looks like a desk to ``lite``;
"the table on the floor" gave the chair at its end before and gives the table now (relational
queries 7/10 -> 8/10 top-1).
With ``GraphQueryConfig.size_prior`` (default) it is also weighed by how well the object's
size (its longest horizontal side) fits the phrase's typical size (common-sense sizes of
the vocabulary names, ``scenegraph.vocabulary.TYPICAL_SIZE_M``; the phrase is spread
over the names by text similarity), a log-normal of spread ``size_sigma``: a weak
encoder that sees "dining table" in every crop of a chair (the table is behind it) or
calls the table a "desk" would otherwise resolve "the table" to the chair; with the prior
the whole table, the object that best explains "table" at its size, wins. Measured on
redkitchen (``lite``): relational queries 4/10 -> 6/10 top-1; median rank of the
annotated instances for their names improves (table 9 -> 4, chairs 15/25 -> 7/9).
Structure nodes are named, not embedded: "floor" / "ground" match the floor, "wall"
every wall, "ceiling" the ceiling, with score 1. A relational answer ranks pairs by
``subject score x relation score x object score``; relation scores come from the graph
edges (``under`` also accepts ``below``, ``near`` also ``next_to``, at their score),
and each subject is reported once, with its best partner. The result's centroid and box
are the subject's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mapping.query import RankedAnswer
from scenegraph.graph import SCENE_GRAPH_FILE, SceneGraph, SceneObject

RELATION_PHRASES: dict[str, tuple[str, ...]] = {
    "on": ("on top of", "sitting on", "standing on", "lying on", "resting on", "placed on", "on", "onto", "upon"),
    "supports": ("supporting", "holding"),
    "under": ("underneath", "beneath", "under"),
    "below": ("below",),
    "above": ("above", "over"),
    "inside": ("inside of", "inside", "within", "in"),
    "contains": ("containing", "contains"),
    "next_to": ("next to", "beside", "besides", "adjacent to", "alongside", "by"),
    "near": ("close to", "near to", "nearby", "near"),
    "against": ("leaning against", "against"),
}
"""Relation name -> the phrases that express it."""

RELATION_ALIASES: dict[str, tuple[str, ...]] = {"under": ("under", "below"), "near": ("near", "next_to")}
"""Graph relations that answer a parsed relation (default: itself)."""

STRUCTURE_WORDS: dict[str, tuple[str, ...]] = {
    "floor": ("floor", "ground"),
    "wall": ("wall", "walls"),
    "ceiling": ("ceiling",),
}
_FILLERS = ("find me", "find", "show me", "show", "where is", "where are", "where's", "locate", "the", "a", "an", "some")
_COPULAS = ("that is", "which is", "that's", "that are", "which are", "is", "are")


@dataclass
class ParsedQuery:
    """A query split into its parts.

    Attributes:
        text: the text as given.
        subject: what is looked for ("mug"); the whole cleaned text when not relational.
        relation: relation name ("on", ...) or None for a plain query.
        object: the reference thing ("table"), or None.
        relational: True when a relation was parsed.
        fallback: True when the text has a relation word but could not be parsed.
        note: why it fell back ("" otherwise).
    """

    text: str
    subject: str
    relation: str | None = None
    object: str | None = None
    relational: bool = False
    fallback: bool = False
    note: str = ""


def _clean(text: str) -> str:
    t = re.sub(r"[^a-z0-9' ]+", " ", text.lower())
    return " ".join(t.split())


def _strip_fillers(words: str) -> str:
    changed = True
    while changed and words:
        changed = False
        for f in _FILLERS:
            if words == f:
                return ""
            if words.startswith(f + " "):
                words = words[len(f) + 1 :]
                changed = True
    return words


def _strip_copula(words: str) -> str:
    for c in _COPULAS:
        if words.endswith(" " + c):
            return words[: -len(c) - 1]
    return words


def parse_query(text: str) -> ParsedQuery:
    """Split a query into subject, relation and object (see the module docstring)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("empty query text")
    words = _strip_fillers(_clean(text))
    phrases = sorted(((p, r) for r, ps in RELATION_PHRASES.items() for p in ps), key=lambda x: -len(x[0]))
    hits = []
    for phrase, rel in phrases:
        for m in re.finditer(rf"(?:^| ){re.escape(phrase)}(?= |$)", words):
            start = m.start() + (1 if m.group(0).startswith(" ") else 0)
            hits.append((start, -len(phrase), phrase, rel))
    if not hits:
        return ParsedQuery(text, words or _clean(text))
    hits.sort()
    for start, _, phrase, rel in hits:
        subj = _strip_copula(words[:start].strip())
        subj = _strip_fillers(subj).strip()
        obj = _strip_fillers(words[start + len(phrase) :].strip()).strip()
        if obj.startswith("top of "):  # "lying on top of the table"
            obj = _strip_fillers(obj[len("top of ") :]).strip()
        if subj and obj:
            return ParsedQuery(text, subj, rel, obj, relational=True)
    start, _, phrase, rel = hits[0]
    side = "before" if not _strip_fillers(words[:start].strip()) else "after"
    return ParsedQuery(
        text,
        words,
        fallback=True,
        note=f"could not parse a relation in {text!r} (nothing {side} {phrase!r}); searched for the whole text instead",
    )


@dataclass
class ObjectResult(RankedAnswer):
    """One answer: an object of the scene graph (the subject, for relational queries).

    ``rank``, ``score``, ``centroid``, ``bbox_min``, ``bbox_max`` and ``voxel_count`` (here:
    the object's surface nodes) are those of ``mapping.query.RankedAnswer``, as in
    ``mapping.query.Region``, so the same printing and JSON serve both kinds of query.
    """

    object_id: int
    name: str
    label: str
    relation: str | None = None
    partner_id: int | None = None
    partner_name: str | None = None
    subject_score: float = 0.0
    relation_score: float = 0.0
    partner_score: float = 0.0

    def to_dict(self) -> dict:
        d = {
            **super().to_dict(),
            "object_id": int(self.object_id),
            "name": self.name,
            "label": self.label,
        }
        if self.relation is not None:
            d.update(
                relation=self.relation,
                partner_id=self.partner_id,
                partner_name=self.partner_name,
                subject_score=float(self.subject_score),
                relation_score=float(self.relation_score),
                partner_score=float(self.partner_score),
            )
        return d


class GraphAnswer(list):
    """The results of :func:`answer` (a ``list`` of :class:`ObjectResult`, best first), with:

    Attributes:
        parsed: the :class:`ParsedQuery`.
        mode: "relational" (subject-relation-object ranking), "objects" (plain text over
            objects) or "fallback" (a relation word that did not parse: plain text).
        message: a sentence for the user (why it fell back, or what was not found).
    """

    def __init__(self, results: list[ObjectResult], parsed: ParsedQuery, mode: str, message: str = "") -> None:
        super().__init__(results)
        self.parsed = parsed
        self.mode = mode
        self.message = message


@dataclass
class GraphQueryConfig:
    """Scoring settings of scene-graph queries."""

    temperature: float = 0.05
    """Softmax temperature over objects of the text-object cosine similarity."""
    template: str = "a photo of a {}."
    """Prompt the phrase is embedded in (the labels use the same)."""
    min_score: float = 1e-4
    """Answers scoring lower are not reported."""
    structure_words: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(STRUCTURE_WORDS))
    contrast: bool = True
    """Weigh each object by how much better the phrase describes it than the vocabulary
    names do (see the module docstring)."""
    vocabulary: tuple[str, ...] | None = None
    """Names contrasted with the phrase; default ``scenegraph.vocabulary.DEFAULT_VOCABULARY``."""
    contrast_temperature: float = 0.05
    """Softmax temperature of the phrase-versus-names contrast."""
    kinds: bool = True
    """A phrase that is a vocabulary name also matches the names that are kinds of it
    (``scenegraph.vocabulary.KIND_OF``: "table" also matches what looks like a desk)."""
    kind_of: dict[str, tuple[str, ...]] | None = None
    """Name -> its more general names; default ``scenegraph.vocabulary.KIND_OF``."""
    size_prior: bool = True
    """Weigh each object by how well its size fits the phrase's typical size (see the
    module docstring)."""
    typical_sizes: dict[str, float] | None = None
    """Name -> typical longest horizontal side, metres; default
    ``scenegraph.vocabulary.TYPICAL_SIZE_M``."""
    size_sigma: float = 0.5
    """Spread of the size prior, natural log of the size ratio (0.5: half the weight at
    1.6 times or 1 / 1.6 the typical size)."""
    size_name_temperature: float = 0.05
    """Softmax temperature that spreads a phrase over the sized names by text similarity."""
    size_min_similarity: float = 0.5
    """A phrase that resembles no sized name this much (text cosine) gets no size prior."""


def _structure_scores(graph: SceneGraph, phrase: str, cfg: GraphQueryConfig) -> dict[int, float] | None:
    """{node: 1.0} for the structure nodes a phrase names, or None when it names none."""
    words = set(phrase.split())
    kinds = {k for k, ws in cfg.structure_words.items() if words & set(ws)}
    if not kinds:
        return None
    return {o.id: 1.0 for o in graph.objects if o.kind in kinds}


def phrase_scores(graph: SceneGraph, phrase: str, encoder, cfg: GraphQueryConfig | None = None) -> dict[int, float]:
    """Score of each node for a phrase: structure by name, objects by embedding softmax."""
    cfg = cfg or GraphQueryConfig()
    named = _structure_scores(graph, phrase, cfg)
    if named is not None:
        return named
    objs = [o for o in graph.objects if not o.is_structure and o.embedding is not None]
    if not objs:
        return {}
    q = encoder.encode_text([cfg.template.format(phrase)])[0]
    E = np.stack([o.embedding for o in objs]).astype(np.float32)
    kinds = phrase_kinds(phrase, cfg)
    sims = E @ q
    if kinds:  # the phrase or any kind of it, each name's similarity less its scene mean
        names = _vocabulary(cfg)
        K = _name_embeddings(encoder, cfg.template, names)[[names.index(k) for k in kinds]]
        cols = np.concatenate([sims[:, None], E @ K.T], axis=1)
        rel = (cols - cols.mean(axis=0, keepdims=True)).max(axis=1)
    else:
        rel = sims - sims.mean()
    logits = rel / cfg.temperature
    p = np.exp(logits - logits.max())
    p /= p.sum()
    if cfg.contrast and len(objs) >= 2:
        p = p * _contrast(E, rel, encoder, cfg, exclude=kinds)
        p /= max(float(p.sum()), 1e-30)
    if cfg.size_prior:
        prior = size_prior(objs, q, encoder, cfg)
        if prior is not None:
            p = p * prior
            p /= max(float(p.sum()), 1e-30)
    return {o.id: float(s) for o, s in zip(objs, p)}


def phrase_kinds(phrase: str, cfg: GraphQueryConfig) -> tuple[str, ...]:
    """The contrast vocabulary's names that are kinds of the phrase ("table" -> ("desk",)); () when off."""
    if not cfg.kinds:
        return ()
    from scenegraph.vocabulary import kinds_of

    return kinds_of(" ".join(phrase.lower().split()), _vocabulary(cfg), cfg.kind_of)


def _vocabulary(cfg: GraphQueryConfig) -> tuple[str, ...]:
    """The names contrasted with a phrase (``cfg.vocabulary`` or the default vocabulary)."""
    from scenegraph.vocabulary import DEFAULT_VOCABULARY

    return tuple(cfg.vocabulary or DEFAULT_VOCABULARY)


def _name_embeddings(encoder, template: str, names: tuple[str, ...]) -> np.ndarray:
    """(V, D) text embeddings of names in the prompt template (cached, :func:`vocabulary_embeddings`)."""
    from mapping.encoders.base import vocabulary_embeddings

    return vocabulary_embeddings(encoder, [template.format(n) for n in names])


def object_size_m(o: SceneObject) -> float:
    """An object's longest horizontal side (gravity box), metres (at least 1 cm)."""
    return max(float(np.max((o.gbox_max - o.gbox_min)[:2])), 0.01)


def size_prior(objs: list[SceneObject], q: np.ndarray, encoder, cfg: GraphQueryConfig) -> np.ndarray | None:
    """(O,) weight of each object's size for a phrase with text embedding ``q`` (D,).

    The phrase is spread over the sized names by a softmax of its text similarity to them
    (``size_name_temperature``); its typical log size is the weighted mean of theirs, and
    an object's weight is ``exp(-(ln(size / typical))^2 / (2 size_sigma^2))``, its size the
    longest horizontal side. None (no prior) when no sized name resembles the phrase.
    """
    from scenegraph.vocabulary import TYPICAL_SIZE_M

    sizes = TYPICAL_SIZE_M if cfg.typical_sizes is None else cfg.typical_sizes
    if not sizes:
        return None
    names = tuple(sizes)
    sim = _name_embeddings(encoder, cfg.template, names) @ np.asarray(q, np.float32)
    if float(sim.max()) < cfg.size_min_similarity:
        return None
    w = np.exp((sim - sim.max()) / cfg.size_name_temperature)
    mu = float(w @ np.log([sizes[n] for n in names]) / w.sum())
    d = np.log([object_size_m(o) for o in objs]) - mu
    return np.exp(-0.5 * (d / cfg.size_sigma) ** 2)


def _contrast(E: np.ndarray, rel: np.ndarray, encoder, cfg: GraphQueryConfig, exclude: tuple[str, ...] = ()) -> np.ndarray:
    """(O,) probability that each object is the phrase rather than one of the vocabulary names.

    Args:
        E: (O, D) object embeddings; rel: (O,) their similarity with the phrase less its
            mean over the objects; exclude: names that are no alternative (kinds of the phrase).
    """
    names = _vocabulary(cfg)
    T = _name_embeddings(encoder, cfg.template, names)  # one cached set, whatever is excluded
    if exclude:
        T = T[[i for i, n in enumerate(names) if n not in exclude]]
    S = E @ T.T  # (O, V)
    logits = np.concatenate([rel[:, None], S - S.mean(axis=0, keepdims=True)], axis=1)
    logits = logits / cfg.contrast_temperature
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e[:, 0] / e.sum(axis=1)


def _result(rank: int, score: float, o: SceneObject, **kw) -> ObjectResult:
    return ObjectResult(
        rank, score, o.centroid, o.bbox_min, o.bbox_max, o.n_points, o.id, o.name, o.label, **kw
    )


def search_objects(graph: SceneGraph, text: str, encoder, top: int = 5, cfg: GraphQueryConfig | None = None) -> list[ObjectResult]:
    """Objects ranked by how well ``text`` describes them (structure by name)."""
    cfg = cfg or GraphQueryConfig()
    scores = phrase_scores(graph, text, encoder, cfg)
    ranked = sorted(((s, i) for i, s in scores.items() if s >= cfg.min_score), key=lambda x: (-x[0], x[1]))[:top]
    return [_result(k + 1, s, graph.object(i)) for k, (s, i) in enumerate(ranked)]


def relational_search(
    graph: SceneGraph, parsed: ParsedQuery, encoder, top: int = 5, cfg: GraphQueryConfig | None = None
) -> list[ObjectResult]:
    """Subjects ranked by subject score x relation score x object score (best partner each)."""
    cfg = cfg or GraphQueryConfig()
    if not parsed.relational:
        raise ValueError(f"not a relational query: {parsed.text!r}")
    s_subj = phrase_scores(graph, parsed.subject, encoder, cfg)
    s_obj = phrase_scores(graph, parsed.object, encoder, cfg)
    rels = RELATION_ALIASES.get(parsed.relation, (parsed.relation,))
    best: dict[int, tuple[float, int, float, str]] = {}
    for a, sa in s_subj.items():
        for r in graph.iter_relations_from(a):
            if r.relation not in rels or r.object not in s_obj or r.object == a:
                continue
            score = sa * r.score * s_obj[r.object]
            if score >= cfg.min_score and (a not in best or score > best[a][0]):
                best[a] = (score, r.object, r.score, r.relation)
    ranked = sorted(best.items(), key=lambda kv: (-kv[1][0], kv[0]))[:top]
    out = []
    for k, (a, (score, b, rs, rname)) in enumerate(ranked):
        partner = graph.object(b)
        out.append(
            _result(
                k + 1,
                score,
                graph.object(a),
                relation=rname,
                partner_id=b,
                partner_name=partner.name,
                subject_score=s_subj[a],
                relation_score=rs,
                partner_score=s_obj[b],
            )
        )
    return out


def load_query_encoder(graph: SceneGraph, device: str = "cpu"):
    """The encoder that embedded the graph's objects (raises ValueError when it has none)."""
    if not graph.has_embeddings or not graph.encoder:
        raise ValueError(
            "the scene graph has no object embeddings (its map had no stored views and no feature layer); "
            "rebuild the map with --encoder lite (or --save-views) and run semmap graph again"
        )
    from mapping.encoders import load_encoder

    return load_encoder(graph.encoder, device=device)


def answer_graph(graph: SceneGraph, text: str, encoder=None, top: int = 5, cfg: GraphQueryConfig | None = None) -> GraphAnswer:
    """Answer ``text`` from a loaded graph: relational when it parses, else plain (see :func:`answer`)."""
    parsed = parse_query(text)
    named = all(
        _structure_scores(graph, p, cfg or GraphQueryConfig()) is not None
        for p in ((parsed.subject, parsed.object) if parsed.relational else (parsed.subject,))
    )
    if encoder is None and not named:
        encoder = load_query_encoder(graph)
    if parsed.relational:
        res = relational_search(graph, parsed, encoder, top, cfg)
        msg = "" if res else f"nothing in the scene graph is {parsed.relation.replace('_', ' ')} {parsed.object!r} and looks like {parsed.subject!r}"
        return GraphAnswer(res, parsed, "relational", msg)
    res = search_objects(graph, parsed.subject, encoder, top, cfg)
    return GraphAnswer(res, parsed, "fallback" if parsed.fallback else "objects", parsed.note)


def answer(map_dir: Path | str, text: str, top: int = 5, encoder=None, cfg: GraphQueryConfig | None = None) -> GraphAnswer:
    """Answer a text query from the scene graph of a map directory.

    Args:
        map_dir: a map directory with ``scene_graph.json`` (``semmap graph DIR`` writes it).
        text: "the mug on the table", "chair next to the table", or any plain text.
        top: results to return.
        encoder: the text encoder (default: the one named in the graph, loaded once).
    Returns:
        a :class:`GraphAnswer`: the ranked :class:`ObjectResult` list with ``mode``
        ("relational", "objects", "fallback") and ``message``.
    Raises:
        FileNotFoundError: no scene graph; ValueError: empty text, or objects without
        embeddings when the text needs them.
    """
    graph = SceneGraph.load(Path(map_dir) / SCENE_GRAPH_FILE)
    return answer_graph(graph, text, encoder, top, cfg)
