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

from sxpm._version import __version__

_LAZY = {
    "Home": "sxpm.home",
    "Reference": "sxpm.core.reference",
    "Digest": "sxpm.core.reference",
    "pack": "sxpm.artifacts.pack",
    "pull": "sxpm.ops.transfer",
    "push": "sxpm.ops.transfer",
    "copy": "sxpm.ops.transfer",
    "install": "sxpm.installed.tree",
    "describe": "sxpm.installed.tree",
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
