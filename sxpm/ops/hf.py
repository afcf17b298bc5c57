"""``sxpm pull hf://OWNER/REPO[/FILE.gguf][@REVISION]``: GGUF models from the Hugging Face Hub.

The download is huggingface_hub's own (``HfApi().model_info`` and ``hf_hub_download``):
its cache (``HF_HUB_CACHE``), endpoint (``HF_ENDPOINT``) and token (``HF_TOKEN``, or a
saved ``hf auth login``) work as they do for every other tool. The file then enters the
store the way ``sxpm import --hf`` brings it in (a hard link to the cache's blob), but
only after its bytes are checked against the LFS sha256 and size the Hub reports: a
file that does not match leaves the store as it was.

Without FILE, every GGUF file of the repository becomes one model, unless the files are
several quantizations of one model: then the user chooses (``--variant QUANT`` or the
file), since downloading all of them is rarely what is meant and can be large.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from sxpm.core import oci
from sxpm.core.oci import Descriptor
from sxpm.core.reference import Digest
from sxpm.errors import (
    AuthenticationError,
    InputError,
    MissingExtraError,
    NotFoundError,
    RegistryError,
)
from sxpm.home import Home
from sxpm.ops.importer import Imported, _import_files

SCHEME = "hf://"
# The quantization part of a GGUF file name, as llama.cpp's tools and the usual
# uploaders write it: Q4_K_M, Q8_0, IQ3_XXS, F16, BF16, ...
_QUANT = re.compile(r"(?<![A-Za-z0-9])(I?Q\d(?:_[A-Z0-9]+)*|BF16|F16|F32)(?![A-Za-z0-9])",
                    re.IGNORECASE)


@dataclass(frozen=True)
class HfSpec:
    repo: str
    file: str | None
    revision: str | None

    def __str__(self) -> str:
        return (SCHEME + self.repo + (f"/{self.file}" if self.file else "")
                + (f"@{self.revision}" if self.revision else ""))


def is_hf(text: str) -> bool:
    return text.startswith(SCHEME)


def parse_hf(text: str) -> HfSpec:
    body, _, revision = text[len(SCHEME):].partition("@")
    parts = body.split("/")
    usage = "write hf://OWNER/REPO[/FILE.gguf][@REVISION]"
    if len(parts) < 2 or not all(parts) or ".." in parts or (
            "@" in text and not revision):
        raise InputError(f"{text!r} is not a Hugging Face model reference", hint=usage)
    file = "/".join(parts[2:]) or None
    if file and not file.lower().endswith(".gguf"):
        raise InputError(f"{file!r} is not a GGUF file",
                         hint="sxpm pulls GGUF files; " + usage)
    return HfSpec("/".join(parts[:2]), file, revision or None)


def quantization(filename: str) -> str | None:
    found = _QUANT.findall(PurePosixPath(filename).stem)
    return found[-1].upper() if found else None


def _hub() -> Any:
    try:  # heavy (httpx, its own config): only hf:// pulls load it
        import huggingface_hub
    except ImportError:
        raise MissingExtraError("huggingface_hub", "hf") from None
    return huggingface_hub


def _hub_error(exc: Exception, spec: HfSpec) -> Exception:
    """The one-line error for what huggingface_hub raised."""
    from huggingface_hub import errors as hf_errors

    if isinstance(exc, hf_errors.GatedRepoError) or getattr(
            getattr(exc, "response", None), "status_code", None) in (401, 403):
        return AuthenticationError(f"The Hub refused access to {spec.repo}",
                                   hint="set HF_TOKEN (or run `hf auth login`) with a token "
                                        "that may read it")
    if isinstance(exc, hf_errors.RevisionNotFoundError):
        return NotFoundError(f"{spec.repo} has no revision {spec.revision!r}",
                             hint="give a branch, tag or commit of the repository")
    if isinstance(exc, hf_errors.RepositoryNotFoundError):
        return NotFoundError(f"No model {spec.repo} on the Hub",
                             hint="check the name (and HF_ENDPOINT, HF_TOKEN for a private "
                                  "repository)")
    if isinstance(exc, hf_errors.EntryNotFoundError):
        return NotFoundError(f"{spec} does not exist", hint="`sxpm pull hf://"
                             f"{spec.repo}` lists its GGUF files")
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return RegistryError(f"Hugging Face Hub: {first}",
                         hint="check the network, HF_ENDPOINT and HF_HUB_OFFLINE")


def _choose(spec: HfSpec, ggufs: list[str], variant: str | None,
            all_files: bool) -> list[str]:
    if spec.file:
        if spec.file not in ggufs:
            raise NotFoundError(f"{spec} is not a GGUF file of the repository",
                                hint="its GGUF files: " + (", ".join(ggufs) or "none"))
        return [spec.file]
    if not ggufs:
        raise NotFoundError(f"{SCHEME}{spec.repo} holds no GGUF file",
                            hint="sxpm pulls GGUF models; pick a repository with .gguf files")
    if variant:
        chosen = [f for f in ggufs if (quantization(f) or "") == variant.upper()]
        if not chosen:
            raise NotFoundError(f"{SCHEME}{spec.repo} has no {variant} GGUF file",
                                hint="its GGUF files: " + ", ".join(ggufs))
        return chosen
    quants = {quantization(f) for f in ggufs}
    if len(quants) > 1 and not all_files:
        raise InputError(f"{SCHEME}{spec.repo} has {len(ggufs)} GGUF files in "
                         f"{len(quants)} quantizations: {', '.join(ggufs)}",
                         hint=f"choose one: --variant {sorted(q or '' for q in quants)[-1]}, "
                              f"or hf://{spec.repo}/FILE.gguf")
    return ggufs


def pull_hf(home: Home, text: str, *, variant: str | None = None,
            all_files: bool = False) -> list[Imported]:
    """Download the GGUF file(s) ``text`` names through huggingface_hub and bring each
    into the store as a model (named after the file, versioned by the commit)."""
    spec = parse_hf(text)
    hub = _hub()
    from huggingface_hub import errors as hf_errors

    caught = (hf_errors.HfHubHTTPError, hf_errors.OfflineModeIsEnabled, OSError, ValueError)
    try:
        info = hub.HfApi().model_info(spec.repo, revision=spec.revision,
                                      files_metadata=True)
    except caught as exc:
        raise _hub_error(exc, spec) from None
    siblings = {s.rfilename: s for s in info.siblings or []}
    files = _choose(spec, sorted(f for f in siblings if f.lower().endswith(".gguf")),
                    variant, all_files)
    done = []
    for name in files:
        lfs = siblings[name].lfs
        if lfs is None:  # a file kept in git has a sha1 only: nothing to check it against
            raise InputError(f"{SCHEME}{spec.repo}/{name} is not stored with Git LFS, so "
                             "the Hub gives no sha256 to check it against",
                             hint="download it and `sxpm import` the file")
        try:  # pinned to the commit model_info saw, so the file is the one described
            local = Path(hub.hf_hub_download(spec.repo, name, revision=info.sha))
        except caught as exc:
            raise _hub_error(exc, HfSpec(spec.repo, name, spec.revision)) from None
        title = PurePosixPath(name).name
        expect = Descriptor(oci.MODEL_WEIGHT, Digest("sha256", lfs.sha256), lfs.size)
        origin = f"{SCHEME}{spec.repo}/{name}@{info.sha}"
        done.append(_import_files(home, [(title, local.resolve())], local,
                                  PurePosixPath(name).stem, info.sha[:12], origin=origin,
                                  expect={title: expect}))
    return done
