"""r2m_hf.hub and the loopback Hub, driven by the real huggingface_hub client (and transformers)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import HfApi, ModelCard, constants, snapshot_download

from r2m_hf.errors import R2MError
from r2m_hf.hub import HubError, PushResult, download_snapshot, files_to_push, push_folder
from r2m_hf.zoo import TINY
from tests.hub_server import HubServer

pytest_plugins = ["tests.hub_fixtures"]

CONFIG = {
    "model_type": "vit",
    "architectures": ["ViTForImageClassification"],
    **TINY,
    "id2label": {"0": "fake", "1": "real"},
    "label2id": {"fake": 0, "real": 1},
}
README = "---\nlicense: mit\ntags:\n- deepfake-detection\n- r2m\n---\n\n# Merged detector\n"


def _safetensors(values: tuple[float, ...] = (1.0, 2.0, 3.0, 4.0)) -> bytes:
    header = json.dumps({"classifier.weight": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + struct.pack("<4f", *values)


def _write_output(folder: Path, *, hidden_size: int = 32, values: tuple[float, ...] = (1.0, 2.0, 3.0, 4.0)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({**CONFIG, "hidden_size": hidden_size}))
    (folder / "model.safetensors").write_bytes(_safetensors(values))
    (folder / "README.md").write_text(README)
    return folder


@pytest.fixture
def output(tmp_path: Path) -> Path:
    """An r2m-hf output folder, with the kind of leftovers a push must skip."""
    folder = _write_output(tmp_path / "out")
    (folder / ".cache" / "huggingface").mkdir(parents=True)
    (folder / ".cache" / "huggingface" / "download.lock").write_text("x")
    (folder / "model.safetensors.tmp").write_bytes(b"partial")
    return folder


def _read(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _commit_posts(hub: HubServer) -> list:
    return [r for r in hub.requests if r.method == "POST" and "/commit/" in r.path]


# ------------------------------------------------------------------------------------------------------ push
def test_files_to_push_skips_caches_and_temporary_files(output: Path) -> None:
    assert [in_repo for _, in_repo in files_to_push(output)] == ["README.md", "config.json", "model.safetensors"]


def test_push_folder_creates_the_repo_in_one_commit(output: Path, hub_server: HubServer, hub_token: str) -> None:
    result = push_folder(output, "r2m-tester/merged", token=hub_token, commit_message="Add merged detector")

    assert isinstance(result, PushResult) and result.pr_url is None
    repo = hub_server.repo("r2m-tester/merged")
    assert result.commit_sha == repo.branches["main"]
    assert result.commit_url == f"{hub_server.endpoint}/r2m-tester/merged/commit/{result.commit_sha}"
    assert [c.title for c in repo.history()] == ["Add merged detector", "initial commit"]
    assert len(_commit_posts(hub_server)) == 1
    files = hub_server.files("r2m-tester/merged")
    assert sorted(files) == [".gitattributes", "README.md", "config.json", "model.safetensors"]
    assert files["model.safetensors"] == (output / "model.safetensors").read_bytes()


def test_push_twice_reuses_the_repo_and_skips_unchanged_files(
    output: Path, hub_server: HubServer, hub_token: str
) -> None:
    first = push_folder(output, "r2m-tester/merged", token=hub_token)
    (output / "config.json").write_text(json.dumps({**CONFIG, "hidden_size": 64}))
    second = push_folder(output, "r2m-tester/merged", token=hub_token)  # create_repo answers 409 → exist_ok
    again = push_folder(output, "r2m-tester/merged", token=hub_token)  # nothing changed: no new commit

    assert second.commit_sha != first.commit_sha and again.commit_sha == second.commit_sha
    commit_lines = [json.loads(line) for line in _commit_posts(hub_server)[-1].body.splitlines()]
    assert [line["value"]["path"] for line in commit_lines[1:]] == ["config.json"]
    assert len(hub_server.repo("r2m-tester/merged").history()) == 3


def test_push_exist_ok_false_refuses_an_existing_repo(output: Path, hub_server: HubServer, hub_token: str) -> None:
    push_folder(output, "r2m-tester/merged", token=hub_token)
    with pytest.raises(HubError, match="already exists"):
        push_folder(output, "r2m-tester/merged", token=hub_token, exist_ok=False)


def test_push_without_token_says_how_to_log_in(output: Path, hub_server: HubServer) -> None:
    with pytest.raises(HubError, match=r"set HF_TOKEN or run `hf auth login`") as info:
        push_folder(output, "r2m-tester/merged")
    assert isinstance(info.value, R2MError) and "\n" not in str(info.value)
    assert hub_server.requests == []


def test_push_reads_the_token_from_env_and_from_the_login_file(
    output: Path, hub_server: HubServer, hub_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", hub_token)
    push_folder(output, "r2m-tester/from-env")
    monkeypatch.delenv("HF_TOKEN")
    Path(constants.HF_TOKEN_PATH).write_text(hub_token)  # what `hf auth login` stores
    push_folder(output, "r2m-tester/from-login")
    assert {"r2m-tester/from-env", "r2m-tester/from-login"} <= set(hub_server.repos)


def test_push_with_a_rejected_token(output: Path, hub_server: HubServer, hub_token: str) -> None:
    with pytest.raises(HubError, match=r"HTTP 401.*hf auth login") as info:
        push_folder(output, "r2m-tester/merged", token="hf_not_a_valid_token")
    assert "hf_not_a_valid_token" not in str(info.value)

    hub_server.add_token("hf_read_only", "r2m-tester", write=False)
    with pytest.raises(HubError, match=r"HTTP 403.*write access"):
        push_folder(output, "r2m-tester/merged", token="hf_read_only")
    with pytest.raises(HubError, match=r"HTTP 403.*'someone-else'"):
        push_folder(output, "someone-else/merged", token=hub_token)
    assert hub_server.repos == {}


def test_push_checks_its_folder(tmp_path: Path, hub_server: HubServer, hub_token: str) -> None:
    with pytest.raises(HubError, match="not a folder"):
        push_folder(tmp_path / "missing", "r2m-tester/merged", token=hub_token)
    (tmp_path / "empty" / ".cache").mkdir(parents=True)
    with pytest.raises(HubError, match="no files"):
        push_folder(tmp_path / "empty", "r2m-tester/merged", token=hub_token)


def test_failed_commit_keeps_the_output_and_the_retry_succeeds(
    output: Path, hub_server: HubServer, hub_token: str
) -> None:
    hub_server.fail_next_commit()
    with pytest.raises(HubError, match=r"HTTP 500.*the local output is intact; retry with `r2m-hf push ") as info:
        push_folder(output, "r2m-tester/merged", token=hub_token)
    assert f"`r2m-hf push {output} r2m-tester/merged`" in str(info.value)
    assert [c.title for c in hub_server.repo("r2m-tester/merged").history()] == ["initial commit"]
    assert (output / "model.safetensors").exists()

    result = push_folder(output, "r2m-tester/merged", token=hub_token)
    assert hub_server.repo("r2m-tester/merged").branches["main"] == result.commit_sha


def test_fault_injection_can_target_the_nth_commit(output: Path, hub_server: HubServer, hub_token: str) -> None:
    hub_server.fail_commit(2, status=503)
    push_folder(output, "r2m-tester/merged", token=hub_token)
    (output / "config.json").write_text("{}")
    with pytest.raises(HubError, match="HTTP 503"):
        push_folder(output, "r2m-tester/merged", token=hub_token)
    assert [r.status for r in _commit_posts(hub_server)] == [200, 503]


def test_create_pr_opens_a_pull_request_ref(output: Path, hub_server: HubServer, hub_token: str) -> None:
    base = push_folder(output, "r2m-tester/merged", token=hub_token)
    (output / "config.json").write_text(json.dumps({**CONFIG, "hidden_size": 48}))
    pr = push_folder(output, "r2m-tester/merged", token=hub_token, create_pr=True, commit_message="Proposal")

    assert pr.pr_url == f"{hub_server.endpoint}/r2m-tester/merged/discussions/1"
    assert hub_server.repo("r2m-tester/merged").branches["main"] == base.commit_sha
    folder = download_snapshot("r2m-tester/merged", "refs/pr/1")
    assert json.loads((folder / "config.json").read_text())["hidden_size"] == 48
    main = download_snapshot("r2m-tester/merged")
    assert json.loads((main / "config.json").read_text())["hidden_size"] == 32


# -------------------------------------------------------------------------------------------------- download
def test_download_at_main_tag_commit_and_branch(tmp_path: Path, hub_server: HubServer, hub_token: str) -> None:
    repo_id = "r2m-tester/merged"
    v1 = push_folder(_write_output(tmp_path / "v1", hidden_size=8), repo_id, token=hub_token)
    HfApi(token=hub_token).create_tag(repo_id, tag="v1.0", revision=v1.commit_sha)
    push_folder(_write_output(tmp_path / "v2", hidden_size=16, values=(5, 6, 7, 8)), repo_id, token=hub_token)
    dev = push_folder(_write_output(tmp_path / "v3", hidden_size=24), repo_id, token=hub_token, revision="dev")

    def hidden(revision: str | None) -> int:
        return json.loads((download_snapshot(repo_id, revision) / "config.json").read_text())["hidden_size"]

    assert [hidden(rev) for rev in (None, "v1.0", v1.commit_sha, "dev", dev.commit_sha)] == [16, 8, 8, 24, 24]
    assert (download_snapshot(repo_id) / "model.safetensors").read_bytes() == _safetensors((5, 6, 7, 8))
    branches = {b.name: b.target_commit for b in HfApi().list_repo_refs(repo_id).branches}
    assert (
        branches["dev"] == dev.commit_sha
        and hub_server.repo(repo_id).commits[dev.commit_sha].parent == (branches["main"])
    )


def test_download_snapshot_matches_the_pushed_folder(output: Path, hub_server: HubServer, hub_token: str) -> None:
    push_folder(output, "r2m-tester/merged", token=hub_token)
    folder = download_snapshot("r2m-tester/merged", allow_patterns=["*.json", "*.safetensors", "*.md"])
    assert _read(folder) == {k: v for k, v in _read(output).items() if "/" not in k and not k.endswith(".tmp")}


def test_list_files_and_model_info(output: Path, hub_server: HubServer, hub_token: str) -> None:
    result = push_folder(output, "r2m-tester/merged", token=hub_token)
    api = HfApi(endpoint=hub_server.endpoint)

    assert api.list_repo_files("r2m-tester/merged") == [
        ".gitattributes",
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    info = api.model_info("r2m-tester/merged")
    assert (info.id, info.sha, info.private) == ("r2m-tester/merged", result.commit_sha, False)
    assert info.card_data.license == "mit" and "r2m" in info.card_data.tags
    assert {s.rfilename for s in info.siblings} >= {"config.json", "model.safetensors"}
    assert api.model_info("r2m-tester/merged", revision="main").sha == result.commit_sha


def test_private_repo_needs_a_token_to_download(
    output: Path, hub_server: HubServer, hub_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    push_folder(output, "r2m-tester/secret", token=hub_token, private=True)
    assert hub_server.repo("r2m-tester/secret").private

    with pytest.raises(HubError, match=r"private.*set HF_TOKEN or run `hf auth login`"):
        download_snapshot("r2m-tester/secret")
    hub_server.add_token("hf_other_user", "someone-else")
    with pytest.raises(HubError, match="token cannot access it"):
        download_snapshot("r2m-tester/secret", token="hf_other_user")
    folder = download_snapshot("r2m-tester/secret", token=hub_token)
    assert (folder / "config.json").exists()
    # Once cached, huggingface_hub serves the snapshot without asking the Hub whenever the Hub refuses.
    assert download_snapshot("r2m-tester/secret") == folder
    monkeypatch.setenv("HF_TOKEN", hub_token)
    assert HfApi().model_info("r2m-tester/secret").private is True


def test_download_errors_name_the_repo_and_revision(output: Path, hub_server: HubServer, hub_token: str) -> None:
    push_folder(output, "r2m-tester/merged", token=hub_token)
    with pytest.raises(HubError, match=r"revision 'nope' not found in model repo 'r2m-tester/merged'"):
        download_snapshot("r2m-tester/merged", "nope")
    with pytest.raises(HubError, match=r"model repo 'r2m-tester/absent' not found"):
        download_snapshot("r2m-tester/absent")
    with pytest.raises(HubError, match="not a valid repo id"):
        download_snapshot("not/a/repo")
    with pytest.raises(HubError, match=r"no file of model repo 'r2m-tester/merged' .* matches"):
        download_snapshot("r2m-tester/merged", allow_patterns=["*.bin"])


def test_download_offline_uses_the_cache_or_says_it_is_missing(
    output: Path, hub_server: HubServer, hub_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    push_folder(output, "r2m-tester/merged", token=hub_token)
    online = download_snapshot("r2m-tester/merged")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    assert download_snapshot("r2m-tester/merged") == online
    (online / "config.json").unlink()  # a snapshot cut short: huggingface_hub notices from its tree cache
    with pytest.raises(HubError, match=r"cached snapshot of model repo 'r2m-tester/merged' .*is incomplete"):
        download_snapshot("r2m-tester/merged")
    with pytest.raises(HubError, match=r"'r2m-tester/other' .*not in the local Hugging Face cache.*HF_HUB_OFFLINE"):
        download_snapshot("r2m-tester/other")


def test_server_errors_while_downloading_are_hub_errors(hub_server: HubServer) -> None:
    hub_server.create_repo("r2m-tester/merged")
    hub_server.inject_fault("GET", r"^/api/models/", status=500, times=10)
    with pytest.raises(HubError, match="HTTP 500"):
        download_snapshot("r2m-tester/merged")


def test_dataset_repos_are_served(hub_server: HubServer) -> None:
    hub_server.create_repo("r2m-tester/faces", repo_type="dataset")
    hub_server.commit_files(
        "r2m-tester/faces", {"data/fake/0.png": b"png0", "data/real/0.png": b"png1"}, repo_type="dataset"
    )

    folder = download_snapshot("r2m-tester/faces", repo_type="dataset", allow_patterns="data/real/*")
    assert _read(folder) == {"data/real/0.png": b"png1"}
    tree = HfApi().list_repo_tree("r2m-tester/faces", "data", repo_type="dataset")
    assert [(entry.path, type(entry).__name__) for entry in tree] == [
        ("data/fake", "RepoFolder"),
        ("data/real", "RepoFolder"),
    ]


# --------------------------------------------------------------------------------------- other Hub clients
def test_model_card_push_and_load(hub_server: HubServer, hub_token: str) -> None:
    HfApi(token=hub_token).create_repo("r2m-tester/card")
    ModelCard(README).push_to_hub("r2m-tester/card", token=hub_token, commit_message="Add card")

    card = ModelCard.load("r2m-tester/card")
    assert card.data.license == "mit" and "deepfake-detection" in card.data.tags
    assert any(r.path == "/api/validate-yaml" and r.status == 200 for r in hub_server.requests)


def test_push_refuses_a_readme_the_hub_rejects(output: Path, hub_server: HubServer, hub_token: str) -> None:
    (output / "README.md").write_text("---\nlicense: [mit\n---\n# card\n")
    with pytest.raises(HubError, match=r"README.md of the output has invalid YAML metadata .*does not parse"):
        push_folder(output, "r2m-tester/merged", token=hub_token)
    assert [r.status for r in hub_server.requests if r.path == "/api/validate-yaml"] == [400]
    assert _commit_posts(hub_server) == []


def test_transformers_autoconfig_reads_from_the_server(output: Path, hub_server: HubServer, hub_token: str) -> None:
    transformers = pytest.importorskip("transformers")
    pushed = push_folder(output, "r2m-tester/merged", token=hub_token)

    config = transformers.AutoConfig.from_pretrained("r2m-tester/merged")
    assert config.model_type == "vit" and config.id2label == {0: "fake", 1: "real"}
    pinned = transformers.AutoConfig.from_pretrained("r2m-tester/merged", revision=pushed.commit_sha)
    assert pinned.hidden_size == 32
    downloads = [r.path for r in hub_server.requests if r.method == "GET" and "/resolve/" in r.path]
    assert downloads == [f"/r2m-tester/merged/resolve/{pushed.commit_sha}/config.json"]


def test_the_token_never_leaks(output: Path, hub_server: HubServer, hub_token: str) -> None:
    push_folder(output, "r2m-tester/secret", token=hub_token, private=True)
    hub_server.fail_next_commit()
    (output / "config.json").write_text("{}")
    errors = []
    for call in (
        lambda: push_folder(output, "r2m-tester/secret", token=hub_token),
        lambda: push_folder(output, "someone-else/x", token=hub_token),
        lambda: download_snapshot("r2m-tester/secret", "nope", token=hub_token),
    ):
        with pytest.raises(HubError) as info:
            call()
        errors.append(info.value)

    for error in errors:
        chain = [error, error.__cause__, error.__context__]
        assert all(hub_token not in f"{e} {e!r}" for e in chain if e is not None)
    assert hub_server.requests and all(hub_token.encode() not in r.body for r in hub_server.requests)
    assert all(hub_token not in r.path and hub_token not in json.dumps(r.headers) for r in hub_server.requests)
    assert any(r.headers.get("authorization") == "<redacted>" for r in hub_server.requests)


# --------------------------------------------------------------------------------------------- server itself
def test_server_drains_bodies_of_rejected_requests(hub_server: HubServer) -> None:
    with httpx2.Client(base_url=hub_server.endpoint) as client:
        rejected = client.post("/api/not-a-route", content=b"x" * 100_000)
        created = client.post("/api/repos/create", json={"name": "m", "organization": "r2m-tester"})
        info = client.get("/api/models/r2m-tester/absent")
    assert (rejected.status_code, created.status_code) == (404, 401)
    assert info.status_code == 401 and info.headers["X-Error-Code"] == "RepoNotFound"


def test_server_starts_and_stops_standalone(hf_isolated: Path, tmp_path: Path) -> None:
    """Without `hub_server`: explicit endpoint everywhere (hf_isolated only lifts offline mode and the token)."""
    with HubServer() as hub:
        hub.add_token("hf_standalone", "alice")
        api = HfApi(endpoint=hub.endpoint, token="hf_standalone")
        api.create_repo("alice/model")
        commit = hub.commit_files("alice/model", {"a.txt": b"a"})
        assert api.model_info("alice/model").sha == commit
        folder = snapshot_download("alice/model", endpoint=hub.endpoint, cache_dir=tmp_path)
        assert (Path(folder) / "a.txt").read_bytes() == b"a"
    with pytest.raises(httpx2.ConnectError):
        httpx2.get(hub.endpoint + "/api/models/alice/model")
