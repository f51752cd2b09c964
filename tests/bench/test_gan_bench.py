"""`consortium bench gan`: the federated generator and each org alone are trained and judged; bad specs fail."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from consortium.cli import app

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
runner = CliRunner()


def small_gan_spec(tmp_path: Path) -> Path:
    """The example spec with little local work, so the bench runs in seconds."""
    spec = json.loads((EXAMPLES / "gan-digits.json").read_text())
    spec["algorithm"]["hyperparameters"] |= {
        "local_steps": 4,
        "generator_hidden": [32],
        "discriminator_hidden": [32],
    }
    spec["rounds"] = 2
    path = tmp_path / "gan.json"
    path.write_text(json.dumps(spec))
    return path


def test_bench_gan_judges_the_federated_generator_and_each_org_alone(tmp_path: Path) -> None:
    bench_md, out = tmp_path / "BENCHMARKS.md", tmp_path / "gan.json.out"
    result = runner.invoke(
        app,
        [
            "bench",
            "gan",
            str(small_gan_spec(tmp_path)),
            "--samples",
            str(tmp_path / "png"),
            "--json",
            str(out),
            "--markdown",
            str(bench_md),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    labels = [g["label"] for g in report["generators"]]
    assert labels == ["federated (3 orgs)", "org 0 alone", "org 1 alone", "org 2 alone"]
    rows = [g["train_rows"] for g in report["generators"]]
    assert rows[0] == sum(rows[1:])
    for generator in report["generators"]:
        assert len(generator["per_round"]) == 2
        final = generator["final_metrics"]
        assert 0.0 <= final["conditioning_accuracy"] <= 1.0 and final["frechet_distance"] > 0
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == [
        "federated.png",
        "org-0.png",
        "org-1.png",
        "org-2.png",
    ]
    section = bench_md.read_text()
    assert "<!-- bench:gan:begin -->" in section and "federated (3 orgs)" in section


def test_bench_gan_refuses_a_spec_of_another_algorithm() -> None:
    result = runner.invoke(app, ["bench", "gan", str(EXAMPLES / "classifier-digits.json")])
    assert result.exit_code == 2
    assert "gan" in result.output and "classifier" in result.output
