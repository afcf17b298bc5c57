"""import: bring in models already on disk (GGUF files, Ollama's store, the HF cache)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from sxpm.cli._common import home, json_option


@click.command("import")
@click.argument("source", required=False, metavar="PATH|NAME[:TAG]|REPO")
@click.option("--ollama", "from_ollama", is_flag=True,
              help="From Ollama's store ($OLLAMA_MODELS, default ~/.ollama/models); "
                   "SOURCE is NAME[:TAG], all models without it.")
@click.option("--hf", "from_hf", is_flag=True,
              help="From the Hugging Face cache ($HF_HUB_CACHE, default "
                   "~/.cache/huggingface/hub); SOURCE is OWNER/REPO, all without it.")
@click.option("--name", help="Model name (default: the GGUF's general.name, else the file's).")
@click.option("--version", "version", help="Version (default: local); any tag will do.")
@json_option
def import_(source: str | None, from_ollama: bool, from_hf: bool, name: str | None,
            version: str | None, as_json: bool) -> None:
    """Import models already on disk into the store and install them, hard-linking the
    files (a copy only across file systems).

    \b
    Examples:
      sxpm import ./models/llama-3.2-1b-q4_k_m.gguf --name llama-3.2-1b
      sxpm import --ollama llama3.2:1b
      sxpm import --hf bartowski/Llama-3.2-1B-Instruct-GGUF
    """
    from sxpm.ops import importer

    if from_ollama and from_hf:
        raise click.UsageError("give --ollama or --hf, not both")
    if (from_ollama or from_hf) and (name or version):
        raise click.UsageError("--name and --version apply to a PATH import; Ollama and "
                               "Hugging Face models keep their own names")
    h = home()
    if from_ollama:
        done = importer.import_ollama(h, source)
    elif from_hf:
        done = importer.import_hf(h, source)
    elif source is None:
        raise click.UsageError("give a PATH, or --ollama / --hf")
    else:
        done = [importer.import_path(h, Path(source), name=name, version=version)]
    if as_json:
        click.echo(json.dumps(importer.describe_imported(done), indent=2, sort_keys=True))
        return
    for item in done:
        how = f"{item.linked} linked" + (f", {item.copied} copied" if item.copied else "")
        click.echo(f"imported {item.installed.name}@{item.installed.version} as {item.ref} "
                   f"({how})")
