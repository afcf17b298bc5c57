"""What ``sxpm serve`` may load, by the names requests use.

A request's ``model`` is ``NAME``, ``NAME@VERSION`` or either with ``+EXPERT[@VERSION]``
(an ``expert`` field says the same). ``sxpm serve MODEL...`` serves those models only
(with ``--expert`` as the expert of a request that names none); ``sxpm serve`` alone
serves every installed model. References (paths, registries) are never taken from a
request: only names of what is installed, or what the command line named.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sxpm.core import categories
from sxpm.core.categories import Traits
from sxpm.errors import InputError, ModelNotInstalledError
from sxpm.home import Home
from sxpm.installed.records import list_installed
from sxpm.runner.locate import (
    ExpertFiles,
    ModelFiles,
    check_compatible,
    find_expert,
    find_model,
    is_reference,
    split_spec,
)
from sxpm.runner.residency import LoadSpec, ResidencyManager
from sxpm.runner.session import Session, model_spec


def model_id(model: ModelFiles, expert: ExpertFiles | None = None) -> str:
    name = f"{model.name}@{model.version}"
    return f"{name}+{expert.name}@{expert.version}" if expert is not None else name


def traits(model: ModelFiles) -> Traits:
    """The model's category and capabilities by the one rule (sxpm.core.categories):
    its install record's, else read from its GGUF header."""
    if model.traits is not None:
        return model.traits
    template = model.extras is not None and model.extras.template is not None
    found = categories.resolve(None, None, model.header, template=template)
    assert found is not None  # a header is there: capabilities always follow
    return found


def capabilities(model: ModelFiles) -> list[str]:
    return list(traits(model).capabilities)


def is_embedding(model: ModelFiles) -> bool:
    return "embedding" in traits(model).capabilities


def generates(model: ModelFiles) -> bool:
    caps = traits(model).capabilities
    return "chat" in caps or "completion" in caps


@dataclass(frozen=True)
class Target:
    """A resolved request: the model, the expert and the session that runs them."""

    model: ModelFiles
    expert: ExpertFiles | None
    session: Session

    @property
    def id(self) -> str:
        return model_id(self.model, self.expert)


class Catalog:
    def __init__(self, home: Home, manager: ResidencyManager, models: Sequence[str] = (),
                 expert: str | None = None, *, n_ctx: int | None = None,
                 n_threads: int | None = None, n_gpu_layers: int | None = None,
                 seed: int = 0, variant: str | None = None) -> None:
        self.home = home
        self.manager = manager
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.n_gpu_layers = n_gpu_layers
        self.seed = seed
        self._lock = threading.Lock()
        self._sessions: dict[tuple[str, str | None], Session] = {}
        self.pinned: list[ModelFiles] = [find_model(home, m, variant=variant) for m in models]
        self.default_expert: ExpertFiles | None = None
        if expert is not None:
            if len(self.pinned) != 1:
                raise InputError("--expert needs exactly one MODEL",
                                 hint="name the expert per request: MODEL+EXPERT")
            self.default_expert = find_expert(home, expert, self.pinned[0].name)
            check_compatible(self.default_expert, self.pinned[0])

    # --- listing -------------------------------------------------------------------

    def models(self) -> list[ModelFiles]:
        if self.pinned:
            return list(self.pinned)
        out: list[ModelFiles] = []
        for item in list_installed(self.home.root, "model"):
            try:
                out.append(find_model(self.home, f"{item.name}@{item.version}"))
            except (InputError, ModelNotInstalledError, OSError):
                continue  # a damaged install is listed by `sxpm model list`, not served
            except Exception:  # noqa: BLE001 - a bad GGUF must not hide the others
                continue
        return out

    def entries(self) -> list[dict[str, Any]]:
        """What ``/v1/models`` lists: ids, kinds and capabilities, never paths."""
        out: list[dict[str, Any]] = []
        for model in self.models():
            if self.default_expert is not None:
                out.append(self._entry(model, self.default_expert))
            out.append(self._entry(model, None))
        return out

    def _entry(self, model: ModelFiles, expert: ExpertFiles | None) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "id": model_id(model, expert), "object": "model", "created": 0,
            "owned_by": "sxpm", "kind": "expert" if expert else "model",
            "name": model.name, "version": model.version, "variant": model.variant,
            "architecture": model.header.architecture, "size": model.header.file_size,
            "capabilities": capabilities(model),
        }
        if expert is not None:
            entry["expert"] = {"name": expert.name, "version": expert.version}
        return entry

    # --- resolving -----------------------------------------------------------------

    def find(self, requested: str | None, expert_field: str | None = None) -> Target:
        text = (requested or "").strip()
        base_spec, _, expert_spec = text.partition("+")
        if expert_field:
            if expert_spec and expert_spec != expert_field:
                raise InputError(f"The model names expert {expert_spec!r} and the expert "
                                 f"field {expert_field!r}", hint="give one of them")
            expert_spec = expert_field
        model = self._model(base_spec)
        expert: ExpertFiles | None
        if expert_spec:
            expert = find_expert(self.home, expert_spec, model.name)
        elif self.default_expert is not None and model == self.pinned[0]:
            expert = self.default_expert
        else:
            expert = None
        if expert is not None:
            check_compatible(expert, model)
        return Target(model, expert, self.session(model, expert))

    def _model(self, spec: str) -> ModelFiles:
        if self.pinned:
            if not spec:
                if len(self.pinned) == 1:
                    return self.pinned[0]
                raise InputError("The request names no model",
                                 hint=f"serving {', '.join(map(model_id, self.pinned))}")
            for m in self.pinned:
                if spec in (m.name, model_id(m)):
                    return m
            raise ModelNotInstalledError("model", spec, None)
        if not spec:
            raise InputError("The request names no model", hint="GET /v1/models lists them")
        if is_reference(spec):
            raise ModelNotInstalledError("model", spec, None)
        split_spec(spec)
        return find_model(self.home, spec)

    def session(self, model: ModelFiles, expert: ExpertFiles | None) -> Session:
        """One session per (model, expert); all of a model's share its loaded copy."""
        key = (str(model.path), model_id(model, expert))
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                base = self._sessions.get((str(model.path), model_id(model)))
                if base is None:
                    base = self._sessions[(str(model.path), model_id(model))] = Session(
                        model, None, n_ctx=self.n_ctx, n_threads=self.n_threads,
                        seed=self.seed, n_gpu_layers=self.n_gpu_layers, manager=self.manager)
                if expert is None:
                    return base
                # The base's plan, so that every expert session shares its residency key.
                session = self._sessions[key] = Session(
                    model, expert, n_ctx=base.n_ctx, n_threads=self.n_threads, seed=self.seed,
                    n_gpu_layers=base.plan().n_gpu_layers, manager=self.manager)
            return session

    def embedding_spec(self, target: Target) -> LoadSpec:
        session = target.session
        return model_spec(target.model, session.n_ctx, session.plan().n_gpu_layers,
                          self.n_threads, embedding=True)
