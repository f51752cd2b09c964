"""The lineage drawing's layout: columns left to right with empty ones dropped, each column centred on the
tallest, links between placed boxes only, long labels cut."""

from __future__ import annotations

from consortium.hub.web.lineage import BOX_HEIGHT, BOX_WIDTH, COLUMN_GAP, LABEL_CHARS, Node, layout


def node(key: str, column: int, label: str = "x") -> Node:
    return Node(key, label, "detail", f"/{key}", column)


def test_columns_run_left_to_right_and_an_empty_one_takes_no_room() -> None:
    drawing = layout([node("a", 0), node("b", 0), node("p", 1), node("m", 3)], [])
    xs = {b.node.key: b.x for b in drawing.boxes}
    assert xs["a"] == xs["b"] < xs["p"] < xs["m"]
    assert xs["m"] - xs["p"] == xs["p"] - xs["a"] == BOX_WIDTH + COLUMN_GAP
    assert [h for _, h in drawing.headings] == ["Data", "Project", "Versions"]
    assert drawing.width == xs["m"] + BOX_WIDTH + xs["a"]


def test_a_short_column_is_centred_on_the_tallest() -> None:
    drawing = layout([node("a", 0), node("b", 0), node("c", 0), node("p", 1)], [])
    ys = {b.node.key: b.y for b in drawing.boxes}
    assert ys["a"] < ys["b"] < ys["c"] and ys["p"] == ys["b"]
    assert drawing.height >= ys["c"] + BOX_HEIGHT


def test_links_join_box_edges_and_skip_unknown_keys() -> None:
    drawing = layout([node("a", 0), node("p", 1)], [("a", "p"), ("a", "gone")])
    boxes = {b.node.key: b for b in drawing.boxes}
    (edge,) = drawing.edges
    assert (edge.x1, edge.x2) == (boxes["a"].x + BOX_WIDTH, boxes["p"].x)
    assert edge.y1 == boxes["a"].y + BOX_HEIGHT // 2 and edge.y2 == boxes["p"].y + BOX_HEIGHT // 2


def test_a_long_label_is_cut_and_nothing_is_an_empty_drawing() -> None:
    (box,) = layout([node("a", 0, "n" * 100)], []).boxes
    assert len(box.label) == LABEL_CHARS and box.label.endswith("…") and box.node.label == "n" * 100
    empty = layout([], [])
    assert (empty.width, empty.height, empty.boxes, empty.edges) == (0, 0, (), ())
