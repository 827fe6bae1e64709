"""``aipm guardrails validate FILE`` and ``aipm guardrails init [-o FILE] [--force]``."""

from __future__ import annotations

import click


@click.group("guardrails")
def guardrails_group() -> None:
    """Validate or start a guardrails file (success criteria fixed before training)."""


@guardrails_group.command("validate")
@click.argument("file", type=click.Path(dir_okay=False))
def validate_cmd(file: str) -> None:
    """Check FILE and print its name, hash and guardrails (exit 2 on the first error)."""
    from ..guardrails import load_guardrails

    g = load_guardrails(file)
    click.echo(f"{file}: valid")
    click.echo(f"name: {g.name or '(unnamed)'}")
    click.echo(f"hash: {g.hash}")
    click.echo(f"fallback_threshold: {g.fallback_threshold:g}   alpha: {g.alpha:g}")
    if g.traffic_mix:
        mix = ", ".join(f"{k}={w:.3g}" for k, w in g.traffic_mix.items())
        click.echo(f"traffic_mix: {mix}")
    if g.pricing is not None:
        click.echo(f"pricing: input {g.pricing.input_per_1m_tokens:g} / output "
                   f"{g.pricing.output_per_1m_tokens:g} USD per 1M tokens")
    click.echo(f"guardrails ({len(g.guardrails)}):")
    width = max((len(r.metric) for r in g.guardrails), default=0)
    for r in g.guardrails:
        click.echo(f"  {r.metric:<{width}}  {r.direction:<6}  {r.severity:<5}  {r.describe()}")


@guardrails_group.command("init")
@click.option("-o", "--output", "output", default="guardrails.yaml", show_default=True,
              type=click.Path(dir_okay=False), help="Where to write the starter file.")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init_cmd(output: str, force: bool) -> None:
    """Write a commented starter guardrails file."""
    from pathlib import Path

    from ..errors import UsageError
    from ..fsutil import atomic_write
    from ..guardrails import starter_text

    path = Path(output)
    if path.exists() and not force:
        raise UsageError(f"{output}: already exists (use --force to overwrite)")
    text = starter_text(path.name)
    atomic_write(path, text)
    click.echo(f"wrote {output}; edit it, then run: aipm guardrails validate {output}")
