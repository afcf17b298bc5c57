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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sxpm.core.artifact import Variant
from sxpm.core.humanize import with_article
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
from sxpm.resolver.provider import Provider, ResolutionReporter

MAX_STEPS = 100_000


class ResolutionImpossible(InputError):  # noqa: N818 - resolvelib's name
    """No set of versions satisfies every requirement; ``causes`` says why."""

    def __init__(self, name: str, causes: list[str], hint: str, *,
                 message: str | None = None) -> None:
        super().__init__(message or f"No version of {name} satisfies every requirement: "
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
_TABLES = {"model": "models", "expert": "experts", "package": "dependencies"}


def _cause(name: str, where: str, message: str, *, hint: str) -> ResolutionImpossible:
    return ResolutionImpossible(name, [where], hint, message=message)


# A constraint's path names the chain of choices that imposed it; past this length
# the middle is elided, so a deep graph costs constant memory per constraint.
MAX_PATH = 8


def _extend(via: tuple[str, ...], step: str) -> tuple[str, ...]:
    path = (*via, step)
    if len(path) > MAX_PATH:
        path = (path[0], "...", *path[-(MAX_PATH - 2):])
    return path


@dataclass
class _Decision:
    """One name being decided: its candidates, the next to try, and what trying the
    current one added (undone before the next is tried)."""

    name: str
    mine: list[Constraint]
    blame: set[str]
    viable: list[Candidate]
    via: tuple[str, ...]
    next: int = 0
    conflict: set[str] = field(default_factory=set)
    added: list[str] = field(default_factory=list)  # names given one more constraint
    new_names: int = 0  # names appended to the order

    def undo(self, chosen: Chosen, cons: dict[str, list[Constraint]], order: list[str]
             ) -> None:
        chosen.pop(self.name, None)
        for dep in reversed(self.added):
            cons[dep].pop()
        for _ in range(self.new_names):
            del cons[order.pop()]
        self.added.clear()
        self.new_names = 0


class _Solver:
    def __init__(self, provider: Provider, preferred: Mapping[str, str],
                 memory_budget: int | None, reporter: ResolutionReporter, max_steps: int) -> None:
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

    def solve(self, cons: dict[str, list[Constraint]], order: list[str]) -> tuple[
            Chosen | None, set[str]]:
        """A full choice, or None and the names whose choices caused the failure.

        Conflict-directed backjumping: when the failure below a decision does not
        involve it, its other candidates cannot help and are skipped.

        One loop over an explicit stack of decisions, changing ``cons``, ``order`` and
        the choice in place and undoing each change on the way back: memory stays
        linear in the number of names, however deep the graph (a copy per decision
        made a 21,000-name chain take 16.7 GB).
        """
        chosen: Chosen = {}
        stack: list[_Decision] = []
        failed: set[str] | None = None  # what the level just left blamed
        while True:
            if failed is None:
                if len(chosen) == len(order):  # names are decided in discovery order
                    return chosen, set()
                name = order[len(chosen)]
                mine = cons[name]
                blame = {c.source for c in mine if c.source}
                viable = self.viable(name, mine)
                if not viable:
                    self.record(len(chosen), name, list(mine))
                    failed = blame
                    continue
                via = min(mine, key=lambda c: len(c.path)).path
                stack.append(_Decision(name, list(mine), blame, viable, via))
            else:
                if not stack:
                    return None, failed
                top = stack[-1]
                self.reporter.backtracking(top.viable[top.next - 1], "no solution below it")
                top.undo(chosen, cons, order)
                if top.name not in failed:
                    stack.pop()  # jump back past this decision
                    continue
                top.conflict |= failed
            failed = self._next_candidate(stack[-1], chosen, cons, order)
            if failed is not None:
                stack.pop()

    def _next_candidate(self, top: _Decision, chosen: Chosen,
                        cons: dict[str, list[Constraint]], order: list[str]) -> set[str] | None:
        """Choose the next candidate of ``top`` that clashes with no earlier choice
        (None), or give up on ``top``: the names to blame."""
        name, mine = top.name, top.mine
        while top.next < len(top.viable):
            cand = top.viable[top.next]
            top.next += 1
            self.steps += 1
            if self.steps > self.max_steps:
                raise InputError("Resolution took too many steps",
                                 hint="pin some requirements more tightly in simplex.toml")
            self.reporter.pinning(cand)
            variant = self.pick_variant(cand, mine, cons)
            deps = cand.deps_for(variant)
            path = _extend(top.via, f"{cand.name} {cand.version}")
            clash = None
            for dep in deps:
                con = Constraint(dep.req, dep.kind, path, source=name)
                if dep.name not in cons:
                    cons[dep.name] = []
                    order.append(dep.name)
                    top.new_names += 1
                cons[dep.name].append(con)
                top.added.append(dep.name)
                if dep.name in chosen and not self._fits(chosen[dep.name].candidate,
                                                         cons[dep.name]):
                    clash = dep.name
                    break
            if clash is not None:
                self.record(len(chosen) + 1, clash, list(cons[clash]))
                self.reporter.backtracking(cand, f"conflicts on {clash}")
                top.conflict |= {clash} | {c.source for c in cons[clash][:-1] if c.source}
                top.undo(chosen, cons, order)
                continue
            per_machine = cand.kind == "model" and bool(cand.variants) and not any(
                c.variant or c.base for c in mine)
            chosen[name] = Resolved(cand, variant, tuple(" -> ".join(c.path) for c in mine),
                                    deps, per_machine)
            return None
        return (top.conflict - {name}) | top.blame

    def _alone(self, name: str, con: Constraint) -> ResolutionImpossible | None:
        """When ``con`` alone rules out every candidate of ``name``, the real cause (wrong
        kind, a variant or base no version has, only yanked versions) with its fix; None
        when the constraint can be met on its own and the conflict is between several."""
        cands = self.candidates(name)
        if not cands or any(self._fits(c, [con]) for c in cands):
            return None
        where = con.explain(name)
        kinds = sorted({c.kind for c in cands})
        if con.kind and con.kind not in kinds:
            fix = (f"move {name} to the [{_TABLES[kinds[0]]}] table of simplex.toml"
                   if len(con.path) == 1 else f"{con.path[-1]} asks for {name} as the "
                   f"wrong kind; tell its publisher")
            return _cause(name, where, f"{name} is {with_article(kinds[0])}, not "
                          f"{with_article(con.kind)} ({where})", hint=fix)
        matching = [c for c in cands if con.req.matches(c.version)
                    and (not con.kind or c.kind == con.kind)]
        if matching and con.variant and not any(c.variant(con.variant) for c in matching):
            have = sorted({v.name for c in matching for v in c.variants})
            return _cause(name, where, f"No version of {name} matching {con.req} has variant "
                              f"{con.variant} ({where})",
                              hint=f"variants published: {', '.join(have) or 'none'}; "
                                   "change `variant` in simplex.toml")
        if matching and con.base and not any(
                c.for_base(con.base) if c.variants else any(d.name == con.base for d in c.deps)
                for c in matching):
            bases = sorted({v.base_model for c in matching for v in c.variants if v.base_model}
                           | {d.name for c in matching for d in c.deps if d.kind == "model"})
            built_for = ", ".join(bases) or "no base model"
            return _cause(name, where, f"{name} {con.req} is an expert for {built_for}, not for "
                              f"{con.base} ({where})",
                              hint=f"change `base` in simplex.toml to one of: {built_for}"
                              if bases else "choose another expert")
        if matching and all(c.yanked for c in matching):
            versions = ", ".join(str(c.version) for c in matching[:3])
            return _cause(name, where, f"Every version of {name} matching {con.req} is yanked "
                              f"({versions}) ({where})",
                              hint="require a version that is not yanked (`sxpm add "
                                   f"{name}` picks the newest)")
        return None

    def explain(self) -> ResolutionImpossible:
        assert self.conflict is not None
        _, name, cons = self.conflict
        for con in cons:
            cause = self._alone(name, con)
            if cause is not None:
                return cause
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
            reporter: ResolutionReporter | None = None, max_steps: int = MAX_STEPS) -> Resolution:
    """Choose one version (and variant) of every name the requirements reach.

    ``preferred`` maps names to the versions the lock already has: they are tried
    first, and yanked versions are allowed only there. ``memory_budget`` (usable
    bytes, see :func:`sxpm.core.variants.usable_memory`) picks a model's variant
    when the requirement names none, by the rule of :mod:`sxpm.core.variants`.
    """
    solver = _Solver(provider, preferred or {}, memory_budget,
                     reporter or ResolutionReporter(), max_steps)
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
    result, _ = solver.solve(cons, order)
    if result is None:
        raise solver.explain()
    return Resolution(dict(sorted(result.items())), solver.steps)
