"""Polygons on the Labelling page's canvas (Fabric.js objects) to and from our normalised polygon
labels: pure conversions, checked against where Fabric draws a moved, scaled, rotated or flipped
polygon."""

from __future__ import annotations

import pytest

from core.base.tasks import LabelKind
from core.data.relabel import (
    EditedLabel,
    canvas_colour,
    polygon_drawing,
    polygons_from_drawing,
    stored_labels,
)
from storage.tables import Annotation

CLASSES = ["cat", "dog"]
SIDE = 400  # a square canvas: 1 px = 0.0025


def _label(name: str, *points: float) -> EditedLabel:
    xs, ys = points[0::2], points[1::2]
    return EditedLabel(name, (min(xs), min(ys), max(xs), max(ys)), (tuple(points),))


def _tool_polygon(points: list[tuple[float, float]], stroke: str, **transform: float | str | bool) -> dict:
    """A polygon as the canvas's polygon tool creates it: points in canvas pixels, origin left/top at
    the stroke's outer edge, stroke scaling with the object (Fabric's defaults)."""
    xs, ys = [x for x, _ in points], [y for _, y in points]
    return {"type": "Polygon", "points": [{"x": x, "y": y} for x, y in points], "strokeWidth": 2,
            "left": min(xs) - 1, "top": min(ys) - 1, "stroke": stroke, **transform}


def _points(labels: list[EditedLabel]) -> list[list[tuple[float, float]]]:
    return [[(round(x * SIDE, 6), round(y * SIDE, 6)) for x, y in zip(p[0::2], p[1::2])]
            for label in labels for p in label.polygons]


def test_labels_survive_a_round_trip_through_the_canvas_with_their_classes() -> None:
    labels = [_label("dog", 0.1, 0.1, 0.4, 0.1, 0.25, 0.35), _label("cat", 0.5, 0.5, 0.9, 0.55, 0.7, 0.95, 0.52, 0.8)]
    drawing = polygon_drawing(labels, CLASSES, SIDE, SIDE)
    assert [o["stroke"] for o in drawing["objects"]] == [canvas_colour("dog", CLASSES), canvas_colour("cat", CLASSES)]
    assert polygons_from_drawing(drawing["objects"], CLASSES, SIDE, SIDE, new_label="cat") == labels


def test_a_newly_drawn_polygon_takes_its_stroke_class_or_the_class_for_new_ones() -> None:
    triangle = [(100.0, 100.0), (200.0, 100.0), (100.0, 200.0)]
    [dog] = polygons_from_drawing([_tool_polygon(triangle, canvas_colour("dog", CLASSES))], CLASSES, SIDE, SIDE,
                                  new_label="cat")
    assert dog == _label("dog", 0.25, 0.25, 0.5, 0.25, 0.25, 0.5)
    [other] = polygons_from_drawing([_tool_polygon(triangle, "#123456")], CLASSES, SIDE, SIDE, new_label="cat")
    assert other.label == "cat"


def test_moved_and_scaled_polygons_are_read_where_the_canvas_draws_them() -> None:
    triangle = [(100.0, 100.0), (200.0, 100.0), (200.0, 150.0)]
    moved = _tool_polygon(triangle, "#000000", left=149, top=49)  # dragged 50 px right, 50 px up
    # Doubled from its top-left corner: the stroke (2 px, not uniform) doubles too.
    scaled = _tool_polygon(triangle, "#000000", scaleX=2, scaleY=2)
    found = polygons_from_drawing([moved, scaled], CLASSES, SIDE, SIDE, new_label="cat")
    assert _points(found) == [[(150.0, 50.0), (250.0, 50.0), (250.0, 100.0)],
                              [(101.0, 101.0), (301.0, 101.0), (301.0, 201.0)]]


def test_rotated_and_flipped_polygons_are_read_where_the_canvas_draws_them() -> None:
    triangle = [{"x": 100.0, "y": 100.0}, {"x": 200.0, "y": 100.0}, {"x": 100.0, "y": 200.0}]
    centred = {"type": "Polygon", "points": triangle, "left": 150, "top": 150, "originX": "center",
               "originY": "center", "strokeWidth": 2, "strokeUniform": True}
    rotated = {**centred, "angle": 90}  # clockwise on screen (y points down)
    flipped = {**centred, "flipX": True}
    found = polygons_from_drawing([rotated, flipped], CLASSES, SIDE, SIDE, new_label="cat")
    assert _points(found) == [[(200.0, 100.0), (200.0, 200.0), (100.0, 100.0)],
                              [(200.0, 100.0), (100.0, 100.0), (200.0, 200.0)]]


def test_other_shapes_and_degenerate_polygons_are_left_out_and_points_are_clipped() -> None:
    line = _tool_polygon([(10.0, 10.0), (50.0, 50.0), (10.0, 10.0)], "#000000")
    rect = {"type": "LabeledRect", "left": 0, "top": 0, "width": 10, "height": 10}
    outside = _tool_polygon([(-40.0, 200.0), (200.0, -40.0), (440.0, 440.0)], "#000000")
    [clipped] = polygons_from_drawing([line, rect, outside], CLASSES, SIDE, SIDE, new_label="dog")
    assert clipped == _label("dog", 0.0, 0.5, 0.5, 0.0, 1.0, 1.0)


def test_every_class_has_its_own_canvas_colour_beyond_the_palette() -> None:
    classes = [f"c{i}" for i in range(45)]
    assert len({canvas_colour(c, classes) for c in classes}) == 45
    assert canvas_colour("c0", classes)[:5] == canvas_colour("c20", classes)[:5]  # the same hue to the eye


def test_stored_annotations_become_one_label_per_polygon_and_back_to_json() -> None:
    rows = [Annotation(image_id=1, label="cat"),
            Annotation(image_id=1, label="dog", x0=0.1, y0=0.1, x1=0.5, y1=0.5),
            Annotation(image_id=1, label="cat", x0=0.0, y0=0.0, x1=1.0, y1=1.0,  # a box wider than its parts
                       polygon=[[0.1, 0.1, 0.2, 0.1, 0.2, 0.2], [0.5, 0.5, 0.6, 0.5, 0.6, 0.6]])]
    labels = stored_labels(rows, LabelKind.POLYGONS)
    assert labels == (EditedLabel("cat"), EditedLabel("dog", (0.1, 0.1, 0.5, 0.5)),
                      _label("cat", 0.1, 0.1, 0.2, 0.1, 0.2, 0.2), _label("cat", 0.5, 0.5, 0.6, 0.5, 0.6, 0.6))
    assert tuple(EditedLabel.from_json(label.as_json()) for label in labels) == labels
    assert labels[2].annotation().polygon == [[0.1, 0.1, 0.2, 0.1, 0.2, 0.2]]
    assert stored_labels(rows, LabelKind.BOXES)[2] == EditedLabel("cat", (0.0, 0.0, 1.0, 1.0))  # boxes keep theirs
    with pytest.raises(ValueError):
        EditedLabel.from_json({"label": "cat", "box": [0.1, 0.2]})
