"""sxpm expert list|install|remove|info."""

from __future__ import annotations

from sxpm.cli._kind_group import kind_group

expert = kind_group("expert", example_ref="oci:./registry/sql-expert:2.1.0",
                    example_name="sql-expert@2.1.0")
