"""The one name rule and the version rule refuse what a listing could spoof with, and
names compare by one normalisation everywhere (security issue, items 11 and 16)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sxpm.core.names import check_name, normalize_name, same_name, validate_name
from sxpm.core.versions import check_version, parse_version
from sxpm.errors import IndexFormatError, InvalidNameError, InvalidVersionError

SAMPLE = Path(__file__).resolve().parents[1] / "registry-index"
SPOOFS = ["tiny-llama\n", "tiny-llama\r", "tiny\x1b[31m", "tiny\x00", "tiny\u200b", "tiny\t"]


@pytest.mark.parametrize("name", SPOOFS)
def test_names_with_newlines_or_control_characters_are_refused(name: str) -> None:
    for check in (check_name, validate_name):
        with pytest.raises(InvalidNameError):
            check(name)


@pytest.mark.parametrize("vers", ["1.0.0\n", "1.0.0 ", "1.0.0-rc\x1b", "1.0.0+b\n", "\n1.0.0"])
def test_versions_with_newlines_or_control_characters_are_refused(vers: str) -> None:
    with pytest.raises(InvalidVersionError):
        check_version(vers)
    with pytest.raises(InvalidVersionError):
        parse_version(vers)


def test_an_index_line_with_a_spoofed_name_is_refused() -> None:
    from sxpm.index.format import IndexEntry

    line = json.loads((SAMPLE / "packages/ti/ny/tiny-llama").read_text().splitlines()[0])
    line["name"] = "tiny-llama\n"
    with pytest.raises(IndexFormatError):
        IndexEntry.from_dict(line)


def test_one_normalisation() -> None:
    assert normalize_name("Foo_Bar") == "foo-bar" and same_name("Foo_Bar", "foo-bar")
    assert check_name("Foo_Bar") == "Foo_Bar"
    with pytest.raises(InvalidNameError):
        validate_name("Foo_Bar")  # stored names are lower case


def test_a_colliding_line_in_a_names_file_is_refused(tmp_path: Path) -> None:
    """A ``Tiny_Llama`` line in ``tiny-llama``'s file (another repository) is not a
    newer ``tiny-llama``: the file is refused, nothing is picked from it."""
    from sxpm.index.client import IndexClient

    idx = tmp_path / "idx"
    shutil.copytree(SAMPLE, idx, ignore=shutil.ignore_patterns(".github"))
    path = idx / "packages/ti/ny/tiny-llama"
    last = json.loads(path.read_text().splitlines()[-1])
    evil = {**last, "name": "Tiny_Llama", "vers": "9.9.9"}
    path.write_text(path.read_text() + json.dumps(evil) + "\n")
    client = IndexClient(str(idx), offline=True)
    with pytest.raises(IndexFormatError, match="Tiny_Llama"):
        client.entry("tiny-llama")


def test_a_lock_names_compare_normalised() -> None:
    from sxpm.project.lock import Lock

    digest = "sha256:" + "0" * 64
    art = ('[[artifact]]\nname = "{}"\nkind = "model"\nversion = "1.0.0"\n'
           f'source = "oci:/r/x"\ndigest = "{digest}"\nmanifest = "{digest}"\n'
           'dependencies = []\nlayers = []\n')
    head = f'version = 1\nrequirements-hash = "{digest}"\n'
    assert Lock.loads(head + art.format("SQL_Expert")).artifacts[0].name == "SQL_Expert"
    with pytest.raises(ValueError, match="locked twice"):
        Lock.loads(head + art.format("sql-expert") + art.format("SQL_Expert"))
