"""keygen, sign, and `verify REF`: signing artifacts and checking their signatures."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from sxpm.cli._common import emit_json, home, json_option, transport

if TYPE_CHECKING:
    from sxpm.core.reference import Reference
    from sxpm.trust.verify import VerifiedSigner


@click.command()
@click.option("--out", "out", type=click.Path(path_type=Path),
              help="Private key file (default: $SIMPLEX_HOME/keys/sxpm.key); the key id goes "
                   "to FILE.pub.")
@click.option("--force", is_flag=True, help="Replace an existing key file.")
@click.option("--set-default", is_flag=True,
              help="Record the key as trust.signing_key in the home's config.")
@json_option
def keygen(out: Path | None, force: bool, set_default: bool, as_json: bool) -> None:
    """Create an Ed25519 signing key (readable only by you) and print its key id.

    Put the key id into `keys = [...]` of a [trust] policy to trust what it signs.

    \b
    Example:
      sxpm keygen --out ./release.key
      sxpm sign oci:./registry/tiny-llama:1.0.0 --key ./release.key
    """
    from sxpm.trust.keys import generate, public_path

    h = home()
    path = out or h.root / "keys" / "sxpm.key"
    key = generate(path, force=force)
    if set_default:
        config = h.config()
        trust = config.setdefault("trust", {})
        trust["signing_key"] = str(path.resolve())
        h.save_config(config)
    if as_json:
        emit_json({"key_id": key.id, "private_key": str(path),
                   "public_key": str(public_path(path))})
        return
    click.echo(f"wrote {path} (private, mode 600) and {public_path(path)}")
    click.echo(key.id)


@click.command()
@click.argument("ref_text", metavar="REF")
@click.option("--key", "key", type=click.Path(path_type=Path),
              help="Ed25519 private key file (default: trust.signing_key of the config).")
@click.option("--sigstore", "use_sigstore", is_flag=True,
              help="Sign keylessly with Sigstore (needs an OIDC token and the network).")
@click.option("--identity-token", envvar="SIGSTORE_ID_TOKEN",
              help="OIDC identity token for --sigstore (default: $SIGSTORE_ID_TOKEN, or the "
                   "CI job's ambient credential).")
@click.option("--no-push", is_flag=True, help="Keep the signature in the store only; the next "
                                              "`sxpm push` sends it.")
@click.option("--insecure", is_flag=True, help="Allow plain HTTP to a non-loopback host.")
@json_option
def sign(ref_text: str, key: Path | None, use_sigstore: bool, identity_token: str | None,
         no_push: bool, insecure: bool, as_json: bool) -> None:
    """Sign REF and attach the signature to it as an OCI referrer.

    The signature binds kind, name, version and manifest digest. It goes into the
    store and, when REF's registry holds the artifact, to the registry.

    \b
    Example:
      sxpm sign oci:./registry/tiny-llama:1.0.0 --key ./release.key
      sxpm sign registry.example.org/simplex/tiny-llama:1.0.0 --sigstore
    """
    from sxpm.ops.sign import sign_artifact
    from sxpm.transport import TransportOptions

    if key is not None and use_sigstore:
        raise click.UsageError("--key and --sigstore exclude each other; give one of them")
    h = home()
    result = sign_artifact(h, h.parse_ref(ref_text), key=key, use_sigstore=use_sigstore,
                           identity_token=identity_token, upload=not no_push,
                           options=TransportOptions(insecure=insecure))
    if as_json:
        emit_json({"ref": str(result.ref), "signer": result.signer,
                   "subject": str(result.payload.digest),
                   "signature": str(result.signature.digest), "pushed": result.pushed,
                   "payload": result.payload.to_dict()})
        return
    where = "store and registry" if result.pushed else "store"
    click.echo(f"signed {result.payload} as {result.signer} ({where})")
    click.echo(str(result.signature.digest))


def verify_ref(ref_text: str, keys: tuple[str, ...], identity: str | None,
               issuer: str | None, insecure: bool, as_json: bool) -> None:
    """`sxpm verify REF`: check REF's signatures against the policy (or the given signers)."""
    from sxpm.errors import NotFoundError
    from sxpm.ops.fetch import Fetcher
    from sxpm.trust.keys import load_public
    from sxpm.trust.policy import Requirement, SigstoreIdentity

    h = home()
    ref = h.parse_ref(ref_text)
    requirement = None
    if keys or identity or issuer:
        if bool(identity) != bool(issuer):
            raise click.UsageError("--identity and --issuer go together; give both")
        identities = frozenset([SigstoreIdentity(identity, issuer)] if identity and issuer
                               else [])
        requirement = Requirement((ref.name,), frozenset(load_public(k).id for k in keys),
                                  identities)
    fetcher = Fetcher.for_command(h, options=transport(insecure, 4))
    try:
        tree = fetcher.tree(ref, where="store")
        source = "store"
    except NotFoundError:
        tree = fetcher.tree(ref, where="registry")
        source = "registry"
    # What the store holds is verified against the store's signatures alone; what only
    # the registry holds, against the registry's, without keeping anything.
    signer = fetcher.signer(tree, fetcher.identity(tree), requirement=requirement,
                            where=source, keep=False)
    if signer is None:
        _report_signers(ref, source, *fetcher.valid_signers(tree, fetcher.identity(tree),
                                                            where=source), as_json)
        return
    if as_json:
        emit_json({"ref": str(ref), "source": source, "verified": True,
                   "signer": signer.to_dict()})
        return
    click.echo(f"verified {ref} ({source}): signed by {signer}")


def _report_signers(ref: Reference, source: str, signers: list[VerifiedSigner],
                    problems: list[str], as_json: bool) -> None:
    """No policy covers ``ref``: say who signed it (exit 0 when at least one signature
    verifies, 1 when none does); trusting them is the policy's job."""
    from sxpm.errors import SignatureError

    if not signers:
        raise SignatureError(str(ref), "any valid signature", problems,
                             hint="no trust policy covers it either; ask the publisher "
                                  "to sign it (`sxpm sign REF`)")
    if as_json:
        emit_json({"ref": str(ref), "source": source, "verified": True, "policy": False,
                   "signers": [s.to_dict() for s in signers], "problems": problems})
        return
    for signer in signers:
        click.echo(f"valid signature on {ref} ({source}) by {signer} "
                   f"({signer.signature.short})")
    for problem in problems:
        click.echo(f"invalid: {problem}")
    click.echo(f"no trust policy covers {ref.name}: these signatures verify, but nothing "
               "says whom to trust (add the signer to [trust], or `sxpm trust` it)")
