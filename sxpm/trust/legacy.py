"""``signature.sig`` of legacy ``.expert`` archives, checked on import.

Format (as sxpm reads and writes it):

* the signed message is, in UTF-8 with no trailing newline,
  ``"\\n".join(sorted(f"{path}:{sha256}" for every regular file))``, where ``path``
  is the file's POSIX path relative to the directory holding ``manifest.json`` and
  ``sha256`` its lower-case hex digest; ``signature.sig`` itself is left out;
* ``signature.sig`` holds the 64-byte Ed25519 signature of that message, raw or
  base64 (one line).

The verifying keys are those the trust policy trusts for the expert's name
(``name`` in manifest.json). With such keys, a missing or invalid signature refuses
the import. Without any, a signature cannot be checked: the import goes on, and
:func:`check_legacy_signature` says so in its result.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from pathlib import Path

from sxpm.errors import SignatureError
from sxpm.home import Home
from sxpm.store.layout import CHUNK
from sxpm.trust.keys import PrivateKey, parse_key_id
from sxpm.trust.policy import TrustPolicy, load_policy

SIGNATURE_FILE = "signature.sig"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def signed_message(root: Path) -> bytes:
    lines = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel == SIGNATURE_FILE or not path.is_file() or path.is_symlink():
            continue
        lines.append(f"{rel}:{_sha256(path)}")
    return "\n".join(sorted(lines)).encode()


def _read_signature(path: Path) -> bytes | None:
    data = path.read_bytes()[:4096]
    if len(data) == 64:
        return data
    try:
        raw = base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 64 else None


def sign_legacy(root: Path, key: PrivateKey) -> Path:
    """Write ``signature.sig`` for the expert directory ``root`` (base64, one line)."""
    target = root / SIGNATURE_FILE
    target.write_text(base64.b64encode(key.sign(signed_message(root))).decode() + "\n")
    return target


def check_legacy_signature(home: Home, root: Path, archive: str,
                           policy: TrustPolicy | None = None) -> str | None:
    """Check ``signature.sig`` of an unpacked legacy expert; the key id that signed it.

    None when no policy covers the expert's name (nothing to check against).
    Raises :class:`~sxpm.errors.SignatureError` when a policy covers it and the
    signature is missing, malformed, or by no trusted key.
    """
    try:
        name = json.loads((root / "manifest.json").read_text()).get("name", "")
    except (OSError, ValueError, AttributeError):
        name = ""
    policy = policy or load_policy(home)  # the command's, else the home's alone
    trusted = policy.trusted_for(str(name)) if name else None
    if trusted is None:
        return None
    key_ids = sorted(trusted[0])
    what = f"{archive} (legacy expert {name})"
    expected = (" or ".join(f"a signature.sig by key {k}" for k in key_ids)
                or "a key signature (the policy for this name lists only Sigstore identities, "
                   "which legacy archives cannot carry)")
    hint = ("nothing was imported; get a signed archive from the publisher or trust their "
            "key in [trust]")
    sig_path = root / SIGNATURE_FILE
    if not sig_path.is_file():
        raise SignatureError(what, expected, ["the archive has no signature.sig"], hint=hint)
    sig = _read_signature(sig_path)
    if sig is None:
        raise SignatureError(what, expected, ["signature.sig is not a 64-byte Ed25519 "
                                              "signature (raw or base64)"], hint=hint)
    message = signed_message(root)
    for kid in key_ids:
        if parse_key_id(kid).verify(sig, message):
            return kid
    raise SignatureError(what, expected, ["signature.sig does not verify with any trusted key "
                                          "(files were altered, or another key signed it)"],
                         hint=hint)
