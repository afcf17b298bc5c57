from __future__ import annotations

import os

import pytest

from sxpm.core.names import validate_name
from sxpm.core.reference import Digest, Reference
from sxpm.errors import InvalidDigestError, InvalidNameError, InvalidReferenceError

HEX = "a" * 64


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("localhost:5000/simplex/tiny:1.0.0", "localhost:5000", "simplex/tiny", "1.0.0", None),
        ("ghcr.io/org/model", "ghcr.io", "org/model", None, None),
        (f"reg.example.org/a/b:v1@sha256:{HEX}", "reg.example.org", "a/b", "v1", HEX),
        (f"localhost/x@sha256:{HEX}", "localhost", "x", None, HEX),
        ("[::1]:5000/x:1", "[::1]:5000", "x", "1", None),
    ],
)
def test_remote_forms(text: str, registry: str, repository: str, tag: str | None,
                      digest: str | None) -> None:
    ref = Reference.parse(text)
    assert (ref.registry, ref.repository, ref.tag) == (registry, repository, tag)
    assert (ref.digest.hex if ref.digest else None) == digest
    assert str(Reference.parse(str(ref))) == str(ref)  # round-trips


def test_layout_form_is_absolute(tmp_path) -> None:  # noqa: ANN001
    os.chdir(tmp_path)
    ref = Reference.parse("oci:./registry/tiny-llama:1.0.0")
    assert ref.is_layout
    assert ref.repository == str(tmp_path / "registry" / "tiny-llama")
    assert ref.tag == "1.0.0"
    assert ref.name == "tiny-llama"
    assert str(ref) == f"oci:{tmp_path}/registry/tiny-llama:1.0.0"


def test_default_registry_applies_to_bare_names() -> None:
    ref = Reference.parse("simplex/tiny:2.0.0", default_registry="oci:/srv/reg")
    assert ref.is_layout and ref.repository == "/srv/reg/simplex/tiny"
    ref = Reference.parse("tiny:2.0.0", default_registry="registry.example.org/simplex")
    assert (ref.registry, ref.repository) == ("registry.example.org", "simplex/tiny")


@pytest.mark.parametrize(
    "text",
    ["", " ", "localhost:5000/UPPER:1", "localhost:5000/a:bad tag", "localhost:5000/",
     "localhost:5000/a@sha256:short", "localhost:5000/a@md5:" + "0" * 32, "oci::tag",
     "localhost:5000/a/../b:1", "tiny:1.0"],
)
def test_invalid_references(text: str) -> None:
    with pytest.raises(InvalidReferenceError) as info:
        Reference.parse(text)
    assert info.value.exit_code == 2
    assert "Invalid reference" in info.value.one_line()


def test_digest_parse() -> None:
    d = Digest.parse(f"sha256:{HEX}")
    assert str(d) == f"sha256:{HEX}"
    for bad in ["sha256:" + "A" * 64, "sha256:abc", "nope", "sha1:" + "0" * 40]:
        with pytest.raises(InvalidDigestError):
            Digest.parse(bad)


@pytest.mark.parametrize("name", ["tiny-llama", "a", "sql_expert.v2", "0" * 64])
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", "-x", "Upper", "a/b", "..", "x" * 65, "a b", "é"])
def test_invalid_names(name: str) -> None:
    with pytest.raises(InvalidNameError):
        validate_name(name)
