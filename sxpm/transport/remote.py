"""OCI distribution registries (placeholder until the remote client lands)."""

from __future__ import annotations

from sxpm.errors import RegistryError
from sxpm.reference import Reference
from sxpm.transport import Repository, TransportOptions


def RemoteRepository(ref: Reference, options: TransportOptions) -> Repository:  # noqa: N802
    raise RegistryError(f"{ref.locator}: remote registries are not supported in this build",
                        hint="use an oci:DIR registry")
