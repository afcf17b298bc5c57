"""sxpm: the package manager of the Simplex ecosystem.

Models (GGUF weights), experts (LoRA adapters, soft prompts and prompt templates on a
named base model) and code packages, each an OCI artifact in any OCI registry.

The library works without the CLI::

    import sxpm
    home = sxpm.Home.from_env()
    result = sxpm.pack(home, "model", Path("tiny"), home.parse_ref("oci:./reg/tiny:1.0.0"))
    sxpm.push(home, result.ref)
    sxpm.lock("my-project")          # resolve simplex.toml into simplex.lock
    sxpm.search("sql").hits
    sxpm.load(category="mnemonic")   # the installed default embedding model

Heavy modules (numpy through gguf, llama_cpp, sigstore) are imported only by the
functions that need them.
"""

from __future__ import annotations

from typing import Any

from sxpm._version import __version__ as __version__  # re-exported, not in __all__

# public name -> (module, attribute). Loaded on first use so `import sxpm` stays cheap
# (no requests, jsonschema, cryptography or numpy). No public name is the name of a
# submodule: importing a submodule sets an attribute of this package by its name, and
# must never replace a function.
_LAZY = {
    "Home": ("sxpm.home", "Home"),
    "Reference": ("sxpm.core.reference", "Reference"),
    "Digest": ("sxpm.core.reference", "Digest"),
    "SxpmError": ("sxpm.errors", "SxpmError"),
    "pack": ("sxpm.artifacts.pack", "pack"),
    "describe": ("sxpm.artifacts.describe", "describe_ref"),
    "push": ("sxpm.ops.transfer", "push"),
    "pull": ("sxpm.ops.transfer", "pull"),
    "copy": ("sxpm.ops.transfer", "copy"),
    "install": ("sxpm.ops.install", "install"),
    "lock": ("sxpm.ops.project", "lock_project"),
    "search": ("sxpm.ops.query", "search"),
    "info": ("sxpm.ops.query", "info"),
    "load": ("sxpm.runner.session", "load"),
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'sxpm' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(target[0]), target[1])
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
