"""``r2m-hf space`` / `create_space` against the loopback Hub: the Space repo (``sdk: gradio``), its three files, the
README front matter read back with ``huggingface_hub``, the token kept out of every file and line, one-line errors,
and the Space's ``app.py`` loading the model by its repo id."""

from __future__ import annotations

import ast
import runpy

import pytest
import yaml
from huggingface_hub import HfApi, SpaceCard, hf_hub_download

from r2m_hf.detector.space import create_space, space_files
from r2m_hf.errors import HubError

from .conftest import requires_gradio

pytest_plugins = ["tests.hub_fixtures"]

NS = "r2m-tester"
MODEL = f"{NS}/tiny-detector"
SPACE = f"{NS}/tiny-detector-app"


@pytest.fixture
def model_on_hub(hub_server, model_dir) -> str:
    """The tiny detector as a model repo on the loopback Hub."""
    hub_server.create_repo(MODEL)
    files = {p.name: p.read_bytes() for p in model_dir.iterdir() if p.is_file()}
    hub_server.commit_files(MODEL, files, message="tiny detector")
    return MODEL


def test_the_space_files():
    files = space_files("org/det", title='A "quoted" title')
    assert set(files) == {"app.py", "requirements.txt", "README.md"}
    tree = ast.parse(files["app.py"])  # valid Python that names the model by id
    assigned = {n.targets[0].id: n.value for n in tree.body if isinstance(n, ast.Assign)}
    assert ast.literal_eval(assigned["MODEL_ID"]) == "org/det"
    assert "from r2m_hf.detector.app import build_app, serve" in files["app.py"]
    requirements = files["requirements.txt"].splitlines()
    assert requirements[1] == "--extra-index-url https://download.pytorch.org/whl/cpu"
    assert requirements[2].startswith("torch==") and requirements[3].startswith("r2m-hf[app]==")
    front = yaml.safe_load(files["README.md"].split("---\n")[1])
    assert front["sdk"] == "gradio" and front["app_file"] == "app.py" and front["models"] == ["org/det"]
    assert front["title"] == 'A "quoted" title' and len(front["short_description"]) <= 60
    assert space_files("org/det", requirement="r2m-hf[app] @ git+https://example/r2m-hf")["requirements.txt"].endswith(
        "\nr2m-hf[app] @ git+https://example/r2m-hf\n"
    )


def test_create_space_on_the_hub(model_on_hub, hub_server, hub_endpoint, hub_token):
    result = create_space(model_on_hub, SPACE, token=hub_token, endpoint=hub_endpoint)
    assert result.space_repo == SPACE and result.url == f"{hub_endpoint}/spaces/{SPACE}" and result.notes == []
    api = HfApi(endpoint=hub_endpoint, token=hub_token)
    assert sorted(api.list_repo_files(SPACE, repo_type="space")) == [
        ".gitattributes", "README.md", "app.py", "requirements.txt",
    ]  # fmt: skip
    info = api.space_info(SPACE)
    assert info.sdk == "gradio" and info.sha == result.commit_sha and not info.private
    assert info.card_data["models"] == [MODEL] and info.card_data["app_file"] == "app.py"
    card = SpaceCard.load(SPACE, repo_type="space")
    assert card.data.sdk == "gradio" and card.data.title == "tiny-detector" and MODEL in card.text
    app = hf_hub_download(SPACE, "app.py", repo_type="space")
    assert f"MODEL_ID = {MODEL!r}".replace("'", '"') in open(app).read()

    # again: nothing changed, no commit; a new title, one more commit on the same Space
    again = create_space(model_on_hub, SPACE, token=hub_token, endpoint=hub_endpoint)
    assert len(hub_server.repo(SPACE, "space").history()) == 2 and again.commit_sha == result.commit_sha
    create_space(model_on_hub, SPACE, token=hub_token, endpoint=hub_endpoint, title="Renamed")
    assert len(hub_server.repo(SPACE, "space").history()) == 3 and api.space_info(SPACE).card_data["title"] == "Renamed"
    # a private Space for a private model gets the HF_TOKEN note
    hub_server.repo(MODEL).private = True
    private = create_space(model_on_hub, f"{NS}/private-app", private=True, token=hub_token, endpoint=hub_endpoint)
    assert api.space_info(f"{NS}/private-app").private
    assert private.notes == [f"{MODEL} is private: add a secret HF_TOKEN (read access) in the Space's settings"]

    # the token went in Authorization headers only (which the server redacts)
    for request in hub_server.requests:
        assert hub_token.encode() not in request.body and hub_token not in str(request.headers)
    for repo in hub_server.repos.values():
        for files in (commit.files for commit in repo.commits.values()):
            assert not any(hub_token.encode() in content for content in files.values())


def test_the_space_verb(cli, model_on_hub, hub_server, hub_token, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    result = cli("space", model_on_hub, SPACE, "--token", hub_token, "--private", "--title", "Tiny")
    assert result.code == 0, result.err
    out = result.out.splitlines()
    assert out[0] == f"Space {SPACE}: {hub_server.endpoint}/spaces/{SPACE}" and out[1].startswith("commit http")
    assert hub_token not in result.out + result.err
    assert hub_server.repo(SPACE, "space").private
    readme = hub_server.files(SPACE, repo_type="space")["README.md"].decode()
    assert "title: Tiny\n" in readme


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no token", "needs a Hugging Face token with write access"),
        ("missing model", f"model repo '{NS}/nothing' not found, or your token cannot access it"),
        ("foreign namespace", "the token may not push to space repo 'someone-else/app' (HTTP 403)"),
        ("bad token", "the Hub rejected the token (HTTP 401)"),
        ("bad space id", "'not a repo id' is not a valid repo id"),
    ],
)
def test_space_errors_are_one_line_without_the_token(cli, model_on_hub, hub_token, monkeypatch, case, message):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    args = {
        "no token": [model_on_hub, SPACE],
        "missing model": [f"{NS}/nothing", SPACE, "--token", hub_token],
        "foreign namespace": [model_on_hub, "someone-else/app", "--token", hub_token],
        "bad token": [model_on_hub, SPACE, "--token", "hf_wrong"],
        "bad space id": [model_on_hub, "not a repo id", "--token", hub_token],
    }[case]
    result = cli("space", *args)
    assert result.code == 2 and result.out == ""
    assert result.err.startswith("r2m-hf: error: ") and message in result.err and len(result.err.splitlines()) == 1
    assert hub_token not in result.err


def test_create_space_raises_hub_errors(model_on_hub, hub_endpoint):
    with pytest.raises(HubError, match="needs a Hugging Face token"):
        create_space(model_on_hub, SPACE, endpoint=hub_endpoint)


@requires_gradio
def test_the_space_app_loads_the_model_by_its_repo_id(model_on_hub, hub_endpoint, hub_token, monkeypatch):
    """Run the Space's app.py as the Space would, up to `serve`: the model comes from the Hub by id."""
    import r2m_hf.detector.app as app

    create_space(model_on_hub, SPACE, token=hub_token, endpoint=hub_endpoint)
    path = hf_hub_download(SPACE, "app.py", repo_type="space")
    served = []
    monkeypatch.setattr(app, "serve", lambda demo, **kw: served.append(demo))
    monkeypatch.setenv("HF_TOKEN", hub_token)
    namespace = runpy.run_path(path, run_name="__main__")
    (demo,) = served
    assert namespace["demo"] is demo and demo.detector.name == MODEL
    assert demo.detector.model.config.id2label[demo.detector.fake_index] == "fake"
