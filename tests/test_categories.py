"""Categories (issue 14, item 2): a model's category and capabilities, read from its GGUF
or set at pack, carried by the manifest, the install record, the index line and every
--json, filtered by `search` and `model list`, and the default model of a category that
`sxpm.load(category=...)` runs."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from test_index import git, lines_of, make_checkout, merge

from sxpm.core.categories import ANN_CAPABILITIES, ANN_CATEGORY, gguf_capabilities, resolve
from sxpm.core.gguf import GGUFHeader
from sxpm.core.names import INSTALL_RECORD

ROOT = Path(__file__).resolve().parents[1]
MODELPACK_SCHEMA = json.loads((ROOT / "sxpm" / "schemas" / "modelpack-config.schema.json")
                              .read_text())


def _blob(home: Path, digest: str) -> Any:
    alg, hexd = digest.split(":")
    return json.loads((home / "store" / "blobs" / alg / hexd).read_bytes())


def _pack(cli: Any, src: Path, ref: str, *extra: str) -> dict[str, Any]:
    out: dict[str, Any] = cli("pack", "model", src, "--ref", ref, *extra, "--json").json
    return out


# --- the rule ------------------------------------------------------------------------


def _header(arch: str, **meta: Any) -> GGUFHeader:
    return GGUFHeader(Path("x.gguf"), 3, {"general.architecture": arch, **meta}, (), 0, 0)


@pytest.mark.parametrize(("meta", "expected"), [
    ({"arch": "llama"}, ("completion",)),
    ({"arch": "llama", "tokenizer.chat_template": "{{ x }}"}, ("chat", "completion")),
    ({"arch": "llama", "llama.pooling_type": 1}, ("embedding",)),
    ({"arch": "llama", "llama.pooling_type": 0}, ("completion",)),  # none: generative
    ({"arch": "bert", "bert.pooling_type": 2}, ("embedding",)),
    ({"arch": "nomic-bert"}, ("embedding",)),  # an encoder embeds without a pooling key
])
def test_the_rule_reads_pooling_templates_and_architectures(meta: dict[str, Any],
                                                            expected: tuple[str, ...]) -> None:
    header = _header(meta.pop("arch"), **meta)
    assert gguf_capabilities(header) == expected
    traits = resolve(None, None, header)
    assert traits is not None
    assert traits.category == ("mnemonic" if "embedding" in expected else "cognitive")
    # What is declared wins; the rest still comes from the GGUF.
    declared = resolve("specialist", None, header)
    assert declared is not None and declared.capabilities == expected
    assert declared.category == "specialist"
    assert resolve(None, ("chat",), header) == resolve("cognitive", ("chat",), None)


# --- pack, install, --json -------------------------------------------------------------


def test_pack_reads_the_gguf_and_writes_config_and_annotations(cli: Any, sample_dir: Path,
                                                               registry_dir: Path) -> None:
    cases = {"embed-llama": ("mnemonic", ["embedding"], ["embedding"]),
             "chat-llama": ("cognitive", ["chat", "completion"], ["text"]),
             "tiny-llama": ("cognitive", ["completion"], ["text"])}
    for name, (category, caps, outputs) in cases.items():
        ref = f"oci:{registry_dir}/{name}:1.0.0"
        out = _pack(cli, sample_dir / name, ref)
        assert (out["category"], out["capabilities"]) == (category, caps), name
        manifest = cli("inspect", ref, "--json").json["manifest"]
        assert manifest["annotations"][ANN_CATEGORY] == category
        assert manifest["annotations"][ANN_CAPABILITIES] == ",".join(caps)
        config = _blob(cli.home, manifest["config"]["digest"])
        jsonschema.validate(config, MODELPACK_SCHEMA)  # still the unchanged upstream schema
        assert config["config"]["capabilities"]["outputTypes"] == outputs
    rows = {r["name"]: r for r in cli("list", "--json").json}
    assert (rows["embed-llama"]["category"], rows["embed-llama"]["capabilities"]) == (
        "mnemonic", ["embedding"])
    # A package or expert has none.
    cli("pack", "package", sample_dir / "simplex-hello", "--ref",
        f"oci:{registry_dir}/simplex-hello:0.1.0")
    rows = {r["name"]: r for r in cli("list", "--json").json}
    assert (rows["simplex-hello"]["category"], rows["simplex-hello"]["capabilities"]) == (
        None, [])


def test_pack_overrides_and_install_records_them(cli: Any, sample_dir: Path,
                                                 registry_dir: Path) -> None:
    ref = f"oci:{registry_dir}/sql-coder:1.0.0"
    out = _pack(cli, sample_dir / "chat-llama", ref, "--category", "specialist",
                "--capability", "chat")
    assert (out["category"], out["capabilities"]) == ("specialist", ["chat"])
    installed = cli("model", "install", ref, "--json", "-q").json
    assert (installed["category"], installed["capabilities"]) == ("specialist", ["chat"])
    record = json.loads((Path(installed["path"]) / INSTALL_RECORD).read_text())
    assert (record["category"], record["capabilities"]) == ("specialist", ["chat"])
    info = cli("model", "info", "sql-coder", "--json").json
    assert (info["category"], info["capabilities"]) == ("specialist", ["chat"])
    # Only the category given: the capabilities still come from the GGUF.
    emb = f"oci:{registry_dir}/embed-as-specialist:1.0.0"
    out = _pack(cli, sample_dir / "embed-llama", emb, "--category", "specialist")
    assert (out["category"], out["capabilities"]) == ("specialist", ["embedding"])


def test_the_runner_lists_what_the_record_declares(lib_home: Any, sample_dir: Path,
                                                   registry_dir: Path) -> None:
    """/v1/models and /api/show read capabilities by the same rule: the record first."""
    import sxpm
    from sxpm.runner.catalog import capabilities, is_embedding
    from sxpm.runner.locate import find_model

    for name, extra in (("chat-llama", {"category": "specialist", "capabilities": ["chat"]}),
                        ("embed-llama", {})):
        ref = lib_home.parse_ref(f"oci:{registry_dir}/{name}:1.0.0")
        sxpm.pack(lib_home, "model", sample_dir / name, ref, **extra)
        sxpm.install(lib_home, ref)
    assert capabilities(find_model(lib_home, "chat-llama")) == ["chat"]  # GGUF: chat, completion
    embed = find_model(lib_home, "embed-llama")
    assert capabilities(embed) == ["embedding"] and is_embedding(embed)


def test_a_record_written_before_categories_is_read_from_its_gguf(
        cli: Any, sample_dir: Path, registry_dir: Path) -> None:
    ref = f"oci:{registry_dir}/embed-llama:1.0.0"
    _pack(cli, sample_dir / "embed-llama", ref)
    path = Path(cli("model", "install", ref, "--json", "-q").json["path"])
    record_path = path / INSTALL_RECORD
    record = json.loads(record_path.read_text())
    del record["category"], record["capabilities"]
    os.chmod(record_path, 0o644)
    record_path.write_text(json.dumps(record))
    rows = cli("model", "list", "--category", "mnemonic", "--json").json
    assert [(r["name"], r["capabilities"]) for r in rows] == [("embed-llama", ["embedding"])]


def test_bad_categories_and_capabilities_exit_2(cli: Any, sample_dir: Path,
                                                registry_dir: Path) -> None:
    ref = f"oci:{registry_dir}/tiny-llama:1.0.0"
    r = cli.fail("pack", "model", sample_dir / "tiny-llama", "--ref", ref, "--category",
                 "reasoning", code=2)
    assert "cognitive" in r.stderr and "mnemonic" in r.stderr
    cli.fail("pack", "model", sample_dir / "tiny-llama", "--ref", ref, "--capability",
             "vision", code=2)
    r = cli.fail("pack", "expert", sample_dir / "sql-expert", "--ref",
                 f"oci:{registry_dir}/sql-expert:2.1.0", "--category", "specialist", code=2)
    assert "models" in r.stderr
    cli.fail("model", "list", "--category", "reasoning", code=2)
    cli.fail("search", "x", "--category", "reasoning", code=2)
    assert cli("list", "--json").json == []  # nothing was packed


# --- the index ---------------------------------------------------------------------------


def test_index_lines_search_and_info_carry_categories(cli: Any, sample_dir: Path,
                                                      tmp_path: Path,
                                                      registry_dir: Path) -> None:
    idx = make_checkout(tmp_path / "index", registry_dir)
    for name, extra in (("embed-llama", ()), ("tiny-llama", ()),
                        ("chat-llama", ("--category", "specialist"))):
        out = cli("publish", sample_dir / name, "--name", name, "--version", "1.0.0",
                  "--index", idx, *extra, "--json", "-q").json
        merge(idx, out["branch"])
    assert out["entry"]["category"] == "specialist"
    line = lines_of(idx, "embed-llama")[0]
    assert (line["category"], line["capabilities"]) == ("mnemonic", ["embedding"])
    # A line from before categories (no such keys) stays valid next to them.
    old = {k: v for k, v in lines_of(idx, "tiny-llama")[0].items()
           if k not in ("category", "capabilities")}
    (idx / "packages" / "ot" / "he").mkdir(parents=True)
    (idx / "packages" / "ot" / "he" / "other-llama").write_text(
        json.dumps({**old, "name": "other-llama"}) + "\n")
    git(idx, "add", "-A")
    git(idx, "commit", "-q", "-m", "An old line")
    assert cli("index", "verify", idx, "--json").json["problems"] == []
    cli("index", "build", idx)

    def found(*args: str) -> list[tuple[str, Any]]:
        hits = cli("search", *args, "--index", idx, "--json").json
        return [(h["name"], h["category"]) for h in hits]

    assert found("--category", "mnemonic") == [("embed-llama", "mnemonic")]
    assert found("llama", "--category", "specialist") == [("chat-llama", "specialist")]
    assert ("other-llama", None) in found("llama")
    assert found("other", "--category", "cognitive") == []  # not known: not matched
    info = cli("info", "embed-llama", "--index", idx, "--json").json
    assert info["selected"]["category"] == "mnemonic"
    assert "category" not in cli("info", "other-llama", "--index", idx, "--json").json[
        "selected"]


# --- model list, load(category=...) ------------------------------------------------------


@pytest.fixture
def installed(lib_home: Any, sample_dir: Path, registry_dir: Path) -> Any:
    """tiny-llama (cognitive), embed-llama and embed-b (both mnemonic), installed."""
    import sxpm

    for name, src in (("tiny-llama", "tiny-llama"), ("embed-llama", "embed-llama"),
                      ("embed-b", "embed-llama")):
        ref = lib_home.parse_ref(f"oci:{registry_dir}/{name}:1.0.0")
        sxpm.pack(lib_home, "model", sample_dir / src, ref)
        sxpm.install(lib_home, ref)
    return lib_home


def test_model_list_filters_by_category(cli: Any, installed: Any) -> None:
    rows = cli("model", "list", "--category", "mnemonic", "--json").json
    assert sorted(r["name"] for r in rows) == ["embed-b", "embed-llama"]
    assert all(r["category"] == "mnemonic" for r in rows)
    rows = cli("model", "list", "--category", "cognitive", "--json").json
    assert [(r["name"], r["capabilities"]) for r in rows] == [("tiny-llama", ["completion"])]
    assert cli("model", "list", "--category", "specialist", "--json").json == []
    assert "no specialist models installed" in cli("model", "list", "--category",
                                                   "specialist").stdout
    assert len(cli("model", "list", "--json").json) == 3


def test_load_by_category(installed: Any, tmp_path: Path,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    import sxpm
    from sxpm.errors import AmbiguousModelError, InputError, NotFoundError
    from sxpm.runner.defaults import default_model

    monkeypatch.chdir(tmp_path)
    # The only installed model of its category.
    assert sxpm.load(category="cognitive").model.name == "tiny-llama"
    # Two and no default: one error naming both and how to set a default.
    with pytest.raises(AmbiguousModelError) as err:
        sxpm.load(category="mnemonic")
    text = err.value.one_line()
    assert "embed-b, embed-llama" in text and "default_models" in text
    assert "default = true" in text and "\n" not in text
    with pytest.raises(NotFoundError, match="No installed specialist model"):
        sxpm.load(category="specialist")
    with pytest.raises(InputError, match="Unknown category"):
        sxpm.load(category="reasoning")
    with pytest.raises(InputError, match="not both"):
        sxpm.load("tiny-llama", category="cognitive")

    # The home's default.
    config = installed.config_path
    config.write_text(json.dumps({"default_models": {"mnemonic": "embed-llama"}}))
    assert sxpm.load(category="mnemonic").model.name == "embed-llama"
    assert default_model("mnemonic") == "embed-llama"
    config.write_text(json.dumps({"default_models": {"mnemonic": "tiny-llama"}}))
    with pytest.raises(InputError, match="it is cognitive"):
        sxpm.load(category="mnemonic")
    config.write_text(json.dumps({"default_models": {"memory": "embed-llama"}}))
    with pytest.raises(InputError, match="unknown category 'memory'"):
        sxpm.load(category="mnemonic")
    config.write_text(json.dumps({"default_models": {"mnemonic": "embed-llama"}}))

    # The project's default wins over the home's.
    project = tmp_path / "proj"
    project.mkdir()
    (project / "simplex.toml").write_text(
        '[package]\nname = "agent"\nversion = "0.1.0"\n\n[models]\n'
        'tiny-llama = "^1.0"\nembed-b = { version = "^1.0", default = true }\n')
    monkeypatch.chdir(project)
    assert sxpm.load(category="mnemonic").model.name == "embed-b"
    assert sxpm.load(category="cognitive").model.name == "tiny-llama"
    # A default the project marks but has not installed is named, not passed over.
    (project / "simplex.toml").write_text(
        '[package]\nname = "agent"\nversion = "0.1.0"\n\n[models]\n'
        'embed-c = { version = "^1.0", default = true }\n')
    with pytest.raises(NotFoundError, match="'embed-c' as a default model"):
        sxpm.load(category="mnemonic")


def test_default_marks_models_only(cli: Any, tmp_path: Path) -> None:
    (tmp_path / "simplex.toml").write_text(
        '[package]\nname = "agent"\nversion = "0.1.0"\n\n[experts]\n'
        'sql-expert = { version = "^2.1", default = true }\n')
    r = cli.fail("tree", f"--manifest-path={tmp_path / 'simplex.toml'}", code=2)
    assert "only models have a default" in r.stderr
