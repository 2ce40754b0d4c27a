"""Where the map becomes objects and relations: the 3D scene graph.

Build one from a map directory, save it, and query it::

    from scenegraph import GraphConfig, build_scene_graph, write_outputs
    from scenegraph.query import answer

    graph = build_scene_graph("runs/kitchen", GraphConfig())
    write_outputs(graph, "runs/kitchen")           # scene_graph.json / .graphml / .png
    answer("runs/kitchen", "the mug on the table")  # ranked subjects, best first

Modules, in pipeline order: ``surface`` (mesh -> surface nodes), ``planes`` (floor,
walls, ceiling, gravity), ``visibility`` and ``views`` (stored views, what they saw),
``segmentation`` (Felzenszwalb-Huttenlocher), ``objects`` (segments -> objects),
``embedding`` (multi-view embeddings, labels), ``relations``, ``graph`` (the
``SceneGraph`` type and its files), ``query``, ``draw``, ``report``, ``evaluate``
(against generated ground truth), ``build`` (all of it from a map directory).
Open3D and torch are imported only inside the functions that need them.
"""

from scenegraph.build import GraphConfig, build_scene_graph
from scenegraph.graph import Relation, SceneGraph, SceneObject
from scenegraph.report import summary_table, write_outputs

__all__ = ["GraphConfig", "Relation", "SceneGraph", "SceneObject", "build_scene_graph", "summary_table", "write_outputs"]
