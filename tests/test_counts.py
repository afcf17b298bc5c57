"""One `sxpm install` does each piece of work once: a real CLI run, counted from inside.

The CLI runs in a subprocess, as a user runs it, with a ``sitecustomize`` put first on
its path that counts, without changing behaviour: opens of ``simplex.toml`` (Python's
audit hook sees every open), trust policies built, digests computed (every hash object
is wrapped; each ``hexdigest()`` is recorded), and signatures evaluated.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

from sxpm.artifacts.pack import pack
from sxpm.core.oci import ImageIndex, parse_manifest_bytes
from sxpm.core.reference import Reference
from sxpm.home import Home
from sxpm.ops.sign import sign_artifact
from sxpm.ops.transfer import push
from sxpm.transport import open_repository
from sxpm.transport.layout import LayoutRepository
from sxpm.trust import keys

COUNTER = '''
import atexit, hashlib, json, os, sys

_out = os.environ["SXPM_COUNTS"]
counts = {"toml_reads": 0, "policy_loads": 0, "hashes": {}, "evaluated": {}}


def _audit(event, args):
    if event != "open" or not isinstance(args[0], (str, bytes, os.PathLike)):
        return
    if os.path.basename(os.fsdecode(args[0])) != "simplex.toml":
        return
    mode, flags = args[1], args[2]
    reading = ("r" in mode and "+" not in mode) if isinstance(mode, str) else \\
        (flags & os.O_ACCMODE) == os.O_RDONLY
    if reading:
        counts["toml_reads"] += 1


sys.addaudithook(_audit)


class _Counted:
    def __init__(self, h):
        self._h = h

    def update(self, data):
        self._h.update(data)

    def hexdigest(self):
        text = self._h.hexdigest()
        counts["hashes"][text] = counts["hashes"].get(text, 0) + 1
        return text

    def digest(self):
        return self._h.digest()

    def copy(self):
        return _Counted(self._h.copy())

    def __getattr__(self, name):
        return getattr(self._h, name)


_new, _sha256 = hashlib.new, hashlib.sha256


def _wrapped_new(name, data=b"", **kw):
    h = _Counted(_new(name, **kw))
    if data:
        h.update(data)
    return h


def _wrapped_sha256(data=b"", **kw):
    h = _Counted(_sha256(**kw))
    if data:
        h.update(data)
    return h


hashlib.new, hashlib.sha256 = _wrapped_new, _wrapped_sha256

import sxpm.trust.policy as _policy  # noqa: E402
import sxpm.trust.verify as _verify  # noqa: E402

_load = _policy.load_policy


def _counted_load(*a, **kw):
    counts["policy_loads"] += 1
    return _load(*a, **kw)


_policy.load_policy = _counted_load
_evaluate = _verify._evaluate


def _counted_evaluate(candidate, *a, **kw):
    key = str(candidate.descriptor.digest)
    counts["evaluated"][key] = counts["evaluated"].get(key, 0) + 1
    return _evaluate(candidate, *a, **kw)


_verify._evaluate = _counted_evaluate


@atexit.register
def _write():
    with open(_out, "w") as fh:
        json.dump(counts, fh)
'''


def _publish(pub: Home, ref: Reference, sources: list[tuple[Path, str | None]], kind: str,
             key: keys.PrivateKey) -> None:
    for src, variant in sources:
        pack(pub, kind, src, ref, variant=variant)
    assert key.path is not None
    sign_artifact(pub, ref, key=key.path, upload=False)
    push(pub, ref)


def _manifests(ref: Reference) -> dict[str, str]:
    """Every manifest of ``ref`` in its registry and its signature's: hex -> what it is."""
    repo = LayoutRepository(ref)
    top, data = repo.get_manifest(ref.tag or "latest")
    out = {top.digest.hex: f"{ref.name} top"}
    obj = parse_manifest_bytes(data, str(ref))
    if isinstance(obj, ImageIndex):
        out.update({d.digest.hex: f"{ref.name} variant" for d in obj.manifests})
    for sig in open_repository(ref).referrers(top.digest):
        out[sig.digest.hex] = f"{ref.name} signature"
    return out


def test_one_install_of_two_signed_artifacts_does_each_thing_once(
        cli, sample_dir: Path, registry_dir: Path, tmp_path: Path) -> None:  # noqa: ANN001
    pub = Home(tmp_path / "publisher")
    key = keys.generate(tmp_path / "keys" / "release.key")
    model = Reference.parse(f"oci:{registry_dir}/tiny-llama:1.0.0")
    expert = Reference.parse(f"oci:{registry_dir}/sql-expert:2.1.0")
    _publish(pub, model, [(sample_dir / "tiny-llama", "F32"),
                          (sample_dir / "tiny-llama-f16", "F16")], "model", key)
    _publish(pub, expert, [(sample_dir / "sql-expert", None)], "expert", key)
    manifests = {**_manifests(model), **_manifests(expert)}
    assert sorted(manifests.values()) == sorted([
        "tiny-llama top", "tiny-llama variant", "tiny-llama variant", "tiny-llama signature",
        "sql-expert top", "sql-expert signature"])

    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "simplex.toml").write_text(f"""\
[package]
name = "counted"
version = "0.1.0"

[models]
tiny-llama = {{ version = "~1.0", variant = "F16" }}

[experts]
sql-expert = "^2"

[registries]
default = "oci:{registry_dir}"

[trust]
keys = ["{key.id}"]
""")
    counter = tmp_path / "counter"
    counter.mkdir()
    (counter / "sitecustomize.py").write_text(COUNTER)
    out = tmp_path / "counts.json"
    env = {**cli.env, "SXPM_COUNTS": str(out),
           "PYTHONPATH": f"{counter}:{cli.env['PYTHONPATH']}"}
    r = subprocess.run([sys.executable, "-m", "sxpm", "install", "--json", "--manifest-path",
                        str(proj / "simplex.toml")], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert sorted(json.loads(r.stdout)["installed"]) == ["sql-expert", "tiny-llama"]
    lock = (proj / "simplex.lock").read_text()
    assert lock.count(f'signer = "key {key.id}"') == 2
    counts = json.loads(out.read_text())

    assert counts["toml_reads"] == 1
    assert counts["policy_loads"] == 1
    hashed = Counter({what: counts["hashes"].get(hex_, 0) for hex_, what in
                      manifests.items()})
    per_manifest = {f"{what} {hex_[:12]}": counts["hashes"].get(hex_, 0)
                    for hex_, what in manifests.items()}
    assert all(n == 1 for n in per_manifest.values()), per_manifest
    assert hashed  # six manifests, each hashed exactly once
    signatures = {hex_ for hex_, what in manifests.items() if what.endswith("signature")}
    evaluated = {k.split(":", 1)[1]: n for k, n in counts["evaluated"].items()}
    assert {h: evaluated.get(h, 0) for h in signatures} == {h: 1 for h in signatures}
    assert sum(evaluated.values()) == 2
