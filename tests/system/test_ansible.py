"""contrib/ansible's role run by ansible-playbook (check mode, then for real) inside a throwaway
systemd container, against the real daemon. The role's install step (the .deb) is turned off:
the project's venv scripts are linked into /usr/bin by sandbox.install(), as the package does."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

from sandbox import CONFIG, engine_toml, events, free_port, install, wait_engine

REPO = Path(__file__).resolve().parents[2]
ROLES = REPO / "contrib" / "ansible" / "roles"
PLAYBOOK = "/root/llm-play.yml"
ANSIBLE = str(Path(sys.executable).parent / "ansible-playbook")

SETTINGS = {
    "supervisor": {"probe_timeout": "20s", "watch_config": False},  # reloads come from the handler
    "health": {"interval": "1s", "timeout": "1s", "failures": 3, "startup_grace": "8s",
               "canary_every": 2, "canary_timeout": "2s"},
    "fallback": {"restarts_per_tier": 1, "promote_after": "0"},
    "tiers": {"rocm": {"available": "always"}, "vulkan": {"available": "always"}},
}


def engine(name: str, port: int) -> dict:
    return {"name": name, "kind": "ollama", "exec": "/usr/bin/llm-supervisor-simengine serve",
            "listen": f"127.0.0.1:{port}", "model": "qwen2.5:7b-instruct"}


def playbook(c, engines: list[dict], conf_d: dict[str, str] | None = None) -> None:
    play = [{"hosts": "localhost", "connection": "local", "gather_facts": False,
             "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}",
                      "llm_supervisor_install": False,  # no .deb: the venv's scripts are linked
                      "llm_supervisor_settings": SETTINGS,
                      "llm_supervisor_engines": engines,
                      "llm_supervisor_conf_d": conf_d or {}},
             "roles": ["llm_supervisor"]}]
    c.write(PLAYBOOK, json.dumps(play, indent=1))  # JSON is YAML


INNER_ROLES = "/root/ansible-roles"  # a copy: a checkout under /tmp is out of the container's


def ansible(c, *extra: str, check: bool = True):
    inner = c.root / INNER_ROLES.lstrip("/")
    if not inner.exists():
        shutil.copytree(ROLES, inner)
    return c.run([ANSIBLE, "-i", "localhost,", PLAYBOOK, *extra], check=check, timeout=300,
                 env={"ANSIBLE_ROLES_PATH": INNER_ROLES, "LC_ALL": "C.UTF-8",
                      "ANSIBLE_NOCOLOR": "1", "ANSIBLE_RETRY_FILES_ENABLED": "0"})


def recap(output: str) -> dict[str, int]:
    line = next(ln for ln in output.splitlines() if ln.startswith("localhost") and "ok=" in ln)
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}


def test_role_check_mode_then_real_then_reload_and_refusal(fresh_container):
    c = fresh_container
    install(c)
    port, port2 = free_port(), free_port()
    playbook(c, [engine("main", port)])

    # check mode: validates for real, changes nothing
    out = ansible(c, "--check", "--diff").stdout
    assert recap(out)["failed"] == 0, out
    assert "Check the staged config with llm-supervisord --check" in out
    assert c.run(["test", "-e", CONFIG], check=False).returncode != 0
    assert c.run(["systemctl", "is-active", "llm-supervisor"], check=False).stdout.strip() \
        != "active"

    # for real: config installed, daemon enabled and started, engine healthy
    out = ansible(c).stdout
    assert recap(out)["failed"] == 0, out
    assert "Ansible managed" in c.read(CONFIG)
    assert c.run(["llm-supervisord", "--check"]).returncode == 0
    assert c.run(["systemctl", "is-enabled", "llm-supervisor"]).stdout.strip() == "enabled"
    wait_engine(c, "main", state="healthy", tier="rocm")

    # a second run with the same variables changes nothing
    out = ansible(c).stdout
    assert recap(out)["changed"] == 0, out

    # a new engine in conf.d: installed, and the handler's `systemctl reload` applies it
    playbook(c, [engine("main", port)],
             {"50-side.toml": engine_toml("side", port2)})
    before = len([e for e in events(c) if e["type"] == "reload"])
    out = ansible(c).stdout
    assert recap(out)["failed"] == 0, out
    assert "RUNNING HANDLER [llm_supervisor : Reload llm-supervisor]" in out
    wait_engine(c, "side", state="healthy")
    assert len([e for e in events(c) if e["type"] == "reload"]) > before

    # a config llm-supervisord --check rejects never lands; the daemon keeps its config
    installed = c.read(CONFIG)
    bad = engine("main", port) | {"no_such_key": 1}
    playbook(c, [bad])
    done = ansible(c, check=False)
    assert done.returncode != 0
    assert "no_such_key" in done.stdout + done.stderr
    assert c.read(CONFIG) == installed
    assert not c.run("ls -d /tmp/llm-supervisor-config.* 2>/dev/null", check=False).stdout
    wait_engine(c, "main", state="healthy")
