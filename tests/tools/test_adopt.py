"""`llm-supervisorctl adopt`: a stock ollama.service (+ override.conf) becomes an [[engine]]."""

from __future__ import annotations

import tomllib

import pytest

from llm_supervisor import config
from llm_supervisor.tools import adopt

# `systemctl cat ollama.service` on a host set up by Ollama's install.sh, plus the drop-in
# `systemctl edit ollama` writes.
CAT = """\
# /etc/systemd/system/ollama.service
[Unit]
Description=Ollama Service
After=network-online.target

[Service]
ExecStart=/usr/local/bin/ollama serve
User=ollama
Group=ollama
Restart=always
RestartSec=3
Environment="PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"

[Install]
WantedBy=default.target

# /etc/systemd/system/ollama.service.d/override.conf
[Service]
Environment="OLLAMA_HOST=0.0.0.0:11500" "HSA_OVERRIDE_GFX_VERSION=9.0.6"
Environment=OLLAMA_MODELS=/srv/ollama/models
EnvironmentFile=-/etc/ollama/secrets.env
"""


def test_parse_cat_applies_drop_ins_in_order():
    s = adopt.parse_cat(CAT)
    assert s.exec_start == ["/usr/local/bin/ollama serve"]
    assert (s.user, s.group) == ("ollama", "ollama")
    assert s.environment == {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin",
                             "OLLAMA_HOST": "0.0.0.0:11500", "HSA_OVERRIDE_GFX_VERSION": "9.0.6",
                             "OLLAMA_MODELS": "/srv/ollama/models"}
    assert s.environment_files == ["-/etc/ollama/secrets.env"]
    assert s.files == ["/etc/systemd/system/ollama.service",
                       "/etc/systemd/system/ollama.service.d/override.conf"]
    reset = adopt.parse_cat(CAT + "[Service]\nExecStart=\nExecStart=/opt/o/bin/ollama serve\n")
    assert reset.exec_start == ["/opt/o/bin/ollama serve"]


@pytest.mark.parametrize(("host", "listen"), [
    (None, "127.0.0.1:11434"), ("0.0.0.0", "0.0.0.0:11434"), (":11500", "127.0.0.1:11500"),
    ("http://10.0.0.5:8080/", "10.0.0.5:8080"), ("[::1]:11434", "[::1]:11434"),
    ("127.0.0.1:11435", "127.0.0.1:11435"),
])
def test_listen_from_ollama_host(host, listen):
    assert adopt.listen_of(host) == listen


def test_the_engine_written_is_valid_and_keeps_everything():
    s = adopt.parse_cat(CAT)
    table = adopt.engine_table("ollama", s, model="qwen2.5:7b-instruct")
    text = adopt.to_toml("ollama.service", table, s.files)
    assert "The way back" in text and "override.conf" in text
    cfg = config.loads(text, "/etc/llm-supervisor/conf.d/50-ollama.toml")
    engine = cfg.engines[0]
    assert engine.exec == "/usr/local/bin/ollama serve"
    assert engine.listen == "0.0.0.0:11500" and engine.user == "ollama"
    assert "OLLAMA_HOST" not in engine.environment  # rendered from listen
    assert engine.environment["HSA_OVERRIDE_GFX_VERSION"] == "9.0.6"
    assert "/srv/ollama/models" in engine.writable
    assert engine.environment_file == "/etc/ollama/secrets.env"
    assert engine.model == "qwen2.5:7b-instruct"
    assert tomllib.loads(text)["engine"][0]["name"] == "ollama"


def test_a_unit_without_a_usable_exec_is_refused():
    with pytest.raises(adopt.AdoptError):
        adopt.engine_table("x", adopt.parse_cat("[Service]\nUser=ollama\n"))
    with pytest.raises(adopt.AdoptError):
        adopt.engine_table("x", adopt.parse_cat("[Service]\nExecStart=ollama serve\n"))
