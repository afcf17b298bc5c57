"""Local -> API fallback: an OpenAI-compatible upstream answers what this server cannot.

Configured in ``simplex.toml`` (``[runner] fallback = "https://host/v1"``) or in the
home's ``config.json`` (``{"runner": {"fallback": ...}}``); the project's table wins.
``fallback_key_env`` names the environment variable that holds the upstream's API key
(the key itself is never written in a file). The URL is the upstream's OpenAI base, as
the ``openai`` client's ``base_url``: ``/chat/completions`` and ``/completions`` are
appended. Prompts and keys travel only over https, or plain http to a loopback address.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from sxpm.core.reference import is_loopback
from sxpm.errors import ManifestError, ModelNotInstalledError
from sxpm.home import Home
from sxpm.project.manifest import MANIFEST, Project

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Connect quickly, but let a slow upstream take its time per token.
TIMEOUT = (10.0, 600.0)


@dataclass(frozen=True)
class Upstream:
    """Where requests go that this server cannot answer, and the key they carry."""

    url: str  # no trailing slash
    key: str | None = field(default=None, repr=False)

    def post(self, path: str, body: dict[str, Any], *, stream: bool) -> Any:
        """POST ``body`` to ``url + path``; the open :class:`requests.Response`."""
        import requests  # heavy: only when a request falls back

        headers = {"Content-Type": "application/json", "Accept":
                   "text/event-stream" if stream else "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        # No redirects: one could carry the key to another host or to plain http.
        return requests.post(self.url + path, json=body, headers=headers, stream=stream,
                             timeout=TIMEOUT, allow_redirects=False)


def falls_back(exc: BaseException, local_kind: str) -> bool:
    """Whether a failed request goes to the upstream: the model (or expert) is not
    installed here, or it could not be loaded (``local_kind`` is the error's API kind)."""
    return isinstance(exc, ModelNotInstalledError) or local_kind == "model_unavailable"


def parse_upstream(table: Mapping[str, Any], source: str,
                   env: Mapping[str, str] | None = None) -> Upstream | None:
    """The upstream of one ``runner`` table (None when it names none)."""
    env = os.environ if env is None else env
    url = table.get("fallback")
    if url is None:
        return None

    def bad(key: str, message: str, hint: str) -> ManifestError:
        return ManifestError(source, message, path=f"$.runner.{key}", hint=hint)

    if not isinstance(url, str) or not url:
        raise bad("fallback", "must be a URL", 'write fallback = "https://host/v1"')
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise bad("fallback", f"{url!r} is not an http(s) URL",
                  'write fallback = "https://host/v1"')
    if parts.username is not None or parts.password is not None:
        raise bad("fallback", "the URL must not hold credentials",
                  "put the key in an environment variable named by fallback_key_env")
    if parts.query or parts.fragment:
        raise bad("fallback", f"{url!r} has a query or fragment",
                  "give the API's base URL, such as https://host/v1")
    if parts.scheme == "http" and not is_loopback(parts.netloc):
        raise bad("fallback", f"plain http to {parts.hostname} would send prompts and the "
                  "key in the clear", "use https (plain http only to a loopback address)")
    key_env = table.get("fallback_key_env")
    key = None
    if key_env is not None:
        if not isinstance(key_env, str) or not _ENV_NAME.match(key_env):
            raise bad("fallback_key_env", "must name an environment variable",
                      'write fallback_key_env = "SXPM_FALLBACK_KEY"')
        key = env.get(key_env)
        if not key:
            raise bad("fallback_key_env", f"the environment variable {key_env} is not set",
                      f"export {key_env}=KEY, or remove fallback_key_env")
    return Upstream(url.rstrip("/"), key)


def fallback_config(home: Home, project: Project | None = None,
                    env: Mapping[str, str] | None = None) -> Upstream | None:
    """The project's ``[runner]`` upstream, else the home's ``runner`` one, else None."""
    if project is not None:
        table = project.data.get("runner")
        if isinstance(table, dict) and "fallback" in table:
            return parse_upstream(table, str(project.root / MANIFEST), env)
    table = home.config().get("runner")
    if table is None:
        return None
    if not isinstance(table, dict):
        raise ManifestError(str(home.config_path), "'runner' must be an object",
                            path="$.runner")
    return parse_upstream(table, str(home.config_path), env)
