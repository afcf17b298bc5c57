"""Every error sxpm raises on purpose.

One hierarchy, rooted at :class:`SxpmError`. Each error carries the data that
describes it (not only text), a ``hint`` that tells the user what to do, and the
exit code the CLI returns for it. Errors also subclass the matching built-in
where one fits, so library users can catch ``ValueError`` or ``FileNotFoundError``.

Exit codes scripts can rely on:
    0  success
    1  a failure of the environment: network, registry, corrupt store, I/O; and an
       artifact refused by the trust policy (no valid signature from a trusted
       signer), which is a judgement on what a source served, like a digest mismatch
    2  bad usage or bad input: malformed files, invalid names, impossible requests,
       a malformed trust policy or key file
"""

from __future__ import annotations

EXIT_FAILURE = 1
EXIT_USAGE = 2


class SxpmError(Exception):
    """Base of every sxpm error."""

    exit_code = EXIT_FAILURE
    default_hint = ""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = self.default_hint if hint is None else hint

    def __str__(self) -> str:
        return self.message

    def one_line(self) -> str:
        """The message and its hint as one line for the terminal."""
        text = " ".join(self.message.split())
        if self.hint:
            text = f"{text} ({' '.join(self.hint.split())})"
        return text


# --- bad input (exit 2) -----------------------------------------------------


class InputError(SxpmError, ValueError):
    """The user gave something sxpm cannot accept."""

    exit_code = EXIT_USAGE


class InvalidReferenceError(InputError):
    def __init__(self, text: str, reason: str) -> None:
        super().__init__(
            f"Invalid reference {text!r}: {reason}",
            hint="write host[:port]/repository:tag, oci:PATH[:tag] or add @sha256:<hex>",
        )
        self.text = text


class InvalidDigestError(InputError):
    def __init__(self, text: str, reason: str) -> None:
        super().__init__(f"Invalid digest {text!r}: {reason}", hint="write sha256:<64 hex digits>")
        self.text = text


class InvalidNameError(InputError):
    def __init__(self, name: str) -> None:
        super().__init__(
            f"Invalid name {name!r}",
            hint="names are 1-64 characters of [a-z0-9._-] starting with a letter or digit",
        )
        self.name = name


class InvalidVersionError(InputError):
    def __init__(self, text: str, reason: str = "not a semantic version") -> None:
        super().__init__(f"Invalid version {text!r}: {reason}", hint="write MAJOR.MINOR.PATCH")
        self.text = text


class ManifestError(InputError):
    """A file sxpm reads (manifest, metadata, lock...) is malformed or schema-invalid."""

    def __init__(self, source: str, message: str, *, path: str = "", hint: str | None = None):
        where = f"{source}" + (f" at {path}" if path else "")
        super().__init__(f"{where}: {message}", hint=hint)
        self.source = source
        self.path = path


class ArtifactInputError(InputError):
    """The directory or file given to ``pack`` does not make an artifact."""


class NotFoundError(SxpmError, LookupError):
    """A reference, name or blob that is not where it was looked for."""

    exit_code = EXIT_USAGE


# --- failures of the environment (exit 1) ------------------------------------


class LockStaleError(SxpmError):
    """``sxpm lock --check``: the lock does not match simplex.toml (exit 1, as a failed
    check in CI; nothing is written)."""

    default_hint = "run `sxpm lock` and commit simplex.lock"


class StoreError(SxpmError):
    """The local store cannot do what was asked."""


class CorruptBlobError(StoreError):
    """Bytes whose digest is not the one they were stored or announced under."""

    def __init__(self, expected: str, actual: str, *, where: str = "") -> None:
        place = f" from {where}" if where else ""
        super().__init__(
            f"Digest mismatch{place}: expected {expected}, got {actual}",
            hint="nothing was stored; retry, and report the source if it persists",
        )
        self.expected = expected
        self.actual = actual


class SizeMismatchError(StoreError):
    def __init__(self, digest: str, expected: int, actual: int, *, where: str = "") -> None:
        place = f" from {where}" if where else ""
        super().__init__(
            f"Size mismatch for {digest}{place}: descriptor says {expected} bytes, got {actual}",
            hint="nothing was stored; the descriptor or the source is wrong",
        )
        self.digest = digest
        self.expected = expected
        self.actual = actual


class RegistryError(SxpmError):
    """A registry answered with an error or could not be reached."""

    def __init__(self, message: str, *, url: str = "", status: int | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.url = url
        self.status = status


class AuthenticationError(RegistryError):
    default_hint = "run `sxpm login REGISTRY` with credentials that may access it"


# --- trust: signatures and the trust policy ----------------------------------


class TrustPolicyError(InputError):
    """The trust policy (``[trust]`` in simplex.toml or the home's config) is malformed."""

    def __init__(self, source: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(f"Trust policy in {source}: {message}",
                         hint=hint or "see docs/security.md for the [trust] format")
        self.source = source


class KeyFileError(InputError):
    """A signing or verification key that cannot be read or used."""

    def __init__(self, where: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(f"Key {where}: {message}", hint=hint)
        self.where = where


class SigningError(SxpmError):
    """A signature could not be made (no identity token, Sigstore unreachable...)."""


class MissingIdentityTokenError(SigningError, InputError):
    """Sigstore signing was asked for without a usable OIDC identity token."""

    exit_code = EXIT_USAGE


class SignatureError(SxpmError):
    """An artifact was refused: no valid signature from a signer the policy trusts.

    ``artifact`` names what was refused, ``expected`` the signers the policy asked
    for, and ``reasons`` says what each signature found was wrong with.
    """

    default_hint = ("nothing was pulled or installed; ask the publisher to sign it, trust "
                    "their key or identity in [trust], or pass --insecure-skip-verify to "
                    "accept it unverified")

    def __init__(self, artifact: str, expected: str, reasons: list[str], *,
                 hint: str | None = None) -> None:
        found = "; ".join(reasons) if reasons else "no signature found"
        super().__init__(f"{artifact}: no valid signature from a trusted signer (expected "
                         f"{expected}; {found})", hint=hint)
        self.artifact = artifact
        self.expected = expected
        self.reasons = reasons


class RunnerError(SxpmError):
    """The runner could not load or run a model."""


class ModelFileError(RunnerError):
    """A GGUF file the runner was about to load is damaged, truncated or unreadable."""

    default_hint = "the file is corrupt or truncated; reinstall it (`sxpm verify` checks the store)"

    def __init__(self, path: object, reason: str, *, hint: str | None = None) -> None:
        super().__init__(f"{path}: {reason}", hint=hint)
        self.path = str(path)
        self.reason = reason


class PortInUseError(RunnerError, OSError):
    def __init__(self, host: str, port: int, reason: str = "already in use") -> None:
        super().__init__(f"Cannot listen on {host}:{port}: {reason}",
                         hint="choose another --port, or stop the program using it")
        self.host = host
        self.port = port


class QueueFullError(RunnerError):
    """A model's request queue is at its cap (``--max-queue``): come back later."""

    def __init__(self, model: str, depth: int, retry_after: int) -> None:
        super().__init__(f"Model {model!r} has {depth} requests waiting",
                         hint=f"retry in {retry_after} s, or raise --max-queue")
        self.model = model
        self.depth = depth
        self.retry_after = retry_after


class ContextOverflowError(InputError):
    """A prompt that does not fit the model's context window, even alone."""

    def __init__(self, tokens: int, n_ctx: int) -> None:
        super().__init__(f"The prompt is {tokens} tokens; the context holds {n_ctx}",
                         hint="shorten it, or load the model with a larger --ctx")
        self.tokens = tokens
        self.n_ctx = n_ctx


class ModelNotInstalledError(NotFoundError):
    """A model or expert named by its name is not installed."""

    def __init__(self, kind: str, spec: str, install_ref: str | None) -> None:
        if install_ref:
            hint = (f"install it with `sxpm {kind} install {install_ref}`, or pass --install "
                    "(SXPM_AUTO_INSTALL=1) to install it first")
        else:
            hint = f"`sxpm {kind} list` shows what is installed; `sxpm list` what the store holds"
        super().__init__(f"No installed {kind} {spec!r}", hint=hint)
        self.kind = kind
        self.spec = spec
        self.install_ref = install_ref


class AmbiguousModelError(InputError):
    """Several installed models answer for a category and none is its default."""

    def __init__(self, category: str, names: list[str], *, hint: str) -> None:
        super().__init__(f"Several installed {category} models and no default: "
                         f"{', '.join(names)}", hint=hint)
        self.category = category
        self.names = names


class IncompatibleExpertError(InputError):
    """An expert (its manifest or its adapter GGUF) is not built for the chosen model."""

    def __init__(self, expert: str, model: str, reason: str, *, hint: str | None = None
                 ) -> None:
        super().__init__(f"Expert {expert!r} does not fit model {model!r}: {reason}",
                         hint=hint)
        self.expert = expert
        self.model = model
        self.reason = reason


class TemplateError(InputError):
    """A prompt template that cannot be rendered."""

    def __init__(self, source: str, message: str, *, unknown: tuple[str, ...] = ()) -> None:
        super().__init__(f"Prompt template {source}: {message}",
                         hint="templates may use {prompt} and {system}; write {{ and }} for "
                              "literal braces")
        self.source = source
        self.unknown = unknown


class MissingExtraError(SxpmError):
    """An optional dependency is not installed."""

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(
            f"This command needs the Python package {module!r}, which is not installed",
            hint=f"pip install 'sxpm[{extra}]'",
        )
        self.module = module
        self.extra = extra


# --- the registry index -------------------------------------------------------


class IndexFormatError(ManifestError):
    """A file of the index is malformed: names the file and the line."""

    def __init__(self, source: str, line: int | None, message: str, *, path: str = "",
                 hint: str | None = None) -> None:
        where = f"{source}:{line}" if line else source
        super().__init__(where, message, path=path,
                         hint="fix the line; `sxpm index verify` checks the whole index"
                         if hint is None else hint)
        self.file = source
        self.line = line
        self.reason = message + (f" at {path}" if path else "")


class IndexLocationError(InputError):
    """No index is configured, or the location given is not one."""

    default_hint = ("pass --index URL_OR_PATH, set SXPM_INDEX, `[registries] index` in "
                    "simplex.toml, or \"index\" in $SIMPLEX_HOME/config.json")


class IndexUnavailableError(SxpmError):
    """The index could not be read (network, HTTP status, missing offline cache)."""

    def __init__(self, message: str, *, url: str = "", status: int | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.url = url
        self.status = status


class VersionExistsError(InputError):
    """A version is already in the index: versions are immutable."""

    def __init__(self, name: str, version: str, digest: str, *, hint: str | None = None):
        super().__init__(
            f"{name} {version} is already published (digest {digest})",
            hint=hint or "versions are immutable: publish a new version, or yank this one")
        self.name = name
        self.version = version
        self.digest = digest


class GitError(SxpmError):
    """A git operation on an index checkout failed."""

    def __init__(self, message: str, *, command: str = "", hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.command = command


class CheckoutError(InputError):
    """The index checkout is not usable: not a git repository, or dirty."""
