"""A hostile registry and index against sxpm's HTTP clients (issue 13, network items).

Each test names the attack. The servers are real (``tests/hostile_server.py``: a
threaded HTTP server on loopback, the "other host" on ``127.0.0.2``); time is bounded
by pytest-timeout and the transport's own (shortened) bounds, never by asserting on
the clock.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import socket
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Cli
from hostile_server import HostileRegistry, Request, Server, drip, zeros

from sxpm.core.progress import SILENT
from sxpm.core.reference import Digest, Reference
from sxpm.errors import RegistryError, SxpmError
from sxpm.transport import credentials
from sxpm.transport.base import TransportOptions
from sxpm.transport.remote import MAX_TAG_PAGES, RemoteRepository

pytestmark = pytest.mark.timeout(60)

USER, PASSWORD = "alice", "s3cret-Pa55"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
FAST = TransportOptions(retries=1, backoff_s=0.05, retry_max_s=5, timeout_s=5,
                        stall_bytes=64 * 1024, stall_window_s=1.0, deadline_s=2.0)
MiB = 1024 * 1024


@pytest.fixture
def docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Docker config of this test's own."""
    folder = tmp_path / "docker"
    folder.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(folder))
    return folder


def login(docker: Path, host: str, user: str = USER, password: str = PASSWORD) -> None:
    path = docker / "config.json"
    config = json.loads(path.read_text()) if path.exists() else {}
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    config.setdefault("auths", {})[host] = {"auth": token}
    path.write_text(json.dumps(config))


@pytest.fixture
def other() -> Iterator[Server]:
    """Another host: a second loopback address that records what reaches it."""
    server = Server("127.0.0.2")
    yield server
    server.close()


@contextlib.contextmanager
def serve(registry: HostileRegistry) -> Iterator[HostileRegistry]:
    try:
        yield registry
    finally:
        registry.close()


@pytest.fixture
def registry() -> Iterator[HostileRegistry]:
    with serve(HostileRegistry(basic=(USER, PASSWORD))) as server:
        yield server


def repo(registry: Server, options: TransportOptions = FAST, name: str = "x") -> RemoteRepository:
    return RemoteRepository(Reference.parse(f"{registry.host}/{name}"), options)


# --- item 4: credentials go only to the host they were stored for ------------------------


def test_tag_list_next_page_on_another_host_is_refused(registry: HostileRegistry,
                                                       other: Server, docker: Path) -> None:
    login(docker, registry.host)

    def first_page(req: Request) -> bool:
        if "/tags/list" not in req.path or not req.headers.get("authorization"):
            return False
        req.send(200, json.dumps({"name": "x", "tags": ["1.0.0"]}).encode(),
                 {"Link": f'<{other.url}/v2/x/tags/list?last=1.0.0>; rel="next"'})
        return True

    registry.hooks.append(first_page)
    with pytest.raises(RegistryError, match="next page is on another host"):
        repo(registry).tags()
    assert registry.auths("/tags/list")[-1] == BASIC  # the registry did get the login
    assert other.log == []  # the other host got nothing at all, least of all the login


def test_upload_location_on_another_host_gets_no_credentials(registry: HostileRegistry,
                                                             other: Server, docker: Path,
                                                             tmp_path: Path) -> None:
    from sxpm.store.layout import OCILayout

    login(docker, registry.host)
    store = OCILayout(tmp_path / "store")
    desc = store.put_bytes(b"layer bytes", "application/octet-stream")

    def upload_elsewhere(req: Request) -> bool:
        if req.method == "POST" and "/blobs/uploads/" in req.path \
                and req.headers.get("authorization"):
            req.send(202, headers={"Location": f"{other.url}/upload/1"})
            return True
        return False

    other.hooks.append(lambda req: req.send(201) or True)
    registry.hooks.append(upload_elsewhere)
    assert repo(registry).push_blob(desc, store, SILENT.start("test", 0))
    assert [m for m, _, _ in other.log] == ["PUT"]
    assert other.auths() == [None]
    assert BASIC in registry.auths("/blobs/uploads/")


def test_bearer_realm_on_another_host_gets_no_registry_password(other: Server,
                                                                 docker: Path) -> None:
    tokens = {"served": 0}

    def token(req: Request) -> bool:
        tokens["served"] += 1
        req.send(200, b'{"token": "t0k3n"}')
        return True

    other.hooks.append(token)
    with serve(HostileRegistry(realm=f"{other.url}/token")) as registry:
        login(docker, registry.host)
        registry.manifests["x:1"] = ("application/vnd.oci.image.manifest.v1+json", b"{}")
        with pytest.raises(SxpmError):  # "{}" is no manifest; the token part is what counts
            repo(registry).get_manifest("1")
        assert tokens["served"] == 1
        assert other.auths("/token") == [None]
        assert registry.auths("/manifests/")[-1] == "Bearer t0k3n"


def test_realm_host_with_its_own_login_gets_that_login(other: Server, docker: Path) -> None:
    other.hooks.append(lambda req: req.send(200, b'{"access_token": "t"}') or True)
    with serve(HostileRegistry(realm=f"{other.url}/token")) as registry:
        login(docker, registry.host)
        login(docker, other.host, "realm-user", "realm-pass")
        repo(registry).has_blob(registry.add_blob(b"z"))
        expected = "Basic " + base64.b64encode(b"realm-user:realm-pass").decode()
        assert other.auths("/token") == [expected]


def _non_loopback_address() -> str | None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # no packet leaves: UDP connect picks a route
        address: str = probe.getsockname()[0]
    except OSError:
        return None
    finally:
        probe.close()
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def test_the_credential_rule_keeps_plain_http_to_loopback_or_insecure() -> None:
    """The one rule every request asks (no network: the live check below needs an
    address other than loopback, which tests here do not serve on unless asked)."""
    from sxpm.core.http import may_send_credentials

    assert may_send_credentials("https://reg.example:5000/v2/", "reg.example:5000",
                                insecure=False)
    assert not may_send_credentials("http://reg.example:5000/v2/", "reg.example:5000",
                                    insecure=False)
    assert may_send_credentials("http://reg.example:5000/v2/", "reg.example:5000",
                                insecure=True)
    assert may_send_credentials("http://127.0.0.1:5000/v2/", "127.0.0.1:5000",
                                insecure=False)
    assert not may_send_credentials("https://other.example/token", "reg.example:5000",
                                    insecure=True)


def test_no_credentials_over_plain_http_to_a_host_that_is_not_loopback(docker: Path) -> None:
    # Serving on this machine's own non-loopback address is opt-in: test traffic stays
    # on loopback unless SXPM_TEST_OWN_ADDRESS=1 says this machine's address may be used.
    if os.environ.get("SXPM_TEST_OWN_ADDRESS") != "1":
        pytest.skip("set SXPM_TEST_OWN_ADDRESS=1 to serve on this machine's own address")
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no address other than loopback")
    realm = Server(address)
    realm.hooks.append(lambda req: req.send(200, b'{"token": "t"}') or True)
    try:
        with serve(HostileRegistry(realm=f"{realm.url}/token")) as registry:
            login(docker, registry.host)
            login(docker, realm.host, "realm-user", "realm-pass")
            repo(registry).has_blob(registry.add_blob(b"z"))
            assert realm.auths("/token") == [None]  # its own login, but plain HTTP
            insecure = TransportOptions(insecure=True, retries=0)
            repo(registry, insecure, name="y").has_blob(registry.add_blob(b"z"))
            assert realm.auths("/token")[-1] is not None  # --insecure allows it
    finally:
        realm.close()


def test_blob_redirected_to_another_host_gets_no_credentials(registry: HostileRegistry,
                                                             other: Server, docker: Path,
                                                             tmp_path: Path) -> None:
    from sxpm.store.layout import OCILayout

    login(docker, registry.host)
    data = os.urandom(100_000)
    digest = registry.add_blob(data)

    def redirect(req: Request) -> bool:
        if f"/blobs/{digest}" in req.path and req.headers.get("authorization"):
            req.send(307, headers={"Location": f"{other.url}/cdn/{digest}"})
            return True
        return False

    registry.hooks.append(redirect)
    other.hooks.append(lambda req: req.send(200, data) or True)
    from sxpm.core.oci import Descriptor

    desc = Descriptor("application/octet-stream", Digest.parse(digest), len(data))
    store = OCILayout(tmp_path / "store")
    with store.writer(desc) as writer:
        repo(registry).fetch_blob(desc, writer, SILENT.start("test", 0))
        writer.commit()
    assert store.has_blob(desc.digest)
    assert other.auths("/cdn/") == [None]


# --- item 5: every body has a bound ------------------------------------------------------


def _huge(req: Request, status: int, content_type: str, announced: bool) -> None:
    total = 64 * MiB
    if announced:
        req.stream(status, total, zeros(total), {"Content-Type": content_type})
        return
    req.h.send_response(status)  # no length: the body runs until the connection closes
    req.h.send_header("Content-Type", content_type)
    req.h.send_header("Connection", "close")
    req.h.end_headers()
    req.h.close_connection = True
    try:
        for chunk in zeros(total):
            req.h.wfile.write(chunk)
    except OSError:
        pass


def _peak_while(fn: object) -> tuple[int, BaseException | None]:
    tracemalloc.start()
    error: BaseException | None = None
    try:
        fn()  # type: ignore[operator]
    except SxpmError as exc:
        error = exc
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, error


@pytest.mark.parametrize("announced", [True, False], ids=["content-length", "until-close"])
@pytest.mark.parametrize("what", ["error body", "tag list", "referrers", "token"])
def test_huge_answers_are_refused_without_being_held(what: str, announced: bool,
                                                     other: Server, docker: Path) -> None:
    realm = f"{other.url}/token" if what == "token" else None
    with serve(HostileRegistry(realm=realm)) as registry:
        def huge(req: Request) -> bool:
            if what == "token":
                _huge(req, 200, "application/json", announced)
                return True
            if req.headers.get("authorization") is None and realm:
                return False
            if what == "error body" and "/manifests/" in req.path:
                _huge(req, 400, "application/json", announced)
            elif what == "tag list" and "/tags/list" in req.path:
                _huge(req, 200, "application/json", announced)
            elif what == "referrers" and "/referrers/" in req.path:
                _huge(req, 200, "application/vnd.oci.image.index.v1+json", announced)
            else:
                return False
            return True

        (other if what == "token" else registry).hooks.append(huge)
        r = repo(registry)
        call = {"error body": lambda: r.get_manifest("1"), "tag list": r.tags,
                "referrers": lambda: r.referrers(Digest.parse("sha256:" + "a" * 64)),
                "token": lambda: r.get_manifest("1")}[what]
        peak, error = _peak_while(call)
        assert error is not None and "\n" not in str(error)
        assert peak < 8 * MiB, f"{what}: {peak / MiB:.1f} MiB held"


def test_an_index_naming_one_manifest_many_times_fetches_and_holds_it_once(
        lib_home, tmp_path: Path) -> None:  # noqa: ANN001
    from sxpm.ops.transfer import pull

    with serve(HostileRegistry()) as registry:
        child = registry.add_manifest("x", "child", [b"layer"])
        pad = {"org.example.pad": "p" * (512 * 1024)}
        child_bytes = registry.manifests[f"x:{child['digest']}"][1]
        fat = dict(child["manifest"], annotations=pad)
        fat_bytes = json.dumps(fat).encode()
        fat_digest = "sha256:" + hashlib.sha256(fat_bytes).hexdigest()
        registry.manifests[f"x:{fat_digest}"] = (fat["mediaType"], fat_bytes)
        assert child_bytes
        entry = {"mediaType": fat["mediaType"], "digest": fat_digest, "size": len(fat_bytes)}
        index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                 "manifests": [entry] * 200}
        data = json.dumps(index).encode()
        registry.manifests["x:1"] = (index["mediaType"], data)
        pull(lib_home, Reference.parse(f"{registry.host}/x:1"), options=FAST)
        gets = [p for m, p, _ in registry.log if m == "GET" and fat_digest in p]
        assert len(gets) == 1, f"the same manifest was fetched {len(gets)} times"


# --- item 9: nothing waits forever ---------------------------------------------------------


def test_endless_tag_pages_are_capped(registry: HostileRegistry, docker: Path) -> None:
    login(docker, registry.host)

    def endless(req: Request) -> bool:
        if "/tags/list" not in req.path or not req.headers.get("authorization"):
            return False
        page = int(req.path.rpartition("page=")[2] or 0) if "page=" in req.path else 0
        req.send(200, json.dumps({"name": "x", "tags": [f"0.0.{page}"]}).encode(),
                 {"Link": f'</v2/x/tags/list?page={page + 1}>; rel="next"'})
        return True

    registry.hooks.append(endless)
    with pytest.raises(RegistryError, match="past .* pages; stopped"):
        repo(registry).tags()
    assert len(registry.auths("/tags/list")) <= MAX_TAG_PAGES + 2  # + the 401


def test_a_dripping_blob_is_cut_as_a_stall(lib_home) -> None:  # noqa: ANN001
    from sxpm.ops.transfer import pull

    with serve(HostileRegistry()) as registry:
        layer = os.urandom(256 * 1024)
        digest = registry.add_manifest("x", "1", [layer])["manifest"]["layers"][0]["digest"]

        def dripping(req: Request) -> bool:
            if f"/blobs/{digest}" not in req.path or req.method != "GET":
                return False
            req.stream(200, len(layer), drip(layer, 0.2))  # 5 bytes a second
            return True

        registry.hooks.append(dripping)
        with pytest.raises(RegistryError, match="stalled: fewer than 65536 bytes in 1 s"):
            pull(lib_home, Reference.parse(f"{registry.host}/x:1"), options=FAST)


def test_a_slow_but_steady_blob_is_not_a_stall(lib_home) -> None:  # noqa: ANN001
    from sxpm.ops.transfer import pull

    with serve(HostileRegistry()) as registry:
        layer = os.urandom(300 * 1024)
        digest = registry.add_manifest("x", "1", [layer])["manifest"]["layers"][0]["digest"]

        def slow(req: Request) -> bool:
            if f"/blobs/{digest}" not in req.path or req.method != "GET":
                return False
            pieces = [layer[i:i + 32 * 1024] for i in range(0, len(layer), 32 * 1024)]
            req.stream(200, len(layer), drip_pieces(pieces, 0.25))  # 128 KiB a second
            return True

        registry.hooks.append(slow)
        pull(lib_home, Reference.parse(f"{registry.host}/x:1"), options=FAST)
        assert lib_home.store.has_blob(Digest.parse(digest))


def drip_pieces(pieces: list[bytes], every_s: float) -> Iterator[bytes]:
    import time

    for piece in pieces:
        yield piece
        time.sleep(every_s)


def test_a_dripping_manifest_hits_the_deadline(registry: HostileRegistry, docker: Path) -> None:
    login(docker, registry.host)

    def dripping(req: Request) -> bool:
        if "/manifests/" not in req.path or not req.headers.get("authorization"):
            return False
        body = json.dumps({"schemaVersion": 2, "pad": "x" * 400}).encode()
        req.stream(200, len(body), drip(body, 0.1),
                   {"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        return True

    registry.hooks.append(dripping)
    with pytest.raises(RegistryError, match="took over 2 s"):
        repo(registry).get_manifest("1")


def drip_headers(req: Request, every_s: float = 0.1) -> None:
    """An answer whose status line and headers come a byte at a time (each byte well
    inside the read timeout), 400 bytes of them: 40 s unless the client gives up."""
    head = b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"x" * 360 + b"\r\nContent-Length: 2\r\n\r\n{}"
    try:
        for chunk in drip(head, every_s):
            req.h.wfile.write(chunk)
            req.h.wfile.flush()
    except OSError:
        pass  # the client hung up, as it should
    req.h.close_connection = True


def test_dripping_headers_hit_the_deadline(registry: HostileRegistry, docker: Path) -> None:
    login(docker, registry.host)

    def dripping(req: Request) -> bool:
        if "/manifests/" not in req.path or not req.headers.get("authorization"):
            return False
        drip_headers(req)
        return True

    registry.hooks.append(dripping)
    with pytest.raises(RegistryError, match="headers took over 2 s"):
        repo(registry).get_manifest("1")


# --- the HTTP index: limits, deadline, userinfo, redirect loops ------------------------------


@pytest.fixture
def index_server() -> Iterator[Server]:
    server = Server()
    yield server
    server.close()


def test_index_file_over_its_limit_is_refused(index_server: Server, tmp_path: Path) -> None:
    from sxpm.index.client import IndexClient

    index_server.hooks.append(lambda req: _huge(req, 200, "application/json", False) or True)
    client = IndexClient(index_server.url, cache_dir=tmp_path / "cache")
    peak, error = _peak_while(client.config)
    assert error is not None and "over 1 MiB; reading stopped" in str(error)
    assert peak < 8 * MiB


def test_dripping_index_file_hits_the_deadline(index_server: Server, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from sxpm.index import client as index_client

    monkeypatch.setattr(index_client, "DEADLINE_S", 1.0)
    body = b'{"registries": []}' + b" " * 400
    index_server.hooks.append(lambda req: req.stream(200, len(body), drip(body, 0.1)) or True)
    client = index_client.IndexClient(index_server.url, cache_dir=tmp_path / "cache")
    with pytest.raises(SxpmError, match="stalled: it took over 1 s"):
        client.config()


def test_dripping_index_headers_hit_the_deadline(index_server: Server, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from sxpm.index import client as index_client

    monkeypatch.setattr(index_client, "DEADLINE_S", 1.0)
    index_server.hooks.append(lambda req: drip_headers(req) or True)
    client = index_client.IndexClient(index_server.url, cache_dir=tmp_path / "cache")
    with pytest.raises(SxpmError, match="headers took over 1 s"):
        client.config()


def test_index_userinfo_is_used_but_never_shown(index_server: Server, tmp_path: Path) -> None:
    from sxpm.index.client import IndexClient
    from sxpm.index.provider import IndexProvider

    index_server.hooks.append(lambda req: req.send(500) or True)
    url = f"http://{USER}:{PASSWORD}@{index_server.host}/idx/"
    client = IndexClient(url, cache_dir=tmp_path / "cache")
    with pytest.raises(SxpmError) as caught:
        client.config()
    assert PASSWORD not in str(caught.value) and PASSWORD not in caught.value.one_line()
    assert index_server.auths("/idx/") == [BASIC]  # the index itself got the login
    assert PASSWORD not in client.location and PASSWORD not in repr(client)
    assert PASSWORD not in IndexProvider(client).source


def test_index_redirect_loop_has_its_own_error(index_server: Server, tmp_path: Path) -> None:
    from sxpm.index.client import IndexClient

    index_server.hooks.append(
        lambda req: req.send(302, headers={"Location": req.path}) or True)
    with pytest.raises(SxpmError, match="redirect loop"):
        IndexClient(index_server.url, cache_dir=tmp_path / "cache").config()


# --- item 19 and item 13 through the CLI ------------------------------------------------------


def test_registry_redirect_loop_has_its_own_error(cli: Cli) -> None:  # noqa: ANN001
    with serve(HostileRegistry()) as registry:
        registry.hooks.append(lambda req: "/manifests/" in req.path and (
            req.send(307, headers={"Location": req.path}) or True))
        r = cli.fail("pull", f"{registry.host}/x:1", code=1)
        assert "redirect loop" in r.stderr and "check the path" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


def test_lock_does_not_store_index_userinfo(cli: Cli, index_server: Server,  # noqa: ANN001
                                            tmp_path: Path) -> None:
    config = json.dumps({"registries": [], "default_registry": "oci:./r"}).encode()
    index_server.hooks.append(
        lambda req: (req.send(200, config) if req.path.endswith("/config.json")
                     else req.send(404)) or True)
    proj = tmp_path / "proj"
    url = f"http://{USER}:{PASSWORD}@{index_server.host}/idx/"
    cli("init", proj, "--index", url)
    r = cli("lock", "--manifest-path", str(proj / "simplex.toml"), ok=False)
    for text in (r.stdout, r.stderr):
        assert PASSWORD not in text
    lock = proj / "simplex.lock"
    if lock.exists():
        text = lock.read_text()
        assert PASSWORD not in text and f"http://{index_server.host}/idx/" in text
    else:
        pytest.fail(f"no lock written: {r.stderr}")


# --- item 12: Docker's precedence for credential helpers --------------------------------------


HELPER = """#!{python}
import json, os, sys
store = os.path.join(os.path.dirname(os.path.abspath(__file__)), "helper-store.json")
data = json.load(open(store)) if os.path.exists(store) else {{}}
action = sys.argv[1]
payload = sys.stdin.read()
if action == "get":
    if payload.strip() not in data:
        print("credentials not found in native keychain"); sys.exit(1)
    user, secret = data[payload.strip()]
    print(json.dumps({{"ServerURL": payload.strip(), "Username": user, "Secret": secret}}))
elif action == "store":
    obj = json.loads(payload)
    data[obj["ServerURL"]] = [obj["Username"], obj["Secret"]]
    json.dump(data, open(store, "w"))
elif action == "erase":
    if data.pop(payload.strip(), None) is None:
        print("credentials not found in native keychain"); sys.exit(1)
    json.dump(data, open(store, "w"))
"""


@pytest.fixture
def helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, docker: Path) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    path = bindir / "docker-credential-sxpmtest"
    path.write_text(HELPER.format(python=sys.executable))
    path.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    return bindir / "helper-store.json"


@pytest.mark.parametrize("kind", ["credsStore", "credHelpers"])
def test_login_in_a_helper_wins_over_an_old_plaintext_entry(kind: str, helper: Path,
                                                            docker: Path) -> None:
    host = "registry.example:5000"
    login(docker, host, "old", "old-password")
    config = json.loads((docker / "config.json").read_text())
    config.update({"credsStore": "sxpmtest"} if kind == "credsStore"
                  else {"credHelpers": {host: "sxpmtest"}})
    (docker / "config.json").write_text(json.dumps(config))
    credentials.store(host, credentials.Credentials("new", "new-password"))
    assert credentials.get(host) == credentials.Credentials("new", "new-password")
    assert "old-password" not in (docker / "config.json").read_text()
    assert base64.b64encode(b"old:old-password").decode() not in \
        (docker / "config.json").read_text()


def test_a_helper_beats_a_plaintext_entry_it_did_not_write(helper: Path,
                                                          docker: Path) -> None:
    host = "registry.example:5000"
    login(docker, host, "old", "old-password")
    helper.write_text(json.dumps({host: ["new", "new-password"]}))
    config = json.loads((docker / "config.json").read_text())
    config["credHelpers"] = {host: "sxpmtest"}
    (docker / "config.json").write_text(json.dumps(config))
    assert credentials.get(host) == credentials.Credentials("new", "new-password")


def test_logout_forgets_the_helper_secret_too(helper: Path, docker: Path) -> None:
    host = "registry.example:5000"
    login(docker, host, "old", "old-password")
    helper.write_text(json.dumps({host: ["new", "new-password"]}))
    config = json.loads((docker / "config.json").read_text())
    config["credHelpers"] = {host: "sxpmtest"}
    (docker / "config.json").write_text(json.dumps(config))
    assert credentials.erase(host)
    assert credentials.get(host) is None
    assert json.loads(helper.read_text()) == {}


def test_a_compressed_bomb_is_bounded_by_what_it_decodes_to(registry: HostileRegistry,
                                                             docker: Path) -> None:
    import gzip

    login(docker, registry.host)
    bomb = gzip.compress(b'{"tags": ["' + b"0" * (64 * MiB) + b'"]}', 9)  # 64 MiB in 64 KiB

    def tags(req: Request) -> bool:
        if "/tags/list" not in req.path or not req.headers.get("authorization"):
            return False
        req.send(200, bomb, {"Content-Type": "application/json", "Content-Encoding": "gzip"})
        return True

    registry.hooks.append(tags)
    peak, error = _peak_while(repo(registry).tags)
    assert error is not None and "reading stopped" in str(error)
    assert peak < 8 * MiB, f"{peak / MiB:.1f} MiB held"
