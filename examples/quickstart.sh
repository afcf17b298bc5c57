#!/usr/bin/env bash
# The sxpm quick start on the embedded default registry (an OCI layout directory):
# no server to start, nothing downloaded but Python packages.
#   pack a tiny real model (two variants) and an expert, push them to a local
#   registry, pull and install them into a fresh home, list, inspect and run them.
set -euo pipefail
cd "$(dirname "$0")/.."
# sxpm goes into a virtual environment (scripts/venv): a stock Debian or Ubuntu Python
# refuses system-wide pip installs. PYTHON picks the interpreter (default python3).
venv="$(SXPM_VENV="${SXPM_VENV:-.venv-quickstart}" scripts/venv run)"
sxpm() { "$venv/bin/sxpm" "$@"; }
step() { printf '\n\033[1m$ sxpm %s\033[0m\n' "$*"; sxpm "$@"; }

work="${QUICKSTART_DIR:-$(mktemp -d)}"
"$venv/bin/python" fixtures/samples.py "$work/samples" >/dev/null   # real GGUF files, made locally
REG="oci:$work/registry"                                   # the embedded registry

export SIMPLEX_HOME="$work/publisher"
step pack model "$work/samples/tiny-llama" --ref "$REG/tiny-llama:1.0.0" --variant F32
step pack model "$work/samples/tiny-llama-f16" --ref "$REG/tiny-llama:1.0.0" --variant F16
step pack expert "$work/samples/sql-expert" --ref "$REG/sql-expert:2.1.0"
step push "$REG/tiny-llama:1.0.0"
step push "$REG/sql-expert:2.1.0"

export SIMPLEX_HOME="$work/user"                           # a fresh home: another machine
step pull "$REG/tiny-llama:1.0.0" --variant F16
step model install "$REG/tiny-llama:1.0.0" --variant F16
step pull "$REG/sql-expert:2.1.0"
step list
step model info tiny-llama
step inspect "$REG/sql-expert:2.1.0"
step verify
step expert install "$REG/sql-expert:2.1.0" --for tiny-llama
step doctor
step run tiny-llama -p "list users" --max-tokens 16
step run tiny-llama --expert sql-expert -p "list users" --max-tokens 16
printf '\nquick start done; everything is under %s\n' "$work"
