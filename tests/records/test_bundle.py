"""The support bundle: redaction, and a .tar.zst that both tar and python-zstandard read."""

from __future__ import annotations

import io
import subprocess
import tarfile

import zstandard

from llm_supervisor.records.support import REDACTED, build, redact

CONFIG = '''[[engine]]
name = "main"
environment = { HF_TOKEN = "hf_abcdef123", OLLAMA_KEEP_ALIVE = "30m", api_key = 'sk-zzz' }
password = "hunter2"
'''


def test_redact_hides_secret_values_in_toml_env_and_json():
    out = redact(CONFIG)
    for secret in ("hf_abcdef123", "sk-zzz", "hunter2"):
        assert secret not in out
    assert f'HF_TOKEN = "{REDACTED}"' in out and f"api_key = '{REDACTED}'" in out
    assert 'OLLAMA_KEEP_ALIVE = "30m"' in out  # not a secret
    assert redact('Environment="HF_TOKEN=hf_abc" "A=1"') == \
        f'Environment="HF_TOKEN={REDACTED}" "A=1"'
    assert redact('{"ACCESS_KEY": "AKIA123", "model": "qwen"}') == \
        f'{{"ACCESS_KEY": "{REDACTED}", "model": "qwen"}}'
    assert redact("OPENAI_API_KEY=sk-live-1 serve") == f"OPENAI_API_KEY={REDACTED} serve"
    # JSON stays JSON, and names that merely contain a secret word are left alone
    status = '{"tokens_per_second": 41.0, "db_password": 1234, "keep_alive": "5m"}'
    assert redact(status) == f'{{"tokens_per_second": 41.0, "db_password": "{REDACTED}",' \
        ' "keep_alive": "5m"}'
    assert redact("monkey=1 keyboard=2") == "monkey=1 keyboard=2"


def test_redact_hides_flags_url_user_info_and_bearer_tokens():
    line = ('ExecStart=/opt/vllm/bin/vllm serve m --api-key sk-abc123 --hf-token=hf_x '
            '--port 8000 --max-tokens 5')
    out = redact(line)
    assert "sk-abc123" not in out and "hf_x" not in out
    assert f"--api-key {REDACTED}" in out and f"--hf-token={REDACTED}" in out
    assert "--port 8000 --max-tokens 5" in out  # not secrets
    assert redact('--api-key "two words"') == f'--api-key "{REDACTED}"'
    out = redact("pulling from https://alice:s3cret@models.example.org/q.gguf failed")
    assert "s3cret" not in out and "alice" not in out
    assert f"https://{REDACTED}@models.example.org/q.gguf" in out
    assert redact("no user info in https://example.org/a@b") == \
        "no user info in https://example.org/a@b"
    out = redact('msg="request" Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.abc')
    assert "eyJhbGci" not in out and f"Bearer {REDACTED}" in out


def test_bundle_extracts_with_tar_and_with_python_zstandard(tmp_path):
    data = build({"config/supervisor.toml": CONFIG, "status.json": '{"api": 1}\n',
                  "raw.bin": b"\x00\x01"})
    path = tmp_path / "b.tar.zst"
    path.write_bytes(data)
    listing = subprocess.run(["tar", "--zstd", "-tf", str(path)], capture_output=True,
                             text=True, check=True).stdout.split()
    assert sorted(listing) == ["llm-supervisor-bundle/config/supervisor.toml",
                               "llm-supervisor-bundle/raw.bin",
                               "llm-supervisor-bundle/status.json"]
    raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        config = tar.extractfile("llm-supervisor-bundle/config/supervisor.toml").read().decode()
        assert tar.extractfile("llm-supervisor-bundle/raw.bin").read() == b"\x00\x01"
    assert "hf_abcdef123" not in config and REDACTED in config
