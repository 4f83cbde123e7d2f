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


def test_a_client_asking_for_a_model_finds_the_engine_by_ollamas_rule():
    """``/v1/endpoint?model=`` compares names as Ollama does (``names.same_model``) on an
    Ollama engine, and as written on any other."""
    from types import SimpleNamespace

    from llm_supervisor.control.handlers import endpoint_document
    from llm_supervisor.errors import HTTPError
    from llm_supervisor.states import EngineState

    def engine(name: str, kind: str, model: str) -> SimpleNamespace:
        cfg = SimpleNamespace(kind=kind, model=model, endpoint=f"http://{name}")
        return SimpleNamespace(name=name, cfg=cfg, state=EngineState.HEALTHY, tier="rocm",
                               chain=("rocm", "cpu"))

    sup = SimpleNamespace(engines={"o": engine("o", "ollama", "qwen2.5"),
                                   "v": engine("v", "vllm", "Qwen/Qwen2.5-7B")},
                          config=SimpleNamespace(routing=SimpleNamespace(fallback_url=None)))
    for asked in ("qwen2.5", "Qwen2.5:latest", "registry.ollama.ai/library/qwen2.5"):
        assert endpoint_document(sup, asked)["engine"] == "o", asked
    assert endpoint_document(sup, "Qwen/Qwen2.5-7B")["engine"] == "v"
    for other in ("qwen2.5:7b", "qwen/qwen2.5-7b"):  # another tag; not vLLM's name as written
        with pytest.raises(HTTPError) as exc:
            endpoint_document(sup, other)
        assert exc.value.status == 503
