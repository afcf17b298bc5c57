"""A backtracking resolver: one version per name, newest first, the lock preferred.

Pure: every fact comes from the :class:`~sxpm.resolver.provider.Provider`. Names are
decided in the order they are discovered (breadth of the requirement graph), which
keeps the search short for the shallow graphs of models, experts and packages; a
step limit bounds pathological inputs.

An expert's dependency on its base model joins the graph like any other; the
expert's variant is the one built for that base model, so the two always agree.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Mapping, Sequence

from sxpm.core.artifact import Variant
from sxpm.core.variants import choose_variant
from sxpm.errors import InputError, NotFoundError
from sxpm.resolver.model import (
    ROOT,
    Candidate,
    Constraint,
    Requirement,
    Resolution,
    Resolved,
)
from sxpm.resolver.provider import Provider, Reporter

MAX_STEPS = 100_000


class ResolutionImpossible(InputError):  # noqa: N818 - resolvelib's name
    """No set of versions satisfies every requirement; ``causes`` says why."""

    def __init__(self, name: str, causes: list[str], hint: str) -> None:
        super().__init__(f"No version of {name} satisfies every requirement: "
                         + " ; ".join(causes), hint=hint)
        self.name = name
        self.causes = causes


class UnknownNameError(NotFoundError):
    def __init__(self, name: str, suggestions: list[str], via: str) -> None:
        hint = (f"did you mean {', '.join(suggestions)}?" if suggestions
                else "check the name with `sxpm search`")
        super().__init__(f"{via} requires {name!r}, which the index does not know", hint=hint)
        self.name = name
        self.suggestions = suggestions


Chosen = dict[str, Resolved]


class _Solver:
    def __init__(self, provider: Provider, preferred: Mapping[str, str],
                 memory_budget: int | None, reporter: Reporter, max_steps: int) -> None:
        self.provider = provider
        self.preferred = preferred
        self.memory_budget = memory_budget
        self.reporter = reporter
        self.max_steps = max_steps
        self.steps = 0
        self._candidates: dict[str, list[Candidate]] = {}
        self.conflict: tuple[int, str, list[Constraint]] | None = None

    def candidates(self, name: str) -> list[Candidate]:
        found = self._candidates.get(name)
        if found is None:
            found = sorted(self.provider.candidates(name), key=lambda c: c.version, reverse=True)
            self._candidates[name] = found
        return found

    def _fits(self, cand: Candidate, cons: Sequence[Constraint]) -> bool:
        locked = self.preferred.get(cand.name)
        if cand.yanked and locked != str(cand.version):
            return False
        for con in cons:
            if con.kind and con.kind != cand.kind:
                return False
            if not con.req.matches(cand.version):
                return False
            if con.variant and cand.variant(con.variant) is None:
                return False
            if con.base and not (cand.for_base(con.base) if cand.variants else any(
                    d.name == con.base for d in cand.deps)):
                return False
        return True

    def viable(self, name: str, cons: Sequence[Constraint]) -> list[Candidate]:
        out = [c for c in self.candidates(name) if self._fits(c, cons)]
        locked = self.preferred.get(name)
        if locked:
            out.sort(key=lambda c: str(c.version) != locked)  # stable: lock first
        return out

    def pick_variant(self, cand: Candidate, cons: Sequence[Constraint],
                     wanted: Mapping[str, list[Constraint]]) -> Variant | None:
        if not cand.variants:
            return None
        for con in cons:
            if con.variant:
                return cand.variant(con.variant)
            if con.base:
                return cand.for_base(con.base)
        if cand.kind == "expert":
            # Run on a base model the project already asks for, if it names one.
            for v in cand.variants:
                if v.base_model and v.base_model in wanted:
                    return v
            return cand.variants[0]
        if cand.kind == "model":
            return choose_variant(cand.variants, budget=self.memory_budget)
        return cand.variants[0]

    def record(self, depth: int, name: str, cons: list[Constraint]) -> None:
        if self.conflict is None or depth > self.conflict[0]:
            self.conflict = (depth, name, cons)

    def solve(self, chosen: Chosen, cons: dict[str, list[Constraint]], order: list[str]
              ) -> tuple[Chosen | None, set[str]]:
        """A full choice, or None and the names whose choices caused the failure.

        Conflict-directed backjumping: when the failure below a decision does not
        involve it, its other candidates cannot help and are skipped.
        """
        name = next((n for n in order if n not in chosen), None)
        if name is None:
            return chosen, set()
        mine = cons[name]
        blame = {c.source for c in mine if c.source}
        viable = self.viable(name, mine)
        if not viable:
            self.record(len(chosen), name, mine)
            return None, blame
        via = min(mine, key=lambda c: len(c.path)).path
        conflict: set[str] = set()
        for cand in viable:
            self.steps += 1
            if self.steps > self.max_steps:
                raise InputError("Resolution took too many steps",
                                 hint="pin some requirements more tightly in simplex.toml")
            self.reporter.pinning(cand)
            variant = self.pick_variant(cand, mine, cons)
            deps = cand.deps_for(variant)
            path = (*via, f"{cand.name} {cand.version}")
            new_cons = dict(cons)
            new_order = list(order)
            clash = None
            for dep in deps:
                con = Constraint(dep.req, dep.kind, path, source=name)
                new_cons[dep.name] = [*cons.get(dep.name, []), con]
                if dep.name in chosen and not self._fits(chosen[dep.name].candidate,
                                                         new_cons[dep.name]):
                    clash = dep.name
                    break
                if dep.name not in cons:
                    new_order.append(dep.name)
            if clash is not None:
                self.record(len(chosen) + 1, clash, new_cons[clash])
                self.reporter.backtracking(cand, f"conflicts on {clash}")
                conflict |= {clash} | {c.source for c in cons.get(clash, []) if c.source}
                continue
            resolved = Resolved(cand, variant, tuple(" -> ".join(c.path) for c in mine), deps)
            result, below = self.solve({**chosen, name: resolved}, new_cons, new_order)
            if result is not None:
                return result, set()
            self.reporter.backtracking(cand, "no solution below it")
            if name not in below:
                return None, below  # jump back past this decision
            conflict |= below
        return None, (conflict - {name}) | blame

    def explain(self) -> ResolutionImpossible:
        assert self.conflict is not None
        _, name, cons = self.conflict
        causes = [c.explain(name) for c in cons]
        pieces = []
        for con in cons:
            hits = [str(c.version) for c in self.candidates(name)
                    if not c.yanked and con.req.matches(c.version)][:3]
            pieces.append(f"{con.req}: {', '.join(hits) if hits else 'none'}")
        if not self.candidates(name):
            hint = f"{name} has no published versions"
        else:
            hint = (f"versions of {name} matching each requirement: {'; '.join(pieces)}; "
                    "change the requirements in simplex.toml so that they overlap")
        return ResolutionImpossible(name, causes, hint)


def resolve(requirements: Sequence[Requirement], provider: Provider, *,
            preferred: Mapping[str, str] | None = None, memory_budget: int | None = None,
            reporter: Reporter | None = None, max_steps: int = MAX_STEPS) -> Resolution:
    """Choose one version (and variant) of every name the requirements reach.

    ``preferred`` maps names to the versions the lock already has: they are tried
    first, and yanked versions are allowed only there. ``memory_budget`` (usable
    bytes, see :func:`sxpm.core.variants.usable_memory`) picks a model's variant
    when the requirement names none, by the rule of :mod:`sxpm.core.variants`.
    """
    solver = _Solver(provider, preferred or {}, memory_budget, reporter or Reporter(), max_steps)
    cons: dict[str, list[Constraint]] = {}
    order: list[str] = []
    for req in requirements:
        if not solver.candidates(req.name):
            close = difflib.get_close_matches(req.name, list(provider.known_names()), n=3)
            raise UnknownNameError(req.name, close, ROOT)
        cons.setdefault(req.name, []).append(
            Constraint(req.req, req.kind, (ROOT,), req.variant, req.base))
        if req.name not in order:
            order.append(req.name)
    # One stack frame per decision: deep graphs need more than Python's default 1000.
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20_000))
    try:
        result, _ = solver.solve({}, cons, order)
    finally:
        sys.setrecursionlimit(limit)
    if result is None:
        raise solver.explain()
    return Resolution(dict(sorted(result.items())), solver.steps)
