"""The HTTP side: Ollama's API (server/routes.go) or vLLM's OpenAI server, with real shapes.

Every generation passes one gate that applies the faults in a fixed order: unknown model (404),
blip (500), dead engine (500), hang (never answers), GPU errors (error lines, then 500).
Liveness (``/``, ``/health``) only blips, or answers 503 on a dead vLLM engine.
"""

from __future__ import annotations

import hashlib
import json
import math
import select
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from supervisor.names import normalise_model
from supervisor.simengine.engine import (
    CONTEXT_LENGTH,
    KV_CACHE,
    MODEL_SIZE,
    Engine,
    Generation,
    count_tokens,
)
from supervisor.simengine.logs import error_lines, rfc3339, utc_now

OLLAMA_VERSION = "0.33.0"
VLLM_VERSION = "0.11.0"
VLLM_MAX_MODEL_LEN = 32768
TEMPLATE_TOKENS = 10  # what a chat template adds around the prompt
DETAILS = {"parent_model": "", "format": "gguf", "family": "qwen2", "families": ["qwen2"],
           "parameter_size": "7.6B", "quantization_level": "Q4_K_M"}
EMBEDDING_LENGTH = 3584  # Qwen2.5-7B's
DEAD = "EngineCore encountered an issue. See stack trace (above) for the root cause."


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


class RunnerHandler(BaseHTTPRequestHandler):
    """Ollama >= 0.30's runner: an upstream llama-server on a loopback port of its own, whose
    ``/health`` and ``/slots`` answer like llama-server's."""

    protocol_version = "HTTP/1.1"
    server: RunnerServer

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/slots":
            document: Any = self.server.engine.slots_document()
            code = 200
        elif path == "/health":
            document, code = {"status": "ok"}, 200
        else:
            document, code = {"error": {"code": 404, "message": "File Not Found",
                                        "type": "not_found_error"}}, 404
        body = json.dumps(document).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class RunnerServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        super().__init__(("127.0.0.1", 0), RunnerHandler)


def _ollama_name(name: str) -> str:
    return normalise_model(name)


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
        """Never answer: wait until the client gives up (or the engine stops), then hang up."""
        self.close_connection = True
        while not stop.is_set():
            readable, _, _ = select.select([self.connection], [], [], 0.2)
            if readable:
                try:
                    if not self.connection.recv(1, socket.MSG_PEEK):
                        return  # the client closed the connection
                except OSError:
                    return
                stop.wait(0.2)


def gate(h: Handler, engine: Engine, model: Any) -> bool:
    """Apply the unknown-model check and the generation faults; False: already answered."""
    if model is None and engine.kind == "ollama":
        h.fail(400, "model is required", "BadRequestError")
        return False
    wanted = engine.model if model is None else str(model)
    same = _ollama_name(wanted) == _ollama_name(engine.model) if engine.kind == "ollama" \
        else wanted == engine.model
    if not same or not engine.present:
        h.fail(404, f"The model `{wanted}` does not exist." if engine.kind == "vllm"
               else f"model '{wanted}' not found", "NotFoundError")
        return False
    if engine.blip("generations"):
        h.fail(500, f"simulated transient error (blip_every={engine.faults.blip_every})")
    elif engine.dead:
        h.fail(500, DEAD, "EngineDeadError")
    elif engine.hanging():
        with engine.slot():  # a hung generation holds its slot: the ones behind it wait
            h.hang(engine.stop)
    elif engine.gpu_failing():
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
    else:
        return True
    return False


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
def _model_entry(engine: Engine) -> dict[str, Any]:
    return {"name": engine.model, "model": engine.model,
            "modified_at": rfc3339(engine.started_at),
            "size": MODEL_SIZE, "digest": engine.digest, "details": DETAILS}


def ollama_ps(h: Handler, engine: Engine) -> None:
    if engine.used_at is None:
        h.send_json(200, {"models": []})
        return
    size = MODEL_SIZE + KV_CACHE
    entry = {**_model_entry(engine), "size": size, "expires_at": rfc3339(engine.used_at + 300),
             "size_vram": size if engine.offloaded else 0, "context_length": CONTEXT_LENGTH}
    del entry["modified_at"]
    h.send_json(200, {"models": [entry]})


def _ollama_done(model: str, chat: bool, text: str, g: Generation) -> dict[str, Any]:
    out: dict[str, Any] = {"model": model, "created_at": utc_now()}
    if chat:
        out["message"] = {"role": "assistant", "content": text}
    else:
        out["response"] = text
    out.update(done=True, done_reason=g.done_reason)
    if not chat:
        out["context"] = list(range(151644, 151644 + g.prompt_tokens + g.eval_count))
    out.update(total_duration=g.total_ns, load_duration=g.load_ns,
               prompt_eval_count=g.prompt_tokens, prompt_eval_duration=g.prompt_ns,
               eval_count=g.eval_count, eval_duration=g.eval_ns)
    return out


def ollama_generate(h: Handler, engine: Engine, chat: bool = False) -> None:
    body = h.read_json()
    if body is None or not gate(h, engine, body.get("model")):
        return
    model = body["model"]
    if chat:
        prompt = " ".join(str(m.get("content", "")) for m in body.get("messages") or [])
    else:
        prompt = str(body.get("prompt") or "")
    if not prompt:  # an empty prompt only loads the model
        engine.load()
        done: dict[str, Any] = {"model": model, "created_at": utc_now()}
        if chat:
            done["message"] = {"role": "assistant", "content": ""}
        h.send_json(200, {**done, "done": True, "done_reason": "load"})
        return
    limit = (body.get("options") or {}).get("num_predict")
    limit = int(limit) if isinstance(limit, int | float) else None
    tokens = count_tokens(prompt) + TEMPLATE_TOKENS
    if body.get("stream", True) is False:
        g = engine.generate(tokens, limit)
        h.send_json(200, _ollama_done(model, chat, g.text, g))
        return

    def partial(piece: str) -> None:
        part: dict[str, Any] = {"model": model, "created_at": utc_now()}
        part.update({"message": {"role": "assistant", "content": piece}} if chat
                    else {"response": piece})
        h.chunk({**part, "done": False})

    h.start_stream("application/x-ndjson")
    g = engine.generate(tokens, limit, on_token=partial)
    h.chunk(_ollama_done(model, chat, "", g))
    h.end_stream()


def ollama_tags(h: Handler, engine: Engine) -> None:
    h.send_json(200, {"models": [_model_entry(engine)] if engine.present else []})


PULL_STEPS = 4


def ollama_pull(h: Handler, engine: Engine) -> None:
    """Downloads take ``pull_seconds``, in steps of streamed progress; then the model is there."""
    body = h.read_json()
    if body is None:
        return
    name = str(body.get("model") or body.get("name") or "")
    if _ollama_name(name) != _ollama_name(engine.model):
        h.fail(500, "pull model manifest: file does not exist")
        return
    step = engine.faults.pull_seconds / PULL_STEPS if not engine.present else 0.0
    digest = {"status": f"pulling {engine.digest[:12]}", "digest": f"sha256:{engine.digest}",
              "total": MODEL_SIZE}
    if body.get("stream", True) is False:
        time.sleep(step * PULL_STEPS)
        engine.present = True
        h.send_json(200, {"status": "success"})
        return
    h.start_stream("application/x-ndjson")
    h.chunk({"status": "pulling manifest"})
    for i in range(1, PULL_STEPS + 1):
        time.sleep(step)
        h.chunk({**digest, "completed": MODEL_SIZE * i // PULL_STEPS})
    for status in ("verifying sha256 digest", "writing manifest"):
        h.chunk({"status": status})
    engine.present = True
    h.chunk({"status": "success"})
    h.end_stream()


# What Ollama's /api/show reports of Qwen2.5-7B-Instruct (model_info keys from its GGUF).
MODEL_INFO = {"general.architecture": "qwen2", "general.parameter_count": 7615616512,
              "qwen2.block_count": 28, "qwen2.context_length": 32768,
              "qwen2.embedding_length": 3584, "qwen2.feed_forward_length": 18944,
              "qwen2.attention.head_count": 28, "qwen2.attention.head_count_kv": 4,
              "qwen2.rope.freq_base": 1000000}


def _served(h: Handler, engine: Engine, body: dict[str, Any]) -> str | None:
    """The model a management request names, if it is the one served; else a 404 answer."""
    name = str(body.get("model") or body.get("name") or "")
    if _ollama_name(name) != _ollama_name(engine.model):
        h.fail(404, f"model '{name}' not found")
        return None
    return name


def ollama_show(h: Handler, engine: Engine) -> None:
    body = h.read_json()
    if body is None or _served(h, engine, body) is None:
        return
    h.send_json(200, {
        "license": "Apache License 2.0",
        "modelfile": f"# Modelfile generated by \"ollama show\"\nFROM {engine.model}\n",
        "parameters": 'stop                           "<|im_start|>"\n'
                      'stop                           "<|im_end|>"',
        "template": "{{ .Prompt }}",
        "details": DETAILS,
        "model_info": MODEL_INFO,
        "capabilities": ["completion", "tools"],
        "modified_at": rfc3339(engine.started_at)})


def _embedding(text: str) -> list[float]:
    """A unit vector that depends on the text only, as /api/embed's are normalized."""
    seed = hashlib.sha256(text.encode()).digest()
    raw = [((seed[i % 32] + i) % 97) / 97 - 0.5 for i in range(EMBEDDING_LENGTH)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [round(x / norm, 6) for x in raw]


def ollama_embed(h: Handler, engine: Engine) -> None:
    body = h.read_json()
    if body is None or not gate(h, engine, body.get("model")):
        return
    given = body.get("input") or []
    texts = [given] if isinstance(given, str) else [str(t) for t in given]
    started = time.perf_counter()
    load_ns = engine.load()
    h.send_json(200, {"model": body["model"], "embeddings": [_embedding(t) for t in texts],
                      "total_duration": round((time.perf_counter() - started) * 1e9),
                      "load_duration": load_ns,
                      "prompt_eval_count": sum(count_tokens(t) for t in texts)})


def ollama_delete(h: Handler, engine: Engine) -> None:
    """200 with an empty body, like Ollama; then the model is missing until pulled again."""
    body = h.read_json()
    if body is None or _served(h, engine, body) is None:
        return
    engine.present = False
    h.send_response(200)
    h.send_header("Content-Length", "0")
    h.end_headers()


# OpenAI-compatible (vLLM's server; Ollama has the same under /v1)
def openai_models(h: Handler, engine: Engine) -> None:
    entry: dict[str, Any] = {"id": engine.model, "object": "model",
                             "created": int(engine.started_at)}
    if engine.kind == "ollama":
        entry["owned_by"] = "library"
    else:
        entry.update(owned_by="vllm", root=engine.model, parent=None,
                     max_model_len=VLLM_MAX_MODEL_LEN, permission=[])
    h.send_json(200, {"object": "list", "data": [entry]})


def openai_model(h: Handler, engine: Engine) -> None:
    """Ollama's ``GET /v1/models/{id}`` (vLLM has no such route: 404 there)."""
    name = unquote(urlsplit(h.path).path.removeprefix("/v1/models/"))
    if _ollama_name(name) != _ollama_name(engine.model):
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


def openai_completion(h: Handler, engine: Engine, chat: bool = False) -> None:
    if not authorised(h, engine):
        return
    body = h.read_json()
    if body is None or not _openai_request_ok(h, engine, body, chat) or \
            not gate(h, engine, body.get("model")):
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
    if body.get("stream") is True:
        _openai_stream(h, engine, body, chat, prompt_tokens, limit)
        return
    g = engine.generate(prompt_tokens, limit)
    choice: dict[str, Any] = {"index": 0}
    if chat:
        choice["message"] = {"role": "assistant", "content": g.text, "tool_calls": []}
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
                   prompt_tokens: int, limit: int | None) -> None:
    """``stream: true``: server-sent events, one chunk per token, then ``data: [DONE]``
    (vLLM's serving_completion.py / serving_chat.py shapes)."""
    ident = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
    created, model = int(time.time()), body.get("model") or engine.model
    kind = "chat.completion.chunk" if chat else "text_completion"

    def send(choice: dict[str, Any], usage: dict[str, int] | None = None) -> None:
        chunk: dict[str, Any] = {"id": ident, "object": kind, "created": created,
                                 "model": model, "choices": [choice] if choice else []}
        if usage is not None:
            chunk["usage"] = usage
        h.event(json.dumps(chunk))

    def token(piece: str) -> None:
        if chat:
            send({"index": 0, "delta": {"content": piece}, "logprobs": None,
                  "finish_reason": None})
        else:
            send({"index": 0, "text": piece, "logprobs": None, "finish_reason": None,
                  "stop_reason": None})

    h.start_stream("text/event-stream; charset=utf-8")
    if chat:
        send({"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
              "finish_reason": None})
    g = engine.generate(prompt_tokens, limit, on_token=token)
    last: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": g.done_reason}
    last.update({"delta": {}} if chat else {"text": "", "stop_reason": None})  # type: ignore[dict-item]
    send(last)
    if (body.get("stream_options") or {}).get("include_usage"):
        send({}, {"prompt_tokens": g.prompt_tokens, "total_tokens": g.prompt_tokens +
                  g.eval_count, "completion_tokens": g.eval_count})
    h.event("[DONE]")
    h.end_stream()


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
        ("GET", "/api/version"): lambda h, e: h.send_json(200, {"version": OLLAMA_VERSION}),
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
                    ("POST", "/v1/chat/completions"): lambda h, e: openai_completion(h, e, True)})
PREFIX_ROUTES: dict[str, dict[tuple[str, str], Route]] = {  # routes with a path parameter
    "ollama": {("GET", "/v1/models/"): openai_model},
    "vllm": {},
}


def _by_prefix(kind: str, method: str, path: str) -> Route | None:
    return next((route for (m, prefix), route in PREFIX_ROUTES[kind].items()
                 if m == method and path.startswith(prefix) and path != prefix), None)
