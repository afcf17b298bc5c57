"""sxpm: the package manager of the Simplex ecosystem.

Models (GGUF weights), experts (LoRA adapters, soft prompts and prompt templates on a
named base model) and code packages, each an OCI artifact in any OCI registry.

The library works without the CLI::

    import sxpm
    home = sxpm.Home.from_env()
    result = sxpm.pack(home, "model", Path("tiny"), home.parse_ref("oci:./reg/tiny:1.0.0"))
    sxpm.push(home, result.ref)

Heavy modules (numpy through gguf, llama_cpp, sigstore) are imported only by the
functions that need them.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Home": "sxpm.home",
    "Reference": "sxpm.reference",
    "Digest": "sxpm.reference",
    "pack": "sxpm.pack",
    "pull": "sxpm.distribution",
    "push": "sxpm.distribution",
    "copy": "sxpm.distribution",
    "install": "sxpm.install",
    "describe": "sxpm.install",
    "SxpmError": "sxpm.errors",
    "load": "sxpm.runner.session",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sxpm' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
