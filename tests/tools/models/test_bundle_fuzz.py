"""Property tests of the model-bundle parsers: whatever bytes come in, a BundleError or a
well-formed answer — never another exception."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from llm_supervisor.errors import BundleError
from llm_supervisor.tools.models import format as models

JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["config", "layers", "digest", "files", "path", "size",
                                       "sha256", "format", "model"]) | st.text(max_size=5),
                      children, max_size=5),
    max_leaves=20)


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_a_manifest_of_any_bytes_is_digests_or_a_bundle_error(data: bytes) -> None:
    try:
        digests = models.blob_digests(data, "m")
    except BundleError:
        return
    assert all(len(d) == 64 for d in digests)


@given(JSONISH)
@settings(max_examples=300, deadline=None)
def test_a_manifest_of_any_json_is_digests_or_a_bundle_error(document: object) -> None:
    try:
        data = json.dumps(document).encode()
    except ValueError:
        return
    try:
        models.blob_digests(data, "m")
    except BundleError:
        pass


@given(JSONISH)
@settings(max_examples=300, deadline=None)
def test_a_bundle_document_of_any_json_is_checked_or_refused(document: object) -> None:
    try:
        data = json.dumps(document).encode()
    except ValueError:
        return
    received = models.Received(("registry.ollama.ai", "library", "m", "t"), b"{}", {})
    try:
        models._check_listing(json.loads(data), received, "0" * 64)
    except BundleError:
        pass


@given(st.text(max_size=80))
@settings(max_examples=300, deadline=None)
def test_any_model_name_is_parts_or_a_bundle_error(name: str) -> None:
    try:
        parts = models.manifest_parts(name)
    except BundleError:
        return
    assert all(p and "/" not in p and p not in (".", "..") for p in parts)
