"""A model (plus expert) ready to generate: what ``sxpm.load`` returns.

Nothing heavy happens until the first ``generate()`` or ``chat()``: that call imports
llama-cpp-python, sizes ``n_gpu_layers`` to the accelerator and loads the GGUF (and
the expert's LoRA adapter). ``close()`` (or leaving a ``with`` block) releases the
model; a later call loads it again.

    import sxpm
    with sxpm.load("tiny-llama", expert="sql-expert") as llm:
        print(llm.generate("list users", max_tokens=16))
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sxpm.errors import IncompatibleExpertError, MissingExtraError, ModelFileError, RunnerError
from sxpm.home import Home
from sxpm.runner.extras import ModelExtras
from sxpm.runner.locate import ExpertFiles, ModelFiles, check_compatible, find_expert, find_model

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


def import_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise MissingExtraError("llama_cpp", "run") from exc
    return llama_cpp


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


def chat_format_name(template_text: str) -> str:
    return "sxpm-" + hashlib.sha256(template_text.encode()).hexdigest()[:16]


def with_system(messages: Messages, system: str) -> list[Mapping[str, Any]]:
    """``messages`` with ``system`` as the system message when they carry none."""
    if not system or any(m.get("role") == "system" for m in messages):
        return list(messages)
    return [{"role": "system", "content": system}, *messages]


def register_template_chat_format(llama_cpp: Any, template: PromptTemplate | None,
                                  system: str = "") -> str | None:
    """Make a template (an expert's, an Ollama model's) a llama-cpp-python chat format,
    ``system`` the default system message; its name, or None."""
    if template is None:
        return None
    from llama_cpp import llama_chat_format as lcf

    name = chat_format_name(template.text + "\0" + system)

    def formatter(messages: Messages, **_kw: Any) -> Any:
        return lcf.ChatFormatterResponse(prompt=template.render_chat(with_system(messages,
                                                                                 system)))

    registry = lcf.LlamaChatCompletionHandlerRegistry()  # type: ignore[no-untyped-call]
    registry.register_chat_completion_handler(
        name, lcf.chat_formatter_to_chat_completion_handler(formatter), overwrite=True)
    return name


class Session:
    """A model and optional expert; loads on first use, released by :meth:`close`."""

    def __init__(self, model: ModelFiles, expert: ExpertFiles | None = None, *,
                 n_ctx: int | None = None, n_threads: int | None = None,
                 seed: int = DEFAULT_SEED, n_gpu_layers: int | None = None) -> None:
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
        self._n_gpu_layers = n_gpu_layers
        self._plan: OffloadPlan | None = None
        self._device: Any = None
        self._llama: Any = None
        self._chat_format: str | None = None

    def __repr__(self) -> str:
        expert = f", expert={self.expert.name!r}" if self.expert else ""
        state = "loaded" if self._llama is not None else "not loaded"
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
        kwargs: dict[str, Any] = {
            "model_path": str(self.model.path),
            "n_ctx": self.n_ctx,
            "n_gpu_layers": self.plan(llama_cpp).n_gpu_layers,
            "seed": self.seed,
            "verbose": False,
        }
        if self.n_threads:
            kwargs["n_threads"] = self.n_threads
        if self.adapter is not None:
            kwargs["lora_path"] = str(self.adapter)
        return kwargs

    @property
    def adapter(self) -> Path | None:
        """The LoRA adapter loaded with the model: the expert's, else the model's own."""
        return self.expert.adapter if self.expert is not None else self.extras.adapter

    @property
    def template(self) -> PromptTemplate | None:
        """The prompt template: the expert's, else the model's own, if any."""
        if self.expert is not None and self.expert.template is not None:
            return self.expert.template
        return self.extras.template

    # --- loading -----------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._llama is not None

    @property
    def llama(self) -> Any:
        """The ``llama_cpp.Llama`` object, loaded now if it was not."""
        if self._llama is None:
            llama_cpp = import_llama_cpp()
            kwargs = self.llama_kwargs(llama_cpp)
            self._chat_format = register_template_chat_format(llama_cpp, self.template,
                                                              self.extras.system)
            if self._chat_format:
                kwargs["chat_format"] = self._chat_format
            try:
                self._llama = llama_cpp.Llama(**kwargs)
            except (ValueError, RuntimeError, OSError) as exc:
                raise self.load_error(exc) from None
        return self._llama

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
        llm, self._llama = self._llama, None
        if llm is not None:
            llm.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001, S110 - interpreter shutdown
            pass

    # --- generation --------------------------------------------------------------

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
                 stream: bool = False, system: str = "", **kw: Any) -> Any:
        """Complete ``prompt``: the text, or (``stream=True``) an iterator of pieces."""
        text = self.render(prompt, system)
        result = self.llama.create_completion(text, max_tokens=max_tokens, stream=stream,
                                              **self._sampling(temperature, kw))
        if stream:
            return (chunk["choices"][0]["text"] for chunk in result)
        return str(result["choices"][0]["text"])

    def chat(self, messages: str | Messages, *, max_tokens: int = 128,
             temperature: float = 0.0, stream: bool = False, **kw: Any) -> Any:
        """Answer a conversation (or one user message): the reply, or an iterator."""
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        llm = self.llama
        messages = with_system(messages, self.extras.system)
        result = llm.create_chat_completion(messages=messages, max_tokens=max_tokens,
                                            stream=stream, **self._sampling(temperature, kw))
        if stream:
            return _deltas(result)
        return str(result["choices"][0]["message"].get("content") or "")


def _deltas(chunks: Any) -> Iterator[str]:
    for chunk in chunks:
        piece = chunk["choices"][0].get("delta", {}).get("content")
        if piece:
            yield str(piece)


def load(name: str, expert: str | None = None, *, variant: str | None = None,
         home: Home | None = None, install: bool | None = None, n_ctx: int | None = None,
         n_threads: int | None = None, seed: int = DEFAULT_SEED,
         n_gpu_layers: int | None = None, **install_kw: Any) -> Session:
    """Find an installed model (and expert) and return a :class:`Session` (not loaded yet).

    ``install`` None follows ``SXPM_AUTO_INSTALL``; True installs what is missing.
    """
    home = home or Home.from_env()
    install = auto_install_from_env() if install is None else install
    model = find_model(home, name, variant=variant, memory_budget=memory_budget, install=install,
                       **install_kw)
    found = find_expert(home, expert, model.name, install=install, **install_kw) \
        if expert else None
    return Session(model, found, n_ctx=n_ctx, n_threads=n_threads, seed=seed,
                   n_gpu_layers=n_gpu_layers)
