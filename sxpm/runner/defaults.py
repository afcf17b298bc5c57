"""The installed default model of a category: what ``sxpm.load(category=...)`` runs.

The Simplex runtime asks for a kind of model (a reasoning model, an embedding model),
not a name. In order:

1. the project's default (the nearest ``simplex.toml``): the model of that category
   marked ``default = true`` in ``[models]``;
2. the home's default: ``"default_models": {"CATEGORY": "NAME"}`` in ``config.json``;
3. the only installed model of that category (the home's and the project's).

Several candidates and no default is an error naming them and how to set one. A
model's category is the one its install records hold (:mod:`sxpm.core.categories`).
"""

from __future__ import annotations

from pathlib import Path

from sxpm.core.categories import SET_DEFAULT_HINT, check_category
from sxpm.errors import AmbiguousModelError, InputError, NotFoundError
from sxpm.home import Home
from sxpm.installed.records import installed_traits
from sxpm.ops.project import installed_here
from sxpm.project.manifest import Project


def installed_categories(home: Home, start: Path | None = None) -> dict[str, set[str]]:
    """Each installed model's name -> the categories of its installed trees."""
    out: dict[str, set[str]] = {}
    for placed in installed_here(home, "model", start):
        traits = installed_traits(placed.item)
        found = out.setdefault(placed.item.name, set())
        if traits is not None:
            found.add(traits.category)
    return out


def default_model(category: str, *, home: Home | None = None,
                  start: Path | None = None) -> str:
    """The model (``NAME``, or ``NAME@VERSION`` as the home's config gives it) that
    answers for ``category``; see the module docstring for the order."""
    home = home or Home.from_env()
    check_category(category, "category")
    installed = installed_categories(home, start)
    project = Project.nearest(start)
    if project is not None:
        marked = project.default_models()
        chosen = [n for n in marked if category in installed.get(n, ())]
        if len(chosen) > 1:
            raise AmbiguousModelError(category, chosen,
                                      hint=f"{project.path} marks each `default = true`; "
                                           "keep it on one of them")
        if chosen:
            return chosen[0]
        missing = [n for n in marked if n not in installed]
        if missing:
            raise NotFoundError(f"{project.path} marks {missing[0]!r} as a default model, "
                                "but it is not installed",
                                hint="run `sxpm install` in the project")
    configured = home.default_models().get(category)
    if configured is not None:
        name = configured.partition("@")[0]
        other = installed.get(name, set()) - {category}
        if other and category not in installed[name]:
            raise InputError(f"{home.config_path} names {configured!r} as the default "
                             f"{category} model, but it is {' and '.join(sorted(other))}",
                             hint="name a model of that category in default_models")
        return configured
    names = sorted(n for n, cats in installed.items() if category in cats)
    if len(names) > 1:
        raise AmbiguousModelError(category, names,
                                  hint=SET_DEFAULT_HINT.replace("CATEGORY", category))
    if not names:
        raise NotFoundError(f"No installed {category} model",
                            hint=f"find one with `sxpm search --category {category}` and "
                                 "install it with `sxpm model install NAME`")
    return names[0]
