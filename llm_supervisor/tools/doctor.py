"""``llm-supervisorctl doctor``: is this host ready for its config? Works without the daemon.

Each check is PASS, WARN or FAIL with its evidence and, unless it passed, a one-line fix.
The checks are pure functions of ``Facts`` (what the host showed: device nodes, groups, tool
outputs, who holds each port, files); ``gather`` collects them from the live host, and the
tests build them from recorded tool outputs.
"""

from __future__ import annotations

import asyncio
import grp
import os
import pwd
import re
import shlex
import stat
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from llm_supervisor import names
from llm_supervisor.config import DEFAULT_CONFIG, Config, EngineConfig, load
from llm_supervisor.errors import ConfigError
from llm_supervisor.host import cards, ports
from llm_supervisor.host.gpu import OVERHEAD
from llm_supervisor.host.probes import (
    DEFAULT_COMMANDS,
    parse_clinfo,
    parse_rocminfo,
    parse_vulkan_summary,
)
from llm_supervisor.host.process import run
from llm_supervisor.host.tiers import kind_supports
from llm_supervisor.systemd.units import HostFacts
from llm_supervisor.tiers import GPU_TIERS

PASS, WARN, FAIL = "PASS", "WARN", "FAIL"

# ROCm targets stock Ollama no longer runs: PR #12481 blocks gfx900/gfx906 and its ROCm
# builds target gfx908 and later (docs/field-notes.md, "gfx906 (MI50) today"); discovery
# logs "dropping ROCm device — no rocblas support for gfx target" and goes on with Vulkan or
# the CPU.
OLLAMA_DROPPED_GFX = frozenset({"gfx803", "gfx900", "gfx902", "gfx904", "gfx906", "gfx909",
                                "gfx90c"})
# vLLM's ROCm builds start at gfx90a (MI200); older cards need a community build.
VLLM_DROPPED_GFX = OLLAMA_DROPPED_GFX | {"gfx908"}
GFX_BUILDS = {"ollama": "a gfx906-capable Ollama or llama.cpp build (e.g. mxxm-t/mx-llama.cpp)",
              "vllm": "a gfx906-capable vLLM build (e.g. nlzy/vllm-gfx906)"}
MIN_SYSTEMD = 247  # ProtectProc=, and what the units use, are in 247+ (Debian 12 has 252)

# the program an engine kind runs, as an admin installs it
PROGRAMS = {"ollama": "Ollama (ollama)", "llama-server": "llama.cpp's llama-server",
            "vllm": "vLLM (vllm)"}


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # PASS | WARN | FAIL
    evidence: str
    fix: str = ""


@dataclass(frozen=True)
class FileInfo:
    uid: int
    gid: int
    mode: int
    is_dir: bool


@dataclass
class Facts:
    """What the checks look at. Tool outputs are None when the tool is not installed."""

    config_path: Path = DEFAULT_CONFIG
    config: Config | None = None
    config_errors: list[str] = field(default_factory=list)
    kfd: str = "/dev/kfd"
    devices: dict[str, str] = field(default_factory=dict)  # /dev/kfd, /dev/dri/renderD128 -> group
    groups: dict[str, set[str]] = field(default_factory=dict)  # group -> members (incl. primary)
    users: set[str] = field(default_factory=set)
    user_homes: dict[str, str] = field(default_factory=dict)
    user_ids: dict[str, tuple[int, set[int]]] = field(default_factory=dict)  # uid, all gids
    group_ids: dict[str, int] = field(default_factory=dict)
    rocminfo: str | None = None
    vulkaninfo: str | None = None
    clinfo: str | None = None
    versions: dict[str, str | None] = field(default_factory=dict)  # program -> version line
    programs: dict[str, bool] = field(default_factory=dict)  # program -> exists and executable
    holders: dict[str, ports.Holder | None] = field(default_factory=dict)  # listen -> holder
    files: dict[str, FileInfo | None] = field(default_factory=dict)  # path -> info (None: absent)
    systemd_version: str = ""
    vram: dict[str, int] = field(default_factory=dict)  # each card's memory by PCI address

    def cards(self) -> tuple[cards.Card, ...]:
        """The host's cards as the daemon numbers them (``host.cards.inventory``)."""
        listed = {t: cards.SEEN[t](text) for t, text in (
            ("rocm", self.rocminfo), ("vulkan", self.vulkaninfo), ("opencl", self.clinfo))
            if text}
        return cards.inventory(listed, self.vram)


# --------------------------------------------------------------------------- the checks

def check_config(f: Facts) -> list[Check]:
    if f.config is None:
        return [Check("config", FAIL, "; ".join(f.config_errors) or f"{f.config_path}: invalid",
                      "fix the file and key named, then `llm-supervisorctl check-config`")]
    names = ", ".join(e.name for e in f.config.engines) or "none"
    evidence = f"{f.config_path}: valid, {len(f.config.files)} file(s), engines: {names}"
    if not f.config.engines:
        return [Check("config", WARN, evidence, "add an [[engine]] to /etc/llm-supervisor/conf.d/"
                      " or run `llm-supervisorctl adopt ollama.service`")]
    return [Check("config", PASS, evidence)]


def check_devices(f: Facts) -> list[Check]:
    out = []
    if f.kfd in f.devices:
        out.append(Check("device /dev/kfd", PASS, f"{f.kfd} exists, group {f.devices[f.kfd]}"))
    else:
        out.append(Check("device /dev/kfd", WARN, f"{f.kfd} is missing: no ROCm tier here",
                         "load amdgpu with KFD (`modprobe amdgpu`) or install the ROCm kernel"
                         " driver; without it engines run on Vulkan or the CPU"))
    render = {p: g for p, g in f.devices.items() if p.startswith("/dev/dri/renderD")}
    if render:
        out.append(Check("device /dev/dri", PASS, ", ".join(
            f"{p} (group {g})" for p, g in sorted(render.items()))))
    else:
        out.append(Check("device /dev/dri", WARN, "no /dev/dri/renderD* node: no GPU tier here",
                         "load amdgpu (`modprobe amdgpu`); check `lspci -k` for the card"))
    return out


def check_groups(f: Facts) -> list[Check]:
    out = []
    needed = sorted({g for g in f.devices.values() if g in ("render", "video")} |
                    {"render", "video"})
    for group in needed:
        if group not in f.groups:
            out.append(Check(f"group {group}", WARN, f"group {group!r} does not exist; engine"
                             " units leave it out of SupplementaryGroups=",
                             f"groupadd --system {group} (udev gives GPU nodes to it)"))
        else:
            out.append(Check(f"group {group}", PASS, f"group {group!r} exists"))
    if f.config is None:
        return out
    for user in sorted({e.user for e in f.config.engines}):
        if user not in f.users:
            out.append(Check(f"user {user}", FAIL, f"engine user {user!r} does not exist",
                             f"useradd --system --user-group --home-dir /usr/share/{user}"
                             f" --shell /usr/sbin/nologin {user} (or set `user` in the config)"))
            continue
        missing = [g for g in ("render", "video") if g in f.groups and user not in f.groups[g]]
        if missing:
            out.append(Check(f"user {user}", WARN, f"{user} is not in {', '.join(missing)}"
                             " (the generated unit adds them with SupplementaryGroups=)",
                             f"usermod -aG {','.join(missing)} {user} (for runs outside the unit)"))
        else:
            out.append(Check(f"user {user}", PASS, f"{user} exists and is in render/video"))
    return out


def gfx_targets(rocminfo: str | None) -> list[tuple[str, str]]:
    """(gfx target, marketing name) of each GPU agent rocminfo lists."""
    gpus = [a for a in parse_rocminfo(rocminfo or "") if a.get("device_type", "").upper() == "GPU"]
    return [(a.get("name", "?"), a.get("marketing_name", "?")) for a in gpus]


def check_rocm(f: Facts) -> list[Check]:
    if f.rocminfo is None:
        return [Check("gfx target", WARN, "rocminfo is not installed",
                      "apt install rocminfo (or ROCm's own) to see the GPU's gfx target")]
    targets = gfx_targets(f.rocminfo)
    if not targets:
        first = next((ln.strip() for ln in f.rocminfo.splitlines() if ln.strip()), "no output")
        return [Check("gfx target", WARN, f"rocminfo lists no GPU agent ({first})",
                      "check the amdgpu driver and that /dev/kfd is reachable"
                      " (groups render/video)")]
    out = [Check("gfx target", PASS, "rocminfo: " + "; ".join(f"{t} ({m})" for t, m in targets))]
    if f.config is None:
        return out
    for engine in f.config.engines:
        out.append(_rocm_build(f, engine, [t for t, _ in targets]))
    return out


def _rocm_build(f: Facts, engine: EngineConfig, targets: list[str]) -> Check:
    name = f"{engine.name}: rocm build"
    assert f.config is not None
    if "rocm" not in f.config.chain_for(engine):
        return Check(name, PASS, "the chain does not use rocm")
    override = engine.tiers.get("rocm")
    if override is not None and override.exec:
        return Check(name, PASS, f"the rocm tier runs its own build: {override.exec}")
    if engine.kind == "llama-server":  # built by its admin: its own device list says
        return Check(name, PASS, "llama-server's ROCm is its build's (GGML_HIP with"
                     f" AMDGPU_TARGETS for {', '.join(targets)}): the daemon asks its"
                     " --list-devices when it starts and at every reload, and skips rocm"
                     " without the card")
    dropped = OLLAMA_DROPPED_GFX if engine.kind == "ollama" else VLLM_DROPPED_GFX
    bad = [t for t in targets if t.split(":")[0] in dropped]
    if not bad or len(bad) < len(targets):
        return Check(name, PASS, f"stock {engine.kind} builds ROCm for {', '.join(targets)}")
    rest = [t for t in f.config.chain_for(engine) if t != "rocm"]
    return Check(
        name, FAIL,
        f"stock {engine.kind} has no ROCm kernels for {', '.join(bad)}: it drops the GPU at"
        " discovery (\"dropping ROCm device — no rocblas support for gfx target\") and runs"
        " on Vulkan or the CPU",
        f"set [engine.tiers.rocm].exec to {GFX_BUILDS[engine.kind]}, or start the chain at"
        f" vulkan: chain = {list(rest)!r}".replace("'", '"'))


def check_vulkan(f: Facts) -> list[Check]:
    if f.vulkaninfo is None:
        return [Check("vulkan device", WARN, "vulkaninfo is not installed",
                      "apt install vulkan-tools mesa-vulkan-drivers")]
    devices = parse_vulkan_summary(f.vulkaninfo)
    real = [d for d in devices if d.get("deviceType", "") not in ("", "PHYSICAL_DEVICE_TYPE_CPU")]
    if real:
        return [Check("vulkan device", PASS, "; ".join(
            f"{d.get('deviceName', '?')} ({d.get('driverID', '?')})" for d in real))]
    seen = "; ".join(f"{d.get('deviceName', '?')} ({d.get('deviceType', '?')})" for d in devices)
    return [Check("vulkan device", WARN, f"no GPU Vulkan device, only: {seen or 'none'}"
                  " (llvmpipe is software): no vulkan tier",
                  "apt install mesa-vulkan-drivers (RADV); check /dev/dri access")]


def check_opencl(f: Facts) -> list[Check]:
    if f.clinfo is None:
        return [Check("opencl device", WARN, "clinfo is not installed", "apt install clinfo")]
    devices = parse_clinfo(f.clinfo)
    gpus = [d for d in devices if "GPU" in d.get("type", "").split(", ")]
    if gpus:
        return [Check("opencl device", PASS, "; ".join(f"{d['name']} ({d['platform']})"
                                                        for d in gpus))]
    seen = "; ".join(f"{d['name']} ({d.get('type', '?')})" for d in devices)
    return [Check("opencl device", WARN, f"no OpenCL GPU, only: {seen or 'none'}; the opencl"
                  " tier is skipped", "install the GPU's OpenCL ICD (ROCm's rocm-opencl) if an"
                  " engine has [engine.tiers.opencl].exec")]


def engine_programs(engine: EngineConfig) -> list[str]:
    commands = [engine.exec] + [t.exec for t in engine.tiers.values() if t.exec]
    return list(dict.fromkeys(shlex.split(c)[0] for c in commands))


def check_engines(f: Facts) -> list[Check]:
    if f.config is None:
        return []
    out = []
    for engine in f.config.engines:
        for program in engine_programs(engine):
            name = f"{engine.name}: {os.path.basename(program)}"
            if not f.programs.get(program):
                out.append(Check(name, FAIL, f"{program} is missing or not executable",
                                 f"install {PROGRAMS.get(engine.kind, engine.kind)} there,"
                                 f" or set `exec` for {engine.name}"))
                continue
            version = f.versions.get(program)
            out.append(Check(name, PASS, f"{program}" + (f": {version}" if version else "")))
        if engine.environment_file:
            info = f.files.get(engine.environment_file)
            if info is None:
                out.append(Check(f"{engine.name}: environment_file", FAIL,
                                 f"{engine.environment_file} does not exist (the unit would"
                                 " not start)", "create it (mode 0600) or drop the key"))
            elif info.mode & 0o004:
                out.append(Check(f"{engine.name}: environment_file", WARN,
                                 f"{engine.environment_file} is world-readable",
                                 f"chmod 600 {engine.environment_file}"))
        out.extend(_listen(f, engine))
        out.extend(_models(f, engine))
    return out


def _listen(f: Facts, engine: EngineConfig) -> list[Check]:
    name = f"{engine.name}: listen {engine.listen}"
    holder = f.holders.get(engine.listen)
    if holder is None:
        return [Check(name, PASS, f"{engine.listen} is free")]
    if holder.unit == engine.unit:
        return [Check(name, PASS, f"served by this engine: {holder.describe()}")]
    unit = holder.unit if holder.unit and holder.unit.endswith(".service") else None
    fix = (f"`llm-supervisorctl adopt {unit}` to take it over, or"
           f" `systemctl disable --now {unit}`" if unit else f"stop {holder.describe()}")
    fix += f", or set another `listen` for {engine.name}"
    return [Check(name, FAIL, f"{engine.listen} is held by {holder.describe()}: {engine.name}"
                  " could not bind it, on any tier", fix)]


def models_dir(f: Facts, engine: EngineConfig) -> str | None:
    if engine.kind != "ollama":
        return None
    return str(names.models_dir(engine.environment, f.user_homes.get(engine.user)))


def _models(f: Facts, engine: EngineConfig) -> list[Check]:
    where = models_dir(f, engine)
    if where is None:
        return [Check(f"{engine.name}: models", PASS, f"{engine.kind}: models dir not checked")]
    name = f"{engine.name}: models dir"
    path = PurePosixPath(where)
    if PurePosixPath("/home") in path.parents or PurePosixPath("/root") in path.parents:
        return [Check(name, FAIL, f"{where} is under a home directory; the engine unit has"
                      " ProtectHome=yes", "move the models (e.g. to /var/lib/ollama/models) and"
                      " set OLLAMA_MODELS and `writable` to it")]
    covered = any(path == PurePosixPath(w) or PurePosixPath(w) in path.parents
                  for w in engine.writable or ())
    info = f.files.get(where)
    out = []
    if info is None or not info.is_dir:
        out.append(Check(name, WARN, f"{where} does not exist yet (Ollama makes it on the first"
                         " pull)", f"install -d -o {engine.user} -g {engine.group} {where}"))
    elif not _writable_by(f, engine.user, info):
        out.append(Check(name, FAIL, f"{where} is not writable by {engine.user} (owner uid"
                         f" {info.uid}, mode {stat.filemode(info.mode)})",
                         f"chown -R {engine.user}:{engine.group} {where}"))
    elif not covered:
        out.append(Check(name, FAIL, f"{where} is outside `writable` "
                         f"({', '.join(engine.writable or ()) or 'none'}): ProtectSystem=strict"
                         " keeps it read-only", f"add {where!r} to `writable` of {engine.name}"))
    else:
        out.append(Check(name, PASS, f"{where} exists, writable by {engine.user}"))
    if engine.model:
        manifest = model_manifest(where, engine.model)
        if f.files.get(manifest) is not None:
            out.append(Check(f"{engine.name}: model", PASS, f"{engine.model}: {manifest}"))
        else:
            out.append(Check(f"{engine.name}: model", FAIL, f"{engine.model} is not in {where}"
                             f" (no {manifest})", f"OLLAMA_HOST={engine.listen} ollama pull"
                             f" {engine.model}"))
    return out


def model_manifest(models: str, model: str) -> str:
    """Where Ollama keeps a model's manifest (``llm_supervisor.names``)."""
    return f"{models.rstrip('/')}/{names.manifest_relpath(model)}"


def _writable_by(f: Facts, user: str, info: FileInfo) -> bool:
    uid, gids = f.user_ids.get(user, (-1, set()))
    if uid == 0 or (info.uid == uid and info.mode & 0o200):
        return True
    return bool((info.gid in gids and info.mode & 0o020) or info.mode & 0o002)


def check_socket_group(f: Facts) -> list[Check]:
    group = f.config.supervisor.socket_group if f.config else "llm-supervisor"
    if group in f.groups:
        members = ", ".join(sorted(f.groups[group])) or "no members yet"
        return [Check("socket group", PASS, f"group {group!r} exists ({members})")]
    return [Check("socket group", FAIL, f"group {group!r} does not exist: the daemon cannot"
                  " give its socket to it", f"groupadd --system {group} (the package's"
                  " sysusers.d entry makes it: systemd-sysusers)")]


def check_systemd(f: Facts) -> list[Check]:
    match = re.search(r"systemd (\d+)", f.systemd_version)
    if not match:
        return [Check("systemd", FAIL, f"cannot tell the systemd version ({f.systemd_version!r})",
                      "llm-supervisor needs systemd as the service manager")]
    version = int(match.group(1))
    if version < MIN_SYSTEMD:
        return [Check("systemd", WARN, f"systemd {version}: older than {MIN_SYSTEMD}; some"
                      " hardening directives are ignored", "upgrade to Debian 12 or newer")]
    return [Check("systemd", PASS, f.systemd_version.splitlines()[0])]


def check_cards(f: Facts) -> list[Check]:
    """Each card (address, gfx target, memory, each tier's number, its engines); an engine
    that names a card the host lacks, or a tier of its chain that cannot take its cards; a
    card given more engines than its memory holds (``HostFacts.vram_for``: shared evenly)."""
    found = f.cards()
    engines = f.config.engines if f.config else ()
    host = HostFacts(frozenset(), cards=found)
    users = {c.pci: [e.name for e in engines if c in cards.place(e.gpus, found).cards]
             for c in found}
    out = [Check(f"card {c.number}", PASS, _card_line(c, users[c.pci])) for c in found]
    vulkan = f.vulkaninfo or ""
    if any(e.gpus for e in engines) and "DRIVER_ID_MESA_RADV" in vulkan \
            and "deviceUUID" not in vulkan:
        out.append(Check("vulkan card addresses", WARN, "this vulkaninfo prints no deviceUUID"
                         " in --summary: which Vulkan device is which card cannot be told, so"
                         " engines that name their cards skip the vulkan tier",
                         "install a newer vulkan-tools (Debian 12's 1.3.239 prints it)"))
    for engine in engines:
        if not engine.gpus:
            if len(found) > 1:
                out.append(Check(f"engine {engine.name} cards", WARN, f"{engine.name} names no"
                                 f" card: it may use all {len(found)} (llama.cpp splits a model"
                                 " across every GPU it sees)", "name its cards with `gpus`"))
            continue
        out += _engine_cards(f, engine, host, engines)
    return out


def _card_line(card: cards.Card, engines: list[str]) -> str:
    vram = f"{card.vram / 2**30:.1f} GiB" if card.vram else "memory unknown"
    numbers = ", ".join(f"{t} {s.index}" for t, s in card.seen.items()) or "no tier lists it"
    return (f"{card.pci} {card.name or '?'} {card.gfx or ''} {vram}; {numbers}; engines:"
            f" {', '.join(engines) or 'none'}").replace("  ", " ")


def _engine_cards(f: Facts, engine: EngineConfig, host: HostFacts,
                  engines: Iterable[EngineConfig]) -> list[Check]:
    name = f"engine {engine.name} cards"
    placement = cards.place(engine.gpus, host.cards)
    if placement.unresolved:
        return [Check(name, FAIL, "; ".join(placement.unresolved),
                      "name cards this host has (their PCI addresses are listed above)")]
    out = []
    numbers = [g for g in engine.gpus if g.isdigit()]
    if numbers:
        out.append(Check(name, WARN, f"{engine.name} names card {', '.join(numbers)} by number:"
                         " numbers count the cards the host has at each probe, and shift when"
                         " a card leaves the bus", "name it by address: gpus = ["
                         + ", ".join(f'"{c.pci}"' for c in placement.cards) + "]"))
    assert f.config is not None
    for tier in f.config.chain_for(engine):
        if tier in GPU_TIERS and kind_supports(engine, tier)[0] and (why := placement.on(tier)[1]):
            out.append(Check(name, WARN, f"{engine.name} skips {tier}: {why}",
                             f"leave {tier} out of its chain, or give it a card {tier} lists"))
    fitted = host.fit(engine, tuple(engines))
    share, where = host.vram_for(engine, tuple(engines))
    if fitted is not None and not fitted.fits:
        out.append(Check(name, FAIL, f"{engine.name}'s model does not fit: {fitted.says()}",
                         "give it a card of its own, or fewer engines on its card"))
    elif share is not None and share < OVERHEAD:
        out.append(Check(name, FAIL, f"{engine.name} has {share / 2**30:.2f} GiB of VRAM"
                         f" ({where}), less than an engine needs beside its model"
                         f" ({OVERHEAD / 2**30:.0f} GiB)",
                         "give it a card of its own, or fewer engines on its card"))
    else:
        out.append(Check(name, PASS, f"{', '.join(placement.addresses)}"
                         + (f": {fitted.says()}" if fitted else
                            f" ({share / 2**30:.1f} GiB: {where})" if share else "")))
    return out


CHECKS: tuple[Callable[[Facts], list[Check]], ...] = (
    check_config, check_devices, check_groups, check_rocm, check_vulkan, check_opencl,
    check_cards, check_engines, check_socket_group, check_systemd)


def diagnose(facts: Facts) -> list[Check]:
    return [check for fn in CHECKS for check in fn(facts)]


# --------------------------------------------------------------------------- the live host

async def _tool(argv: Iterable[str], timeout: float) -> str | None:
    from llm_supervisor.errors import CommandError

    try:
        done = await run(tuple(argv), timeout=timeout)
    except CommandError:
        return None
    text = done.stdout + ("\n" + done.stderr if done.stderr.strip() else "")
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)


def _file(path: str) -> FileInfo | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return FileInfo(st.st_uid, st.st_gid, st.st_mode, stat.S_ISDIR(st.st_mode))


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


async def gather(config_path: Path = DEFAULT_CONFIG, *, timeout: float = 10.0,
                 holder: Callable[[str], ports.Holder | None] = ports.holder) -> Facts:
    f = Facts(config_path=config_path)
    try:
        f.config = load(config_path)
    except ConfigError as exc:
        f.config_errors = list(exc.problems)
    if f.config is not None:
        f.kfd = str(f.config.supervisor.kfd_path)
        timeout = f.config.supervisor.probe_timeout
    nodes = sorted(str(p) for p in Path("/dev/dri").glob("renderD*"))  # noqa: ASYNC240 (a stat)
    for path in [f.kfd, *nodes]:
        info = _file(path)
        if info is not None:
            f.devices[path] = _group_name(info.gid)
    users = {p.pw_name: p for p in pwd.getpwall()}
    f.users = set(users)
    f.user_homes = {n: p.pw_dir for n, p in users.items()}
    for g in grp.getgrall():
        f.group_ids[g.gr_name] = g.gr_gid
        f.groups[g.gr_name] = set(g.gr_mem) | {n for n, p in users.items() if p.pw_gid == g.gr_gid}
    for name, p in users.items():
        f.user_ids[name] = (p.pw_uid, {p.pw_gid} | {
            f.group_ids[group] for group, members in f.groups.items() if name in members})
    rocm, vulkan, opencl, systemd = await asyncio.gather(
        _tool(DEFAULT_COMMANDS["rocm"], timeout), _tool(DEFAULT_COMMANDS["vulkan"], timeout),
        _tool(DEFAULT_COMMANDS["opencl"], timeout), _tool(("systemctl", "--version"), timeout))
    f.rocminfo, f.vulkaninfo, f.clinfo, f.systemd_version = rocm, vulkan, opencl, systemd or ""
    f.vram = cards.sysfs_vram()
    for engine in f.config.engines if f.config else ():
        for program in engine_programs(engine):
            f.programs[program] = (os.access(program, os.X_OK)
                                   and os.path.isfile(program))  # noqa: ASYNC240 (a stat)
            if f.programs[program] and program not in f.versions:
                out = await _tool((program, "--version"), min(timeout, 5.0))
                line = next((ln.strip() for ln in (out or "").splitlines() if ln.strip()), None)
                f.versions[program] = line
        f.holders[engine.listen] = holder(engine.listen)
        paths = [engine.environment_file] if engine.environment_file else []
        where = models_dir(f, engine)
        if where:
            paths += [where, model_manifest(where, engine.model)] if engine.model else [where]
        for path in paths:
            f.files[path] = _file(path)
    return f


# --------------------------------------------------------------------------- output

def document(checks: list[Check]) -> dict[str, Any]:
    counts = {s: sum(c.status == s for c in checks) for s in (PASS, WARN, FAIL)}
    return {"ok": counts[FAIL] == 0, "counts": counts, "checks": [asdict(c) for c in checks]}


def format_checks(checks: list[Check]) -> str:
    width = max((len(c.name) for c in checks), default=0)
    lines = []
    for c in checks:
        lines.append(f"{c.status}  {c.name.ljust(width)}  {c.evidence}")
        if c.fix and c.status != PASS:
            lines.append(f"{'':6}{'':{width}}  fix: {c.fix}")
    counts = document(checks)["counts"]
    lines.append(f"{counts[PASS]} passed, {counts[WARN]} warnings, {counts[FAIL]} failed")
    return "\n".join(lines)
