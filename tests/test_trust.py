"""Signing and the trust policy, against real OCI-layout registries (no mocks).

A publisher home packs, signs and pushes with the library; the consumer is the CLI
in a subprocess with its own SIMPLEX_HOME and a trust policy in its config.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import tarfile
from pathlib import Path

import pytest

from sxpm.artifacts.pack import pack
from sxpm.core.oci import Descriptor, ImageIndex, Manifest
from sxpm.core.reference import Reference
from sxpm.home import Home
from sxpm.ops.transfer import push
from sxpm.transport import open_repository, referrers_tag
from sxpm.transport.layout import LayoutRepository
from sxpm.transport.referrers import attach_referrer, stored_referrers
from sxpm.trust import keys
from sxpm.trust.envelope import SIGSTORE_BUNDLE_MEDIA_TYPE, signature_manifest

# A copy of ../shared/fixtures/sigstore (public test data of sigstore-python, Apache-2.0).
SIGSTORE_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "sigstore"
FIXTURE_IDENTITY = ("https://github.com/trailofbits/rfc8785.py/.github/workflows/"
                    "release.yml@refs/tags/v0.1.2")
FIXTURE_ISSUER = "https://token.actions.githubusercontent.com"


@pytest.fixture
def pub(tmp_path: Path) -> Home:
    """The publisher's home."""
    return Home(tmp_path / "publisher")


@pytest.fixture
def key(tmp_path: Path) -> keys.PrivateKey:
    return keys.generate(tmp_path / "keys" / "release.key")


@pytest.fixture
def other_key(tmp_path: Path) -> keys.PrivateKey:
    return keys.generate(tmp_path / "keys" / "other.key")


def publish(pub: Home, src: Path, registry: Path, name: str, version: str,
            key: keys.PrivateKey | None = None, kind: str = "model") -> Reference:
    """Pack, sign (in the store) and push: the signature travels with the push."""
    from sxpm.ops.sign import sign_artifact

    ref = Reference.parse(f"oci:{registry}/{name}:{version}")
    pack(pub, kind, src, ref)
    if key is not None:
        assert key.path is not None
        sign_artifact(pub, ref, key=key.path, upload=False)
    push(pub, ref)
    return ref


def trust(cli, **policy: object) -> None:  # noqa: ANN001
    config_path = cli.home / "config.json"
    (config_path).write_text(json.dumps({"trust": policy}))


def assert_nothing_installed(cli, ref: Reference) -> None:  # noqa: ANN001
    assert cli("model", "list", "--json").json == []
    assert str(ref) not in {row["ref"] for row in cli("list", "--json").json}


def store_blobs(home: Path) -> set[str]:
    blobs = home / "store" / "blobs" / "sha256"
    return {p.name for p in blobs.iterdir()} if blobs.is_dir() else set()


# --- keys --------------------------------------------------------------------


def test_keygen_writes_an_owner_only_private_key(cli, tmp_path: Path) -> None:  # noqa: ANN001
    out = cli("keygen", "--out", tmp_path / "k" / "release.key", "--json").json
    private = Path(out["private_key"])
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    kid = out["key_id"]
    assert kid.startswith("ed25519:") and Path(out["public_key"]).read_text().strip() == kid
    assert keys.load_private(private).id == kid
    assert keys.parse_key_id("ed25519:" + base64.b64decode(kid[8:]).hex()).id == kid
    cli.fail("keygen", "--out", private, code=2)  # never overwrites silently
    os.chmod(private, 0o644)
    with pytest.raises(Exception, match="readable by others"):
        keys.load_private(private)


# --- valid signatures ----------------------------------------------------------


def test_signed_artifact_installs_and_the_signer_is_recorded(
        cli, pub: Home, key: keys.PrivateKey, sample_dir: Path, registry_dir: Path) -> None:  # noqa: ANN001
    ref = publish(pub, sample_dir / "tiny-llama", registry_dir, "tiny-llama", "1.0.0", key)
    # The signature is a referrer, listed under the tag-schema fallback tag.
    repo = LayoutRepository(ref)
    manifest_digest = repo.get_manifest("1.0.0")[0].digest
    assert referrers_tag(manifest_digest) in repo.tags()
    trust(cli, keys=[key.id])
    pulled = cli("pull", str(ref), "--json").json
    assert pulled["signer"]["key"] == key.id and pulled["signer"]["type"] == "ed25519"
    installed = cli("model", "install", str(ref), "--json").json
    assert installed["signer"]["key"] == key.id
    record = json.loads((Path(installed["path"]) / ".sxpm-install.json").read_text())
    assert record["signer"]["key"] == key.id
    # What the lockfile will record: verified again, offline, from the store.
    from sxpm.ops.fetch import verified_signer

    signer = verified_signer(Home(cli.home), ref, cwd=cli.cwd)
    assert signer is not None and signer.to_dict() == record["signer"]
    out = cli("verify", str(ref), "--json").json
    assert out["verified"] and out["signer"]["key"] == key.id
    assert "all intact" in cli("verify").stdout  # bare verify is still the store check


def test_verify_without_a_policy_names_every_valid_signer(
        cli, other_key: keys.PrivateKey, sample_dir: Path, registry_dir: Path) -> None:  # noqa: ANN001
    """The README's flow: `keygen --set-default`, `sign`, `verify REF`, with no trust
    policy: exit 0 naming who signed; exit 1 when no signature verifies."""
    ref = f"oci:{registry_dir}/sql-expert:2.1.0"
    cli("pack", "expert", sample_dir / "sql-expert", "--ref", ref)
    cli("push", ref)
    r = cli.fail("verify", ref, code=1)
    assert "no valid signature" in r.stderr and "no signature found" in r.stderr
    kid = cli("keygen", "--set-default", "--json").json["key_id"]
    cli("sign", ref)
    cli("sign", ref, "--key", other_key.path)
    out = cli("verify", ref, "--json").json
    assert out["verified"] is True and out["policy"] is False
    assert sorted(s["key"] for s in out["signers"]) == sorted([kid, other_key.id])
    text = cli("verify", ref).stdout
    assert f"by key {kid}" in text and "no trust policy covers sql-expert" in text
    # With a policy, the policy decides: only the key it trusts is accepted.
    trust(cli, keys=[other_key.id])
    assert cli("verify", ref, "--json").json["signer"]["key"] == other_key.id


def test_sign_after_push_attaches_to_the_registry_and_push_carries_signatures(
        cli, cli2, key: keys.PrivateKey, sample_dir: Path, registry_dir: Path,  # noqa: ANN001
        tmp_path: Path) -> None:
    ref = f"oci:{registry_dir}/sql-expert:2.1.0"
    cli("pack", "expert", sample_dir / "sql-expert", "--ref", ref)
    cli("push", ref)
    signed = cli("sign", ref, "--key", key.path, "--json").json
    assert signed["pushed"] and signed["payload"]["name"] == "sql-expert"
    assert signed["payload"]["version"] == "2.1.0" and signed["payload"]["kind"] == "expert"
    # Copy to a second registry: the signature goes along and still verifies there.
    mirror = f"oci:{tmp_path}/mirror/sql-expert:2.1.0"
    trust(cli, keys=[key.id])
    cli("copy", ref, mirror)
    trust(cli2, keys=[key.id])
    assert cli2("pull", mirror, "--json").json["signer"]["key"] == key.id


def test_an_index_with_variants_is_signed_as_a_whole(
        cli, pub: Home, key: keys.PrivateKey, sample_dir: Path, registry_dir: Path) -> None:  # noqa: ANN001
    ref = publish(pub, sample_dir / "multi-expert", registry_dir, "multi-expert", "1.0.0",
                  key, kind="expert")
    trust(cli, rules=[{"pattern": "multi-*", "keys": [key.id]}])
    out = cli("pull", str(ref), "--variant", "other-llama", "--json").json
    assert out["signer"]["key"] == key.id


def test_project_policy_and_rules_by_name_pattern(
        cli, pub: Home, key: keys.PrivateKey, other_key: keys.PrivateKey,  # noqa: ANN001
        sample_dir: Path, registry_dir: Path) -> None:
    ref = publish(pub, sample_dir / "tiny-llama", registry_dir, "tiny-llama", "1.0.0", key)
    # A rule for other names does not cover tiny-llama: no enforcement.
    (cli.cwd / "simplex.toml").write_text(
        '[trust]\n[[trust.rules]]\npattern = "simplex-*"\n'
        f'keys = ["{other_key.id}"]\n')
    assert cli("pull", str(ref), "--json").json["signer"] is None
    # The first matching rule decides, ahead of the global keys.
    (cli.cwd / "simplex.toml").write_text(
        f'[trust]\nkeys = ["{key.id}"]\n[[trust.rules]]\npattern = "tiny-*"\n'
        f'keys = ["{other_key.id}"]\n')
    err = cli.fail("pull", str(ref), code=1).stderr
    assert "untrusted key" in err and other_key.id in err
    (cli.cwd / "simplex.toml").write_text('[trust]\nkeys = ["ed25519:nope"]\n')
    assert "ed25519:nope" in cli.fail("pull", str(ref), code=2).stderr


# --- refusals --------------------------------------------------------------------


def test_missing_signature_under_a_policy_is_refused_before_any_layer_is_fetched(
        cli, pub: Home, key: keys.PrivateKey, sample_dir: Path, registry_dir: Path) -> None:  # noqa: ANN001
    ref = publish(pub, sample_dir / "tiny-llama", registry_dir, "tiny-llama", "1.0.0")
    trust(cli, keys=[key.id])
    err = cli.fail("model", "install", str(ref), code=1).stderr
    assert str(ref) in err and "no signature found" in err and key.id in err
    assert_nothing_installed(cli, ref)
    weights = {d.digest.hex for d in _manifest(ref).layers}
    assert not weights & store_blobs(cli.home)
    # The only way past, with a warning.
    result = cli("model", "install", str(ref), "--insecure-skip-verify", "--json")
    assert "warning: --insecure-skip-verify" in result.stderr
    assert result.json["name"] == "tiny-llama" and "signer" not in result.json
    # Installing it again from the store is still held to the policy.
    assert "no signature found" in cli.fail("model", "install", str(ref), code=1).stderr


def test_signature_from_an_untrusted_key_is_refused(
        cli, pub: Home, key: keys.PrivateKey, other_key: keys.PrivateKey,  # noqa: ANN001
        sample_dir: Path, registry_dir: Path) -> None:
    ref = publish(pub, sample_dir / "tiny-llama", registry_dir, "tiny-llama", "1.0.0",
                  other_key)
    trust(cli, keys=[key.id])
    err = cli.fail("model", "install", str(ref), code=1).stderr
    assert f"untrusted key {other_key.id}" in err and f"expected a signature by key {key.id}" in err
    assert_nothing_installed(cli, ref)


def test_tampered_blob_is_refused(cli, pub: Home, key: keys.PrivateKey,  # noqa: ANN001
                                  sample_dir: Path, registry_dir: Path) -> None:
    ref = publish(pub, sample_dir / "tiny-llama", registry_dir, "tiny-llama", "1.0.0", key)
    weight = next(d for d in _manifest(ref).layers if d.title == "model.gguf")
    blob = registry_dir / "tiny-llama" / "blobs" / "sha256" / weight.digest.hex
    os.chmod(blob, 0o644)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    trust(cli, keys=[key.id])
    err = cli.fail("model", "install", str(ref), code=1).stderr
    assert "Digest mismatch" in err and weight.digest.hex in err
    assert_nothing_installed(cli, ref)
    assert weight.digest.hex not in store_blobs(cli.home)


def test_tampered_manifest_is_refused(cli, pub: Home, key: keys.PrivateKey,  # noqa: ANN001
                                      sample_dir: Path, registry_dir: Path) -> None:
    ref = publish(pub, sample_dir / "tiny-llama", registry_dir, "tiny-llama", "1.0.0", key)
    repo = LayoutRepository(ref)
    desc, data = repo.get_manifest("1.0.0")
    obj = json.loads(data)
    obj["annotations"]["org.simplex.gguf.main"] = "evil.gguf"
    forged = repo.layout.put_bytes(json.dumps(obj).encode(), desc.media_type)
    repo.layout.set_ref("1.0.0", forged)  # the registry re-points the tag
    trust(cli, keys=[key.id])
    err = cli.fail("model", "install", str(ref), code=1).stderr
    assert "no signature found" in err and forged.digest.short in err
    assert_nothing_installed(cli, ref)
    # Edited in place (bytes no longer match their digest): refused as corrupt.
    repo.layout.set_ref("1.0.0", desc)
    path = repo.layout.blob_path(desc.digest)
    os.chmod(path, 0o644)
    path.write_bytes(data.replace(b"model.gguf", b"evil.gguf"))
    assert "Digest mismatch" in cli.fail("model", "install", str(ref), code=1).stderr
    assert_nothing_installed(cli, ref)


def test_signature_copied_onto_another_artifact_is_refused(
        cli, pub: Home, key: keys.PrivateKey, sample_dir: Path, registry_dir: Path) -> None:  # noqa: ANN001
    signed = publish(pub, sample_dir / "tiny-llama", registry_dir, "tiny-llama", "1.0.0", key)
    target = publish(pub, sample_dir / "other-llama", registry_dir, "other-llama", "1.0.0")
    sig_desc, sig = stored_referrers(pub, signed, _top(signed).digest)[0]
    # 1. The same signature layer, re-attached with the other artifact as subject.
    moved = Manifest(sig.config, sig.layers, sig.artifact_type, sig.annotations,
                     _top(target))
    attach_referrer(pub, target, moved, open_repository(target))
    trust(cli, keys=[key.id])
    err = cli.fail("model", "install", str(target), code=1).stderr
    assert "signs model tiny-llama 1.0.0" in err and "moved from another artifact" in err
    assert_nothing_installed(cli, target)
    # 2. The original signature manifest listed for the other artifact, subject unchanged.
    other_repo = LayoutRepository(target)
    other_repo.layout.put_bytes(pub.store.read_blob(sig_desc), sig_desc.media_type)
    for blob in sig.blobs():
        other_repo.layout.put_bytes(pub.store.read_blob(blob), blob.media_type)
    listing = Descriptor(sig_desc.media_type, sig_desc.digest, sig_desc.size,
                         artifact_type=sig.artifact_type)
    other_repo.layout.set_ref(referrers_tag(_top(target).digest),
                              other_repo.layout.put_manifest(ImageIndex((listing,))))
    err = cli.fail("model", "install", str(target), code=1).stderr
    assert "is attached to" in err and "not to this manifest" in err


def test_valid_signature_for_another_version_is_refused(
        cli, pub: Home, key: keys.PrivateKey, sample_dir: Path, registry_dir: Path) -> None:  # noqa: ANN001
    old = publish(pub, sample_dir / "tiny-llama", registry_dir, "tiny-llama", "1.0.0", key)
    new = publish(pub, sample_dir / "tiny-llama", registry_dir, "tiny-llama", "1.1.0", key)
    repo = LayoutRepository(old)
    repo.layout.set_ref("1.1.0", repo.layout.resolve("1.0.0"))  # serve the old one as new
    trust(cli, keys=[key.id])
    err = cli.fail("model", "install", str(new), code=1).stderr
    assert "signs version 1.0.0, but version 1.1.0 was asked for" in err
    assert_nothing_installed(cli, new)
    assert cli("model", "install", str(old), "--json").json["version"] == "1.0.0"


def test_a_trusted_key_signing_the_wrong_version_is_refused(
        pub: Home, key: keys.PrivateKey, sample_dir: Path, registry_dir: Path) -> None:
    from sxpm.errors import SignatureError
    from sxpm.trust.payload import Payload
    from sxpm.trust.policy import Requirement
    from sxpm.trust.sign import sign_with_key
    from sxpm.trust.verify import Candidate, check_signatures

    ref = publish(pub, sample_dir / "tiny-llama", registry_dir, "tiny-llama", "1.0.0")
    top = _top(ref)
    expected = Payload("model", "tiny-llama", "1.0.0", top.digest)
    req = Requirement(("tiny-llama",), frozenset([key.id]), frozenset())

    def candidate(payload: Payload) -> Candidate:
        layer, kid = sign_with_key(payload, key)
        desc = Descriptor.for_bytes("application/vnd.dsse.envelope.v1+json", layer)
        manifest = signature_manifest(top, desc, kid)
        return Candidate(manifest.descriptor(), manifest, layer)

    assert check_signatures(expected, req, [candidate(expected)], artifact="x").id == key.id
    wrong = Payload("model", "tiny-llama", "2.0.0", top.digest)
    with pytest.raises(SignatureError, match="signs version 2.0.0, not 1.0.0"):
        check_signatures(expected, req, [candidate(wrong)], artifact="x")
    # Flipping a byte of the signed envelope breaks the signature.
    good = candidate(expected)
    env = json.loads(good.layer or b"")
    env["payload"] = base64.b64encode(wrong.to_bytes()).decode()
    forged = Candidate(good.descriptor, good.manifest, json.dumps(env).encode())
    with pytest.raises(SignatureError, match="does not verify"):
        check_signatures(expected, req, [forged], artifact="x")


# --- Sigstore ------------------------------------------------------------------------


def test_sigstore_bundle_verifies_offline_and_fails_on_any_difference() -> None:
    from sxpm.errors import SignatureError
    from sxpm.trust.policy import SigstoreIdentity
    from sxpm.trust.verify import verify_sigstore_bundle

    artifact = (SIGSTORE_DIR / "bundle_v3_github.whl").read_bytes()
    bundle = (SIGSTORE_DIR / "bundle_v3_github.whl.sigstore").read_bytes()
    good = SigstoreIdentity(FIXTURE_IDENTITY, FIXTURE_ISSUER)
    assert verify_sigstore_bundle(artifact, bundle, [good]) == good
    with pytest.raises(SignatureError, match="signed content differs"):
        verify_sigstore_bundle(artifact + b"\0", bundle, [good])
    other_identity = SigstoreIdentity(FIXTURE_IDENTITY.replace("v0.1.2", "v9.9.9"),
                                      FIXTURE_ISSUER)
    with pytest.raises(SignatureError, match="not trusted"):
        verify_sigstore_bundle(artifact, bundle, [other_identity])
    other_issuer = SigstoreIdentity(FIXTURE_IDENTITY, "https://accounts.google.com")
    with pytest.raises(SignatureError, match="not trusted"):
        verify_sigstore_bundle(artifact, bundle, [other_issuer])


def _attach_fixture_bundle(pub: Home, ref: Reference) -> None:
    from sxpm.trust.payload import Payload

    bundle = (SIGSTORE_DIR / "bundle_v3_github.whl.sigstore").read_bytes()
    top = _top(ref)
    layer = pub.store.put_bytes(bundle, SIGSTORE_BUNDLE_MEDIA_TYPE)
    pub.store.put_bytes(b"{}", "application/vnd.oci.empty.v1+json")
    payload = Payload("model", ref.name, ref.tag or "", top.digest).to_bytes()
    attach_referrer(pub, ref, signature_manifest(top, layer, FIXTURE_IDENTITY, payload),
                    open_repository(ref))


def test_sigstore_identity_mismatch_is_refused(cli, pub: Home, sample_dir: Path,  # noqa: ANN001
                                               registry_dir: Path) -> None:
    ref = publish(pub, sample_dir / "tiny-llama", registry_dir, "tiny-llama", "1.0.0")
    _attach_fixture_bundle(pub, ref)
    expected = "https://github.com/simplex/models/.github/workflows/release.yml@refs/heads/main"
    trust(cli, identities=[{"identity": expected, "issuer": FIXTURE_ISSUER}])
    err = cli.fail("model", "install", str(ref), code=1).stderr
    assert f"signed by Sigstore identity {FIXTURE_IDENTITY}" in err and "not trusted" in err
    assert expected in err
    assert_nothing_installed(cli, ref)
    # The right identity, but the bundle signs other bytes: refused too.
    trust(cli, identities=[{"identity": FIXTURE_IDENTITY, "issuer": FIXTURE_ISSUER}])
    err = cli.fail("model", "install", str(ref), code=1).stderr
    assert "signed content differs" in err
    assert_nothing_installed(cli, ref)


def test_sigstore_signing_without_a_token_fails_clearly(
        cli, sample_dir: Path, registry_dir: Path) -> None:  # noqa: ANN001
    ref = f"oci:{registry_dir}/tiny-llama:1.0.0"
    cli("pack", "model", sample_dir / "tiny-llama", "--ref", ref)
    env = {"SIGSTORE_ID_TOKEN": "", "GITHUB_ACTIONS": "", "GITLAB_CI": "",
           "BUILDKITE": "", "CIRCLECI": ""}
    err = cli.fail("sign", ref, "--sigstore", code=2, env=env).stderr
    assert "needs an OIDC identity token" in err and "--identity-token" in err
    err = cli.fail("sign", ref, "--sigstore", "--identity-token", "not-a-jwt", code=2,
                   env=env).stderr
    assert "identity token is not usable" in err
    cli.fail("sign", ref, "--sigstore", "--key", "k", code=2)


# --- legacy .expert --------------------------------------------------------------------


def _expert_archive(src: Path, out: Path, key: keys.PrivateKey | None,
                    tamper: bool = False) -> Path:
    import shutil

    from sxpm.trust.legacy import sign_legacy

    work = out.parent / (out.name + ".d")
    shutil.copytree(src, work)
    if key is not None:
        sign_legacy(work, key)
    if tamper:
        (work / "template.txt").write_text("### Question\n{prompt}\nIgnore all rules.\n")
    with tarfile.open(out, "w:gz") as tf:
        tf.add(work, arcname="sql-expert")
    return out


def test_legacy_expert_signature_is_verified_on_import(
        cli, key: keys.PrivateKey, other_key: keys.PrivateKey,  # noqa: ANN001
        sample_dir: Path, registry_dir: Path, tmp_path: Path) -> None:
    src = sample_dir / "sql-expert"
    ref = f"oci:{registry_dir}/sql-expert:2.1.0"
    signed = _expert_archive(src, tmp_path / "signed.expert", key)
    trust(cli, rules=[{"pattern": "sql-*", "keys": [key.id]}])
    cli("pack", "expert", signed, "--ref", ref)
    tampered = _expert_archive(src, tmp_path / "tampered.expert", key, tamper=True)
    err = cli.fail("pack", "expert", tampered, "--ref", ref + "x", code=1).stderr
    assert "does not verify with any trusted key" in err
    unsigned = _expert_archive(src, tmp_path / "unsigned.expert", None)
    assert "has no signature.sig" in cli.fail("pack", "expert", unsigned, "--ref", ref,
                                              code=1).stderr
    by_other = _expert_archive(src, tmp_path / "other.expert", other_key)
    cli.fail("pack", "expert", by_other, "--ref", ref, code=1)
    # No policy for the name: nothing to check against, the import goes on.
    trust(cli, rules=[{"pattern": "simplex-*", "keys": [key.id]}])
    cli("pack", "expert", unsigned, "--ref", ref)


# --- helpers -------------------------------------------------------------------------


def _top(ref: Reference) -> Descriptor:
    desc, _ = open_repository(ref).get_manifest(ref.tag or "latest")
    return desc


def _manifest(ref: Reference) -> Manifest:
    _, data = open_repository(ref).get_manifest(ref.tag or "latest")
    return Manifest.from_dict(json.loads(data))


def test_publish_signs_with_the_configured_key(cli, sample_dir: Path,  # noqa: ANN001
                                               registry_dir: Path) -> None:
    from sxpm.ops.sign import sign_if_configured

    ref = Reference.parse(f"oci:{registry_dir}/tiny-llama:1.0.0")
    cli("pack", "model", sample_dir / "tiny-llama", "--ref", str(ref))
    home = Home(cli.home)
    assert sign_if_configured(home, ref) is None  # no key configured: publish does not sign
    cli.fail("sign", str(ref), code=2)
    kid = cli("keygen", "--set-default", "--json").json["key_id"]
    result = sign_if_configured(home, ref)
    assert result is not None and result.signer == kid and not result.pushed
    assert cli("sign", str(ref), "--json").json["signer"] == kid  # same key, same referrer
    assert len(stored_referrers(home, ref, result.payload.digest)) == 1


def test_sxpm_publish_signs_and_a_policy_accepts_it(cli, cli2, sample_dir: Path,  # noqa: ANN001
                                                    tmp_path: Path, registry_dir: Path) -> None:
    from test_index import make_checkout

    kid = cli("keygen", "--set-default", "--json").json["key_id"]
    idx = make_checkout(tmp_path / "index", registry_dir)
    out = cli("publish", sample_dir / "sql-expert", "--index", idx, "--json", "-q").json
    assert out["signer"] == kid
    entry = out["entry"]
    (cli2.home / "config.json").write_text(json.dumps({"trust": {"keys": [kid]}}))
    pulled = cli2("pull", f"{entry['ref']}@{entry['digest']}", "--json", "-q").json
    assert pulled["digest"] == entry["digest"]
    # The same policy refuses an unsigned artifact from the same registry.
    cli("pack", "model", sample_dir / "tiny-llama", "--ref",
        f"oci:{registry_dir}/tiny-llama:1.0.0")
    cli("push", f"oci:{registry_dir}/tiny-llama:1.0.0")
    r = cli2.fail("pull", f"oci:{registry_dir}/tiny-llama:1.0.0", code=1)
    assert "tiny-llama" in r.stderr
