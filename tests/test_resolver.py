"""Resolver tests as data: index snapshots plus cases with the expected outcome.

Each ``tests/resolver/cases/*.json`` names an index snapshot (a list of index lines)
in ``tests/resolver/index/``, the requirements, optionally ``preferred`` (the lock) and
``memory_budget``, and either ``resolved`` (name -> ``version`` or ``version/variant``)
or ``conflicted`` (substrings the error must contain).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sxpm.core.versions import VersionReq
from sxpm.resolver import Requirement, ResolutionImpossible, resolve
from sxpm.resolver.lines import LinesProvider
from sxpm.resolver.resolve import UnknownNameError

DATA = Path(__file__).parent / "resolver"
CASES = sorted((DATA / "cases").glob("*.json"))


def load(case: dict) -> tuple[LinesProvider, list[Requirement]]:
    lines = json.loads((DATA / "index" / case["index"]).read_text())
    reqs = [Requirement(r["name"], r["kind"], VersionReq.parse(r["req"]), r.get("variant"),
                        r.get("base")) for r in case["requested"]]
    return LinesProvider(lines), reqs


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_case(path: Path) -> None:
    case = json.loads(path.read_text())
    provider, reqs = load(case)
    kwargs = {"preferred": case.get("preferred"), "memory_budget": case.get("memory_budget")}
    if "resolved" in case:
        result = resolve(reqs, provider, **kwargs)
        got = {name: str(r.candidate.version) + (f"/{r.variant.name}" if r.variant else "")
               for name, r in result.artifacts.items()}
        assert got == case["resolved"]
    else:
        with pytest.raises(ResolutionImpossible) as info:
            resolve(reqs, provider, **kwargs)
        text = info.value.one_line()
        for needle in case["conflicted"]:
            assert needle in text, text
        assert info.value.exit_code == 2


def test_unknown_name_suggests_close_names() -> None:
    provider, _ = load({"index": "cognitive.json", "requested": []})
    with pytest.raises(UnknownNameError) as info:
        resolve([Requirement("cognitive-1", "model", VersionReq.parse("^1"))], provider)
    assert "cognitive-1b" in info.value.one_line()


def test_conflict_hint_lists_matching_versions() -> None:
    case = json.loads((DATA / "cases" / "expert_base_conflict_explained.json").read_text())
    provider, reqs = load(case)
    with pytest.raises(ResolutionImpossible) as info:
        resolve(reqs, provider)
    assert "^2: 2.0.0" in info.value.hint
    assert "^1: 1.1.0, 1.0.0" in info.value.hint  # the yanked 1.2.0 is not offered


def test_every_case_is_used() -> None:
    assert len(CASES) >= 15
    assert all(json.loads(p.read_text()).get("index") for p in CASES)
