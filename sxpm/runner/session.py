"""A model (plus expert) ready to generate: what ``sxpm.load`` returns.

Nothing heavy happens until the first ``generate()`` or ``chat()``: that call imports
llama-cpp-python, sizes ``n_gpu_layers`` to the accelerator and loads the GGUF (and
the LoRA adapter: the expert's, else an Ollama model's own). ``close()`` (or leaving a
``with`` block) releases the model; a later call loads it again.

    import sxpm
    with sxpm.load("tiny-llama", expert="sql-expert") as llm:
        print(llm.generate("list users", max_tokens=16))
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sxpm.errors import IncompatibleExpertError, InputError, ModelFileError, RunnerError
from sxpm.home import Home
from sxpm.runner.chat import ChatPrompt, ChatRenderer, model_chat_template
from sxpm.runner.extras import ModelExtras
from sxpm.runner.locate import ExpertFiles, ModelFiles, check_compatible, find_expert, find_model
from sxpm.runner.residency import (
    Lease,
    LoadSpec,
    ResidencyManager,
    default_manager,
    import_llama_cpp,
)

if TYPE_CHECKING:
    from sxpm.runner.plan import OffloadPlan
    from sxpm.runner.templates import PromptTemplate

DEFAULT_N_CTX = 2048
DEFAULT_SEED = 0
AUTO_INSTALL_ENV = "SXPM_AUTO_INSTALL"

Messages = Sequence[Mapping[str, Any]]


def auto_install_from_env(env: Mapping[str, str] | None = None) -> bool:
    value = (os.environ if env is None else env).get(AUTO_INSTALL_ENV, "")
    return value.strip().lower() in ("1", "true", "yes", "on")


def gpu_budget(llama_cpp: Any) -> tuple[int | None, Any]:
    """Free bytes of the best device llama.cpp can offload to (None: none) and the device."""
    if not llama_cpp.llama_supports_gpu_offload():
        return None, None  # a CPU build: no need to ask the hardware
    from sxpm.core.detect import detect

    device = detect(check_llama=False).best_device()
    return (device.free_memory, device) if device else (None, None)


def memory_budget() -> int | None:
    """Bytes a model's weights may take here: the GPU's free memory, else available RAM."""
    try:
        import llama_cpp
    except ImportError:
        pass
    else:
        free, _device = gpu_budget(llama_cpp)
        if free is not None:
            return free
    from sxpm.core.detect import detect_cpu

    return detect_cpu().available_memory


def with_system(messages: Messages, system: str) -> list[Mapping[str, Any]]:
    """``messages`` with ``system`` as the system message when they carry none."""
    if not system or any(m.get("role") == "system" for m in messages):
        return list(messages)
    return [{"role": "system", "content": system}, *messages]


class Session:
    """A model and optional expert; loads on first use, released by :meth:`close`.

    The model itself lives in a :class:`~sxpm.runner.residency.ResidencyManager`
    (by default the one every session of the process shares): sessions of one model
    share one loaded copy, with each session's expert switched in per call.
    """

    def __init__(self, model: ModelFiles, expert: ExpertFiles | None = None, *,
                 n_ctx: int | None = None, n_threads: int | None = None,
                 seed: int = DEFAULT_SEED, n_gpu_layers: int | None = None,
                 manager: ResidencyManager | None = None,
                 keep_alive: float | None = None) -> None:
        if expert is not None:
            check_compatible(expert, model)
        self.model = model
        self.expert = expert
        # An Ollama model's own template, system prompt, options and adapter; an expert's
        # adapter and template take their place.
        self.extras = model.extras or ModelExtras()
        trained = model.header.meta_int("context_length")
        n_ctx = n_ctx or self.extras.n_ctx
        self.n_ctx = n_ctx or (min(DEFAULT_N_CTX, trained) if trained else DEFAULT_N_CTX)
        self.n_threads = n_threads
        self.seed = seed
        self.keep_alive = keep_alive
        self.manager = manager or default_manager()
        self._n_gpu_layers = n_gpu_layers
        self._plan: OffloadPlan | None = None
        self._device: Any = None
        self._spec: LoadSpec | None = None
        self._renderer: ChatRenderer | None = None
        self.notes: list[str] = []  # what the last call had to adapt (template, context)

    def __repr__(self) -> str:
        expert = f", expert={self.expert.name!r}" if self.expert else ""
        state = "loaded" if self.loaded else "not loaded"
        return f"<sxpm Session {self.model.name}@{self.model.version}{expert} ({state})>"

    # --- planning ----------------------------------------------------------------

    def plan(self, llama_cpp: Any | None = None) -> OffloadPlan:
        """How many layers go on the accelerator (computed once)."""
        if self._plan is None:
            from sxpm.runner.plan import OffloadPlan, plan_for_header

            n_layers = len(self.model.header.layer_bytes()[0])
            if self._n_gpu_layers is not None:
                self._plan = OffloadPlan(self._n_gpu_layers, n_layers, "asked for")
            else:
                free, self._device = gpu_budget(llama_cpp or import_llama_cpp())
                header = self.expert.adapter_header if self.expert else \
                    self.extras.adapter_header
                adapter = header.tensor_bytes if header else 0
                self._plan = plan_for_header(self.model.header, free, self.n_ctx, adapter)
        return self._plan

    @property
    def device(self) -> Any:
        return self._device

    def llama_kwargs(self, llama_cpp: Any | None = None) -> dict[str, Any]:
        """The arguments ``llama_cpp.Llama`` is (or would be) called with."""
        kwargs = self.spec(llama_cpp).kwargs()
        kwargs["seed"] = self.seed
        if self.adapter is not None:
            kwargs["lora_path"] = str(self.adapter)
        return kwargs

    def spec(self, llama_cpp: Any | None = None) -> LoadSpec:
        """What the residency manager loads for this session (the base, no adapter)."""
        if self._spec is None:
            self._spec = model_spec(self.model, self.n_ctx, self.plan(llama_cpp).n_gpu_layers,
                                    self.n_threads, loader=self._load)
        return self._spec

    @property
    def adapter(self) -> Path | None:
        """The LoRA adapter applied to the model: the expert's, else the model's own."""
        return self.expert.adapter if self.expert is not None else self.extras.adapter

    @property
    def template(self) -> PromptTemplate | None:
        """The prompt template: the expert's, else the model's own, if any."""
        if self.expert is not None and self.expert.template is not None:
            return self.expert.template
        return self.extras.template

    # --- loading -----------------------------------------------------------------

    def _load(self) -> Any:
        llama_cpp = import_llama_cpp()
        kwargs = self.spec(llama_cpp).kwargs()
        kwargs["seed"] = self.seed
        try:
            return llama_cpp.Llama(**kwargs)
        except (ValueError, RuntimeError, OSError) as exc:
            raise self.load_error(exc) from None

    @property
    def loaded(self) -> bool:
        return self._spec is not None and self.manager.is_loaded(self._spec)

    def lease(self, keep_alive: float | None = None) -> Lease:
        """The loaded model with this session's adapter applied, until released.

        The adapter is the expert's, else the model's own (an Ollama ``adapter`` layer):
        either is switched onto the shared resident base by the manager, so the base
        stays loaded once for the model with and without its experts."""
        adapter = self.adapter
        try:
            return self.manager.acquire(self.spec(), adapter,
                                        self.expert.name if self.expert else None,
                                        keep_alive=self.keep_alive if keep_alive is None
                                        else keep_alive)
        except RunnerError as exc:
            if adapter is not None and "adapter" in str(exc):
                raise self.load_error(exc) from None
            raise

    @property
    def llama(self) -> Any:
        """The ``llama_cpp.Llama`` object (with the adapter applied), loaded now if not."""
        with self.lease() as lease:
            return lease.llama

    def load_error(self, exc: Exception) -> Exception:
        text = " ".join(str(exc).split())
        if self.expert is None and self.adapter is not None and (
                "lora" in text.lower() or "adapter" in text.lower()):
            return ModelFileError(self.adapter, f"llama.cpp refused the model's adapter ({text})")
        if self.expert is not None and self.expert.adapter is not None and (
                "lora" in text.lower() or "adapter" in text.lower()):
            return IncompatibleExpertError(
                self.expert.name, self.model.name, f"llama.cpp refused its adapter ({text})",
                hint="the adapter's tensors do not match this model")
        if "model" in text.lower():
            return ModelFileError(self.model.path, f"llama.cpp could not load it ({text})")
        return RunnerError(f"llama.cpp failed: {text}",
                           hint="run with --debug for details")

    def close(self) -> None:
        """Release the model's memory; the session loads it again if used."""
        if self._spec is not None:
            key = self._spec.key
            self.manager.unload(lambda spec: spec.key == key)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- generation --------------------------------------------------------------

    @property
    def chat_template(self) -> str | None:
        """The model's own chat template (GGUF ``tokenizer.chat_template``), if any."""
        return model_chat_template(self.model.header.metadata)

    def render(self, prompt: str, system: str = "") -> str:
        """The prompt as the model sees it (through the expert's or the model's template,
        if any; the model's system prompt when none is given)."""
        template = self.template
        if template is not None:
            return template.render(prompt, system or self.extras.system)
        return prompt

    def _sampling(self, temperature: float, kw: dict[str, Any]) -> dict[str, Any]:
        out = {**self.extras.sampling(), "temperature": temperature, "seed": self.seed}
        if temperature <= 0:
            out["top_k"] = 1  # greedy: deterministic across runs and machines
        out.update(kw)
        return out

    def generate(self, prompt: str, *, max_tokens: int = 128, temperature: float = 0.0,
                 stream: bool = False, system: str = "", raw: bool = False, **kw: Any) -> Any:
        """Complete ``prompt``: the text, or (``stream=True``) an iterator of pieces.

        The expert's (else the model's own) template wraps the prompt unless ``raw``."""
        text = prompt if raw else self.render(prompt, system)
        lease = self.lease()
        try:
            result = lease.llama.create_completion(text, max_tokens=max_tokens, stream=stream,
                                                   **self._sampling(temperature, kw))
        except BaseException:
            lease.release()
            raise
        if stream:
            return _held(lease, (chunk["choices"][0]["text"] for chunk in result))
        lease.release()
        return str(result["choices"][0]["text"])

    def renderer(self, llama: Any) -> ChatRenderer:
        """The chat renderer of ``llama``, kept while that model stays loaded: its Jinja
        template is compiled once, not on every request."""
        cached = self._renderer
        if cached is None or cached.llama is not llama:
            cached = self._renderer = ChatRenderer(llama, self.template, self.chat_template,
                                                   self.model.name)
        return cached

    def fit(self, llama: Any, messages: Messages, max_tokens: int) -> ChatPrompt:
        """The conversation as the model's prompt, fitted to the context; the model's
        own system prompt (an Ollama model's) leads when the messages carry none."""
        return self.renderer(llama).fit(with_system(messages, self.extras.system), max_tokens,
                                        self.n_ctx)

    def chat(self, messages: str | Messages, *, max_tokens: int = 128,
             temperature: float = 0.0, stream: bool = False, **kw: Any) -> Any:
        """Answer a conversation (or one user message): the reply, or an iterator.

        The template is the expert's, else the model's own (an Ollama template, else the
        GGUF chat template), else sxpm's fallback (see
        :mod:`sxpm.runner.chat`); :attr:`notes` says when the fallback was used or old
        turns were dropped to fit the context.
        """
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        lease = self.lease()
        try:
            prompt = self.fit(lease.llama, messages, max_tokens)
            self.notes = prompt.notes
            sampling = self._sampling(temperature, kw)
            stop = [*(sampling.pop("stop", None) or []), *prompt.stop]
            result = lease.llama.create_completion(prompt.tokens, max_tokens=max_tokens,
                                                   stream=stream, stop=stop or None, **sampling)
        except BaseException:
            lease.release()
            raise
        if stream:
            return _held(lease, (chunk["choices"][0]["text"] for chunk in result))
        lease.release()
        return str(result["choices"][0]["text"])


def _held(lease: Lease, pieces: Iterator[str]) -> Iterator[str]:
    """Yield the pieces, keeping the lease until the stream ends or is closed."""
    try:
        for piece in pieces:
            if piece:
                yield piece
    finally:
        close = getattr(pieces, "close", None)
        if close is not None:
            close()
        lease.release()


def model_spec(model: ModelFiles, n_ctx: int, n_gpu_layers: int, n_threads: int | None,
               *, embedding: bool = False, loader: Any = None) -> LoadSpec:
    """The residency key and memory estimate (weights plus KV cache) of a model."""
    from sxpm.runner.plan import kv_bytes_per_layer

    n_layers = len(model.header.layer_bytes()[0])
    memory = model.header.file_size + n_layers * kv_bytes_per_layer(model.header, n_ctx)
    return LoadSpec(f"{model.name}@{model.version}", model.path, n_ctx, n_gpu_layers,
                    n_threads, embedding, memory, loader)


def load(name: str | None = None, expert: str | None = None, *, category: str | None = None,
         variant: str | None = None, home: Home | None = None, install: bool | None = None,
         n_ctx: int | None = None, n_threads: int | None = None, seed: int = DEFAULT_SEED,
         n_gpu_layers: int | None = None, **install_kw: Any) -> Session:
    """Find an installed model (and expert) and return a :class:`Session` (not loaded yet).

    The model is ``name``, or with ``category`` (``cognitive``, ``mnemonic``,
    ``specialist``) the installed default model of that category
    (:func:`sxpm.runner.defaults.default_model`). ``install`` None follows
    ``SXPM_AUTO_INSTALL``; True installs what is missing.
    """
    home = home or Home.from_env()
    if (name is None) == (category is None):
        raise InputError("Give a model name or a category, not both" if name else
                         "Give a model name or a category",
                         hint="sxpm.load('NAME') or sxpm.load(category='mnemonic')")
    if name is None:
        assert category is not None
        # Here, not at the top: it reads the project (references, the lock), which
        # `sxpm run NAME` never needs on its lean path (tests/test_runner.py).
        from sxpm.runner.defaults import default_model

        name = default_model(category, home=home)
    install = auto_install_from_env() if install is None else install
    model = find_model(home, name, variant=variant, memory_budget=memory_budget, install=install,
                       **install_kw)
    found = find_expert(home, expert, model.name, install=install, **install_kw) \
        if expert else None
    return Session(model, found, n_ctx=n_ctx, n_threads=n_threads, seed=seed,
                   n_gpu_layers=n_gpu_layers)
