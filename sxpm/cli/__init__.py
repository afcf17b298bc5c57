"""The ``sxpm`` command line: thin click commands over the library."""
