"""``consortium dataset``: register local datasets and read the cards on the hub."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from consortium.cli.common import (
    CaFileOpt,
    HubOpt,
    OptionalOrgDirOpt,
    OrgDirOpt,
    TokenOpt,
    call,
    console,
    fail,
    grant_option,
    hub_client,
    member_client,
    org_client,
    print_json,
    user_client,
)

app = typer.Typer(no_args_is_help=True, help="Register local datasets (only their cards reach the hub).")


@app.command("add")
def dataset_add(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV, Parquet or .npz file")],
    hub: HubOpt,
    org_dir: OrgDirOpt,
    license: Annotated[str, typer.Option("--license", help="SPDX licence id, e.g. CC-BY-4.0")],
    target: Annotated[str | None, typer.Option("--target", help="label column")] = None,
    name: Annotated[str | None, typer.Option("--name", help="dataset name; default: the file stem")] = None,
    description: Annotated[str, typer.Option("--description")] = "",
    visibility: Annotated[str, typer.Option("--visibility", help="private, members or public")] = "members",
    schema: Annotated[str | None, typer.Option("--schema",
                                               help="declared schema 'col:type,...'; the file must match")] = None,
    budget_epsilon: Annotated[float | None, typer.Option(
        "--budget-epsilon", help="total privacy budget epsilon for DP runs (this node refuses rounds past it)")] = None,
    budget_delta: Annotated[float | None, typer.Option(
        "--budget-delta", help="the delta of the privacy budget (with --budget-epsilon)")] = None,
    categorical: Annotated[list[str] | None, typer.Option(
        "--categorical", help="a feature column of categories (strings allowed; repeat for several)")] = None,
    allow_missing: Annotated[bool, typer.Option(
        "--allow-missing", help="accept empty feature cells (for projects whose preprocessing imputes them)")] = False,
        ca_file: CaFileOpt = None,
) -> None:
    """Register a local dataset: the hub receives its card (schema, rows, SHA-256, licence), never rows."""
    from pydantic import ValidationError

    from consortium.node.actions import prepare_dataset, register_dataset
    from consortium.node.registry import parse_schema_option
    from consortium.tables import DatasetError

    dataset_name = (name or file.stem).lower().replace(" ", "-")
    if (budget_epsilon is None) != (budget_delta is None):
        fail("--budget-epsilon and --budget-delta go together: a privacy budget is an (epsilon, delta) pair")
    budget = None if budget_epsilon is None or budget_delta is None else (budget_epsilon, budget_delta)
    try:
        declared = parse_schema_option(schema, target) if schema else None
        loaded, card = prepare_dataset(file, dataset_name, license, target, description, visibility, declared,
                                       privacy_budget=budget, categorical=categorical or None,
                                       allow_missing=allow_missing)
    except DatasetError as exc:
        fail(str(exc))
    except ValidationError as exc:
        fail("; ".join(f"--{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()))
    with org_client(hub, org_dir, ca_file) as client:
        out = call(register_dataset, client, org_dir, loaded, card)
    console.print(f"registered [bold]{out['org']}/{out['name']}[/]: {out['rows']} rows, sha256 {out['sha256'][:16]}…")


@app.command("list")
def dataset_list(hub: HubOpt, token: TokenOpt = None,
                 as_json: Annotated[bool, typer.Option("--json", help="the cards as JSON")] = False,
                 ca_file: CaFileOpt = None) -> None:
    """List the dataset cards visible to you (the id to use in a project is ``org/name``)."""
    with user_client(hub, token, ca_file) as client:
        rows = call(client.datasets)
    if as_json:
        print_json(rows)
        return
    refs = [f"{d['org']}/{d['name']}" for d in rows]
    table = Table(expand=False)
    table.add_column("dataset", no_wrap=True, min_width=max(map(len, refs), default=7))
    for column in ("rows", "licence", "visibility"):
        table.add_column(column)
    table.add_column("sha256", overflow="ellipsis", no_wrap=True)
    for ref, d in zip(refs, rows, strict=True):
        table.add_row(ref, str(d["rows"]), d["license"], d["visibility"], d["sha256"][:16])
    console.print(table)


@app.command("croissant")
def dataset_croissant(ref: Annotated[str, typer.Argument(help="org/name")], hub: HubOpt,
                      token: TokenOpt = None, ca_file: CaFileOpt = None) -> None:
    """Print a dataset card as Croissant JSON-LD."""
    with user_client(hub, token, ca_file) as client:
        print_json(call(client.croissant, ref))


VisibilityOpt = Annotated[str | None, typer.Option("--visibility", help="private, members or public")]
ProcessOpt = Annotated[str | None, typer.Option(
    "--process", help="who may train on it: members, nobody or org names separated by commas")]
DownloadOpt = Annotated[str | None, typer.Option(
    "--download", help="who may download it (and models trained on it): members, nobody, everyone or org "
                       "names separated by commas")]


@app.command("rights")
def dataset_rights(ref: Annotated[str, typer.Argument(help="org/name, a dataset of your org")], hub: HubOpt,
                   visibility: VisibilityOpt = None, process: ProcessOpt = None, download: DownloadOpt = None,
                   token: TokenOpt = None, org_dir: OptionalOrgDirOpt = None,
                   ca_file: CaFileOpt = None) -> None:
    """Change who may see, process and download your org's dataset (as its key or a steward); projects
    proposed before keep the rights they were proposed under."""
    with member_client(hub, token, org_dir, ca_file) as client:
        card = call(client.set_source_rights, ref, visibility=visibility, process=grant_option(process),
                    download=grant_option(download))
    console.print(f"[bold]{card['org']}/{card['name']}[/]: visibility {card['visibility']}, process "
                  f"{card['process']}, download {card['download']}")


def _anonymous_or_member(hub: str, token: str | None, org_dir: Path | None, ca_file: Path | None):
    """A client for a read that public data allows without login: a member's when credentials are given."""
    if token is None and org_dir is None:
        return hub_client(hub, ca_file)
    return member_client(hub, token, org_dir, ca_file)


@app.command("search")
def dataset_search(
    hub: HubOpt,
    words: Annotated[str, typer.Argument(help="words of the name, columns, description or datasheet")] = "",
    license: Annotated[str | None, typer.Option("--license", help="SPDX id (expressions naming it match) or "
                                                                  "an exact expression")] = None,
    task: Annotated[str | None, typer.Option("--task", help="classification, regression or unsupervised")] = None,
    owner: Annotated[str | None, typer.Option("--owner", help="the owning org")] = None,
    is_open: Annotated[bool | None, typer.Option("--open/--federated", help=(
        "only open datasets (a version to download) / only federated-only ones"), show_default=False)] = None,
    visibility: Annotated[str | None, typer.Option("--visibility", help="public, members or private")] = None,
    min_rows: Annotated[int | None, typer.Option("--min-rows", min=0)] = None,
    max_rows: Annotated[int | None, typer.Option("--max-rows", min=0)] = None,
    min_bytes: Annotated[int | None, typer.Option("--min-bytes", min=0, help="open file size")] = None,
    max_bytes: Annotated[int | None, typer.Option("--max-bytes", min=0)] = None,
    sort: Annotated[str, typer.Option("--sort", help="newest, name, rows, bytes or published")] = "newest",
    limit: Annotated[int, typer.Option("--limit", min=1, max=200)] = 50,
    offset: Annotated[int, typer.Option("--offset", min=0, max=10_000)] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="the page as JSON")] = False,
    token: TokenOpt = None, org_dir: OptionalOrgDirOpt = None, ca_file: CaFileOpt = None,
) -> None:
    """Search the catalogue: open and federated-only datasets you may see (without credentials: public
    ones), by words, licence, task, owner, open or not, visibility and size."""
    with _anonymous_or_member(hub, token, org_dir, ca_file) as client:
        page = call(client.search_catalogue, words, license=license, task=task, owner=owner, open=is_open,
                    visibility=visibility, min_rows=min_rows, max_rows=max_rows, min_bytes=min_bytes,
                    max_bytes=max_bytes, sort=sort, limit=limit, offset=offset)
    if as_json:
        print_json(page)
        return
    table = Table(expand=False)
    table.add_column("dataset", no_wrap=True, min_width=max((len(d["dataset"]) for d in page["items"]), default=7))
    for column in ("task", "rows", "licence", "open", "bytes", "visibility"):
        table.add_column(column)
    for d in page["items"]:
        table.add_row(d["dataset"], d["task"], str(d["rows"]), d["license"],
                      d["latest_version"] or "federated", "" if d["bytes"] is None else str(d["bytes"]),
                      d["visibility"])
    console.print(table)
    if page["next_offset"] is not None:
        console.print(f"more: --offset {page['next_offset']}")


QuasiOpt = Annotated[str | None, typer.Option("--quasi", help="quasi-identifier columns, comma separated")]
SensitiveOpt = Annotated[str | None, typer.Option("--sensitive", help="sensitive columns, comma separated")]
IdentifiersOpt = Annotated[str | None, typer.Option(
    "--identifiers", help="direct identifier columns (anonymise drops, publish refuses them)")]
KOpt = Annotated[int | None, typer.Option(
    "--k", min=1, help="every equivalence class holds at least k rows (publish: only tightens the policy's)")]
LOpt = Annotated[int | None, typer.Option(
    "--l", min=1, help="l distinct sensitive values per class (publish: only tightens the policy's)")]
TOpt = Annotated[float | None, typer.Option(
    "--t", min=0.0, max=1.0, help="t-closeness: each class's sensitive distribution within EMD t of the table's")]
DomainOpt = Annotated[Path | None, typer.Option(
    "--domain", exists=True, dir_okay=False, help="JSON: each column's public domain (docs/open-data.md)")]


def _names(value: str | None) -> list[str]:
    return [name.strip() for name in (value or "").split(",") if name.strip()]


def _synthetic_option(value: str) -> tuple[float, float]:
    """``epsilon=E[,delta=D]`` (delta default 1e-6)."""
    try:
        pairs = dict(part.split("=", 1) for part in value.split(",") if part.strip())
        unknown = set(pairs) - {"epsilon", "delta"}
        if unknown or "epsilon" not in pairs:
            raise ValueError(f"unknown {sorted(unknown)}" if unknown else "epsilon is required")
        return float(pairs["epsilon"]), float(pairs.get("delta", 1e-6))
    except ValueError as exc:
        fail(f"--synthetic {value!r}: write epsilon=E[,delta=D] ({exc})")


@app.command("anonymise")
def dataset_anonymise(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV or Parquet file")],
    out: Annotated[Path, typer.Option("--out", dir_okay=False, help="the anonymised CSV")],
    quasi: Annotated[str, typer.Option("--quasi", help="quasi-identifier columns, comma separated")],
    sensitive: SensitiveOpt = None, identifiers: IdentifiersOpt = None, k: KOpt = 5, l_required: LOpt = 2,
    t_allowed: TOpt = None,
    hierarchies: Annotated[Path | None, typer.Option(
        "--hierarchies", exists=True, dir_okay=False, help="JSON generalisation hierarchies (docs/open-data.md)")] = None,
    target: Annotated[str | None, typer.Option(
        "--target", help="train a reference model on this column, on the original and the result")] = None,
) -> None:
    """Drop direct identifiers and generalise the quasi-identifiers (Mondrian, or declared hierarchies) until
    every equivalence class has k rows, l distinct sensitive values and (with --t) t-closeness; prints the
    measured k, l, t and the information loss. Register the output with 'dataset add' and publish that."""
    from dataclasses import asdict, replace

    import pandas as pd

    from consortium.node import hierarchies as declared
    from consortium.node.anonymise import AnonymityError, anonymise
    from consortium.node.info_loss import reference_accuracy

    frame = pd.read_parquet(file) if file.suffix == ".parquet" else pd.read_csv(file)
    try:
        levels = declared.load(hierarchies) if hierarchies else None
        result, report = anonymise(frame, _names(identifiers), _names(quasi), _names(sensitive), k or 5,
                                   l_required or 2, t_allowed, levels)
        if target:
            report = replace(report, reference=reference_accuracy(frame, result, target, _names(identifiers)))
    except AnonymityError as exc:
        fail(str(exc))
    result.to_csv(out, index=False)
    print_json(asdict(report))


@app.command("synthesise")
def dataset_synthesise(
    ref: Annotated[str, typer.Argument(help="org/name, a registered dataset of your org")], org_dir: OrgDirOpt,
    out: Annotated[Path, typer.Option("--out", dir_okay=False, help="the synthetic CSV")],
    domain: Annotated[Path, typer.Option("--domain", exists=True, dir_okay=False, help=(
        "JSON: each column's public domain (docs/open-data.md)"))],
    epsilon: Annotated[float, typer.Option("--epsilon", min=0.0, help="epsilon at delta")] = 1.0,
    delta: Annotated[float, typer.Option("--delta", min=0.0, max=1.0)] = 1e-6,
    identifiers: IdentifiersOpt = None,
    seed: Annotated[int | None, typer.Option("--seed", help="noise seed (a preview only)")] = None,
) -> None:
    """Preview DP synthetic data of a registered dataset on this node (nothing leaves it, nothing is
    charged); 'dataset publish --synthetic' generates afresh, charges the budget and publishes."""
    from consortium.node.synthetic import SynthesisError, load_domains
    from consortium.node.synthetic_publish import synthetic_of
    from consortium.tables import DatasetError

    try:
        rows, release, _, _ = synthetic_of(org_dir, ref.partition("/")[2], load_domains(domain), epsilon, delta,
                                           _names(identifiers), seed)
    except (SynthesisError, DatasetError) as exc:
        fail(str(exc))
    rows.to_csv(out, index=False)
    print_json(release.model_dump(mode="json") | {"rows": len(rows)})


@app.command("publish")
def dataset_publish(
    ref: Annotated[str, typer.Argument(help="org/name: a registered dataset of your org, or with --file a new one")],
    hub: HubOpt, org_dir: OrgDirOpt,
    datasheet: Annotated[Path, typer.Option("--datasheet", exists=True, dir_okay=False, help=(
        "JSON with motivation, composition, collection, preprocessing, uses, distribution, maintenance"))],
    version: Annotated[str, typer.Option("--version", help="version name, e.g. 1.0")] = "1",
    license: Annotated[str | None, typer.Option("--license", help="SPDX; default: the card's")] = None,
    file: Annotated[Path | None, typer.Option("--file", exists=True, dir_okay=False, help=(
        "a CSV, Parquet or .npz file not registered yet: checked as 'dataset add' checks it, registered and "
        "published in one go (--license required)"))] = None,
    target: Annotated[str | None, typer.Option("--target", help="with --file: the label column")] = None,
    description: Annotated[str, typer.Option("--description", help="with --file: the card's description")] = "",
    visibility: Annotated[str, typer.Option("--visibility", help="with --file: private, members or public")] = "members",
    categorical: Annotated[list[str] | None, typer.Option(
        "--categorical", help="with --file: a feature column of categories (repeat for several)")] = None,
    allow_missing: Annotated[bool, typer.Option("--allow-missing", help="with --file: accept empty feature cells")] = False,
    quasi: QuasiOpt = None, sensitive: SensitiveOpt = None, identifiers: IdentifiersOpt = None,
    k: KOpt = None, l_required: LOpt = None, t_allowed: TOpt = None,
    about_people: Annotated[bool, typer.Option(
        "--about-people/--not-about-people", help="the rows describe people (implied by --quasi)")] = False,
    synthetic: Annotated[str | None, typer.Option("--synthetic", help=(
        "publish DP synthetic data instead: epsilon=E[,delta=D], charged to the dataset's privacy budget"))] = None,
    domain: DomainOpt = None, ca_file: CaFileOpt = None,
) -> None:
    """Publish a dataset as an open, immutable version: the node writes its canonical CSV, uploads it in
    chunks (resuming a broken upload) and the hub checks its SHA-256 before the version appears. With --file,
    a new file is checked, registered and published in one go (refused with nothing sent when a check fails).
    The consortium policy's k, l and t (read from the hub; --k, --l, --t may only tighten them) are checked
    first for a table about people (--quasi): a table below them (or holding a direct identifier) is refused.
    With --synthetic, DP synthetic data of the table is published instead (--domain declares the columns)."""
    from pydantic import TypeAdapter, ValidationError

    from consortium.node.anonymise import AnonymityError
    from consortium.node.open_data import AnonymityGate, publish, publish_file
    from consortium.node.registry import LocalRegistry
    from consortium.node.synthetic import SynthesisError, load_domains
    from consortium.node.synthetic_publish import publish_synthetic
    from consortium.open_data_wire import Datasheet, Version
    from consortium.tables import DatasetError

    try:
        TypeAdapter(Version).validate_python(version)
    except ValidationError:
        fail(f"--version {version!r}: 1-32 letters, digits, '.', '_' or '-', starting with a letter or digit")
    if file is not None and license is None:
        fail("--license: a new file (--file) needs its SPDX licence, e.g. CC-BY-4.0")
    try:
        sheet = Datasheet.model_validate_json(datasheet.read_bytes())
        card = None if file is not None else LocalRegistry(org_dir).get(ref.partition("/")[2]).card
    except ValidationError as exc:
        fail("--datasheet: " + "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                                         for e in exc.errors()))
    except DatasetError as exc:
        fail(str(exc))
    if synthetic is not None and file is not None:
        fail("--synthetic: publish a registered dataset's synthetic data (register the file first, without --file)")
    if synthetic is not None and domain is None:
        fail("--synthetic needs --domain: each column's public domain")
    gate = None
    if quasi or about_people:
        gate = AnonymityGate(_names(quasi), _names(sensitive), _names(identifiers), k, l_required, t_allowed)
    with org_client(hub, org_dir, ca_file) as client:
        try:
            if synthetic is not None:
                epsilon, delta = _synthetic_option(synthetic)
                out = call(publish_synthetic, client, org_dir, ref, version, license or card.license, sheet,
                           org_dir / "open-data", load_domains(domain), epsilon, delta, _names(identifiers))
            elif file is not None:
                out = call(publish_file, client, org_dir, ref, file, version, license, sheet, org_dir / "open-data",
                           gate, target=target, description=description, visibility=visibility,
                           categorical=categorical or None, allow_missing=allow_missing)
            else:
                out = call(publish, client, org_dir, ref, version, license or card.license, sheet,
                           org_dir / "open-data", gate)
        except (DatasetError, AnonymityError, SynthesisError) as exc:
            fail(str(exc))
    kind = f" (DP synthetic, ε = {out['synthetic']['epsilon']:g})" if out.get("synthetic") else ""
    console.print(f"published [bold]{out['dataset']}@{out['version']}[/]{kind}: {out['size']} bytes, sha256 "
                  f"{out['sha256'][:16]}…, {out['license']}; {out['download_url']}")


@app.command("withdraw")
def dataset_withdraw(ref: Annotated[str, typer.Argument(help="org/name@version")], hub: HubOpt,
                     reason: Annotated[str, typer.Option("--reason", help="shown to everyone who asks")],
                     token: TokenOpt = None, org_dir: OptionalOrgDirOpt = None, ca_file: CaFileOpt = None) -> None:
    """Withdraw a published version: downloads stop; the version and the reason stay listed and in the
    ledger."""
    dataset, _, version = ref.partition("@")
    if not version:
        fail("name the version: org/name@version")
    with member_client(hub, token, org_dir, ca_file) as client:
        call(client.post_json, f"/api/datasets/{dataset}/versions/{version}/withdraw", {"reason": reason})
    console.print(f"withdrew {ref}: {reason}")


@app.command("versions")
def dataset_versions(ref: Annotated[str, typer.Argument(help="org/name")], hub: HubOpt,
                     token: TokenOpt = None, org_dir: OptionalOrgDirOpt = None, ca_file: CaFileOpt = None) -> None:
    """List a dataset's published versions (withdrawn ones with their reason)."""
    with _anonymous_or_member(hub, token, org_dir, ca_file) as client:
        rows = call(client.get_json, f"/api/datasets/{ref}/versions")
    table = Table("version", "licence", "size", "downloads", "sha256", "status")
    for v in rows:
        status = f"withdrawn: {v['withdrawn_reason']}" if v["withdrawn_at"] else "open"
        table.add_row(v["version"], v["license"], str(v["size"]), str(v["downloads"]), v["sha256"][:16],
                      status)
    console.print(table)


@app.command("download")
def dataset_download(
    ref: Annotated[str, typer.Argument(help="org/name[@version]; default: the latest version")], hub: HubOpt,
    out: Annotated[Path, typer.Option("--out", dir_okay=False, help="where to write the file")],
    accept_licence: Annotated[bool, typer.Option(
        "--accept-licence", help="accept the licence's obligations (once per org; a ledger entry)")] = False,
    file_format: Annotated[str, typer.Option("--format", help="csv (the published file) or parquet")] = "csv",
    token: TokenOpt = None, org_dir: OptionalOrgDirOpt = None, ca_file: CaFileOpt = None,
) -> None:
    """Download a published version (without credentials: public open data only), as CSV or Parquet, resuming
    a partial download and checking its SHA-256 on arrival."""
    from consortium.node.open_data import DownloadError, download

    dataset, _, version = ref.partition("@")
    if file_format not in ("csv", "parquet"):
        fail(f"--format: csv or parquet, not {file_format!r}")
    with _anonymous_or_member(hub, token, org_dir, ca_file) as client:
        record = call(client.get_json, f"/api/datasets/{dataset}/versions/{version or 'latest'}")
        anonymous = token is None and org_dir is None
        if record["obligations"] and not accept_licence:
            fail(f"{record['license']} carries obligations: {'; '.join(record['obligations'])}. "
                 "Pass --accept-licence to accept them")
        if record["obligations"] and not anonymous:
            call(client.post_json, "/api/licences/accept", {"license": record["license"]})
        try:
            got = call(download, client, dataset, record["version"], out,
                       record["license"] if anonymous and accept_licence else None, file_format)
        except DownloadError as exc:
            fail(str(exc))
    console.print(f"downloaded {got['dataset']}@{got['version']} to {out} ({got['size']} bytes, sha256 "
                  "verified)")
