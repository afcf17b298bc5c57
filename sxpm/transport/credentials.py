"""Registry credentials, kept where Docker, oras and podman look for them.

The file is Docker's ``config.json`` (``$DOCKER_CONFIG/config.json``, else
``~/.docker/config.json``): ``auths`` holds ``base64(user:password)`` per host,
``credHelpers`` names a helper per host and ``credsStore`` a default helper. A helper
is the program ``docker-credential-<name>`` speaking its ``get``/``store``/``erase``
protocol on stdin and stdout. Both are read when a command runs, never cached at
import time, and nothing here ever prints or logs a secret.

Precedence is Docker's: the host's ``credHelpers`` entry, then ``credsStore``, then
``auths``; an entry of ``auths`` is read only when no helper has the host. So a
login saved in a helper wins over an old plaintext entry (``store`` also removes that
entry, as ``docker login`` does), and ``erase`` forgets the host in both places.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sxpm.errors import RegistryError
from sxpm.store.layout import write_atomic

_DOCKER_HUB_KEY = "https://index.docker.io/v1/"
_DOCKER_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_DOCKER_HUB_AUTH = "auth.docker.io"


def same_login(registry: str, other: str) -> bool:
    """Whether ``other`` may receive ``registry``'s login though it is another host:
    only Docker Hub's token service, which Docker Hub's login is for."""
    return registry.lower() in _DOCKER_HUB_HOSTS and other.lower() == _DOCKER_HUB_AUTH


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str
    """A password, or an identity (refresh) token when ``username`` is ``<token>``."""

    def __repr__(self) -> str:  # keep secrets out of tracebacks and logs
        return f"Credentials(username={self.username!r}, password='***')"

    @property
    def is_identity_token(self) -> bool:
        return self.username == "<token>"


def config_path() -> Path:
    env = os.environ.get("DOCKER_CONFIG")
    base = Path(env).expanduser() if env else Path.home() / ".docker"
    return base / "config.json"


def containers_auth_paths() -> list[Path]:
    """Where skopeo, podman and buildah keep logins (containers-auth.json(5)), in the
    order they read them; sxpm reads them after Docker's config."""
    if os.environ.get("REGISTRY_AUTH_FILE"):
        return [Path(os.environ["REGISTRY_AUTH_FILE"]).expanduser()]
    paths = []
    if os.environ.get("XDG_RUNTIME_DIR"):
        paths.append(Path(os.environ["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    paths.append(Path(config_home) / "containers" / "auth.json")
    return paths


def _read_config(path: Path | None = None) -> dict[str, Any]:
    path = path or config_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise RegistryError(f"Cannot read the credentials file {path}: {exc}",
                            hint="fix or delete the file, then run `sxpm login` again") from None
    return data if isinstance(data, dict) else {}


def _keys(host: str) -> list[str]:
    if host in _DOCKER_HUB_HOSTS:
        return [_DOCKER_HUB_KEY, "docker.io", "index.docker.io"]
    return [host, f"https://{host}", f"http://{host}", f"https://{host}/v1/"]


def _helper(name: str, action: str, payload: str) -> str:
    program = f"docker-credential-{name}"
    try:
        proc = subprocess.run([program, action], input=payload, capture_output=True,
                              text=True, timeout=60)
    except FileNotFoundError:
        raise RegistryError(f"The credential helper {program!r} named in {config_path()} "
                            "is not installed",
                            hint="install it or remove it from the file") from None
    except subprocess.TimeoutExpired:
        raise RegistryError(f"The credential helper {program!r} did not answer") from None
    if proc.returncode != 0:
        # Helpers say "credentials not found in native keychain" on a miss.
        if action == "get" and "not found" in (proc.stdout + proc.stderr).lower():
            return ""
        raise RegistryError(f"The credential helper {program!r} failed on {action!r}",
                            hint="run it by hand to see why")
    return proc.stdout


def _helper_for(config: dict[str, Any], host: str) -> str | None:
    helpers = config.get("credHelpers") or {}
    for key in _keys(host):
        if isinstance(helpers.get(key), str):
            return str(helpers[key])
    store = config.get("credsStore")
    return store if isinstance(store, str) and store else None


def get(host: str) -> Credentials | None:
    """The credentials stored for ``host`` (``host[:port]``), or None: Docker's config
    first, then the container tools' ``auth.json`` files, with the same rules."""
    for path in [config_path(), *containers_auth_paths()]:
        found = _get_from(_read_config(path), path, host)
        if found is not None:
            return found
    return None


def _get_from(config: dict[str, Any], path: Path, host: str) -> Credentials | None:
    """Docker's precedence within one file: the host's helper, then ``auths``."""
    helper = _helper_for(config, host)
    if helper:
        found = _from_helper(helper, host)
        if found is not None:
            return found
    return _from_auths(config, path, host)


def _from_helper(helper: str, host: str) -> Credentials | None:
    out = _helper(helper, "get", _server_url(host))
    if not out.strip():
        return None
    try:
        obj = json.loads(out)
        username, secret = str(obj["Username"]), str(obj["Secret"])
    except (ValueError, KeyError, TypeError):
        raise RegistryError(f"The credential helper docker-credential-{helper} "
                            "gave an answer sxpm cannot read") from None
    return Credentials(username, secret) if secret else None


def _server_url(host: str) -> str:
    """The name a helper files ``host`` under (Docker Hub's is its old URL)."""
    return _DOCKER_HUB_KEY if host in _DOCKER_HUB_HOSTS else host


def _from_auths(config: dict[str, Any], path: Path, host: str) -> Credentials | None:
    auths = config.get("auths") or {}
    for key in _keys(host):
        entry = auths.get(key)
        if not isinstance(entry, dict):
            continue
        if isinstance(entry.get("identitytoken"), str) and entry["identitytoken"]:
            return Credentials("<token>", entry["identitytoken"])
        if isinstance(entry.get("auth"), str) and entry["auth"]:
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise RegistryError(f"The credentials for {host} in {path} are "
                                    "not valid base64",
                                    hint=f"run `sxpm login {host}` again") from None
            return Credentials(user, password)
        if isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
            return Credentials(entry["username"], entry["password"])
    return None


def store(host: str, creds: Credentials) -> Path:
    """Save credentials for ``host``: in its helper if one is configured, else the file."""
    config = _read_config()
    helper = _helper_for(config, host)
    if helper:
        _helper(helper, "store", json.dumps(
            {"ServerURL": _server_url(host), "Username": creds.username,
             "Secret": creds.password}))
        # An old plaintext entry would outlive the login; Docker keeps an empty one.
        auths = config.get("auths")
        if isinstance(auths, dict) and any(k in auths for k in _keys(host)):
            for key in _keys(host):
                auths.pop(key, None)
            auths[_keys(host)[0]] = {}
            _write(config)
        return config_path()
    auths = config.setdefault("auths", {})
    token = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
    auths[_keys(host)[0]] = {"auth": token}
    _write(config)
    return config_path()


def erase(host: str) -> bool:
    """Forget the credentials of ``host``; False when there were none."""
    config = _read_config()
    found = False
    auths = config.get("auths") or {}
    for key in _keys(host):
        if key in auths:
            del auths[key]
            found = True
    if found:
        _write(config)
    helper = _helper_for(config, host)
    if helper:
        # Erased from the file or not, the helper may hold it too; a helper without
        # it fails on erase, which is no error here.
        had = _from_helper(helper, host) is not None
        try:
            _helper(helper, "erase", _server_url(host))
        except RegistryError:
            if had:
                raise
        found = found or had
    return found


def _write(config: dict[str, Any]) -> None:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Passwords and tokens: owner-only from the first byte.
    write_atomic(path, (json.dumps(config, indent="\t") + "\n").encode(), mode=0o600)
