"""A tier switch is a transaction: a daemon that died between writing the units and systemd's
daemon-reload finishes the switch when it comes back, before judging anything."""

from __future__ import annotations

import json
import sys

from sandbox import (
    CONFIG,
    configure,
    engine_toml,
    free_port,
    install,
    process_env,
    start_daemon,
    status,
    wait_engine,
)

REWRITE = """
import sys
from llm_supervisor import config
from llm_supervisor.systemd import units
cfg = config.load(sys.argv[1])
units.write_files(cfg.supervisor.unit_dir,
                  units.render(cfg, cfg.engines[0], sys.argv[2], units.HostFacts.read()).files())
"""
STATE = "/var/lib/llm-supervisor/state.json"


def test_an_interrupted_switch_is_finished_on_restart(fresh_container):
    c = fresh_container
    install(c)
    configure(c, engine_toml("main", free_port()))
    start_daemon(c)
    wait_engine(c, "main", state="healthy", tier="rocm")
    c.run(["systemctl", "stop", "llm-supervisor"])  # the engine keeps serving on rocm
    # what a demotion had done when it died: state and files say vulkan, systemd still rocm
    state = json.loads(c.read(STATE))
    state["engines"]["main"]["tier"] = "vulkan"
    c.write(STATE, json.dumps(state), mode=0o640)
    c.run([sys.executable, "-c", REWRITE, CONFIG, "vulkan"])
    need = c.run(["systemctl", "show", "-p", "NeedDaemonReload", "--value",
                  "llm-main.service"]).stdout.strip()
    assert need == "yes"
    assert process_env(c, "llm-main.service")["LLM_SUPERVISOR_TIER"] == "rocm"

    start_daemon(c)
    doc = wait_engine(c, "main", state="healthy", tier="vulkan")
    env = process_env(c, "llm-main.service")
    assert env["LLM_SUPERVISOR_TIER"] == "vulkan" and env["OLLAMA_GPU_DRIVER"] == "vulkan"
    assert c.run(["systemctl", "show", "-p", "NeedDaemonReload", "--value",
                  "llm-main.service"]).stdout.strip() == "no"
    assert doc["backend"].startswith("Vulkan") and status(c, "main")["tier"] == "vulkan"


def test_sighup_still_reloads_after_a_failed_reload(fresh_container):
    """A reload that fails for another reason than a bad config (here: a unit file the
    supervisor does not own) leaves the reload path alive."""
    c = fresh_container
    install(c)
    configure(c, engine_toml("main", free_port()))
    start_daemon(c)
    wait_engine(c, "main", state="healthy")
    c.write("/etc/systemd/system/llm-other.service", "[Service]\nExecStart=/bin/true\n")
    other = engine_toml("other", free_port())
    c.write(CONFIG, c.read(CONFIG) + "\n" + other)
    c.run(["systemctl", "kill", "-s", "HUP", "--kill-who=main", "llm-supervisor"])
    c.wait_for(lambda: status(c)["supervisor"]["config_error"], timeout=20,
               what="the failed reload reported")
    c.run(["rm", "/etc/systemd/system/llm-other.service"])
    c.run(["systemctl", "kill", "-s", "HUP", "--kill-who=main", "llm-supervisor"])
    wait_engine(c, "other", state="healthy")
    assert status(c)["supervisor"]["config_error"] is None
