"""The ``consortium`` command line, assembled from one module per command group.

The commands only parse options and print results; the workflows they start live in the library
(:mod:`consortium.node.actions`, :mod:`consortium.launch`, ...), so scripts and tests run the same code.
"""

from __future__ import annotations

import os

import typer

from consortium.cli import (
    audit,
    bench,
    challenge,
    credits,
    dataset,
    demo,
    environment,
    example,
    hub,
    ledger,
    model,
    node,
    org,
    project,
    proposal,
    run,
    sim,
    testset,
    user,
)

app = typer.Typer(no_args_is_help=True, help="consortium: federated learning across organisations.",
                  pretty_exceptions_enable=False)
for command in (hub.hub, node.node, demo.demo, proposal.vote, credits.credits):
    app.command()(command)
for group, name in [(org.app, "org"), (user.app, "user"), (dataset.app, "dataset"),
                    (environment.app, "environment"), (example.app, "example"), (project.app, "project"), (proposal.app, "proposal"),
                    (run.app, "run"),
                    (model.app, "model"), (ledger.app, "ledger"), (bench.app, "bench"), (sim.app, "sim"),
                    (audit.app, "audit"), (challenge.app, "challenge"), (testset.app, "testset")]:
    app.add_typer(group, name=name)


def main() -> None:
    """``python -m consortium``: the app, with tokenizers kept single-threaded in forked workers."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()
