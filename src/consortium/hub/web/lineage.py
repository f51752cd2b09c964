"""A model's lineage as an SVG drawn on the server: its data sources (owner, licence) feed its project, whose
runs trained the versions of its line, some of them released. :func:`layout` is a pure function of the nodes
and edges; :func:`model_lineage` gathers them for one viewer, linking each node to its page only where that
viewer may open it (the same access services the API uses: a source whose card the viewer may not see is
named as the model's card names it, with no link)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from consortium.hub.db.models import Model, Proposal, Run
from consortium.hub.services import datasets as dataset_service
from consortium.hub.services import environments as environment_service
from consortium.hub.services import proposals
from consortium.hub.services.access import can_see_project
from consortium.hub.services.errors import NotFound
from consortium.hub.services.identity import Principal

BOX_WIDTH, BOX_HEIGHT = 170, 44
COLUMN_GAP, ROW_GAP, MARGIN = 40, 14, 4
LABEL_CHARS = 24
"""Longest label or detail line drawn in a box (a longer one is cut with an ellipsis; the link's title keeps
it whole)."""
COLUMNS = ("Data", "Project", "Runs", "Versions", "Releases")


@dataclass(frozen=True)
class Node:
    """One box: a unique key, its label and second line, the page it links to (None: no link for this
    viewer), its column (index into :data:`COLUMNS`) and whether it is the page's own model."""

    key: str
    label: str
    detail: str
    href: str | None
    column: int
    current: bool = False


@dataclass(frozen=True)
class Box:
    node: Node
    x: int
    y: int
    label: str
    detail: str


@dataclass(frozen=True)
class Edge:
    """A line from the right edge of one box to the left edge of the next."""

    x1: int
    y1: int
    x2: int
    y2: int


@dataclass(frozen=True)
class Drawing:
    width: int
    height: int
    boxes: tuple[Box, ...]
    edges: tuple[Edge, ...]
    headings: tuple[tuple[int, str], ...]


def clip(text: str, limit: int = LABEL_CHARS) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def layout(nodes: list[Node], links: list[tuple[str, str]]) -> Drawing:
    """Place the nodes in their columns (each column centred on the tallest), left to right, and draw each
    link ``(from key, to key)`` between two placed boxes. Empty columns take no room."""
    used = sorted({n.column for n in nodes})
    slot = {column: i for i, column in enumerate(used)}
    per_column = {column: [n for n in nodes if n.column == column] for column in used}
    tallest = max((len(c) for c in per_column.values()), default=0)
    step = BOX_HEIGHT + ROW_GAP
    top = MARGIN + 16  # room for the column headings
    height = top + tallest * step - ROW_GAP + MARGIN if tallest else 0
    width = MARGIN * 2 + len(used) * (BOX_WIDTH + COLUMN_GAP) - COLUMN_GAP if used else 0
    boxes: dict[str, Box] = {}
    for column, members in per_column.items():
        x = MARGIN + slot[column] * (BOX_WIDTH + COLUMN_GAP)
        offset = (tallest - len(members)) * step // 2
        for row, node in enumerate(members):
            boxes[node.key] = Box(node, x, top + offset + row * step, clip(node.label), clip(node.detail))
    edges = tuple(
        Edge(boxes[a].x + BOX_WIDTH, boxes[a].y + BOX_HEIGHT // 2, boxes[b].x, boxes[b].y + BOX_HEIGHT // 2)
        for a, b in links if a in boxes and b in boxes
    )
    headings = tuple((MARGIN + slot[c] * (BOX_WIDTH + COLUMN_GAP), COLUMNS[c]) for c in used)
    return Drawing(width, height, tuple(boxes.values()), edges, headings)


def _source_nodes(session: Session, who: Principal | None, card: dict) -> list[Node]:
    """The card's data sources and environments, linked where the viewer may see their card."""
    found = []
    for noun, kind, entries in (("dataset", dataset_service.TABLE, card.get("datasets", [])),
                                ("environment", environment_service.KIND, card.get("environments", []))):
        for entry in entries:
            ref = str(entry.get("ref", ""))
            try:
                dataset_service.source_by_ref(session, who, ref, kind, noun)
                href: str | None = f"/{noun}s/{ref}"
            except NotFound:
                href = None
            detail = f"{ref.partition('/')[0]} · {entry.get('license', '')}"
            found.append(Node(f"source:{ref}", ref, detail, href, 0))
    return found


def _release_node(session: Session, who: Principal | None, version: Model) -> Node | None:
    if version.release_proposal_id is None and version.released_at is None:
        return None
    when = version.released_at.strftime("%Y-%m-%d") if version.released_at else ""
    href = None
    row = session.get(Proposal, version.release_proposal_id) if version.release_proposal_id else None
    if row is not None and who is not None and proposals.can_see(session, who, row):
        href = f"/proposals/{row.id}"
    label = (f"Release of v{version.version}" if version.version is not None
             else f"Release of model {version.id}")
    return Node(f"release:{version.id}", label, f"{version.visibility or ''} {when}".strip(), href, 4)


def model_lineage(session: Session, who: Principal | None, model: Model, versions: list[Model]) -> Drawing:
    """The lineage of ``model`` and the versions of its line the viewer may see (``versions``)."""
    sees_project = who is not None and can_see_project(session, who, model.project)
    project_key = f"project:{model.project_id}"
    nodes = _source_nodes(session, who, model.card)
    links = [(n.key, project_key) for n in nodes]
    nodes.append(Node(project_key, model.project.name, f"project {model.project_id}",
                      f"/projects/{model.project_id}" if sees_project else None, 1))
    for version in versions:
        run = session.get(Run, version.run_id)
        run_key, model_key = f"run:{version.run_id}", f"model:{version.id}"
        nodes.append(Node(run_key, f"Run {version.run_id}", run.status if run else "",
                          f"/runs/{version.run_id}" if sees_project else None, 2))
        number = version.version if version.version is not None else "?"
        nodes.append(Node(model_key, f"Version {number}", f"model {version.id}, {version.status}",
                          f"/models/{version.id}", 3, current=version.id == model.id))
        links += [(project_key, run_key), (run_key, model_key)]
        release = _release_node(session, who, version)
        if release is not None:
            nodes.append(release)
            links.append((model_key, release.key))
    return layout(nodes, links)
