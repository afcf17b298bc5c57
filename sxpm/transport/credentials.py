"""Registry credentials, kept where Docker, oras and podman look for them.

The file is Docker's ``config.json`` (``$DOCKER_CONFIG/config.json``, else
``~/.docker/config.json``): ``auths`` holds ``base64(user:password)`` per host,
``credHelpers`` names a helper per host and ``credsStore`` a default helper. A helper
is the program ``docker-credential-<name>`` speaking its ``get``/``store``/``erase``
protocol on stdin and stdout. Both are read when a command runs, never cached at
import time, and nothing here ever prints or logs a secret.
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


def _read_config() -> dict[str, Any]:
    path = config_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise RegistryError(f"Cannot read the credentials file {path}: {exc}",
                            hint="fix or delete the file, then run `sxpm login` again") from None
    return data if isinstance(data, dict) else {}


def _keys(host: str) -> list[str]:
    if host in ("docker.io", "index.docker.io", "registry-1.docker.io"):
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
    """The credentials stored for ``host`` (``host[:port]``), or None."""
    config = _read_config()
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
                raise RegistryError(f"The credentials for {host} in {config_path()} are "
                                    "not valid base64",
                                    hint=f"run `sxpm login {host}` again") from None
            return Credentials(user, password)
        if isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
            return Credentials(entry["username"], entry["password"])
    helper = _helper_for(config, host)
    if helper:
        out = _helper(helper, "get", _keys(host)[0] if host in (
            "docker.io", "index.docker.io") else host)
        if out.strip():
            try:
                obj = json.loads(out)
                return Credentials(str(obj["Username"]), str(obj["Secret"]))
            except (ValueError, KeyError, TypeError):
                raise RegistryError(f"The credential helper docker-credential-{helper} "
                                    "gave an answer sxpm cannot read") from None
    return None


def store(host: str, creds: Credentials) -> Path:
    """Save credentials for ``host``: in its helper if one is configured, else the file."""
    config = _read_config()
    helper = _helper_for(config, host)
    if helper:
        _helper(helper, "store", json.dumps(
            {"ServerURL": host, "Username": creds.username, "Secret": creds.password}))
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
    if helper and not found:
        try:
            _helper(helper, "erase", host)
            found = True
        except RegistryError:
            pass
    return found


def _write(config: dict[str, Any]) -> None:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Passwords and tokens: owner-only from the first byte.
    write_atomic(path, (json.dumps(config, indent="\t") + "\n").encode(), mode=0o600)
