"""Ed25519 keys for signing artifacts without a network (air-gapped publishing).

A key is named by its id, ``ed25519:<base64 of the 32 raw public key bytes>``: the
string that goes into ``keys = [...]`` of a trust policy. ``ed25519:<64 hex>`` is
accepted too.

``sxpm keygen`` writes the private key as unencrypted PKCS#8 PEM, created with
mode 0600 (``os.open``, so it is never readable by others, not even for a moment),
and the public key id beside it in ``<file>.pub``. Loading a private key refuses a
file that its group or others may read, as OpenSSH does.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sxpm.errors import KeyFileError

if TYPE_CHECKING:  # cryptography costs ~20 ms to import: only where a key is used
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

KEY_PREFIX = "ed25519:"
MAX_KEY_FILE_BYTES = 64 * 1024


def key_id(public: Ed25519PublicKey) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return KEY_PREFIX + base64.b64encode(raw).decode()


def parse_key_id(text: str, where: str = "") -> PublicKey:
    """The public key a key id names; ``ed25519:<base64>`` or ``ed25519:<64 hex>``."""
    where = where or repr(text)
    if not isinstance(text, str) or not text.startswith(KEY_PREFIX):
        raise KeyFileError(where, "not an Ed25519 key id",
                           hint="write ed25519:<base64 public key>, as `sxpm keygen` prints")
    body = text[len(KEY_PREFIX):].strip()
    raw: bytes | None = None
    if len(body) == 64:
        try:
            raw = bytes.fromhex(body)
        except ValueError:
            raw = None
    if raw is None:
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raw = None
    if raw is None or len(raw) != 32:
        raise KeyFileError(where, "not an Ed25519 key id (expected 32 bytes as base64 or hex)",
                           hint="write ed25519:<base64 public key>, as `sxpm keygen` prints")
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    return PublicKey(Ed25519PublicKey.from_public_bytes(raw))


@dataclass(frozen=True)
class PublicKey:
    key: Ed25519PublicKey

    @property
    def id(self) -> str:
        return key_id(self.key)

    def verify(self, signature: bytes, message: bytes) -> bool:
        from cryptography.exceptions import InvalidSignature

        try:
            self.key.verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class PrivateKey:
    key: Ed25519PrivateKey
    path: Path | None = None

    @property
    def public(self) -> PublicKey:
        return PublicKey(self.key.public_key())

    @property
    def id(self) -> str:
        return self.public.id

    def sign(self, message: bytes) -> bytes:
        return self.key.sign(message)


def generate(path: Path, *, force: bool = False) -> PrivateKey:
    """Write a new private key to ``path`` (mode 0600) and its key id to ``path.pub``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = Path(path)
    pub_path = public_path(path)
    if not force:
        for p in (path, pub_path):
            if p.exists():
                raise KeyFileError(str(p), "already exists",
                                   hint="pass --force to replace it, or choose another path")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    if force:
        for p in (path, pub_path):
            if p.exists():
                p.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    private = PrivateKey(key, path)
    pub_path.write_text(private.id + "\n")
    return private


def public_path(path: Path) -> Path:
    return path.with_name(path.name + ".pub")


def load_private(path: Path) -> PrivateKey:
    """Read a PKCS#8 PEM Ed25519 private key that only its owner can read."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = Path(path).expanduser()
    try:
        st = path.stat()
        if st.st_size > MAX_KEY_FILE_BYTES:
            raise KeyFileError(str(path), "is too large to be a key file")
        if os.name == "posix" and stat.S_IMODE(st.st_mode) & 0o077:
            raise KeyFileError(str(path), f"is readable by others (mode "
                               f"{stat.S_IMODE(st.st_mode):o})",
                               hint=f"chmod 600 {path}")
        data = path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(str(path), "does not exist",
                           hint="create one with `sxpm keygen`") from None
    except OSError as exc:
        raise KeyFileError(str(path), f"cannot be read ({exc.strerror})") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(str(path), f"is not an unencrypted PEM private key ({exc})",
                           hint="create one with `sxpm keygen`") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(str(path), "is not an Ed25519 key",
                           hint="sxpm signs with Ed25519 keys; create one with `sxpm keygen`")
    return PrivateKey(key, path)


def load_public(text_or_path: str) -> PublicKey:
    """A public key from a key id, a ``.pub`` file holding one, or a PEM public key file."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if text_or_path.startswith(KEY_PREFIX):
        return parse_key_id(text_or_path)
    path = Path(text_or_path).expanduser()
    try:
        data = path.read_bytes()[:MAX_KEY_FILE_BYTES]
    except OSError as exc:
        raise KeyFileError(str(path), f"cannot be read ({exc.strerror})",
                           hint="give ed25519:<base64> or a .pub file") from None
    text = data.decode("utf-8", "replace").strip()
    if text.startswith(KEY_PREFIX):
        return parse_key_id(text, str(path))
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise KeyFileError(str(path), "holds neither a key id nor a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(str(path), "is not an Ed25519 public key")
    return PublicKey(key)
