"""Whatever sxpm writes, it reads back: simplex.toml edits, install records and the home's
config.json, for any text a user or an artifact can put in them (the lock and index lines
are covered in tests/test_properties.py). A value sxpm cannot store must be refused before
anything is written, with sxpm's own error, never written and then unreadable."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sxpm.errors import SxpmError

pytestmark = pytest.mark.timeout(300)

SETTINGS = settings(max_examples=120, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
# Any character a file may hold, emoji and control characters included (not lone
# surrogates, which no UTF-8 file can).
any_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=24)
names = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,20}", fullmatch=True)
reqs = st.sampled_from(["^1.0", "~2.1", "*", ">=1.0, <3", "=1.2.3"])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20)


@SETTINGS
@given(name=names, kind=st.sampled_from(["model", "expert", "package"]), req=reqs,
       variant=st.none() | any_text, base=st.none() | any_text)
def test_every_simplex_toml_edit_reads_back(name: str, kind: str, req: str,
                                           variant: str | None, base: str | None) -> None:
    from sxpm.project.manifest import Project, add, init

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        init(root, "app")
        project = Project.load(root / "simplex.toml")
        before = (root / "simplex.toml").read_bytes()
        try:
            add(project, name, kind, req, variant=variant if kind == "model" else None,
                base=base if kind == "expert" else None)
        except SxpmError:
            assert (root / "simplex.toml").read_bytes() == before  # refused, not half-written
            return
        back = {r.name: r for r in Project.load(root / "simplex.toml").requirements()}
        assert name in back
        if kind == "model":
            assert back[name].variant == variant
        if kind == "expert":
            assert back[name].base == base


@SETTINGS
@given(titles=st.lists(any_text, min_size=1, max_size=4), variant=st.none() | any_text)
def test_every_install_record_reads_back(titles: list[str], variant: str | None) -> None:
    from sxpm.artifacts.describe import ArtifactInfo
    from sxpm.core import oci
    from sxpm.installed.records import list_installed
    from sxpm.installed.tree import materialize
    from sxpm.store.layout import OCILayout

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = OCILayout(root / "store", lock_dir=root / "locks")
        store.ensure()
        layers = tuple(store.put_bytes(f"{i}".encode(), oci.MODEL_WEIGHT,
                                       annotations={oci.ANN_TITLE: title})
                       for i, title in enumerate(titles))
        config = store.put_bytes(b"{}", oci.MODEL_CONFIG)
        manifest = oci.Manifest(config, layers, artifact_type=oci.MODEL_ARTIFACT)
        desc = store.put_manifest(manifest)
        info = ArtifactInfo("model", "m", "1.0.0", desc, manifest, variant, {})
        try:
            materialize(store, info, root / "home", "oci:/r/m:1.0.0")
        except SxpmError:
            assert not list_installed(root / "home")  # refused: nothing installed
            return
        (item,) = list_installed(root / "home")
        assert item.record["variant"] == variant
        assert set(item.record["files"]) == {layer.annotations[oci.ANN_TITLE]
                                             for layer in layers}


@SETTINGS
@given(data=st.dictionaries(st.text(max_size=12), json_values, max_size=6))
def test_the_home_config_reads_back(data: dict[str, object]) -> None:
    from sxpm.home import Home

    with tempfile.TemporaryDirectory() as tmp:
        home = Home(Path(tmp))
        home.save_config(data)
        assert home.config() == data
        assert json.loads(home.config_path.read_text()) == data
