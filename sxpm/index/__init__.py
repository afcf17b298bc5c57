"""The registry index: static JSON files in a git repository, served as plain files.

* :mod:`sxpm.index.format` - names, paths, one line per version (:class:`IndexEntry`).
* :mod:`sxpm.index.client` - :class:`IndexClient`, reading a directory or HTTP(S) URL.
* :mod:`sxpm.index.location` - where the index is (flag, env, simplex.toml, home).
* :mod:`sxpm.index.search` - ranking ``search.json`` rows.
* :mod:`sxpm.index.build` - ``search.json`` and ``verify`` for an index checkout.
* :mod:`sxpm.ops.publish` - ``publish`` and ``yank`` as commits on a branch.
"""
