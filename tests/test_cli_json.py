"""One JSON shape (issue 14, item 8): every command's ``--json`` output validates against
its schema in ``sxpm/schemas/cli/``, and every key is snake_case."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from test_everyday import world  # noqa: F401  (the fixture: an index and its registry)

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "sxpm" / "schemas" / "cli"
SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")

# Commands whose --json needs llama-cpp-python or a running server (run, ps): their
# schemas are checked for style here and their outputs in tests/test_runner.py's world.
NEEDS_LLAMA = {"run", "ps"}


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory, sample_dir: Path,
            world: tuple[Path, Path]) -> dict[str, list[Any]]:  # noqa: F811
    """Run every command that has --json on real data; {schema name: [outputs]}."""
    from conftest import Cli
    from test_index import git, make_checkout, merge

    idx, registry = world
    base = tmp_path_factory.mktemp("cli-json")
    home = base / "home"
    home.mkdir()
    (home / "config.json").write_text(json.dumps({"index": str(idx)}))
    cli = Cli(home, base)
    out: dict[str, list[Any]] = {}

    def run(name: str, *args: object) -> Any:
        value = cli(*args, "--json").json
        out.setdefault(name, []).append(value)
        return value

    reg = f"oci:{registry}"
    mine = f"oci:{base / 'mine'}"
    run("pack", "pack", "model", sample_dir / "tiny-llama", "--ref", f"{mine}/llama:3.0.0",
        "--variant", "F32")
    run("push", "push", f"{mine}/llama:3.0.0")
    run("copy", "copy", f"{mine}/llama:3.0.0", f"{mine}/copied:3.0.0")
    run("pull", "pull", f"{reg}/tiny-llama:1.0.0", "-q")
    run("inspect", "inspect", f"{reg}/tiny-llama:1.0.0")
    run("model-install", "model", "install", "tiny-llama@^1.0", "-q")
    run("expert-install", "expert", "install", "sql-expert", "-q")
    for kind in ("model", "expert"):
        run(f"{kind}-list", kind, "list")
    run("model-info", "model", "info", "tiny-llama")
    run("expert-info", "expert", "info", "sql-expert")
    run("list", "list")
    run("du", "du")
    run("verify", "verify")
    key = base / "keys" / "k.pem"
    run("keygen", "keygen", "--out", key)
    run("sign", "sign", f"{mine}/llama:3.0.0", "--key", key)
    run("verify", "verify", f"{mine}/llama:3.0.0")
    run("referrers", "referrers", f"{mine}/llama:3.0.0")
    run("tags", "tags", f"{reg}/tiny-llama")
    run("search", "search", "llama")
    run("info", "info", "tiny-llama@1.0.0")
    run("info", "info", "sql-expert")
    run("doctor", "doctor")
    run("import", "import", sample_dir / "tiny-llama" / "model.gguf", "--name", "imported")

    pub = make_checkout(base / "index", base / "pubreg")
    done = run("publish", "publish", sample_dir / "tiny-llama", "--index", pub, "--name",
               "pub-llama", "--version", "1.0.0", "--variant", "F32", "-q")
    merge(pub, done["branch"])
    merge(pub, run("yank", "yank", "pub-llama@1.0.0", "--index", pub)["branch"])
    git(pub, "add", "-A")
    run("index-build", "index", "build", pub)
    run("index-verify", "index", "verify", pub)

    proj = base / "proj"
    cli("init", proj, "--index", idx)
    p = f"--manifest-path={proj / 'simplex.toml'}"
    cli("add", "tiny-llama@~1.0", "--model", p)
    cli("add", "sql-expert", "--expert", p)
    run("lock", "lock", p)
    run("lock", "lock", "--check", p)
    run("update", "update", p, "-q")
    run("install", "install", p, "-q")
    run("tree", "tree", p)
    run("why", "why", "tiny-llama", p)
    bundle = base / "b.tar"
    run("bundle-create", "bundle", "create", f"{reg}/tiny-llama:1.1.0", "-o", bundle)
    other = Cli(base / "home2", base)
    (base / "home2").mkdir()
    out.setdefault("bundle-import", []).append(
        other("bundle", "import", bundle, "--json").json)
    run("rm", "rm", "imported")
    run("gc", "gc", "--dry-run")
    run("gc", "gc")
    return out


def _json_commands() -> set[str]:
    """Schema names of every command that takes --json, read from sxpm/cli/ itself."""
    names: set[str] = set()
    for path in (ROOT / "sxpm" / "cli").glob("*.py"):
        if path.name == "_common.py":
            continue  # defines json_option
        text = path.read_text()
        for m in re.finditer(r"@json_option|@click.option\(\"--json\"", text):
            before = text[:m.start()]
            cmd = re.findall(r"@(\w+)\.command\((?:name=)?(?:\"([\w-]+)\")?", before)[-1]
            fn = re.search(r"def (\w+)\(", text[m.end():])
            assert fn is not None
            group, explicit = cmd
            name = explicit or fn.group(1).rstrip("_").replace("_cmd", "")
            prefix = {"index_group": "index-", "bundle_group": "bundle-"}.get(group, "")
            names.add(prefix + name)
    return names


def _schema(name: str) -> Any:
    return json.loads((SCHEMAS / f"{name}.schema.json").read_text())


def test_every_json_command_has_a_schema_and_a_run(outputs: dict[str, list[Any]]) -> None:
    commands = _json_commands()
    # The kind group defines list/install/info once for every kind.
    commands -= {"list_cmd", "install_cmd", "info_cmd", "list", "install", "info"}
    commands |= {f"{k}-{c}" for k in ("model", "expert")
                 for c in ("list", "install", "info")} | {"list", "install", "info"}
    schemas = {p.name.removesuffix(".schema.json") for p in SCHEMAS.glob("*.schema.json")}
    assert commands <= schemas, sorted(commands - schemas)
    assert commands - NEEDS_LLAMA <= set(outputs), sorted(commands - NEEDS_LLAMA - set(outputs))


def test_every_output_validates_against_its_schema(outputs: dict[str, list[Any]]) -> None:
    from jsonschema import Draft202012Validator

    for name, values in sorted(outputs.items()):
        validator = Draft202012Validator(_schema(name))
        for value in values:
            errors = sorted(validator.iter_errors(value), key=lambda e: list(e.path))
            assert not errors, f"{name}: {errors[0].message} at {list(errors[0].path)}"


def _keys(schema: Any, path: str = "$") -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    if isinstance(schema, dict):
        for key, sub in schema.get("properties", {}).items():
            found.append((path, key))
            found += _keys(sub, f"{path}.{key}")
        for word in ("items", "additionalProperties", "anyOf", "oneOf", "$defs"):
            sub = schema.get(word)
            if not isinstance(sub, dict | list):
                continue
            subs = sub.values() if word == "$defs" else sub if isinstance(sub, list) else [sub]
            for s in subs:
                found += _keys(s, path)
    return found


def test_schemas_name_keys_in_one_style() -> None:
    from jsonschema import Draft202012Validator

    for path in sorted(SCHEMAS.glob("*.schema.json")):
        schema = json.loads(path.read_text())
        Draft202012Validator.check_schema(schema)
        bad = [f"{where}.{key}" for where, key in _keys(schema) if not SNAKE.match(key)]
        assert not bad, f"{path.name}: {bad}"
        words = {key for _, key in _keys(schema)}
        assert not words & {"vers", "deps", "bytes", "mediaType"}, (path.name, words)


def test_the_cli_schemas_are_package_data() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert '"schemas/cli/*.json"' in text

