"""Where `sxpm serve` sends what it cannot answer: the `[runner]` fallback's rules."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from sxpm.errors import ManifestError
from sxpm.home import Home
from sxpm.project.manifest import Project
from sxpm.runner.fallback import Upstream, fallback_config, parse_upstream

KEY = {"SXPM_FALLBACK_KEY": "sk-test"}


def test_https_or_loopback_http_with_the_key_from_the_environment() -> None:
    up = parse_upstream({"fallback": "https://api.example.com/v1/",
                         "fallback_key_env": "SXPM_FALLBACK_KEY"}, "config.json", KEY)
    assert up == Upstream("https://api.example.com/v1", "sk-test")
    assert "sk-test" not in repr(up)
    for url in ("http://127.0.0.1:8000/v1", "http://localhost:1/v1", "http://[::1]:9/v1"):
        assert parse_upstream({"fallback": url}, "config.json", {}) is not None
    assert parse_upstream({}, "config.json", {}) is None


@pytest.mark.parametrize(("table", "words"), [
    ({"fallback": "http://api.example.com/v1"}, "in the clear"),
    ({"fallback": "https://me:pw@api.example.com/v1"}, "credentials"),
    ({"fallback": "ftp://api.example.com/v1"}, "http(s)"),
    ({"fallback": "https://api.example.com/v1?x=1"}, "query"),
    ({"fallback": "https://x/v1", "fallback_key_env": "NOT_SET_HERE"}, "NOT_SET_HERE"),
    ({"fallback": "https://x/v1", "fallback_key_env": "a b"}, "environment variable"),
])
def test_bad_upstreams_are_refused(table: dict[str, Any], words: str) -> None:
    with pytest.raises(ManifestError) as err:
        parse_upstream(table, "config.json", KEY)
    assert words in err.value.one_line() and "$.runner." in err.value.one_line()


def test_the_project_table_wins_over_the_home(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    home.root.mkdir()
    assert fallback_config(home, None, {}) is None
    home.save_config({"runner": {"fallback": "https://home.example/v1"}})
    assert fallback_config(home, None, {}) == Upstream("https://home.example/v1")
    (tmp_path / "simplex.toml").write_text(
        '[package]\nname = "app"\nversion = "1.0.0"\n\n'
        '[runner]\nfallback = "https://project.example/v1"\n'
        'fallback_key_env = "SXPM_FALLBACK_KEY"\n')
    project = Project.load(tmp_path)  # the schema knows the table
    assert fallback_config(home, project, KEY) == Upstream("https://project.example/v1",
                                                           "sk-test")


def test_serve_refuses_a_cleartext_upstream_at_start(cli: Any, tmp_path: Path) -> None:
    (tmp_path / "simplex.toml").write_text(
        '[package]\nname = "app"\nversion = "1.0.0"\n\n'
        '[runner]\nfallback = "http://api.example.com/v1"\n')
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = cli.fail("serve", "--port", str(port), code=2)
    assert "in the clear" in r.stderr and len(r.stderr.strip().splitlines()) <= 2, r.stderr
