"""One rule each for Ollama's names, manifests and models directory, shared by the canary's
placement check, doctor, adopt and the model bundles."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest

from llm_supervisor import names
from llm_supervisor.tools import doctor
from llm_supervisor.tools.models import format as modelbundle


@pytest.mark.parametrize(("name", "path"), [
    ("qwen2.5:7b-instruct", "manifests/registry.ollama.ai/library/qwen2.5/7b-instruct"),
    ("llama3.1", "manifests/registry.ollama.ai/library/llama3.1/latest"),
    ("someone/model:q4", "manifests/registry.ollama.ai/someone/model/q4"),
    ("example.com:5000/ns/m:v1", "manifests/example.com:5000/ns/m/v1"),
    ("example.com:5000/ns/m", "manifests/example.com:5000/ns/m/latest"),
])
def test_every_reader_of_a_manifest_finds_the_same_file(name, path):
    assert names.manifest_relpath(name) == path
    assert modelbundle.manifest_relpath(name) == path  # with its checks, the same place
    assert doctor.model_manifest("/m/", name) == f"/m/{path}"  # a registry port once broke it


def test_names_compare_as_ollama_compares_them():
    assert names.same_model("Qwen2.5", "registry.ollama.ai/library/qwen2.5:latest")
    assert names.same_model("qwen2.5:7b@sha256:abc", "qwen2.5:7b")
    assert not names.same_model("qwen2.5:7b", "qwen2.5:14b")


def test_the_models_directory_is_ollamas_own_rule():
    assert names.models_dir({"OLLAMA_MODELS": "/srv/models"}, "/usr/share/ollama") == \
        PurePosixPath("/srv/models")
    assert names.models_dir({}, "/var/lib/ollama") == PurePosixPath("/var/lib/ollama/.ollama/models")
    assert names.models_dir({}, None) == PurePosixPath("/usr/share/ollama/.ollama/models")
    assert names.user_home("root") == "/root" and names.user_home("no-such-user-x") is None
