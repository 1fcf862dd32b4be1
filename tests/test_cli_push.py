"""``r2m-hf push``: the public ``push`` API with the verb's options, its URL printed; a folder that is not a merge's
output is one error line. (Pushes to a live Hub server are in test_hub_roundtrip.py.)"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import r2m_hf


@pytest.mark.parametrize(
    ("flags", "options", "url"),
    [
        ([], {"private": False, "revision": None, "create_pr": False}, "https://hub/commit/abc"),
        (
            ["--private", "--revision", "dev", "--create-pr"],
            {"private": True, "revision": "dev", "create_pr": True},
            "https://hub/pr/1",
        ),
    ],
)
def test_push_calls_the_api_and_prints_the_url(monkeypatch, cli, tmp_path, flags, options, url):
    calls = []

    def push(folder, repo_id, **kwargs):
        calls.append((folder, repo_id, kwargs))
        pr_url = url if kwargs["create_pr"] else None
        return SimpleNamespace(commit_url="https://hub/commit/abc", pr_url=pr_url)

    monkeypatch.setattr(r2m_hf, "push", push)
    result = cli("push", tmp_path, "org/merged", *flags)
    assert (result.code, result.err) == (0, "")
    assert calls == [(tmp_path, "org/merged", options)]
    assert result.out == f"pushed to {url}\n"


def test_pushing_a_folder_that_is_not_a_merge_is_one_error_line(tmp_path, cli):
    (tmp_path / "notes.txt").write_text("not a model")
    result = cli("push", tmp_path, "org/merged")
    assert (result.code, result.out) == (2, "")
    assert (
        result.err
        == f"r2m-hf: error: {tmp_path}: not a merged model folder (no config.json); run `r2m-hf merge` first\n"
    )


def test_push_with_space_creates_the_space_after_the_push(monkeypatch, cli, tmp_path):
    import r2m_hf.detector.space as space_module

    calls = []
    monkeypatch.setattr(r2m_hf, "push", lambda folder, repo_id, **kw: SimpleNamespace(commit_url="u", pr_url=None))

    def create_space(model_repo, space_repo, **kwargs):
        calls.append((model_repo, space_repo, kwargs))
        return SimpleNamespace(space_repo=space_repo, url=f"https://hub/spaces/{space_repo}", notes=["a note"])

    monkeypatch.setattr(space_module, "create_space", create_space)
    result = cli("push", tmp_path, "org/merged", "--space", "org/merged-app", "--private")
    assert result.code == 0, result.err
    assert calls == [("org/merged", "org/merged-app", {"private": True})]
    assert result.out.splitlines() == [
        "pushed to u",
        "Space org/merged-app: https://hub/spaces/org/merged-app",
        "note: a note",
    ]


def test_merge_space_needs_push_to_hub(cli, tmp_path):
    result = cli("merge", tmp_path / "missing.yaml", tmp_path / "out", "--space", "org/app")
    assert (result.code, result.out) == (2, "")
    assert result.err == "r2m-hf: error: --space needs --push-to-hub: the Space loads the pushed model by its repo id\n"
