"""The host's cards by PCI address (``host.cards``), an engine's own (``gpus``), and the
variables that hold each tier to them (``host.tiers.tier_environment``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llm_supervisor import pci
from llm_supervisor.config import Config, EngineConfig
from llm_supervisor.errors import ConfigError
from llm_supervisor.host import cards, tiers
from llm_supervisor.host.cards import Card, Seen
from llm_supervisor.host.view import HostView

PROBES = Path(__file__).resolve().parent.parent / "data" / "probes"


def test_a_pci_address_is_written_one_way():
    assert pci.address("0000:43:00.0") == "0000:43:00.0"
    assert pci.address("43:00.0") == "0000:43:00.0"
    assert pci.address(" 0000:C3:1F.7 ") == "0000:c3:1f.7"
    for bad in ("43:00", "0000:43:20.0", "0000:43:00.8", "gpu0", "", "1"):
        assert pci.address(bad) is None, bad
    assert pci.in_line("amdgpu 0000:43:00.0: amdgpu: GPU reset begin!") == "0000:43:00.0"
    assert pci.in_line("[drm:amdgpu_job_timedout [amdgpu]] *ERROR* ring gfx timeout") is None


def test_the_tools_say_which_card_is_which():
    rocm = cards.rocm_seen((PROBES / "rocminfo-mi50.txt").read_text())
    # BDFID 58112 = 0xe300: bus e3, device 0, function 0; the CPU agent is not counted
    assert rocm == [Seen("0000:e3:00.0", 0, "AMD Instinct MI50/MI60", "gfx906",
                         "GPU-c88e588172fd62d5")]
    vulkan = cards.vulkan_seen((PROBES / "vulkaninfo-summary-radv.txt").read_text())
    assert [(s.pci, s.index) for s in vulkan] == [("0000:03:00.0", 0)]  # llvmpipe: no card
    opencl = cards.opencl_seen((PROBES / "clinfo-amd-gfx900.txt").read_text())
    assert [(s.pci, s.index) for s in opencl] == [("0000:03:00.0", 0)]
    assert cards.opencl_seen((PROBES / "clinfo-raw-pocl.txt").read_text()) == []


def test_radvs_device_uuid_is_the_address():
    assert cards.from_radv_uuid("00000000-4300-0000-0000-000000000000") == "0000:43:00.0"
    assert cards.from_radv_uuid("01000000-c300-0000-0300-000001000000") == "0001:c3:03.1"
    assert cards.from_radv_uuid("6d657361-3236-2e31-2e38-000000000000") is None  # llvmpipe
    assert cards.from_bdfid(0x4300) == "0000:43:00.0"
    assert cards.from_bdfid((0x83 << 8) | (2 << 3) | 1) == "0000:83:02.1"


def test_a_uuid_of_another_vulkan_driver_is_not_read_as_an_address():
    text = "Devices:\n========\nGPU0:\n\tdeviceType = PHYSICAL_DEVICE_TYPE_DISCRETE_GPU\n" \
           "\tdriverID = DRIVER_ID_AMD_OPEN_SOURCE\n" \
           "\tdeviceUUID = 00000000-4300-0000-0000-000000000000\n"
    assert cards.vulkan_seen(text) == []


def four_cards() -> tuple[Card, ...]:
    """Two MI50s, an iGPU, a card ROCm dropped: each tier numbers them its own way."""
    seen = {
        "rocm": [Seen("0000:0c:00.0", 0, "AMD Radeon Graphics", "gfx1036"),
                 Seen("0000:43:00.0", 1, "AMD Instinct MI50/MI60", "gfx906", "GPU-aa"),
                 Seen("0000:83:00.0", 2, "AMD Instinct MI50/MI60", "gfx906", "GPU-bb")],
        "vulkan": [Seen("0000:03:00.0", 0, "AMD Radeon RX 580 Series (RADV POLARIS10)"),
                   Seen("0000:43:00.0", 1), Seen("0000:83:00.0", 2), Seen("0000:0c:00.0", 3)],
        "opencl": [Seen("0000:0c:00.0", 0), Seen("0000:43:00.0", 1), Seen("0000:83:00.0", 2)],
    }
    vram = {"0000:03:00.0": 8 << 30, "0000:0c:00.0": 512 << 20, "0000:43:00.0": 32 << 30,
            "0000:83:00.0": 32 << 30}
    return cards.inventory(seen, vram)


def test_the_inventory_numbers_the_cards_by_address():
    host = four_cards()
    assert [(c.number, c.pci) for c in host] == [
        (0, "0000:03:00.0"), (1, "0000:0c:00.0"), (2, "0000:43:00.0"), (3, "0000:83:00.0")]
    assert set(host[0].seen) == {"vulkan"}  # ROCm dropped it
    assert host[2].name == "AMD Instinct MI50/MI60" and host[2].gfx == "gfx906"
    assert host[2].to_dict() == {"pci": "0000:43:00.0", "number": 2,
                                 "name": "AMD Instinct MI50/MI60", "gfx": "gfx906",
                                 "vram": 32 << 30, "rocm": 1, "vulkan": 1, "opencl": 1}
    assert "card 0 0000:03:00.0 AMD Radeon RX 580 Series (RADV POLARIS10) (vulkan 0)" in \
        cards.summary(host)


def test_an_engine_names_its_cards_by_address_or_number():
    host = four_cards()
    by_address = cards.place(("0000:43:00.0",), host)
    by_number = cards.place(("2",), host)
    assert by_address == by_number and by_address.addresses == ("0000:43:00.0",)
    assert by_address.on("rocm")[0] == (host[2].seen["rocm"],)
    assert by_address.listed() == {t: (host[2].seen[t],) for t in ("opencl", "rocm", "vulkan")}
    gone = cards.place(("7", "0000:44:00.0"), host)
    assert gone.unresolved == ("card 7 is not on this host (it has 4 cards)",
                               "card 0000:44:00.0 is not on this host")
    assert gone.on("rocm") == ((), "; ".join(gone.unresolved)) and gone.listed() == {}
    dropped = cards.place(("0000:03:00.0",), host)
    assert dropped.on("rocm") == ((), "rocm does not list card 0000:03:00.0 (rocminfo does"
                                      " not list it)")
    assert dropped.listed() == {"vulkan": (host[0].seen["vulkan"],)}


def test_the_config_takes_addresses_and_numbers_and_refuses_the_rest():
    engine = EngineConfig(name="main", gpus=["43:00.0", 3, "1"])
    assert engine.gpus == ("0000:43:00.0", "3", "1")
    assert EngineConfig(name="main").gpus == ()
    for bad, said in ((["43:00.0", "0000:43:00.0"], "named twice"), ([64], "out of range"),
                      (["gpu0"], "neither a PCI address"), ("0000:43:00.0", "is a list"),
                      ([True], "neither")):
        with pytest.raises(ValueError, match=said):
            EngineConfig(name="main", gpus=bad)


def test_a_bad_card_in_a_file_is_a_line_naming_it(tmp_path):
    from llm_supervisor.config import load
    path = tmp_path / "supervisor.toml"
    path.write_text('[[engine]]\nname = "main"\ngpus = ["0000:43:00.0", "gpu0"]\n')
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert "gpus" in str(caught.value) and "gpu0" in str(caught.value)


def environments(kind: str, gpus: tuple[str, ...]) -> dict[str, dict[str, str]]:
    extra = {"vllm": {"model": "qwen2.5:7b"},
             "llama-server": {"exec": "/usr/bin/llama-server -m /srv/m.gguf"}}.get(kind, {})
    engine = EngineConfig(name="main", kind=kind, gpus=list(gpus), **extra)
    listed = cards.place(engine.gpus, four_cards()).listed()
    return {t: tiers.tier_environment(engine, t, listed) for t in ("rocm", "vulkan", "opencl",
                                                                     "cpu")}


def test_each_tier_holds_ollama_to_its_card():
    env = environments("ollama", ("0000:43:00.0",))
    assert env["rocm"]["ROCR_VISIBLE_DEVICES"] == "GPU-aa"      # ROCm's unique id
    assert env["rocm"]["GGML_VK_VISIBLE_DEVICES"] == "1"        # its Vulkan held to it too
    assert env["vulkan"]["GGML_VK_VISIBLE_DEVICES"] == "1"
    assert env["vulkan"]["ROCR_VISIBLE_DEVICES"] == "-1"        # the vulkan tier hides ROCm
    assert env["opencl"]["GPU_DEVICE_ORDINAL"] == "1"
    assert env["cpu"] == tiers.tier_environment(EngineConfig(name="main"), "cpu")


def test_a_card_without_a_unique_id_is_named_by_its_number():
    env = environments("ollama", ("0000:0c:00.0",))
    assert env["rocm"]["ROCR_VISIBLE_DEVICES"] == "0"
    assert env["rocm"]["GGML_VK_VISIBLE_DEVICES"] == "3"       # Vulkan numbers it 3


def test_llama_server_is_held_by_the_device_names_it_sees_after_selection():
    env = environments("llama-server", ("0000:83:00.0", "0000:43:00.0"))
    assert env["rocm"]["ROCR_VISIBLE_DEVICES"] == "GPU-bb,GPU-aa"
    assert env["rocm"]["LLAMA_ARG_DEVICE"] == "ROCm0,ROCm1"
    assert env["vulkan"]["GGML_VK_VISIBLE_DEVICES"] == "2,1"
    assert env["vulkan"]["LLAMA_ARG_DEVICE"] == "Vulkan0,Vulkan1"
    assert "LLAMA_ARG_DEVICE" not in env["opencl"] and env["cpu"]["LLAMA_ARG_DEVICE"] == "none"


def test_vllm_is_held_on_rocm_by_hips_numbers():
    """vLLM counts by HIP's numbers, and Ray under it refuses ROCR_VISIBLE_DEVICES."""
    env = environments("vllm", ("2",))["rocm"]
    assert env["HIP_VISIBLE_DEVICES"] == "1" and "ROCR_VISIBLE_DEVICES" not in env


def test_the_engines_own_environment_cannot_move_it_off_its_cards():
    """A variable the drop-in sets stays out of the root-only environment file (which
    systemd would let win): an old ROCR_VISIBLE_DEVICES in `environment` loses to `gpus`."""
    from llm_supervisor.systemd.units import split_environment
    for kind, extra in (("vllm", {"model": "m"}),
                        ("llama-server", {"exec": "/usr/bin/llama-server -m /srv/m.gguf"})):
        engine = EngineConfig(name="main", kind=kind, gpus=["2"], environment={
            "ROCR_VISIBLE_DEVICES": "0", "GGML_VK_VISIBLE_DEVICES": "0",
            "GPU_DEVICE_ORDINAL": "0", "HIP_VISIBLE_DEVICES": "0", "SECRET": "x"}, **extra)
        public, private = split_environment(engine)
        assert private == {"SECRET": "x"}, kind
        plain = EngineConfig(name="main", kind=kind, environment={"ROCR_VISIBLE_DEVICES": "0"},
                             **extra)
        assert split_environment(plain)[1] == {"ROCR_VISIBLE_DEVICES": "0"}  # as before


def test_only_rocms_opencl_platform_is_numbered():
    text = ("[AMD/*] CL_PLATFORM_NAME AMD Accelerated Parallel Processing\n"
            "[AMD/0] CL_DEVICE_NAME gfx906\n[AMD/0] CL_DEVICE_TYPE CL_DEVICE_TYPE_GPU\n"
            "[AMD/0] CL_DEVICE_TOPOLOGY_AMD PCI-E, 0000:43:00.0\n"
            "[rusticl/*] CL_PLATFORM_NAME rusticl\n"
            "[rusticl/0] CL_DEVICE_NAME AMD Radeon RX 580 (radeonsi)\n"
            "[rusticl/0] CL_DEVICE_TYPE CL_DEVICE_TYPE_GPU\n"
            "[rusticl/0] CL_DEVICE_PCI_BUS_INFO_KHR PCI-E, 0000:03:00.0\n")
    assert [(s.pci, s.index) for s in cards.opencl_seen(text)] == [("0000:43:00.0", 0)]


def test_an_engine_without_cards_keeps_todays_environment_and_overrides_still_win():
    plain = EngineConfig(name="main")
    assert tiers.tier_environment(plain, "rocm", None) == {
        "LLM_SUPERVISOR_TIER": "rocm", "OLLAMA_GPU_DRIVER": "rocm"}
    engine = EngineConfig(name="main", gpus=["2"], tiers={
        "rocm": {"environment": {"ROCR_VISIBLE_DEVICES": "GPU-mine"}}})
    listed = cards.place(engine.gpus, four_cards()).listed()
    assert tiers.tier_environment(engine, "rocm", listed)["ROCR_VISIBLE_DEVICES"] == "GPU-mine"


def test_a_tier_that_does_not_list_the_engines_cards_is_not_usable_for_it():
    config = Config.model_validate({
        "tiers": {"rocm": {"available": "always"}, "vulkan": {"available": "always"}},
        "engine": [{"name": "polaris", "gpus": ["0000:03:00.0"], "listen": "127.0.0.1:11001"},
                   {"name": "mi50", "gpus": ["2"], "listen": "127.0.0.1:11002"},
                   {"name": "any", "listen": "127.0.0.1:11003"},
                   {"name": "gone", "gpus": ["9"], "listen": "127.0.0.1:11004"}]})
    view = HostView(lambda *a, **k: None)
    view.cards = four_cards()
    skips = {e.name: view.card_skips(config, e) for e in config.engines}
    assert skips["polaris"] == {"rocm": "rocm does not list card 0000:03:00.0 (rocminfo does"
                                        " not list it)"}
    assert skips["mi50"] == {} and skips["any"] == {}
    assert set(skips["gone"]) == {"rocm", "vulkan"}  # its chain's GPU tiers
    assert "card 9 is not on this host" in skips["gone"]["rocm"]


def test_sysfs_gives_each_cards_memory_by_address(tmp_path):
    drm = tmp_path / "drm"
    for card, address, vram in (("card0", "0000:43:00.0", 32 << 30),
                                ("card1", "0000:0c:00.0", 512 << 20)):
        device = tmp_path / "devices" / address
        device.mkdir(parents=True)
        (device / "mem_info_vram_total").write_text(f"{vram}\n")
        (drm / card).mkdir(parents=True)
        (drm / card / "device").symlink_to(device)
    (drm / "card0-DP-1").mkdir()  # a connector: no device of its own
    assert cards.sysfs_vram(drm) == {"0000:43:00.0": 32 << 30, "0000:0c:00.0": 512 << 20}


def test_an_engines_slots_are_sized_by_its_own_cards_shared_with_their_other_engines():
    from llm_supervisor.systemd.units import HostFacts
    host = HostFacts(frozenset(), vram=32 << 30, cards=four_cards())
    a = EngineConfig(name="a", gpus=["0000:43:00.0"])
    b = EngineConfig(name="b", gpus=["2"], listen="127.0.0.1:11435")        # the same card
    c = EngineConfig(name="c", gpus=["3", "1"], listen="127.0.0.1:11436")   # two cards
    anywhere = EngineConfig(name="d", listen="127.0.0.1:11437")
    engines = (a, b, c, anywhere)
    assert host.vram_for(a, engines) == (16 << 30, "card 0000:43:00.0, shared by 2 engines")
    assert host.vram_for(c, engines) == ((32 << 30) + (512 << 20),
                                         "card 0000:83:00.0; card 0000:0c:00.0")
    assert host.vram_for(anywhere, engines) == (32 << 30, "")  # today's rule: the largest card
    assert host.vram_for(EngineConfig(name="e", gpus=["9"]), engines) == (None, "")
    unknown = HostFacts(frozenset(), cards=cards.inventory({"rocm": [Seen("0000:43:00.0", 0)]},
                                                           {}))
    assert unknown.vram_for(a, engines) == (None, "")


async def test_a_card_named_by_number_that_moves_is_said():
    """A card leaves the bus: the engine's number now names the next card, and an event
    says so with both addresses."""
    config = Config.model_validate({"engine": [
        {"name": "num", "gpus": ["2"], "listen": "127.0.0.1:11001"},
        {"name": "addr", "gpus": ["0000:83:00.0"], "listen": "127.0.0.1:11002"}]})
    events = []
    view = HostView(lambda type, **fields: events.append({"type": type, **fields}))
    view.cards = four_cards()
    view._renumbered(config, tuple(c for c in four_cards() if c.pci != "0000:03:00.0"))
    assert [e.get("engine") for e in events] == ["num"]
    assert "names 0000:83:00.0 now (was 0000:43:00.0)" in events[0]["reason"]
