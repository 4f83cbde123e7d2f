"""Control API handlers: plain functions from the daemon's view (``control.view.Daemon``,
read-only) to JSON documents; an operator's action is an intent queued on the engine.

They are testable without a socket; ``routes()`` binds them to paths for the server.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llm_supervisor import __version__, intents, names, timefmt
from llm_supervisor.config import EngineConfig
from llm_supervisor.control.render import PLAIN, Look, format_status
from llm_supervisor.control.server import Request, Response, Router
from llm_supervisor.errors import HTTPError, Refused, SupervisorError
from llm_supervisor.host import cards, tiers
from llm_supervisor.records import support
from llm_supervisor.records.history import TooManyFollowers
from llm_supervisor.states import EngineState
from llm_supervisor.timefmt import utc

if TYPE_CHECKING:
    from llm_supervisor.control.view import Daemon
    from llm_supervisor.engine import Engine

API = 1


def engine_document(sup: Daemon, engine: Engine) -> dict[str, Any]:
    memory = engine.memory
    choices = sup.choices(engine)
    fresh = sup.hostfacts.tuning(engine.cfg, sup.config.engines)
    kept = engine.tuning()
    running = fresh if kept is None else kept.kept_for(engine.cfg, fresh)
    return {
        "name": engine.name,
        "kind": engine.cfg.kind,
        "unit": engine.cfg.unit,
        "endpoint": engine.cfg.endpoint,
        # llama-server's own Prometheus endpoint (the unit turns it on), for a scrape config
        "metrics_url": (engine.cfg.endpoint + "/metrics"
                        if engine.cfg.kind == "llama-server" else None),
        "model": engine.cfg.model,
        # what the engine says its model is and can do (completion or embedding, thinking),
        # read at each start; null until then
        "model_facts": engine.canary.facts.to_dict() if engine.canary.facts else None,
        "state": engine.state.value,
        "tier": engine.tier,
        "chain": list(engine.chain),
        "usable_tiers": [c.tier for c in choices if c.usable],
        "skipped_tiers": {c.tier: c.reason for c in choices if not c.usable},
        "pinned": memory.pinned is not None,
        "pinned_tier": memory.pinned,
        "reboot_required": memory.reboot_required,
        "reboot_card": memory.reboot_card,  # the card whose reset failed, when the kernel said
        # its own cards (`gpus`) as this host has them; null: it names none and may use any
        "cards": own_cards(sup, engine.cfg),
        "since": utc(memory.since) if memory.since else None,
        "reason": engine.reason,
        "last_check": engine.last_check,
        # a canary overdue while the engine works ("busy: canary queued 41s; 312 tokens…"),
        # or waiting for evidence either way; None while no canary is overdue
        "busy": engine.canary.busy,
        # a planned switch waiting for the requests in flight ([agent]); null when none
        "draining": engine.drain and {
            "to": engine.drain.decision.target,
            "cause": engine.drain.decision.finding.cause.value
            if engine.drain.decision.finding else None,
            "for_s": round(engine.clock() - engine.drain.since, 1),
            "at_most_s": round(engine.drain.until - engine.drain.since, 1)},
        "consecutive_failures": engine.failures,
        "next_promotion_at": (utc(memory.next_promotion_at)
                              if memory.next_promotion_at else None),
        "next_retry_at": (utc(memory.retry_at) if memory.retry_at and engine.state in
                          (EngineState.FAILED, EngineState.BLOCKED) else None),
        "cause": memory.cause,
        "fix": memory.fix or None,
        "backend": memory.backend,
        "offload": memory.offload,  # "29/29": layers on the GPU, as the engine's log says
        # the other models this engine runs beside its own (their runners' lines): shown,
        # never judged
        "other_models": list(engine.intake.others.values()),
        # its own speed on this tier: the learned reference, the last canary rates
        "speed": engine.speedbook.summary(engine.tier),
        "pull": engine.pull_progress,
        "stopped_by": engine.memory.stopped_by,
        # the derived values its unit runs with, which bound won (CPUs or VRAM), and what its
        # next start would get when the host's facts have changed since (None: the same)
        "derived_environment": running.environment,
        "derived_why": running.why,
        "derived_next": (None if fresh.environment == running.environment
                         else fresh.to_dict()),
        "demoted_from": memory.demoted_from,
        "demoted_at": utc(memory.demoted_at) if memory.demoted_at else None,
        "promoting_from": memory.promoted_from if memory.probation_until is None else None,
        "probation_until": utc(memory.probation_until) if memory.probation_until else None,
    }


def status_document(sup: Daemon) -> dict[str, Any]:
    return {
        "api": API,
        "supervisor": {
            "version": __version__,
            "pid": os.getpid(),
            "started_at": utc(sup.started_at),
            "config_files": list(sup.config.files),
            "config_error": sup.config_error,
            "missing_groups": sup.hostfacts.missing_gpu_groups(),
            "degraded": degraded(sup),
            "events_dropped": sup.events.dropped,
            "systemd": sup.systemd.describe(),  # "dbus", or "systemctl (why not D-Bus)"
        },
        "engines": [engine_document(sup, e) for e in sup.engines.values()],
    }


def degraded(sup: Daemon) -> str | None:
    """Why the daemon cannot keep its records right now (a full or failing state disk), or
    what it had to do to start (a corrupt state.json moved aside); None when all is well."""
    problems = [p for p in (sup.events.degraded, sup.state_error, sup.state.note) if p]
    return "; ".join(problems) or None


def parse_since(value: str | None) -> str | None:
    """``since`` as the events' own timestamp format (``timefmt``), or 400: an ISO-8601 date
    or time."""
    if not value:
        return None
    try:
        return timefmt.normalise(value)
    except ValueError:
        raise HTTPError(400, "since must be an ISO-8601 date or time, e.g. 2026-11-22 or"
                        " 2026-11-22T16:00:00Z", {"since": value}) from None


KEPT_RENDERINGS = 64  # status tables kept per document (widths, colour, wide)


def look_of(query: Mapping[str, str]) -> Look:
    """How ``?format=text`` is drawn: ``width`` (the terminal's columns, 20 to 1000),
    ``colour`` and ``wide`` (0 or 1); 400 for anything else."""
    width = query.get("width")
    if width is not None and not (width.isdigit() and 20 <= int(width) <= 1000):
        raise HTTPError(400, "width must be a number of columns from 20 to 1000",
                        {"width": width})
    for flag in ("colour", "wide"):
        if query.get(flag, "0") not in ("0", "1"):
            raise HTTPError(400, f"{flag} must be 0 or 1", {flag: query[flag]})
    return Look(int(width) if width else None, query.get("colour") == "1",
                query.get("wide") == "1")


class StatusCache:
    """The status document and its renderings, rebuilt only when something changed: an
    engine finished a check (``Engine.ticks``), or the daemon recorded an event, reloaded or
    probed (``Daemon.generation``). Each rendering is kept as the ``Response`` itself: the
    same object answers every request until the document changes, and the server keeps its
    encoded bytes on it (``server.wire``)."""

    def __init__(self) -> None:
        self.key: tuple[Any, ...] | None = None
        self.document: dict[str, Any] = {}
        self.rendered: dict[str, Response] = {}  # "{engine}/{format}" -> its response

    def _fresh(self, sup: Daemon) -> None:
        key = (sup.generation, sup.config_error is None,
               tuple((name, e.ticks) for name, e in sup.engines.items()))
        if key != self.key:
            self.document, self.rendered, self.key = status_document(sup), {}, key

    def response(self, sup: Daemon, engine: str | None, form: str,
                 look: Look = PLAIN) -> Response:
        """The whole status or one engine's, as JSON (``json``), indented JSON (``pretty``,
        what ``status --json`` prints) or the table ``llm-supervisorctl status`` prints
        (``text``, drawn as ``look`` says), with the count of unhealthy engines in
        ``X-Unhealthy-Engines``."""
        self._fresh(sup)
        cache_key = f"{engine or ''}/{form}/{look}" if form == "text" else f"{engine or ''}/{form}"
        kept = self.rendered.get(cache_key)
        if kept is None:
            if len(self.rendered) >= KEPT_RENDERINGS:  # terminals of every width: bounded
                self.rendered.clear()
            kept = self.rendered[cache_key] = self._render(engine, form, look)
        return kept

    def _render(self, engine: str | None, form: str, look: Look) -> Response:
        engines = self.document["engines"]
        if engine is not None:
            engines = [e for e in engines if e["name"] == engine]
            if not engines:
                raise HTTPError(404, f"no engine named {engine!r}", {"engines": sorted(
                    e["name"] for e in self.document["engines"])})
        unhealthy = sum(e["state"] != "healthy" for e in engines)
        document = engines[0] if engine is not None else self.document
        if form == "text":
            body = (format_status(self.document if engine is None else
                                  {"engines": engines}, look) + "\n").encode()
            content_type = "text/plain; charset=utf-8"
        else:
            text = json.dumps(document, indent=2 if form == "pretty" else None, default=str)
            body = (text + "\n").encode() if form == "pretty" else text.encode()
            content_type = "application/json"
        return Response(200, body=body, content_type=content_type,
                        headers=[("X-Unhealthy-Engines", str(unhealthy))])


def own_cards(sup: Daemon, cfg: EngineConfig) -> dict[str, Any] | None:
    if not cfg.gpus:
        return None
    return {"named": list(cfg.gpus), **cards.place(cfg.gpus, sup.hostfacts.cards).to_dict()}


def tiers_document(sup: Daemon) -> dict[str, Any]:
    host = sup.hostfacts.cards
    return {
        "api": API,
        # the host's cards by PCI address, each tier's number for them, and whose they are
        "cards": [{**c.to_dict(), "engines": [e.name for e in sup.config.engines
                                              if c in cards.place(e.gpus, host).cards]}
                  for c in host],
        "tiers": [
            {**result.to_dict(), "available": sup.config.availability(tier),
             "host_has": tiers.host_has(sup.config, tier, sup.probes)[0]}
            for tier, result in sup.probes.items()
        ],
        "engines": [
            {"name": e.name,
             "choices": [{"tier": c.tier, "usable": c.usable, "reason": c.reason}
                         for c in sup.choices(e)]}
            for e in sup.engines.values()
        ],
    }


def serves(engine: Engine, model: str) -> bool:
    """Whether ``engine`` serves the model a client names: an Ollama engine by Ollama's rule
    for its names (``names.same_model``: ``Qwen2.5`` is ``qwen2.5:latest``), any other as
    written."""
    if engine.cfg.kind == "ollama":
        return names.same_model(engine.cfg.model, model)
    return engine.cfg.model == model


def endpoint_document(sup: Daemon, model: str | None) -> dict[str, Any]:
    """Local first: a healthy engine serving ``model`` (best tier first), else the remote."""
    candidates = [e for e in sup.engines.values()
                  if e.state == EngineState.HEALTHY and (model is None or serves(e, model))]
    candidates.sort(key=lambda e: e.chain.index(e.tier) if e.tier in e.chain else 99)
    if candidates:
        best = candidates[0]
        return {"url": best.cfg.endpoint, "local": True, "engine": best.name,
                "kind": best.cfg.kind, "model": best.cfg.model, "tier": best.tier}
    fallback = sup.config.routing.fallback_url
    if fallback:
        return {"url": fallback, "local": False, "engine": None, "model": model,
                "reason": "no healthy local engine serves it"}
    raise HTTPError(503, "no healthy engine serves " + (repr(model) if model else "any model"),
                    {"engines": {e.name: e.state.value for e in sup.engines.values()}})


async def bundle_files(sup: Daemon) -> dict[str, str]:
    """Everything a maintainer needs, as files (redacted by support.build)."""
    config_dir = sup.config_path.parent
    files: dict[str, str] = {}
    for name in sup.config.files:
        path = Path(name)
        relative = path.relative_to(config_dir) if path.is_relative_to(config_dir) else path.name
        files[f"config/{relative}"] = support.read_text(path)
    unit_dir = sup.config.supervisor.unit_dir
    for engine in sup.engines.values():
        for relative in (engine.cfg.unit, f"{engine.cfg.unit}.d/50-tier.conf"):
            files[f"units/{relative}"] = support.read_text(unit_dir / relative)
    files["state.json"] = support.read_text(sup.state_path)
    files["status.json"] = support.as_json(status_document(sup))
    files["tiers.json"] = support.as_json(tiers_document(sup))
    files["events.jsonl"] = "".join(json.dumps(e, default=str) + "\n"
                                    for e in await sup.disk.run(sup.events.read, limit=5000))
    journals = {f"journal/{e.name}.log": [f"_SYSTEMD_UNIT={e.cfg.unit}"]
                for e in sup.engines.values()}
    journals["journal/llm-supervisor.log"] = ["_SYSTEMD_UNIT=llm-supervisor.service"]
    journals["journal/kernel.log"] = sup.config.logs.kernel_match.split()
    for name, matches in journals.items():
        try:
            files[name] = await sup.systemd.journal(*matches, lines=1000)
        except SupervisorError as exc:
            files[name] = f"(journal unavailable: {exc})\n"
    try:
        systemd_version = (await sup.systemd.version()).splitlines()[0]
    except (SupervisorError, IndexError) as exc:
        systemd_version = f"unknown ({exc})"
    files["versions.txt"] = support.versions({"systemd": systemd_version})
    return files


async def operator(sup: Daemon, engine: Engine, part: str, method: str,
                   body: dict[str, Any], uid: int) -> str:
    """An operator's action (``method`` on ``/v1/engines/{name}/{part}``): validated here
    against what can be read, by the rules the engine's loop applies it with
    (``llm_supervisor.intents``)."""
    choices = sup.choices(engine)
    view = engine.intent_view([c.tier for c in choices if c.usable],
                           {c.tier: c.reason for c in choices if not c.usable})
    try:
        return await acknowledged(engine, intents.validate(view, part, method, body, uid))
    except Refused as exc:
        raise HTTPError(exc.status, exc.message, exc.detail) from None


ACK_TIMEOUT = 300.0  # s: a switch waits for systemd's jobs, which have their own timeouts


async def acknowledged(engine: Engine, intent: intents.Intent) -> str:
    """Queue the intent on the engine, wake its loop, await its outcome. An intent the engine
    has not taken when the wait ends is withdrawn, never half-applied."""
    done = engine.submit(intent)
    try:
        async with asyncio.timeout(ACK_TIMEOUT):
            return await asyncio.shield(done)
    except TimeoutError:
        if not done.done():
            done.cancel()  # not taken yet: the engine skips it
            raise HTTPError(504, f"{engine.name} did not take the {intent.verb} within"
                            f" {ACK_TIMEOUT:.0f}s; nothing was done") from None
        return done.result()


def _engine(sup: Daemon, name: str) -> Engine:
    engine = sup.engines.get(name)
    if engine is None:
        raise HTTPError(404, f"no engine named {name!r}",
                        {"engines": sorted(sup.engines)})
    return engine


def parse_limit(value: str | None) -> int | None:
    """``limit`` of the events query as a count, or 400: a number, not negative."""
    try:
        limit = int(value) if value else None
    except ValueError:
        raise HTTPError(400, "limit must be a number", {"limit": value}) from None
    if limit is not None and limit < 0:
        raise HTTPError(400, "limit must not be negative", {"limit": limit})
    return limit


class Api:
    """The control API's handlers, bound to one daemon and its status cache: each method
    answers the route ``routes()`` gives it. Nothing of the daemon is read until a request
    comes."""

    def __init__(self, sup: Daemon) -> None:
        self.sup = sup
        self.cache = StatusCache()

    def _cached(self, request: Request, name: str | None) -> Response:
        """The whole status or one engine's, in the ``format`` the query asks for, with the
        count of unhealthy engines in ``X-Unhealthy-Engines``."""
        form = request.query.get("format") or "json"
        if form not in ("json", "pretty", "text"):
            raise HTTPError(400, "format must be json, pretty or text", {"format": form})
        return self.cache.response(self.sup, name, form, look_of(request.query))

    async def status(self, request: Request, __: dict[str, str]) -> Response:
        """``GET /v1/status``: every engine."""
        return self._cached(request, None)

    async def engine(self, request: Request, params: dict[str, str]) -> Response:
        """``GET /v1/engines/{name}``: one engine."""
        return self._cached(request, params["name"])

    async def host_tiers(self, _: Request, __: dict[str, str]) -> Response:
        """``GET /v1/tiers``: what the host's probes found and each engine's choices."""
        return Response(200, tiers_document(self.sup))

    async def action(self, request: Request, params: dict[str, str]) -> Response:
        """``POST /v1/engines/{name}/{verb}`` and ``DELETE .../pin``: an operator's action,
        the verb taken from the method and the path's last part (``intents.Verb.route``)."""
        target = _engine(self.sup, params["name"])
        part = request.path.rstrip("/").rsplit("/", 1)[-1]
        body = request.json()
        if not isinstance(body, dict):
            raise HTTPError(400, "the request body must be a JSON object")
        done = await operator(self.sup, target, part, request.method, body, request.uid)
        return Response(200, {"ok": True, "engine": target.name, "action": part,
                              "result": done, "status": engine_document(self.sup, target)})

    async def endpoint(self, request: Request, _: dict[str, str]) -> Response:
        """``GET /v1/endpoint``: where to send a request for ``model``."""
        return Response(200, endpoint_document(self.sup, request.query.get("model") or None))

    async def reload(self, _: Request, __: dict[str, str]) -> Response:
        """``POST /v1/reload``: reread the configuration; 422 when it is refused."""
        ok, document = await self.sup.reload("POST /v1/reload")
        return Response(200 if ok else 422, document)

    async def support_bundle(self, _: Request, __: dict[str, str]) -> Response:
        """``GET /v1/bundle``: the support bundle, as a download."""
        data = await asyncio.to_thread(support.build, await bundle_files(self.sup))
        name = f"llm-supervisor-bundle-{os.uname().nodename}-{timefmt.compact()}.tar.zst"
        return Response(200, body=data, content_type="application/zstd",
                        headers=[("Content-Disposition", f'attachment; filename="{name}"')])

    async def events(self, request: Request, _: dict[str, str]) -> Response:
        """``GET /v1/events``: the recorded events as JSON lines, filtered by ``since``,
        ``engine`` and ``limit``; with ``follow``, the stream stays open for new ones."""
        query = request.query
        limit = parse_limit(query.get("limit"))
        since, engine = parse_since(query.get("since")), query.get("engine") or None
        if query.get("follow") in ("1", "true", "yes"):
            return self._follow(request, since, engine, limit)
        found = await self.sup.disk.run(self.sup.events.read, since=since, limit=limit,
                                        engine=engine)
        body = "".join(json.dumps(e, default=str) + "\n" for e in found)
        return Response(200, body=body.encode(), content_type="application/x-ndjson")

    def _follow(self, request: Request, since: str | None, engine: str | None,
                limit: int | None) -> Response:
        """The events' stream: the backlog, then each new event as it is recorded; 429 when
        the log has as many followers as it takes."""
        sup = self.sup
        try:
            events = sup.events.follow(
                since=since, engine=engine, limit=limit, client=request.uid,
                backlog=lambda **kw: sup.disk.run(sup.events.read, **kw))
        except TooManyFollowers as exc:
            raise HTTPError(429, f"too many followers: {exc}") from None

        async def lines() -> AsyncIterator[bytes]:
            try:
                async for event in events:
                    yield (json.dumps(event, default=str) + "\n").encode()
            finally:
                await events.aclose()  # type: ignore[attr-defined]
        return Response(200, stream=lines(), content_type="application/x-ndjson")

    async def metrics(self, _: Request, __: dict[str, str]) -> Response:
        """``GET /metrics``: the Prometheus exposition."""
        return Response(200, body=self.sup.metrics_text(),
                        content_type=self.sup.metrics.content_type)


def routes(sup: Daemon) -> Router:
    """The control API's paths, bound to the daemon's handlers (``Api``)."""
    api = Api(sup)
    router = Router()
    router.add("GET", "/metrics", api.metrics)
    router.add("GET", "/v1/events", api.events)
    # root only: it carries the engines' journals and config, whatever redaction misses
    router.add("GET", "/v1/bundle", api.support_bundle, write=True)
    router.add("POST", "/v1/reload", api.reload, write=True)
    router.add("GET", "/v1/status", api.status)
    router.add("GET", "/v1/endpoint", api.endpoint)
    router.add("GET", "/v1/engines/{name}", api.engine)
    router.add("GET", "/v1/tiers", api.host_tiers)
    for verb in intents.Verb:  # each verb's route, as intents has it
        method, part = verb.route
        router.add(method, f"/v1/engines/{{name}}/{part}", api.action, write=True)
    return router
