"""The HTTP side: Ollama's API (server/routes.go) or vLLM's OpenAI server, with real shapes.

Every generation and embedding passes one gate that applies the checks and faults in a fixed
order: unknown model (404), what the model cannot do (400: thinking, generate or chat, as
Ollama checks them before scheduling), blip (500), dead engine (500), hang (never answers), GPU
errors (error lines, then 500), a failing runner (500 at once, no line). Liveness (``/``,
``/health``) only blips, or answers 503 on a dead vLLM engine. A model's runner (Ollama) has an
HTTP server of its own: ``RunnerServer``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import select
import socket
import struct
import sys
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from llm_supervisor.simengine.engine import (
    CONTEXT_LENGTH,
    OLLAMA_VERSION,
    THINKING_BY_DEFAULT,
    Engine,
    Generation,
    count_tokens,
)
from llm_supervisor.simengine.logs import error_lines, rfc3339, utc_now
from llm_supervisor.simengine.models import Model, remove_manifest, think_wanted, write_manifest

__all__ = ["OLLAMA_VERSION", "VLLM_VERSION", "RunnerServer", "SimServer"]

VLLM_VERSION = "0.11.0"
VLLM_MAX_MODEL_LEN = 32768
TEMPLATE_TOKENS = 10  # what a chat template adds around the prompt
DEAD = "EngineCore encountered an issue. See stack trace (above) for the root cause."
RUNNER_EXITED = "llama runner process has terminated: exit status 2"
NAN_ERROR = "failed to encode response: json: unsupported value: NaN"  # the runner's (< 0.30)
THINK_ONLY_CHECK = (0, 12, 4)  # this release alone refuses any ``think`` on a model without it
LOADING = {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}
# Ollama's api.Options (api/types.go) and Runner fields: any other key in ``options`` is
# ignored with a WARN "invalid option provided" (``think`` there is a common mistake)
OPTIONS = frozenset((
    "num_keep", "seed", "num_predict", "top_k", "top_p", "min_p", "typical_p",
    "repeat_last_n", "temperature", "repeat_penalty", "presence_penalty",
    "frequency_penalty", "stop", "numa", "num_ctx", "num_batch", "num_gpu", "main_gpu",
    "use_mmap", "num_thread", "low_vram", "f16_kv", "logits_all", "vocab_only", "use_mlock",
    "penalize_newline", "mirostat", "mirostat_tau", "mirostat_eta", "tfs_z"))


class SimServer(ThreadingHTTPServer):
    daemon_threads = True  # a hung generation must not keep the process alive
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], engine: Engine) -> None:
        self.engine = engine
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)  # a client hanging up is no error


def wait_for_hangup(handler: BaseHTTPRequestHandler, stop: threading.Event) -> None:
    """Never answer: wait until the client gives up (or the engine stops), then hang up."""
    handler.close_connection = True
    connection = handler.connection
    while not stop.is_set():
        readable, _, _ = select.select([connection], [], [], 0.2)
        if readable:
            try:
                if not connection.recv(1, socket.MSG_PEEK):
                    return  # the client closed the connection
            except OSError:
                return
            stop.wait(0.2)


class RunnerHandler(BaseHTTPRequestHandler):
    """One model's runner. From Ollama 0.30 on an upstream llama-server on a loopback port of
    its own: ``/health`` answers from its HTTP threads, ``/slots`` from its main loop — both 503
    "Loading model" while it loads, and on a GPU hang ``/slots`` never answers while
    ``/health`` still does (llama.cpp#27388). Before 0.30, Ollama's own runner: ``/health``
    only, no ``/slots``."""

    protocol_version = "HTTP/1.1"
    server: RunnerServer

    def do_GET(self) -> None:
        path, server = urlsplit(self.path).path, self.server
        if not server.llama:
            if path == "/health":
                self.send(200, {"status": "loading model" if server.loading else "ok",
                                "progress": 0.5 if server.loading else 1})
            else:
                self.send(404, None, b"404 page not found")
        elif server.loading:
            self.send(503, LOADING)
        elif path in ("/health", "/v1/health"):
            self.send(200, {"status": "ok"})
        elif path == "/slots":
            if server.engine.hanging():  # stuck in a GPU kernel: its main loop never gets here
                wait_for_hangup(self, server.engine.stop)
            else:
                self.send(200, server.engine.slots_document(server.model))
        else:
            self.send(404, {"error": {"code": 404, "message": "File Not Found",
                                      "type": "not_found_error"}})

    def send(self, code: int, document: Any, text: bytes | None = None) -> None:
        body = json.dumps(document).encode() if text is None else text
        self.send_response(code)
        self.send_header("Content-Type", "application/json; charset=utf-8" if text is None
                         else "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class RunnerServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, engine: Engine, model: Model | None = None, llama: bool = True) -> None:
        self.engine, self.model, self.llama = engine, model or engine.default, llama
        self.loading = True  # until the model is loaded
        super().__init__(("127.0.0.1", 0), RunnerHandler)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: SimServer
    status = 0
    body: bytes | None = None  # the current request's body, once read

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        started, engine = time.perf_counter(), self.server.engine
        path = urlsplit(self.path).path
        route = ROUTES[engine.kind].get((method, path)) or _by_prefix(engine.kind, method, path)
        self.body = None
        try:
            if route is None:
                self.not_found()
            else:
                route(self, engine)
            self.drain()
        finally:
            if self.status:
                engine.log.access(self.status, time.perf_counter() - started,
                                  self.client_address, self.command, self.path,
                                  self.request_version)

    # responses
    def send_response(self, code: int, message: str | None = None) -> None:
        self.status = code  # no Server header: Go's net/http sends none; uvicorn its own
        self.send_response_only(code, message)
        if self.server.engine.kind == "vllm":
            self.send_header("server", "uvicorn")
        self.send_header("Date", self.date_time_string())

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the engine's own access line is written by _dispatch

    def send_body(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, code: int, document: Any) -> None:
        self.send_body(code, json.dumps(document).encode(), "application/json; charset=utf-8")

    def fail(self, code: int, message: str, kind: str = "InternalServerError") -> None:
        """An error in the shape the endpoint's API uses: Ollama's or OpenAI's (vLLM's)."""
        if self.path.startswith("/v1/"):
            self.send_json(code, {"error": {"message": message, "type": kind, "param": None,
                                            "code": code}})
        else:
            self.send_json(code, {"error": message})

    def not_found(self) -> None:
        if self.server.engine.kind == "ollama":
            self.send_body(404, b"404 page not found", "text/plain")
        else:
            self.send_json(404, {"detail": "Not Found"})

    def read_body(self) -> bytes:
        """The request's body, read once (Content-Length bodies; clients send no other)."""
        if self.body is None:
            self.body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        return self.body

    def drain(self) -> None:
        """Read what the route left unread, or the body would be taken for the next request
        on a keep-alive connection (a 404 to a POST broke the official clients)."""
        if self.body is not None or self.close_connection:
            return
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True  # not worth parsing: hang up after the answer
        else:
            self.read_body()

    def read_json(self) -> dict[str, Any] | None:
        raw = self.read_body()
        try:
            body = json.loads(raw or b"null")
        except ValueError as e:
            body = e
        if not isinstance(body, dict):
            self.fail(400, f"invalid request body: {body}", "BadRequestError")
            return None
        return body

    def start_stream(self, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def chunk(self, document: Any) -> None:
        self.raw(json.dumps(document).encode() + b"\n")

    def event(self, data: str) -> None:
        """One server-sent event (OpenAI streaming): ``data: …`` and a blank line."""
        self.raw(b"data: " + data.encode() + b"\n\n")

    def raw(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")

    def hang(self, stop: threading.Event) -> None:
        wait_for_hangup(self, stop)


Refusal = Callable[[Model, str], "str | None"]


def gate(h: Handler, engine: Engine, name: Any, refuse: Refusal | None = None) -> Model | None:
    """Find the model and apply the checks and generation faults; None: already answered."""
    if name is None and engine.kind == "ollama":
        h.fail(400, "model is required", bad_request(engine))
        return None
    wanted = engine.model if name is None else str(name)
    model = engine.find(wanted)
    if model is None or not model.present:
        h.fail(404, f"The model `{wanted}` does not exist." if engine.kind == "vllm"
               else f"model '{wanted}' not found", "NotFoundError")
        return None
    refusal = refuse(model, wanted) if refuse is not None else None
    if refusal is not None:
        h.fail(400, refusal, bad_request(engine))
    elif engine.blip("generations"):
        h.fail(500, f"simulated transient error (blip_every={engine.faults.blip_every})")
    elif engine.dead:
        h.fail(500, DEAD, "EngineDeadError")
    elif engine.hanging():
        with engine.slot(model=model):  # a hung generation holds its slot: the ones behind wait
            h.hang(engine.stop)
    elif engine.gpu_failing():
        gpu_errors(h, engine)
    elif engine.runner_failing():  # the runner exits on every request: no GPU line, at once
        h.fail(500, RUNNER_EXITED if engine.kind == "ollama" else "Internal server error")
    else:
        return model
    return None


def gpu_errors(h: Handler, engine: Engine) -> None:
    lines = error_lines(engine.kind, engine.placement, engine.faults.error_lines)
    if engine.kind == "vllm":
        engine.dead = True
        engine.log.vllm("ERROR", "core.py:710", "EngineCore encountered a fatal error.",
                        proc="EngineCore_DP0")
        engine.log.lines(lines, prefix=engine.log.engine_core)
        h.fail(500, DEAD, "EngineDeadError")
    else:
        engine.log.lines(lines)
        h.fail(500, engine.error_message(lines))


def bad_request(engine: Engine) -> str:
    """The error type of a 400 on /v1: Ollama's OpenAI layer's or vLLM's."""
    return "invalid_request_error" if engine.kind == "ollama" else "BadRequestError"


def quoted(name: str) -> str:
    """Go's ``%q`` of a model name, as Ollama's capability errors write it."""
    return json.dumps(name, ensure_ascii=False)


def ollama_refusal(engine: Engine, think: Any, verb: str, options: Any) -> Refusal:
    """What Ollama refuses before scheduling (server/routes.go): ``think`` on a model without
    "thinking" (0.12.4 alone: any ``think``), a generation on an embedding-only model; then
    it warns of options it does not know (``think`` among them) and goes on."""
    def refuse(model: Model, wanted: str) -> str | None:
        if engine.kind != "ollama":
            return None
        if think is not None and not model.thinks and (
                think_wanted(think) or engine.release == THINK_ONLY_CHECK):
            return f"{quoted(wanted)} does not support thinking"
        if model.embeds_only and verb:
            return f"{quoted(wanted)} does not support {verb}"
        for key in options if isinstance(options, dict) else ():
            if key not in OPTIONS:
                engine.log.slog("WARN", "types.go:654", "invalid option provided", option=key)
        return None
    return refuse


def thought(engine: Engine, model: Model, think: Any) -> str:
    """Where a reasoning model's thinking goes: "field" (``thinking``), "inline" (``<think>``
    in the answer: Ollama before 0.12.4 when ``think`` is not given), or "" (none)."""
    if engine.kind != "ollama" or not model.thinks:
        return ""
    if model.kind == "reasoning-always":
        return "field"  # gpt-oss: think false is accepted and ignored
    if think is None:
        return "field" if engine.release >= THINKING_BY_DEFAULT else "inline"
    return "field" if think_wanted(think) else ""


def authorised(h: Handler, engine: Engine) -> bool:
    """vLLM started with --api-key: /v1 requests need ``Authorization: Bearer <key>``."""
    if engine.api_key is None or not h.path.startswith("/v1"):
        return True
    if h.headers.get("Authorization", "") == f"Bearer {engine.api_key}":
        return True
    h.read_body()  # keep the connection usable
    h.send_json(401, {"error": "Unauthorized"})
    return False


def liveness(h: Handler, engine: Engine) -> None:
    if engine.kind == "vllm" and engine.dead:
        h.send_body(503, b"", "application/json")
    elif engine.blip("liveness"):
        h.send_body(500, b"Internal Server Error", "text/plain")
    elif engine.kind == "ollama":
        h.send_body(200, b"Ollama is running", "text/plain; charset=utf-8")
    else:
        h.send_body(200, b"", "application/json")


# Ollama
def _details(model: Model) -> dict[str, Any]:
    p = model.profile
    return {"parent_model": "", "format": "gguf", "family": p.family, "families": [p.family],
            "parameter_size": p.parameter_size, "quantization_level": p.quantization}


def _model_entry(engine: Engine, model: Model) -> dict[str, Any]:
    return {"name": model.name, "model": model.name,
            "modified_at": rfc3339(engine.started_at),
            "size": model.profile.size, "digest": model.digest, "details": _details(model)}


def ollama_ps(h: Handler, engine: Engine) -> None:
    """Every loaded model, the most recently used first (the longest left to live)."""
    loaded = sorted((m for m in engine.models if m.used_at is not None),
                    key=lambda m: m.used_at or 0.0, reverse=True)
    entries = []
    for model in loaded:
        size = model.profile.size + model.profile.kv_cache
        entry = {**_model_entry(engine, model), "size": size,
                 "expires_at": rfc3339((model.used_at or 0.0) + 300),
                 "size_vram": size if engine.model_offloaded(model) else 0,
                 "context_length": min(CONTEXT_LENGTH, model.profile.context_length)}
        del entry["modified_at"]
        entries.append(entry)
    h.send_json(200, {"models": entries})


def _message(content: str, thinking: str = "") -> dict[str, Any]:
    message = {"role": "assistant", "content": content}
    if thinking:
        message["thinking"] = thinking  # omitempty
    return message


def _piece(model: str, chat: bool, text: str, thinking: str) -> dict[str, Any]:
    """One answer object of /api/chat (``message``) or /api/generate (``response``, and
    ``thinking`` when the model thought)."""
    out: dict[str, Any] = {"model": model, "created_at": utc_now()}
    if chat:
        out["message"] = _message(text, thinking)
    else:
        out["response"] = text
        if thinking:
            out["thinking"] = thinking
    return out


def _ollama_done(model: str, chat: bool, g: Generation, streamed: bool,
                 raw: bool = False) -> dict[str, Any]:
    """The last answer of a generation (a streamed one carries no text: the chunks did)."""
    text, thinking = ("", "") if streamed else (g.text, g.thinking)
    out = _piece(model, chat, text, thinking)
    out.update(done=True, done_reason=g.done_reason)
    if not chat and not raw:  # raw skips the template, and the context with it
        out["context"] = list(range(151644, 151644 + g.prompt_tokens + g.eval_count))
    out.update(total_duration=g.total_ns, load_duration=g.load_ns,
               prompt_eval_count=g.prompt_tokens, prompt_eval_duration=g.prompt_ns,
               eval_count=g.eval_count, eval_duration=g.eval_ns)
    return out


def ollama_generate(h: Handler, engine: Engine, chat: bool = False) -> None:
    body = h.read_json()
    if body is None:
        return
    think, options = body.get("think"), body.get("options")
    model = gate(h, engine, body.get("model"), ollama_refusal(
        engine, think, "chat" if chat else "generate", options))
    if model is None:
        return
    name = body["model"]
    raw = not chat and body.get("raw") is True
    if chat:
        prompt = " ".join(str(m.get("content", "")) for m in body.get("messages") or [])
    else:
        prompt = str(body.get("prompt") or "")
    if not prompt:  # an empty prompt only loads the model
        engine.load(model)
        done: dict[str, Any] = {"model": name, "created_at": utc_now()}
        if chat:
            done["message"] = {"role": "assistant", "content": ""}
        h.send_json(200, {**done, "done": True, "done_reason": "load"})
        return
    limit = (options if isinstance(options, dict) else {}).get("num_predict")
    limit = int(limit) if isinstance(limit, int | float) else None
    tokens = count_tokens(prompt) + (0 if raw else TEMPLATE_TOKENS)
    mode = thought(engine, model, think)
    if body.get("stream", True) is False:
        g = engine.generate(tokens, limit, model=model, thought=mode)
        h.send_json(200, _ollama_done(name, chat, g, streamed=False, raw=raw))
        return

    def partial(piece: str, thinking: bool) -> None:
        text, thought = ("", piece) if thinking else (piece, "")
        h.chunk({**_piece(name, chat, text, thought), "done": False})

    h.start_stream("application/x-ndjson")
    g = engine.generate(tokens, limit, on_token=partial, model=model, thought=mode)
    h.chunk(_ollama_done(name, chat, g, streamed=True, raw=raw))
    h.end_stream()


def ollama_tags(h: Handler, engine: Engine) -> None:
    h.send_json(200, {"models": [_model_entry(engine, m) for m in engine.models if m.present]})


PULL_STEPS = 4


def ollama_pull(h: Handler, engine: Engine) -> None:
    """Downloads take ``pull_seconds``, in steps of streamed progress; then the model is there
    (and its manifest, in ``OLLAMA_MODELS``)."""
    body = h.read_json()
    if body is None:
        return
    model = engine.find(str(body.get("model") or body.get("name") or ""))
    if model is None:
        h.fail(500, "pull model manifest: file does not exist")
        return
    step = engine.faults.pull_seconds / PULL_STEPS if not model.present else 0.0
    digest = {"status": f"pulling {model.blob[:12]}", "digest": f"sha256:{model.blob}",
              "total": model.profile.size}
    if body.get("stream", True) is False:
        time.sleep(step * PULL_STEPS)
        _pulled(engine, model)
        h.send_json(200, {"status": "success"})
        return
    h.start_stream("application/x-ndjson")
    h.chunk({"status": "pulling manifest"})
    for i in range(1, PULL_STEPS + 1):
        time.sleep(step)
        h.chunk({**digest, "completed": model.profile.size * i // PULL_STEPS})
    for status in ("verifying sha256 digest", "writing manifest"):
        h.chunk({"status": status})
    _pulled(engine, model)
    h.chunk({"status": "success"})
    h.end_stream()


def _pulled(engine: Engine, model: Model) -> None:
    model.present = True
    if engine.models_dir is not None:
        try:
            write_manifest(engine.models_dir, model)
        except OSError as e:
            engine.log.slog("WARN", "simengine.py", "cannot write the manifest",
                            model=model.name, error=str(e.strerror or e))


# What Ollama's /api/show reports of Qwen2.5-7B-Instruct (model_info keys from its GGUF).
MODEL_INFO = {"general.architecture": "qwen2", "general.parameter_count": 7615616512,
              "qwen2.block_count": 28, "qwen2.context_length": 32768,
              "qwen2.embedding_length": 3584, "qwen2.feed_forward_length": 18944,
              "qwen2.attention.head_count": 28, "qwen2.attention.head_count_kv": 4,
              "qwen2.rope.freq_base": 1000000}


def _model_info(model: Model) -> dict[str, Any]:
    p = model.profile
    if p.family == "qwen2":
        return MODEL_INFO
    return {"general.architecture": p.family, f"{p.family}.block_count": p.layers - 1,
            f"{p.family}.context_length": p.context_length,
            f"{p.family}.embedding_length": p.embedding_length}


def _served(h: Handler, engine: Engine, body: dict[str, Any]) -> Model | None:
    """The model a management request names, if it is served; else a 404 answer."""
    name = str(body.get("model") or body.get("name") or "")
    model = engine.find(name)
    if model is None:
        h.fail(404, f"model '{name}' not found")
    return model


def ollama_show(h: Handler, engine: Engine) -> None:
    body = h.read_json()
    model = None if body is None else _served(h, engine, body)
    if model is None:
        return
    h.send_json(200, {
        "license": "Apache License 2.0",
        "modelfile": f"# Modelfile generated by \"ollama show\"\nFROM {model.name}\n",
        "parameters": 'stop                           "<|im_start|>"\n'
                      'stop                           "<|im_end|>"',
        "template": "{{ .Prompt }}",
        "details": _details(model),
        "model_info": _model_info(model),
        "capabilities": model.capabilities,
        "modified_at": rfc3339(engine.started_at)})


def _embedding(text: str, length: int) -> list[float]:
    """A unit vector that depends on the text only, as /api/embed's are normalized."""
    seed = hashlib.sha256(text.encode()).digest()
    raw = [((seed[i % 32] + i) % 97) / 97 - 0.5 for i in range(length)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [round(x / norm, 6) for x in raw]


def embed_texts(h: Handler, engine: Engine, model: Model,
                texts: list[str]) -> list[list[float]] | None:
    """The texts' vectors, with an embedding model's faults; None: answered with an error
    (NaN cannot be written in JSON: Ollama's runner before 0.30 fails to encode it; from 0.30
    llama-server writes null, read back as 0)."""
    faults, length = engine.faults, model.profile.embedding_length
    bad = model.embeds_only
    if bad and faults.embed_nan and engine.kind == "vllm":
        h.send_body(500, b"Internal Server Error", "text/plain; charset=utf-8")
        return None
    if bad and faults.embed_nan and not engine.llama_server_runners:
        engine.log.slog("INFO", "server.go:939", f"llm embedding error: {NAN_ERROR}")
        h.fail(500, NAN_ERROR)
        return None
    tokens = sum(count_tokens(t) for t in texts)
    with engine.slot(tokens, model) as slot:  # the runner decodes them in one of its slots
        slot["n_prompt_tokens_processed"] = tokens
    if bad and (faults.embed_nan or faults.embed_zeros):
        return [[0.0] * length for _ in texts]
    if bad and faults.embed_constant:
        return [_embedding("", length) for _ in texts]
    return [_embedding(t, length) for t in texts]


def _inputs(given: Any) -> list[str]:
    if isinstance(given, str):
        return [given] if given else []
    return [str(t) for t in given] if isinstance(given, list) else []


def ollama_embed(h: Handler, engine: Engine) -> None:
    body = h.read_json()
    if body is None:
        return
    model = gate(h, engine, body.get("model"), ollama_refusal(engine, None, "",
                                                               body.get("options")))
    if model is None:
        return
    texts = _inputs(body.get("input"))
    started = time.perf_counter()
    load_ns = engine.load(model)
    vectors = embed_texts(h, engine, model, texts)
    if vectors is None:
        return
    h.send_json(200, {"model": body["model"], "embeddings": vectors,
                      "total_duration": round((time.perf_counter() - started) * 1e9),
                      "load_duration": load_ns,
                      "prompt_eval_count": sum(count_tokens(t) for t in texts)})


def ollama_delete(h: Handler, engine: Engine) -> None:
    """200 with an empty body, like Ollama; then the model is missing until pulled again (its
    manifest gone from ``OLLAMA_MODELS``)."""
    body = h.read_json()
    model = None if body is None else _served(h, engine, body)
    if model is None:
        return
    model.present = False
    if engine.models_dir is not None:
        remove_manifest(engine.models_dir, model)
    h.send_response(200)
    h.send_header("Content-Length", "0")
    h.end_headers()


# OpenAI-compatible (vLLM's server; Ollama has the same under /v1)
def openai_models(h: Handler, engine: Engine) -> None:
    entries = []
    for model in engine.models if engine.kind == "ollama" else [engine.default]:
        entry: dict[str, Any] = {"id": model.name, "object": "model",
                                 "created": int(engine.started_at)}
        if engine.kind == "ollama":
            if not model.present:
                continue
            entry["owned_by"] = "library"
        else:
            entry.update(owned_by="vllm", root=model.name, parent=None,
                         max_model_len=VLLM_MAX_MODEL_LEN, permission=[])
        entries.append(entry)
    h.send_json(200, {"object": "list", "data": entries})


def openai_model(h: Handler, engine: Engine) -> None:
    """Ollama's ``GET /v1/models/{id}`` (vLLM has no such route: 404 there)."""
    name = unquote(urlsplit(h.path).path.removeprefix("/v1/models/"))
    model = engine.find(name)
    if model is None or not model.present:
        h.fail(404, f"model '{name}' not found", "not_found_error")
        return
    h.send_json(200, {"id": name, "object": "model", "created": int(engine.started_at),
                      "owned_by": "library"})


def _openai_request_ok(h: Handler, engine: Engine, body: dict[str, Any], chat: bool) -> bool:
    """vLLM validates the request before anything else: 400 without messages or a prompt."""
    if engine.kind != "vllm":
        return True
    if chat and not isinstance(body.get("messages"), list):
        h.fail(400, "1 validation error for ChatCompletionRequest\nmessages\n  Field required",
               "BadRequestError")
        return False
    if not chat and body.get("prompt") in (None, "", []):
        h.fail(400, "Either prompt or prompt_embeds must be provided and non-empty.",
               "BadRequestError")
        return False
    return True


def _reasoning_effort(body: dict[str, Any]) -> Any:
    """Ollama's OpenAI layer: ``reasoning_effort`` becomes ``think`` ("none": off)."""
    effort = body.get("reasoning_effort")
    if effort is None and isinstance(body.get("reasoning"), dict):
        effort = body["reasoning"].get("effort")
    return False if effort == "none" else effort


def openai_completion(h: Handler, engine: Engine, chat: bool = False) -> None:
    if not authorised(h, engine):
        return
    body = h.read_json()
    if body is None:
        return
    if engine.kind == "vllm" and engine.default.embeds_only:
        h.not_found()  # a pooling model: vLLM registers no generation routes
        return
    think = _reasoning_effort(body) if chat else None
    if not _openai_request_ok(h, engine, body, chat):
        return
    model = gate(h, engine, body.get("model"), ollama_refusal(
        engine, think, "chat" if chat else "generate", None))
    if model is None:
        return
    if chat:
        prompt = " ".join(str(m.get("content", "")) for m in body.get("messages") or [])
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
    else:
        prompt = body.get("prompt", "")
        prompt = " ".join(map(str, prompt)) if isinstance(prompt, list) else str(prompt)
        limit = body.get("max_tokens", 16)
    prompt_tokens = count_tokens(prompt) + (TEMPLATE_TOKENS if chat else 0)
    limit = int(limit) if isinstance(limit, int | float) else None
    mode = thought(engine, model, think)
    if body.get("stream") is True:
        _openai_stream(h, engine, body, chat, prompt_tokens, limit, model, mode)
        return
    g = engine.generate(prompt_tokens, limit, model=model, thought=mode)
    choice: dict[str, Any] = {"index": 0}
    if chat:
        choice["message"] = {"role": "assistant", "content": g.text, "tool_calls": []}
        if g.thinking and engine.kind == "ollama":
            choice["message"]["reasoning"] = g.thinking
    else:
        choice["text"] = g.text
    choice.update(logprobs=None, finish_reason=g.done_reason, stop_reason=None)
    n = choices_wanted(engine, body)  # vLLM batches the n sequences: one generation's time
    engine.count("generation_tokens", g.eval_count * (n - 1))
    h.send_json(200, {
        "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()), "model": body.get("model") or engine.model,
        "choices": [{**choice, "index": i} for i in range(n)],
        "usage": {"prompt_tokens": g.prompt_tokens, "total_tokens": g.prompt_tokens +
                  g.eval_count * n, "completion_tokens": g.eval_count * n}})


def choices_wanted(engine: Engine, body: dict[str, Any]) -> int:
    """OpenAI's ``n``: vLLM answers that many choices; Ollama's OpenAI layer always one."""
    n = body.get("n")
    return n if engine.kind == "vllm" and isinstance(n, int) and n > 0 else 1


def _openai_stream(h: Handler, engine: Engine, body: dict[str, Any], chat: bool,
                   prompt_tokens: int, limit: int | None, model: Model, mode: str) -> None:
    """``stream: true``: server-sent events, one chunk per token, then ``data: [DONE]``
    (vLLM's serving_completion.py / serving_chat.py shapes; Ollama's thinking tokens come as
    ``delta.reasoning``, and as empty text on completions)."""
    ident = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
    created, name = int(time.time()), body.get("model") or engine.model
    kind = "chat.completion.chunk" if chat else "text_completion"

    def send(choice: dict[str, Any], usage: dict[str, int] | None = None) -> None:
        chunk: dict[str, Any] = {"id": ident, "object": kind, "created": created,
                                 "model": name, "choices": [choice] if choice else []}
        if usage is not None:
            chunk["usage"] = usage
        h.event(json.dumps(chunk))

    def token(piece: str, thinking: bool) -> None:
        if chat:
            delta = {"content": "", "reasoning": piece} if thinking else {"content": piece}
            send({"index": 0, "delta": delta, "logprobs": None, "finish_reason": None})
        else:
            send({"index": 0, "text": "" if thinking else piece, "logprobs": None,
                  "finish_reason": None, "stop_reason": None})

    h.start_stream("text/event-stream; charset=utf-8")
    if chat:
        send({"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
              "finish_reason": None})
    g = engine.generate(prompt_tokens, limit, on_token=token, model=model, thought=mode)
    last: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": g.done_reason}
    last.update({"delta": {}} if chat else {"text": "", "stop_reason": None})  # type: ignore[dict-item]
    send(last)
    if (body.get("stream_options") or {}).get("include_usage"):
        send({}, {"prompt_tokens": g.prompt_tokens, "total_tokens": g.prompt_tokens +
                  g.eval_count, "completion_tokens": g.eval_count})
    h.event("[DONE]")
    h.end_stream()


def _vector(values: list[float], encoding: Any) -> list[float] | str:
    """``encoding_format`` "base64" (the openai client's default): little-endian float32."""
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
    return values


def openai_embeddings(h: Handler, engine: Engine) -> None:
    """``POST /v1/embeddings``: Ollama's for any model it can load (EmbedHandler asks no
    capability); vLLM's only for a pooling model (the route is absent otherwise)."""
    if not authorised(h, engine):
        return
    body = h.read_json()
    if body is None:
        return
    if engine.kind == "vllm" and not engine.default.embeds_only:
        h.not_found()
        return
    model = gate(h, engine, body.get("model"))
    if model is None:
        return
    texts = _inputs(body.get("input"))
    engine.load(model)
    vectors = embed_texts(h, engine, model, texts)
    if vectors is None:
        return
    tokens = sum(count_tokens(t) for t in texts)
    data = [{"object": "embedding", "embedding": _vector(v, body.get("encoding_format")),
             "index": i} for i, v in enumerate(vectors)]
    out: dict[str, Any] = {"object": "list", "data": data, "model": body.get("model"),
                           "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    if engine.kind == "vllm":
        out = {"id": f"embd-{uuid.uuid4().hex}", "created": int(time.time()), **out}
    h.send_json(200, out)


def vllm_metrics(h: Handler, engine: Engine) -> None:
    s, labels = engine.stats, f'engine="0",model_name="{engine.model}"'
    finished = s["requests_length"] + s["requests_stop"]
    out = []

    def metric(name: str, kind: str, doc: str, samples: list[tuple[str, str, float]]) -> None:
        out.extend([f"# HELP {name} {doc}", f"# TYPE {name} {kind}"])
        out.extend(f"{name}{suffix}{{{labels}{extra}}} {float(v)}" for suffix, extra, v in samples)

    metric("vllm:num_requests_running", "gauge", "Number of requests in model execution "
           "batches.", [("", "", s["running"])])
    metric("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.",
           [("", "", s["waiting"])])
    metric("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.",
           [("", "", min(1.0, 0.05 * s["running"]))])
    metric("vllm:prompt_tokens", "counter", "Number of prefill tokens processed.",
           [("_total", "", s["prompt_tokens"])])
    metric("vllm:generation_tokens", "counter", "Number of generation tokens processed.",
           [("_total", "", s["generation_tokens"])])
    metric("vllm:request_success", "counter", "Count of successfully processed requests.",
           [("_total", f',finished_reason="{r}"', s[f"requests_{r}"]) for r in ("length",
                                                                                 "stop")])
    for name, total, doc in (("vllm:time_to_first_token_seconds", "ttft_sum",
                              "Histogram of time to first token in seconds."),
                             ("vllm:e2e_request_latency_seconds", "e2e_sum",
                              "Histogram of e2e request latency in seconds.")):
        metric(name, "histogram", doc, [("_bucket", ',le="+Inf"', finished),
                                        ("_count", "", finished), ("_sum", "", s[total])])
    h.send_body(200, ("\n".join(out) + "\n").encode(), "text/plain; version=0.0.4; charset=utf-8")


Route = Callable[[Handler, Engine], None]
ROUTES: dict[str, dict[tuple[str, str], Route]] = {
    "ollama": {
        ("GET", "/"): liveness,
        ("GET", "/api/version"): lambda h, e: h.send_json(200, {"version": e.version}),
        ("GET", "/api/tags"): ollama_tags,
        ("GET", "/api/ps"): ollama_ps,
        ("POST", "/api/generate"): ollama_generate,
        ("POST", "/api/chat"): lambda h, e: ollama_generate(h, e, chat=True),
        ("POST", "/api/pull"): ollama_pull,
        ("POST", "/api/show"): ollama_show,
        ("POST", "/api/embed"): ollama_embed,
        ("DELETE", "/api/delete"): ollama_delete,
    },
    "vllm": {
        ("GET", "/health"): liveness,
        ("GET", "/ping"): liveness,
        ("POST", "/ping"): liveness,
        ("GET", "/version"): lambda h, e: h.send_json(200, {"version": VLLM_VERSION}),
        ("GET", "/metrics"): vllm_metrics,
    },
}
for _routes in ROUTES.values():
    _routes.update({("GET", "/v1/models"): openai_models,
                    ("POST", "/v1/completions"): openai_completion,
                    ("POST", "/v1/chat/completions"): lambda h, e: openai_completion(h, e, True),
                    ("POST", "/v1/embeddings"): openai_embeddings})
PREFIX_ROUTES: dict[str, dict[tuple[str, str], Route]] = {  # routes with a path parameter
    "ollama": {("GET", "/v1/models/"): openai_model},
    "vllm": {},
}


def _by_prefix(kind: str, method: str, path: str) -> Route | None:
    return next((route for (m, prefix), route in PREFIX_ROUTES[kind].items()
                 if m == method and path.startswith(prefix) and path != prefix), None)
