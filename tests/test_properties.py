"""Property-based tests of every parser of untrusted text: whatever the input, the only
exceptions are sxpm's own (SxpmError subclasses)."""

from __future__ import annotations

import json
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sxpm.errors import SxpmError

pytestmark = pytest.mark.timeout(300)

SETTINGS = settings(max_examples=400, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

REF_ALPHABET = string.ascii_letters + string.digits + ":/@._-+%~ \x00\u00e9"
ref_text = st.one_of(st.text(), st.text(alphabet=REF_ALPHABET, max_size=80),
                     st.builds(lambda a, b, c: f"{a}/{b}:{c}",
                               st.text(alphabet=REF_ALPHABET, max_size=20),
                               st.text(alphabet=REF_ALPHABET, max_size=20),
                               st.text(alphabet=REF_ALPHABET, max_size=20)))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20)


def _only_ours(fn, *args, **kw) -> None:  # noqa: ANN001
    try:
        fn(*args, **kw)
    except SxpmError:
        pass


@SETTINGS
@given(ref_text, st.sampled_from([None, "localhost:5000/ns", "oci:/tmp/reg"]))
def test_reference_parse(text: str, default: str | None) -> None:
    from sxpm.core.reference import Reference

    try:
        ref = Reference.parse(text, default_registry=default)
    except SxpmError:
        return
    assert Reference.parse(str(ref)) == ref  # what parses round-trips


@SETTINGS
@given(st.one_of(st.text(), st.builds(lambda a, h: f"{a}:{h}",
                                      st.sampled_from(["sha256", "sha512", "md5", "SHA256"]),
                                      st.text(alphabet="0123456789abcdefABCDEF", max_size=130))))
def test_digest_parse(text: str) -> None:
    from sxpm.core.reference import Digest

    _only_ours(Digest.parse, text)


@SETTINGS
@given(st.one_of(st.text(max_size=140),
                 st.text(alphabet="^~=<>*,. 0123456789vx-+abc|!", max_size=40)))
def test_version_requirement_parse(text: str) -> None:
    from sxpm.core.versions import VersionReq, parse_version

    try:
        req = VersionReq.parse(text)
        req.matches("1.2.3")
    except SxpmError:
        pass
    _only_ours(parse_version, text)


def _manifestish() -> st.SearchStrategy[object]:
    desc = st.fixed_dictionaries({}, optional={
        "mediaType": st.text(max_size=10) | st.integers(),
        "digest": st.sampled_from(["sha256:" + "a" * 64, "sha256:x", "md5:0"]) | st.integers(),
        "size": st.integers(-5, 10**20) | st.text(max_size=3) | st.booleans(),
        "annotations": st.dictionaries(st.text(max_size=5), json_values, max_size=2)
        | json_values,
        "artifactType": json_values})
    return st.fixed_dictionaries({}, optional={
        "schemaVersion": st.sampled_from([2, 1, "2", None]),
        "mediaType": st.sampled_from(["application/vnd.oci.image.manifest.v1+json",
                                      "application/vnd.oci.image.index.v1+json", "x"]),
        "config": desc | json_values, "layers": st.lists(desc | json_values, max_size=3)
        | json_values, "manifests": st.lists(desc | json_values, max_size=3) | json_values,
        "subject": desc | json_values, "annotations": json_values,
        "artifactType": json_values})


@SETTINGS
@given(st.one_of(st.binary(max_size=200), _manifestish().map(lambda o: json.dumps(o).encode()),
                 json_values.map(lambda o: json.dumps(o).encode())))
def test_manifest_parse(data: bytes) -> None:
    from sxpm.core.oci import parse_manifest_bytes

    _only_ours(parse_manifest_bytes, data, "test")


def _toml_value(v: object) -> str:
    return json.dumps(v) if not isinstance(v, bool) else ("true" if v else "false")


lock_layer = st.fixed_dictionaries({}, optional={
    "path": st.text(max_size=5) | st.integers(), "digest": st.sampled_from(
        ["sha256:" + "b" * 64, "nope", ""]), "size": st.integers(-3, 10**6) | st.text(max_size=2),
    "media-type": st.text(max_size=5)})
lock_artifact = st.fixed_dictionaries({}, optional={
    "name": st.sampled_from(["ok-name", "../x", "", "A"]) | st.integers(),
    "kind": st.sampled_from(["model", "expert", "package", "evil"]),
    "version": st.text(max_size=6), "source": st.text(max_size=6),
    "digest": st.sampled_from(["sha256:" + "c" * 64, "bad"]),
    "manifest": st.sampled_from(["sha256:" + "d" * 64, "bad"]),
    "variant": st.text(max_size=4) | st.integers(), "signer": st.text(max_size=4),
    "dependencies": st.lists(st.text(max_size=4) | st.integers(), max_size=2) | st.text(),
    "layers": st.lists(lock_layer, max_size=2) | st.text(max_size=3),
    "variants": st.lists(st.fixed_dictionaries({}, optional={
        "name": st.sampled_from(["Q4", "Q4", ""]) | st.integers(),
        "manifest": st.sampled_from(["sha256:" + "e" * 64, "bad"]),
        "layers": st.lists(lock_layer, max_size=2) | st.text(max_size=3)}), max_size=2)
    | st.text(max_size=3)})


def _lock_toml(version: object, rhash: object, arts: list[dict], reqs: list[dict]) -> str:
    from tomlkit import dumps

    doc: dict[str, object] = {}
    if version is not None:
        doc["version"] = version
    if rhash is not None:
        doc["requirements-hash"] = rhash
    if reqs:
        doc["requirement"] = reqs
    if arts:
        doc["artifact"] = arts
    return dumps(doc)


@SETTINGS
@given(st.one_of(
    st.text(max_size=300),
    st.builds(_lock_toml, st.sampled_from([1, 2, 0, "1", None, True]),
              st.sampled_from(["abc", "", None, 3]), st.lists(lock_artifact, max_size=3),
              st.lists(st.dictionaries(st.sampled_from(["name", "kind", "req", "variant"]),
                                       st.text(max_size=4) | st.integers(), max_size=4),
                       max_size=2))))
def test_lock_parse(text: str) -> None:
    from sxpm.project.lock import Lock

    _only_ours(Lock.loads, text)


index_entry = st.fixed_dictionaries({}, optional={
    "name": st.sampled_from(["tiny", "../x", "A", ""]) | json_values,
    "vers": st.sampled_from(["1.0.0", "x", "1.0"]) | json_values,
    "kind": st.sampled_from(["model", "expert", "package", "x"]) | json_values,
    "ref": st.sampled_from(["localhost:5000/a/b", "oci:/x", "../"]) | json_values,
    "digest": st.sampled_from(["sha256:" + "e" * 64, "x"]) | json_values,
    "artifactType": json_values, "size": json_values, "yanked": json_values,
    "deps": st.lists(st.dictionaries(st.sampled_from(["name", "req", "kind"]), json_values),
                     max_size=2) | json_values,
    "variants": st.lists(json_values, max_size=2) | json_values,
    "description": json_values, "license": json_values, "tags": json_values})


@SETTINGS
@given(st.one_of(st.text(max_size=300),
                 st.lists(index_entry.map(json.dumps) | st.text(max_size=30), max_size=4)
                 .map("\n".join)), st.booleans())
def test_index_lines_parse(text: str, check: bool) -> None:
    from sxpm.index.format import parse_lines

    _only_ours(parse_lines, text, source="test", check=check)


project_table = st.dictionaries(
    st.sampled_from(["package", "models", "experts", "dependencies", "registries", "trust",
                     "features", "other"]),
    st.dictionaries(st.sampled_from(["name", "version", "tiny", "sql-expert", "default", "x",
                                     "keys"]),
                    json_values | st.dictionaries(st.sampled_from(["version", "variant",
                                                                   "base", "features"]),
                                                  json_values, max_size=3), max_size=3)
    | json_values, max_size=4)


def _project_toml(obj: dict) -> str:
    from tomlkit import dumps

    try:
        return dumps(obj)
    except Exception:  # noqa: BLE001 - a value TOML cannot express: fall back to text
        return str(obj)


@SETTINGS
@given(st.one_of(st.text(max_size=300), project_table.map(_project_toml)))
def test_project_parse(text: str) -> None:
    from sxpm.core.validation import validate
    from sxpm.project.manifest import Project, parse_toml

    def load() -> None:
        data = parse_toml(text, "simplex.toml")
        validate(data, "simplex-toml", "simplex.toml")
        from pathlib import Path

        project = Project(Path("/nonexistent/simplex.toml"), data)
        project.requirements()
        project.requirements_hash()

    _only_ours(load)


# --- whatever sxpm writes, it reads back --------------------------------------------

any_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=24)
names = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,20}", fullmatch=True)
digests = st.builds(lambda b: f"sha256:{b.hex()}", st.binary(min_size=32, max_size=32))
# A repository as the lock stores one: a registry's, or a layout directory whose path
# may hold any character a path can (an emoji), but no ':', '@', whitespace or NUL.
path_text = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"),
                                  blacklist_characters=":@/\\"), min_size=1, max_size=12)
sources = st.one_of(
    st.builds("localhost:5000/{}/{}".format,
              *[st.from_regex(r"[a-z0-9]{1,10}", fullmatch=True)] * 2),
    st.builds("oci:/r/{}".format, path_text.filter(lambda t: t not in (".", ".."))))


@st.composite
def locks(draw: st.DrawFn) -> object:
    from dataclasses import replace

    from sxpm.core.reference import Digest, Reference
    from sxpm.project.lock import Lock, LockedArtifact, LockedLayer, LockedVariant

    def layer_list() -> tuple[LockedLayer, ...]:
        return tuple(LockedLayer(draw(any_text), Digest.parse(draw(digests)),
                                 draw(st.integers(0, 2**40)), draw(any_text))
                     for _ in range(draw(st.integers(0, 3))))

    arts = []
    for name in draw(st.lists(names, max_size=3, unique_by=lambda n: n.replace("_", "-"))):
        art = LockedArtifact(
            name, draw(st.sampled_from(["model", "expert", "package"])), draw(any_text),
            Reference.parse_locator(draw(sources)), Digest.parse(draw(digests)),
            Digest.parse(draw(digests)),
            draw(st.none() | any_text), tuple(sorted(draw(st.lists(names, max_size=3)))),
            layer_list(), draw(st.none() | any_text))
        if draw(st.booleans()):  # each machine chooses among its variants (format 2)
            art = replace(art, manifest=None, variant=None, layers=(), variants=tuple(
                LockedVariant(v, Digest.parse(draw(digests)), layer_list())
                for v in draw(st.lists(any_text, min_size=1, max_size=3, unique=True))))
        arts.append(art)
    reqs = [{"name": draw(names), "kind": "model", "req": draw(any_text),
             **({"variant": draw(any_text)} if draw(st.booleans()) else {})}
            for _ in range(draw(st.integers(0, 2)))]
    return Lock(draw(digests), reqs, arts, draw(any_text), draw(any_text))


@SETTINGS
@given(locks())
def test_every_lock_sxpm_writes_reads_back(lock: object) -> None:
    """An emoji (or any character) in a file name, a source or a signer: the lock
    sxpm writes is the lock it reads."""
    from sxpm.project.lock import Lock

    assert isinstance(lock, Lock)
    back = Lock.loads(lock.dumps())
    assert back.dumps() == lock.dumps()
    # The lowest format that holds it: an older sxpm still reads a lock without
    # per-machine variants.
    assert back.version == (2 if any(a.variants for a in lock.artifacts) else 1)
    assert sorted(back.artifacts, key=lambda a: a.name) == sorted(lock.artifacts,
                                                                  key=lambda a: a.name)


@SETTINGS
@given(names, st.from_regex(r"(0|[1-9][0-9]{0,3})\.(0|[1-9][0-9]{0,3})\.(0|[1-9][0-9]{0,3})",
                            fullmatch=True), digests, any_text, any_text,
       st.lists(any_text, max_size=3))
def test_every_index_line_sxpm_writes_reads_back(name: str, vers: str, digest: str,
                                                 description: str, license: str,
                                                 tags: list[str]) -> None:
    from sxpm.core.artifact import Dependency, Variant
    from sxpm.core.reference import Digest, Reference
    from sxpm.core.versions import VersionReq
    from sxpm.index.format import IndexEntry, load_line

    entry = IndexEntry(name, vers, "model", Reference.parse_locator("localhost:5000/ns/tiny"),
                       Digest.parse(digest),
                       "application/vnd.cncf.model.manifest.v1+json", 1,
                       (Dependency(name, VersionReq.parse("^1")),),
                       (Variant(description, Digest.parse(digest), 3, None, None),),
                       description, license, tuple(tags))
    line = entry.to_line()
    back = IndexEntry.from_dict(load_line(line, source="x", line=1), check=False)
    assert back.to_line() == line and back == entry
