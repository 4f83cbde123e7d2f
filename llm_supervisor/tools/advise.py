"""Which quantisation of a model fits this GPU: pure arithmetic, and the thin I/O feeding it.

    weights  = parameters x bits-per-weight / 8
    KV cache = 2 (K and V) x layers x KV heads x head size x context x parallel x bytes per element
    needed   = weights + KV cache + overhead (runtime, compute buffers)

A quantisation *fits* when ``needed`` is at most the GPU's memory, and fits *comfortably* when
a tenth of the memory stays free (fragmentation, a second context, the desktop). Generation
reads every weight once per token, so memory bandwidth / weights bounds tokens/s from above.

The recommendation prefers llama.cpp's "recommended" k-quants, Q5_K_M then Q4_K_M (quality
within about 1 % of F16 at a third of its size, and the fastest per unit of quality); larger
ones that fit are listed as better quality but slower. For the deployment notes' host (a 7B
model on a 16 GB MI50) that is Q5_K_M, as the notes found (docs/field-notes.md).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from llm_supervisor.config import EngineConfig
from llm_supervisor.errors import AdviseError
from llm_supervisor.host import cards
from llm_supervisor.host.gpu import (
    COMFORT_SHARE,
    DEFAULT_CONTEXT,
    GIB,
    KV_BYTES,
    OVERHEAD,
    Gpu,
    gpus_from_sysfs,
    kv_bytes_per_token,
    kv_cache_type,
)

__all__ = ["GIB", "Gpu", "KV_BYTES", "ModelShape", "advise", "command", "format_advice",
           "gpus_from_sysfs", "kv_cache_type"]



@dataclass(frozen=True)
class Quant:
    name: str
    bpw: float       # average bits per weight of the whole file


# llama.cpp's tools/quantize/README.md (Llama 2 7B; file size x 8 / parameters): the mixes
# keep some tensors at a higher precision, so Q4_K_M is 4.84 bits, not 4.5. Q4_0 and Q8_0
# are blocks of 32 weights with one f16 scale: 18 and 34 bytes.
QUANTS = (
    Quant("Q2_K", 3.35),
    Quant("Q3_K_M", 3.91),
    Quant("Q4_0", 4.50),
    Quant("Q4_K_M", 4.84),
    Quant("Q5_K_M", 5.68),
    Quant("Q6_K", 6.56),
    Quant("Q8_0", 8.50),
    Quant("F16", 16.0),
)
PREFERRED = ("Q5_K_M", "Q4_K_M")


@dataclass(frozen=True)
class ModelShape:
    name: str
    parameters: int
    layers: int | None = None
    kv_heads: int | None = None
    head_size: int | None = None
    heads: int | None = None
    max_context: int | None = None
    quantization: str | None = None   # what the engine has now, if it told

    def kv_bytes_per_token(self, kv_type: str = "f16") -> float | None:
        return kv_bytes_per_token(self.layers, self.kv_heads, self.head_size, kv_type)


@dataclass(frozen=True)
class Row:
    quant: str
    bpw: float
    weights: int
    needed: int
    fits: bool
    comfortable: bool
    tokens_per_second: float | None


@dataclass(frozen=True)
class Advice:
    model: ModelShape
    gpu: Gpu
    context: int
    parallel: int
    kv_type: str
    kv_cache: int | None
    overhead: int
    rows: tuple[Row, ...]
    recommended: str | None
    why: str
    notes: tuple[str, ...] = ()  # what was not counted, or counted otherwise than asked

    def document(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- arithmetic

def advise(model: ModelShape, gpu: Gpu, *, context: int = DEFAULT_CONTEXT, parallel: int = 1,
           kv_type: str = "f16", overhead: int = OVERHEAD,
           notes: tuple[str, ...] = ()) -> Advice:
    """Every quantisation's memory and speed ceiling on ``gpu``, and the one to use."""
    if kv_type not in KV_BYTES:
        raise AdviseError(f"unknown KV cache type {kv_type!r} (known: {', '.join(KV_BYTES)})")
    for what, value in (("parameters", model.parameters), ("GPU memory", gpu.vram),
                        ("context", context), ("parallel", parallel)):
        if not value > 0:
            raise AdviseError(f"{what} must be above 0, got {value}")
    if overhead < 0:
        raise AdviseError(f"overhead must be at least 0, got {overhead}")
    if model.max_context and context > model.max_context:
        notes += (f"context {context} is beyond the model's {model.max_context}: counted as"
                  f" {model.max_context}",)
        context = model.max_context
    per_token = model.kv_bytes_per_token(kv_type)
    if per_token is None:
        notes += (f"KV cache not counted: the layer shape is unknown, so {context} tokens x"
                  f" {max(1, parallel)} parallel of cache are missing from NEEDED (pass"
                  " --layers, --kv-heads and --head-size, or name an engine to ask)",)
    kv = None if per_token is None else round(per_token * context * max(1, parallel))
    comfortable_limit = gpu.vram * (1 - COMFORT_SHARE)
    rows = []
    for q in QUANTS:
        weights = round(model.parameters * q.bpw / 8)
        needed = weights + (kv or 0) + overhead
        tps = gpu.bandwidth / weights if gpu.bandwidth else None
        rows.append(Row(q.name, q.bpw, weights, needed, needed <= gpu.vram,
                        needed <= comfortable_limit, tps))
    recommended, why = _choose(rows, gpu.vram)
    if per_token is None and recommended:
        why += " (without the KV cache: see the note)"
    return Advice(model, gpu, context, max(1, parallel), kv_type, kv, overhead, tuple(rows),
                  recommended, why, notes)


def _choose(rows: list[Row], vram: int) -> tuple[str | None, str]:
    by_name = {r.quant: r for r in rows}
    for name in PREFERRED:
        if by_name[name].comfortable:
            return name, ("the best of llama.cpp's recommended k-quants (Q5_K_M, Q4_K_M) that"
                          f" fits with {COMFORT_SHARE:.0%} of the memory to spare")
    for row in reversed(rows):
        if row.comfortable:
            return row.quant, ("no recommended k-quant fits comfortably; the best that does"
                               " (expect lower quality)")
    for row in reversed(rows):
        if row.fits:
            return row.quant, ("only a tight fit: less than a tenth of the memory stays free"
                               "; a shorter context or a smaller model is safer")
    if rows[0].weights > vram:
        return None, (f"the weights alone do not fit, even as {rows[0].quant}"
                      f" ({human(rows[0].weights)} for {human(vram)}): use a smaller model")
    return None, ("nothing fits in the GPU's memory: layers would spill to the CPU; use a"
                  " smaller model or a shorter context")


# --------------------------------------------------------------------------- formatting

def human(n: float) -> str:
    """A size for people: ``512 MiB``, ``4.37 GiB``, ``1.2 TiB``."""
    for unit, scale in (("TiB", 1024**4), ("GiB", GIB)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}" if n / scale >= 100 else f"{n / scale:.2f} {unit}"
    return f"{n / 1024**2:.0f} MiB"


_gib = human


def format_advice(a: Advice) -> str:
    m, g = a.model, a.gpu
    shape = f"{m.parameters / 1e9:.2f} B parameters"
    if m.layers:
        shape += f", {m.layers} layers"
    if m.kv_heads and m.head_size:
        shape += f", {m.kv_heads} KV heads of size {m.head_size}"
    if m.quantization:
        shape += f"; the engine has {m.quantization}"
    lines = [f"model {m.name or '(given)'}: {shape}",
             f"GPU: {_gib(g.vram)} ({g.source})" + (
                 f", {g.bandwidth / 1e9:.0f} GB/s ({g.bandwidth_source})" if g.bandwidth
                 else ", memory bandwidth unknown (pass --bandwidth GB/s for tokens/s)"),
             ""]
    if a.kv_cache is not None:
        assert m.layers and m.kv_heads and m.head_size
        lines.append(f"KV cache = 2 x {m.layers} layers x {m.kv_heads} KV heads x {m.head_size}"
                     f" x {a.context} tokens x {a.parallel} parallel x"
                     f" {KV_BYTES[a.kv_type]:g} B ({a.kv_type}) = {_gib(a.kv_cache)}")
    lines.append(f"overhead (runtime, compute buffers) = {_gib(a.overhead)};"
                 f" comfortable = at most {_gib(g.vram * (1 - COMFORT_SHARE))}")
    lines.append(f"weights = {m.parameters:,} parameters x bits per weight / 8;"
                 " tokens/s <= bandwidth / weights")
    lines.append("")
    table = [["QUANT", "BPW", "WEIGHTS", "NEEDED", "FITS", "TOKENS/S <="]]
    for r in a.rows:
        fits = "yes" if r.comfortable else "tight" if r.fits else "no"
        tps = f"{r.tokens_per_second:.0f}" if r.tokens_per_second else "-"
        mark = " <-" if r.quant == a.recommended else ""
        table.append([r.quant, f"{r.bpw:.2f}", _gib(r.weights), _gib(r.needed), fits, tps + mark])
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
              for row in table]
    lines.append("")
    lines.append(f"recommended: {a.recommended or 'none'}: {a.why}")
    lines += [f"note: {note}" for note in a.notes]
    bigger = [r.quant for r in a.rows if r.fits and a.recommended
              and r.bpw > next(x.bpw for x in a.rows if x.quant == a.recommended)]
    if bigger:
        lines.append(f"also fit: {', '.join(bigger)} (better quality, fewer tokens/s)")
    return "\n".join(lines)


# --------------------------------------------------------------------------- model shape

def shape_from_show(name: str, show: Mapping[str, Any]) -> ModelShape:
    """A model's shape from Ollama's ``POST /api/show`` answer (``model_info``, ``details``)."""
    info = show.get("model_info") or {}
    arch = info.get("general.architecture", "")

    def key(suffix: str) -> int | None:
        value = info.get(f"{arch}.{suffix}")
        if value is None:  # an architecture prefix we did not guess: any key ending so
            value = next((v for k, v in info.items() if k.endswith("." + suffix)), None)
        return int(value) if isinstance(value, int | float) and value else None

    parameters = info.get("general.parameter_count")
    if not isinstance(parameters, int | float) or parameters <= 0:
        raise AdviseError(f"the engine did not report {name}'s parameter count"
                          " (model_info.general.parameter_count); pass --params")
    heads = key("attention.head_count")
    head_size = key("attention.key_length")
    embedding = key("embedding_length")
    if head_size is None and embedding and heads:
        head_size = embedding // heads
    details = show.get("details") or {}
    return ModelShape(name=name, parameters=int(parameters), layers=key("block_count"),
                      kv_heads=key("attention.head_count_kv") or heads, head_size=head_size,
                      heads=heads, max_context=key("context_length"),
                      quantization=details.get("quantization_level") or None)


def fetch_show(base_url: str, model: str, client: Any = None, timeout: float = 10.0
               ) -> dict[str, Any]:
    """``POST /api/show`` on an Ollama engine (``client``: an httpx.Client, for tests)."""
    import httpx

    own = client is None
    client = client or httpx.Client(timeout=timeout, trust_env=False)
    try:
        response = client.post(f"{base_url}/api/show", json={"model": model})
    except httpx.HTTPError as exc:
        raise AdviseError(f"cannot ask {base_url} about {model}: {exc}") from None
    finally:
        if own:
            client.close()
    if response.status_code != 200:
        raise AdviseError(f"{base_url}/api/show answered HTTP {response.status_code} for {model}:"
                          f" {response.text[:200]}")
    document = response.json()
    if not isinstance(document, dict):
        raise AdviseError(f"{base_url}/api/show: not a JSON object")
    return document


PARAMS_RE = re.compile(r"^\s*([0-9.]+)\s*([kmbt]?)\s*$", re.IGNORECASE)


def parse_count(text: str) -> int:
    """``7.6B``, ``500M``, ``7615616512`` -> a count of parameters."""
    m = PARAMS_RE.match(text)
    if not m:
        raise ValueError(f"not a parameter count: {text!r} (e.g. 7.6B, 500M)")
    scale = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}[m.group(2).lower()]
    try:
        count = int(float(m.group(1)) * scale)
    except ValueError:
        raise ValueError(f"not a parameter count: {text!r} (e.g. 7.6B, 500M)") from None
    if count <= 0 or count > 10**15:
        raise ValueError(f"not a parameter count: {text!r} (above 0 and at most 1,000T)")
    return count


# --------------------------------------------------------------------------- GPU memory

def _numbers_named(document: Any, pattern: re.Pattern[str]) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    if isinstance(document, dict):
        for k, v in document.items():
            if pattern.search(str(k)) and not isinstance(v, dict | list):
                out.append((str(k), v))
            out += _numbers_named(v, pattern)
    elif isinstance(document, list):
        for item in document:
            out += _numbers_named(item, pattern)
    return out


def vram_from_smi_json(text: str) -> int | None:
    """The largest card's VRAM from ``rocm-smi --showmeminfo vram --json`` (bytes, "VRAM Total
    Memory (B)") or ``amd-smi static --vram --json`` (``vram.size`` with a unit)."""
    try:
        document = json.loads(text)
    except ValueError:
        return None
    sizes = []
    for _, value in _numbers_named(document, re.compile(r"VRAM Total Memory \(B\)", re.I)):
        try:
            sizes.append(int(value))
        except (TypeError, ValueError):
            pass
    stack: list[Any] = [document]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            vram = item.get("vram")
            size = vram.get("size") if isinstance(vram, dict) else None
            if isinstance(size, dict) and isinstance(size.get("value"), int | float):
                unit = str(size.get("unit", "MB")).upper()
                scale = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}.get(unit, 1024**2)
                sizes.append(int(size["value"] * scale))
            stack += list(item.values())
        elif isinstance(item, list):
            stack += item
    return max(sizes) if sizes else None


Runner = Callable[[list[str]], str | None]


def _run(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=15, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout


def detect_gpu(drm: Path = Path("/sys/class/drm"), run: Runner = _run) -> Gpu:
    """The largest AMD GPU's memory: sysfs first, then amd-smi, then rocm-smi."""
    cards = gpus_from_sysfs(drm)
    if cards:
        return max(cards, key=lambda g: g.vram)
    for argv in (["amd-smi", "static", "--vram", "--json"],
                 ["rocm-smi", "--showmeminfo", "vram", "--json"]):
        out = run(argv)
        vram = vram_from_smi_json(out) if out else None
        if vram:
            return Gpu(vram, " ".join(argv[:2]))
    raise AdviseError("no AMD GPU memory found (sysfs mem_info_vram_total, amd-smi, rocm-smi);"
                      " pass --vram GIB")


def which_gpu(args: Any, engine: EngineConfig | None, engines: Sequence[EngineConfig],
              drm: Path, run: Runner) -> Gpu:
    """The memory advice sizes by: ``--vram``, else the engine's own cards, else the
    host's largest card; ``--bandwidth`` over what is known of the card."""
    if args.vram:
        found = gpus_from_sysfs(drm)
        best = max(found, key=lambda g: g.vram) if found else None
        gpu = Gpu(int(args.vram * GIB), "--vram", best.bandwidth if best else None,
                  best.bandwidth_source if best else "")
    elif engine is not None and engine.gpus:
        gpu = engine_gpu(engine, engines, drm)
    else:
        gpu = detect_gpu(drm, run)
    if args.bandwidth:
        gpu = Gpu(gpu.vram, gpu.source, args.bandwidth * 1e9, "--bandwidth")
    return gpu


def engine_gpu(engine: EngineConfig, engines: Sequence[EngineConfig], drm: Path) -> Gpu:
    """The memory of the engine's own cards (``gpus``), shared with the engines that name
    them too (the rule the derived tuning uses: ``HostFacts.vram_for``)."""
    from llm_supervisor.systemd.units import HostFacts

    host = HostFacts(frozenset(), cards=cards.inventory({}, cards.sysfs_vram(drm)))
    vram, where = host.vram_for(engine, engines)
    if not vram:
        known = ", ".join(c.pci for c in host.cards) or "none"
        raise AdviseError(f"the memory of engine {engine.name}'s cards ({', '.join(engine.gpus)})"
                          f" is not known (sysfs has the cards: {known}); pass --vram GIB")
    own = cards.place(engine.gpus, host.cards).addresses
    speeds = [g for g in gpus_from_sysfs(drm) if g.pci in own and g.bandwidth]
    slowest = min(speeds, key=lambda g: g.bandwidth or 0) if speeds else None
    return Gpu(vram, f"sysfs mem_info_vram_total: {where}",
               slowest.bandwidth if slowest else None,
               slowest.bandwidth_source if slowest else "")


# --------------------------------------------------------------------------- the command

def _engine_url(listen: str) -> str:
    host, _, port = listen.rpartition(":")
    if host in ("", "0.0.0.0", "[::]", "::"):
        host = "127.0.0.1"
    return f"http://{host}:{port}"


def command(args: Any, drm: Path = Path("/sys/class/drm"), run: Runner = _run,
            client: Any = None) -> Advice:
    """``llm-supervisorctl advise``: gather the model, the GPU and the engine's settings."""
    engine: EngineConfig | None = None
    engines: Sequence[EngineConfig] = ()
    if args.engine or not args.params:
        from llm_supervisor.config import load
        from llm_supervisor.errors import ConfigError

        try:
            config = load(args.config)
        except ConfigError as exc:
            raise AdviseError("; ".join(exc.problems)) from None
        engines = config.engines
        ollama = [e for e in config.engines if e.kind == "ollama"]
        if args.engine:
            engine = next((e for e in config.engines if e.name == args.engine), None)
            if engine is None:
                raise AdviseError(f"no engine named {args.engine!r} in {args.config}")
            if engine.kind != "ollama":
                raise AdviseError(f"{engine.name} is a {engine.kind} engine: only Ollama"
                                  " describes its models; pass --params and the layer shape")
        elif ollama:
            engine = ollama[0]
        else:
            raise AdviseError(f"no ollama engine in {args.config} to ask: pass --params"
                              " (and --layers, --kv-heads, --head-size)")
    env: dict[str, str] = dict(engine.environment) if engine else {}
    if args.params:
        model = ModelShape(name=args.model or "", parameters=parse_count(args.params),
                           layers=args.layers, kv_heads=args.kv_heads, head_size=args.head_size)
    else:
        assert engine is not None
        name = args.model or engine.model
        if not name:
            raise AdviseError(f"engine {engine.name} has no `model`: pass --model")
        model = shape_from_show(name, fetch_show(_engine_url(engine.listen), name, client))

    gpu = which_gpu(args, engine, engines, drm, run)

    if engine is not None and "OLLAMA_NUM_PARALLEL" not in env:
        from llm_supervisor.systemd.units import HostFacts

        env.update(HostFacts.read(drm=drm).tuning(engine, engines).environment)
    context = args.context or int(env.get("OLLAMA_CONTEXT_LENGTH") or DEFAULT_CONTEXT)
    parallel = args.parallel or int(env.get("OLLAMA_NUM_PARALLEL") or 1)
    kv_type, note = kv_cache_type(env)
    return advise(model, gpu, context=context, parallel=parallel, kv_type=kv_type,
                  overhead=int(args.overhead * GIB), notes=(note,) if note else ())
