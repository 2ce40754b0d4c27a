"""The optional 2D instance-mask path of the scene graph (``scenegraph.masks``).

- A tiny randomly initialised SAM saved with ``save_pretrained`` loads by ``sam:<dir>``
  and generates masks that match transformers' own point-prompt pipeline.
- Ground-truth instance masks rendered from the generated rooms split what a
  deliberately under-segmenting geometry merges, also when every mask bleeds a pixel
  past the object's outline and 30 % of the masks are missing.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mapping.graph_segments import relabel
from scenegraph.build import GraphConfig, build_scene_graph
from scenegraph.evaluate import check_against_scene
from scenegraph.masks import (
    MaskConfig,
    MaskGenerator,
    MaskSet,
    load_mask_generator,
    mask_iou,
    merge_with_proposals,
)
from semmap.cli import main
from tests.scenegraph.colour_encoder import ColourEncoder
from tests.tiny_models import cached_model_dir


@pytest.fixture(scope="module")
def tiny_sam(tmp_path_factory):
    return cached_model_dir("sam", tmp_path_factory)


class RenderedMasks(MaskGenerator):
    """Ground-truth masks of a generated room: one per instance the view's pixels show,
    from the scene's per-triangle instance ids, optionally grown by ``bleed_px`` and with
    a random ``drop`` share left out (a mask model's typical faults)."""

    name = "rendered"

    def __init__(self, scene, bleed_px: int = 0, drop: float = 0.0, seed: int = 0) -> None:
        from sensors.synthetic import MeshRenderer

        self.renderer = MeshRenderer(scene.mesh, triangle_instance=scene.triangle_instance)
        self.bleed_px, self.drop = bleed_px, drop
        self.rng = np.random.default_rng(seed)

    def generate(self, rgb: np.ndarray) -> MaskSet:
        raise NotImplementedError("rendered masks need the view's pose")

    def masks_of_view(self, view) -> MaskSet:
        from scipy.ndimage import binary_dilation

        ids = self.renderer.render(view.camera, view.T_world_cam).instance_ids
        masks = []
        for i in np.unique(ids[ids >= 0]):
            if self.rng.random() < self.drop:
                continue
            m = ids == i
            masks.append(binary_dilation(m, iterations=self.bleed_px) if self.bleed_px else m)
        stack = np.stack(masks) if masks else np.zeros((0, *ids.shape), bool)
        return MaskSet(stack, np.ones(len(stack), np.float32))


def test_sam_masks_match_transformers_point_prompts(tiny_sam):
    """One point prompt at the image centre: every mask the generator keeps is one of the
    three that transformers' processor-driven call gives for that point (so the point
    coordinates, the upsampling and the padding crop agree), best predicted IoU first,
    and no two kept masks overlap more than ``nms_iou``."""
    import torch
    from transformers import SamModel, SamProcessor

    # the random model's logits are ~1e-5: no stability offset, no thresholds
    loose = dict(pred_iou_thresh=-1e9, stability_thresh=0.0, stability_offset=0.0, min_area_frac=0.0, max_area_frac=1.0)
    cfg = MaskConfig(points_per_side=1, **loose)
    gen = load_mask_generator(f"sam:{tiny_sam}", cfg)
    rng = np.random.default_rng(0)
    img = (rng.random((72, 96, 3)) * 255).astype(np.uint8)  # resized to 48 x 64 for the model
    img[15:45, 30:60] = (200, 30, 30)
    out = gen.generate(img)
    assert out.masks.dtype == bool and out.masks.shape[1:] == (72, 96) and 1 <= len(out) <= 3
    assert np.all(np.diff(out.scores) <= 0)

    model, proc = SamModel.from_pretrained(tiny_sam).eval(), SamProcessor.from_pretrained(tiny_sam)
    inputs = proc(images=img, input_points=[[[48.0, 36.0]]], return_tensors="pt")
    with torch.inference_mode():
        ref = model(**inputs, multimask_output=True)
    ref_masks = proc.image_processor.post_process_masks(
        ref.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"]
    )[0][0].numpy()  # (3, H, W)
    for m in out.masks:
        assert any(np.array_equal(m, r) for r in ref_masks), "a kept mask is none of the reference masks"
    if len(out) > 1:
        iou = mask_iou(out.masks)
        assert iou[np.triu_indices(len(out), 1)].max() <= cfg.nms_iou


def test_sam_grid_prompts_and_thresholds(tiny_sam):
    """A 4 x 4 grid of prompts gives at most 48 masks; thresholds no mask can reach give none."""
    img = (np.random.default_rng(1).random((40, 56, 3)) * 255).astype(np.uint8)
    loose = dict(
        pred_iou_thresh=-1e9, stability_thresh=0.0, stability_offset=0.0, min_area_frac=0.0, max_area_frac=1.0, nms_iou=1.0
    )
    many = load_mask_generator(f"sam:{tiny_sam}", MaskConfig(points_per_side=4, points_per_batch=5, **loose))
    out = many.generate(img)
    assert 1 <= len(out) <= 48 and out.masks.shape[1:] == (40, 56)
    strict = load_mask_generator(f"sam:{tiny_sam}", MaskConfig(points_per_side=4, pred_iou_thresh=1e9))
    assert len(strict.generate(img)) == 0
    with pytest.raises(ValueError, match="uint8"):
        many.generate(img.astype(np.float32))


def test_mask_model_specs_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="unknown mask model 'mask2former'.*sam"):
        load_mask_generator("mask2former:/x")
    with pytest.raises(ValueError, match="sam:/path"):
        load_mask_generator("")
    with pytest.raises(FileNotFoundError, match=r"sam: model path .*no-such-sam does not exist"):
        load_mask_generator(f"sam:{tmp_path / 'no-such-sam'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_mask_generator(f"sam:{tmp_path / 'empty'}")


def test_merge_with_proposals_keeps_what_the_masks_missed():
    """Instance nodes take the instance; the rest of a geometric object an instance took
    half of joins it; another geometric object stays (or goes, when under ``min_nodes``)."""
    geo = np.array([0] * 10 + [1] * 6 + [2] * 2 + [-1] * 2)
    inst = np.array([5] * 6 + [-1] * 4 + [-1] * 6 + [-1] * 2 + [5, -1])
    out = merge_with_proposals(geo, relabel(inst), min_nodes=3)
    assert len(set(out[:10])) == 1 and out[0] >= 0, "object 0's unmasked rest joins the instance that took 6 of 10"
    assert len(set(out[10:16])) == 1 and out[10] not in out[:10], "object 1, which no mask saw, stays"
    assert (out[16:18] == -1).all() and out[19] == -1, "a 2-node object and unassigned nodes are dropped"
    assert out[18] == out[0], "a masked node outside any geometric object joins its instance"
    np.testing.assert_array_equal(relabel(np.array([7, -1, 3, 7, 9])), [0, -1, 1, 0, 2])


def _undersegmenting() -> GraphConfig:
    """Geometry that cannot tell a resting object from its support (no resting contact)."""
    cfg = GraphConfig(embed=False)
    cfg.proposals = dataclasses.replace(cfg.proposals, footprint_inside=2.0)
    return cfg


@pytest.mark.parametrize("bleed_px, drop, embed", [(0, 0.0, False), (1, 0.3, False), (1, 0.3, True)])
def test_rendered_masks_split_what_geometry_merges(room_maps, bleed_px, drop, embed):
    """Room seed 0 with a geometry that merges the monitor into the table: without masks
    the monitor is lost; with the room's instance masks (exact, or grown by 1 px with
    30 % of them missing; with or without crop embeddings in the association, here from
    the colour encoder) every instance is found at IoU >= 0.5, one object each, and the
    on / inside / next_to relations are all right."""
    scene, map_dir = room_maps[0]
    alone = check_against_scene(build_scene_graph(map_dir, _undersegmenting()), scene)
    assert alone.recall < 1.0 and alone.instance_iou["monitor"] < 0.5, alone.summary()

    cfg = _undersegmenting()
    cfg.mask_generator = RenderedMasks(scene, bleed_px, drop)
    cfg.masks.embed = embed
    graph = build_scene_graph(map_dir, cfg, encoder=ColourEncoder() if embed else None)
    c = check_against_scene(graph, scene)
    assert c.recall == 1.0 and min(c.instance_iou.values()) >= 0.6, c.summary()
    n_objects = sum(not o.is_structure for o in graph.objects)
    assert n_objects == len(scene.objects) and c.precision >= 0.95, f"{n_objects} objects: {c.summary()}"
    for rel in ("on", "inside", "next_to"):
        r = c.relations[rel]
        assert r.precision == 1.0 and r.recall == 1.0, (rel, c.summary())
    stats = graph.metadata["masks"]
    assert stats["instances"] == len(scene.objects) and stats["masks"] > stats["lifted"] > 0


def test_graph_cli_with_a_sam_model(room_maps, tiny_sam, tmp_path, capsys):
    """`semmap graph DIR --masks sam:<dir>` runs the whole path (the tiny random SAM's
    masks are whatever they are) and reports the masks; a bad spec fails cleanly."""
    import shutil

    _, map_dir = room_maps[3]
    work = tmp_path / "room"
    shutil.copytree(map_dir, work)
    assert main(["graph", str(work), "--no-embed", "--masks", f"sam:{tiny_sam}", "--mask-points", "4"]) == 0
    out = capsys.readouterr().out
    assert f"masks (sam:{tiny_sam}):" in out and (work / "scene_graph.json").is_file()
    assert main(["graph", str(work), "--no-embed", "--masks", "nope:x"]) == 2
    assert "unknown mask model 'nope'" in capsys.readouterr().err
