"""Several cards in one host, under a real systemd: four engines, each on its own simulated card
(two MI50s, a Raphael iGPU, an RX 580 ROCm dropped). The daemon's probes run the host's tools
(here the simulated host's rocminfo, vulkaninfo and clinfo, as the only stand-in for the
GPUs), each engine's unit holds it to its card on every tier, and a kernel line about card 2
moves only the engine on card 2."""

from __future__ import annotations

import time

from sandbox import (
    FAST,
    configure,
    engine_toml,
    events,
    free_port,
    install,
    main_pid,
    start_daemon,
    status,
    unit_env,
    wait_engine,
)

KERNEL_TAG = "kernel-test"
KFD = "/etc/llm-supervisor/simulated-kfd"  # the simulated host's /dev/kfd
# the probes decide which tiers this host has: no `available = "always"` here
SETTINGS = FAST.split("# The simulated host has an AMD GPU")[0].replace(
    '[supervisor]\n', f'[supervisor]\nkfd_path = "{KFD}"\n') + f"""
[logs]
kernel_match = "SYSLOG_IDENTIFIER={KERNEL_TAG}"
"""
# engine -> its card (by address or by number among the host's cards), the tier it starts on
ENGINES = {"polaris": ('"0000:03:00.0"', "vulkan"),  # card 0: ROCm does not list it
           "igpu": ("1", "rocm"),                     # card 1: 0000:0c:00.0, no unique id
           "mi50a": ("2", "rocm"),                    # card 2: 0000:43:00.0
           "mi50b": ('"0000:83:00.0"', "rocm")}       # card 3
CARD_2 = "0000:43:00.0"


def simulated_host(c) -> None:
    """The host's GPU tools print the simulated four-card host (the simulated engine's own
    rocminfo, vulkaninfo --summary and clinfo --raw), and /dev/kfd exists."""
    for tool in ("rocminfo", "vulkaninfo", "clinfo"):
        c.write(f"/usr/local/bin/{tool}", "#!/bin/sh\nSIMENGINE_CARDS=four exec"
                f' /usr/bin/llm-supervisor-simengine {tool} "$@"\n', mode=0o755)
    c.write(KFD, "")


def test_a_reset_of_card_2_moves_only_the_engine_on_card_2(fresh_container):
    c = fresh_container
    install(c)
    simulated_host(c)
    configure(c, "".join(
        engine_toml(name, free_port(),
                    extra=f'environment = {{ SIMENGINE_CARDS = "four" }}\ngpus = [{card}]')
        for name, (card, _) in ENGINES.items()), SETTINGS)
    timeline: list[str] = []
    t0 = time.monotonic()

    def mark(what: str) -> None:
        timeline.append(f"{time.monotonic() - t0:6.1f}s  {what}")

    start_daemon(c)
    mark("daemon started")
    for name, (_, tier) in ENGINES.items():
        doc = wait_engine(c, name, state="healthy", tier=tier)
        mark(f"{name} healthy on {tier}: {doc['backend']} ({doc['reason']})")
    cards = {name: status(c, name)["cards"]["cards"] for name in ENGINES}
    assert [card["pci"] for card in cards["mi50a"]] == [CARD_2]
    assert cards["polaris"][0]["rocm"] is None and cards["polaris"][0]["vulkan"] == 0
    assert "rocm does not list card 0000:03:00.0" in status(c, "polaris")["skipped_tiers"]["rocm"]

    # each unit holds its engine to its card, by that tier's own number for it
    env = {name: unit_env(c, f"llm-{name}.service") for name in ENGINES}
    assert env["mi50a"]["ROCR_VISIBLE_DEVICES"] == "GPU-12b008e17337ecd9"
    assert env["mi50a"]["GGML_VK_VISIBLE_DEVICES"] == "1"
    assert env["mi50b"]["ROCR_VISIBLE_DEVICES"] == "GPU-022849817348c2f7"
    assert env["igpu"]["ROCR_VISIBLE_DEVICES"] == "0" and env["igpu"]["GGML_VK_VISIBLE_DEVICES"] == "3"
    assert env["polaris"]["GGML_VK_VISIBLE_DEVICES"] == "0"
    assert env["polaris"]["ROCR_VISIBLE_DEVICES"] == "-1"
    # and each engine says it computes on its own card (Ollama's inference compute line)
    for name, card in (("mi50a", CARD_2), ("mi50b", "0000:83:00.0"), ("igpu", "0000:0c:00.0"),
                       ("polaris", "0000:03:00.0")):
        log = c.run(["journalctl", "-u", f"llm-{name}.service", "--no-pager", "-o", "cat",
                     "--grep", "inference compute"]).stdout
        assert f"pci_id={card}" in log, (name, log)
    # the unit environments per tier for the engine on card 2 (the note)
    for tier in ("rocm", "vulkan", "cpu"):
        rendered = c.run(["llm-supervisorctl", "render", "mi50a", "--tier", tier]).stdout
        mark(f"mi50a on {tier}: " + " ".join(
            line.removeprefix("Environment=") for line in rendered.splitlines()
            if "VISIBLE_DEVICES" in line or "DEVICE_ORDINAL" in line))

    # what the admin sees: the cards, each tier's number for them and whose they are
    tiers = c.run(["llm-supervisorctl", "tiers"]).stdout
    assert [line.split()[1] for line in tiers.splitlines() if line[:1].isdigit()] == [
        "0000:03:00.0", "0000:0c:00.0", "0000:43:00.0", "0000:83:00.0"], tiers
    doctor = c.run(["llm-supervisorctl", "doctor"], check=False).stdout
    cards_said = [line for line in doctor.splitlines() if " card" in line[:30]]
    assert any("card 2" in line and CARD_2 in line and "engines: mi50a" in line
               for line in cards_said), doctor
    print("\n".join(["", "$ llm-supervisorctl tiers", tiers, "$ llm-supervisorctl doctor"
                      " (its card lines)", *cards_said]))

    pids = {name: main_pid(c, f"llm-{name}.service") for name in ENGINES}
    c.run(["logger", "-t", KERNEL_TAG, f"amdgpu {CARD_2}: amdgpu: GPU reset begin!"])
    mark(f"kernel: amdgpu {CARD_2}: GPU reset begin!")
    c.wait_for(lambda: main_pid(c, "llm-mi50a.service") not in (0, pids["mi50a"]),
               timeout=20, what="the engine on card 2 restarted")
    mark("mi50a restarted")
    wait_engine(c, "mi50a", state="healthy", tier="rocm")
    mark("mi50a healthy on rocm again")
    time.sleep(3)  # the others' checks have run since
    for name in ("polaris", "igpu", "mi50b"):
        assert main_pid(c, f"llm-{name}.service") == pids[name], name
        assert status(c, name)["state"] == "healthy"
    resets = [(e["engine"], e["cause"]) for e in events(c) if e.get("cause") == "reset"
              and e["type"] == "state"]
    assert {engine for engine, _ in resets} == {"mi50a"}, resets

    pids = {name: main_pid(c, f"llm-{name}.service") for name in ENGINES}
    c.run(["logger", "-t", KERNEL_TAG, f"amdgpu {CARD_2}: amdgpu: GPU Recovery Failed: -22"])
    mark(f"kernel: amdgpu {CARD_2}: GPU Recovery Failed: -22")
    doc = wait_engine(c, "mi50a", state="healthy", tier="cpu", timeout=30)
    mark("mi50a healthy on cpu, reboot required")
    assert doc["reboot_required"] and doc["reboot_card"] == CARD_2
    assert f"REBOOT REQUIRED (card {CARD_2})" in c.run(["llm-supervisorctl", "status"],
                                                        check=False).stdout
    time.sleep(3)
    for name, (_, tier) in ENGINES.items():
        if name == "mi50a":
            continue
        doc = status(c, name)
        assert (doc["state"], doc["tier"], doc["reboot_required"]) == ("healthy", tier, False)
        assert main_pid(c, f"llm-{name}.service") == pids[name], name
    mark("the other three: unmoved, on their tiers, no reboot required")
    print("\n".join(["", "four cards, card 2 reset:", *timeline]))
