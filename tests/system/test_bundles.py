"""Model bundles as an admin uses them: the Debian package installed in a booted systemd, an
Ollama engine whose models directory its user owns, ``llm-supervisorctl models import`` run
as root. The engine user's symlink is refused and root's file untouched; the honest bundle
lands owned by the engine user and the engine serves it; ``export -o /dev/null`` leaves the
system's node alone; SIGTERM mid-import exits 143 with the tree as it was."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time
from pathlib import Path

from sandbox import FAST, apt, free_port, http_get, wait_engine

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import hostile_bundles as hb  # noqa: E402

MODELS = "/var/lib/ollama/models"
VICTIM = "/etc/llm-supervisor-victim"


def engine_toml(port: int) -> str:
    return (f'[[engine]]\nname = "main"\nkind = "ollama"\n'
            f'exec = "/usr/bin/llm-supervisor-simengine serve"\n'
            f'listen = "127.0.0.1:{port}"\nmodel = "{hb.NAME}"\n'
            f'environment = {{ OLLAMA_MODELS = "{MODELS}" }}\n')


def tree(c) -> str:
    """The models directory as the container sees it: type, owner, mode, size per path."""
    return c.run(f"cd {MODELS} && find . -printf '%y %u:%g %m %s %p\\n' | sort").stdout


def test_models_import_and_export_as_root_on_the_engine_users_tree(fresh_container, debs,
                                                                   tmp_path):
    c = fresh_container
    c.run(["rm", "-f", "/usr/sbin/policy-rc.d"])
    apt(c, "install", c.copy_in(debs["new"]))
    c.run(["systemctl", "stop", "llm-supervisor"])  # its engine writes there too: not yet
    c.ensure_user("ollama")
    c.run(["install", "-d", "-o", "ollama", "-g", "ollama", "/var/lib/ollama", MODELS])
    port = free_port()
    c.write("/etc/llm-supervisor/conf.d/20-main.toml", FAST + "\n" + engine_toml(port))

    # the engine user points a model's directory at a directory of root's
    c.run(["install", "-d", "-m", "0700", VICTIM])
    c.write(f"{VICTIM}/victim.conf", "root's own\n", mode=0o600)
    library = f"{MODELS}/manifests/registry.ollama.ai/library"
    c.run(["runuser", "-u", "ollama", "--", "sh", "-c",
           f"mkdir -p {library} && ln -s {VICTIM} {library}/victim"])
    model = hb.model(os.urandom(300_000))
    members = [hb.Member("models/manifests/registry.ollama.ai/library/victim/victim.conf",
                         model.manifest), *model.members()[1:]]
    evil = tmp_path / "evil.tar.zst"
    evil.write_bytes(hb.forge([*members, model.listing(members, model="victim:victim.conf")]))
    before = tree(c)
    done = c.run(["llm-supervisorctl", "models", "import", c.copy_in(evil), "--engine", "main"],
                 check=False)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert f"{library}/victim: a symlink inside the models directory: refused" in done.stderr
    assert f"nothing was imported, {MODELS} is as it was" in done.stderr
    assert tree(c) == before
    assert c.run(["stat", "-c", "%U %a %s", f"{VICTIM}/victim.conf"]).stdout.split() == \
        ["root", "600", "11"]
    assert c.read(f"{VICTIM}/victim.conf") == "root's own\n"

    # SIGTERM while it copies: 143, the tree as it was
    big = hb.model(os.urandom(64 * 2**20))
    slow = tmp_path / "big.tar.zst"
    slow.write_bytes(hb.forge(big.honest(), level=1))
    inside = c.copy_in(slow)
    c.run(["sh", "-c", f"(llm-supervisorctl models import {inside} --engine main"
           " >/root/term.out 2>&1 & echo $! >/root/term.pid; wait $!; echo $? >/root/term.rc)"
           " </dev/null >/dev/null 2>&1 &"])
    c.wait_for(lambda: c.run(f"ls {MODELS}/blobs/.llm-supervisor-import-*/ 2>/dev/null",
                             check=False).stdout.strip(), timeout=60, interval=0.05)
    c.run(["sh", "-c", "kill -TERM $(cat /root/term.pid)"])
    c.wait_for(lambda: c.run(["test", "-s", "/root/term.rc"], check=False).returncode == 0,
               timeout=60)
    assert c.read("/root/term.rc").strip() == str(128 + signal.SIGTERM), c.read("/root/term.out")
    assert "interrupted by SIGTERM: nothing was imported" in c.read("/root/term.out")
    assert tree(c) == before

    # the honest bundle: owned by the engine user, and the engine serves it
    c.run(["rm", f"{library}/victim"])
    honest = tmp_path / "qwen.tar.zst"
    honest.write_bytes(hb.forge(model.honest()))
    done = c.run(["llm-supervisorctl", "models", "import", c.copy_in(honest), "--engine",
                  "main"], check=False)
    assert done.returncode == 0, done.stderr
    assert f"imported {hb.NAME} into {MODELS} (owner" in done.stdout
    owners = {line.split()[1] for line in tree(c).splitlines() if line.startswith("f ")}
    assert owners == {"ollama:ollama"}, tree(c)
    c.run(["systemctl", "start", "llm-supervisor"])
    wait_engine(c, "main", state="healthy", timeout=90)
    code, body = http_get(port, "/api/tags")
    served = {m["name"]: m["digest"] for m in json.loads(body)["models"]}
    assert code == 200 and served[hb.NAME] == hashlib.sha256(model.manifest).hexdigest()

    # export: /dev/null is the system's node, never replaced; a file round-trips
    null = c.run(["stat", "-c", "%F %t:%T", "/dev/null"]).stdout
    done = c.run(["llm-supervisorctl", "models", "export", hb.NAME, "--engine", "main",
                  "-o", "/dev/null"], check=False)
    assert done.returncode == 1 and "/dev/null: a character device" in done.stderr
    assert c.run(["stat", "-c", "%F %t:%T", "/dev/null"]).stdout == null
    started = time.monotonic()
    c.run(["llm-supervisorctl", "models", "export", hb.NAME, "--engine", "main", "-o",
           "/root/back.tar.zst", "-q"])
    print(f"export took {time.monotonic() - started:.1f}s")
    again = c.run(["llm-supervisorctl", "models", "import", "/root/back.tar.zst", "--models-dir",
                   "/root/copy", "--owner", "root", "-q"], check=False)
    assert again.returncode == 0, again.stderr
    assert c.run(["cmp", f"{MODELS}/{hb.MANIFEST.removeprefix('models/')}",
                  f"/root/copy/{hb.MANIFEST.removeprefix('models/')}"]).returncode == 0
