"""sxpm model list|install|remove|info."""

from __future__ import annotations

from sxpm.cli._kind_group import kind_group

model = kind_group("model", example_ref="oci:./registry/tiny-llama:1.0.0",
                   example_name="tiny-llama@1.0.0")
