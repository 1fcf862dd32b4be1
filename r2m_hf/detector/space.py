"""A Hugging Face Space for a detector on the Hub: the repo, its ``app.py``, ``requirements.txt`` and README.

`space_files` writes the three files: ``app.py`` loads the model by its repo id through r2m-hf's `Detector` and
serves the app of `r2m_hf.detector.app`; ``requirements.txt`` pins CPU torch and ``r2m-hf[app]``; the README's
front matter says ``sdk: gradio``, ``app_file: app.py`` and ``models: [MODEL_REPO]`` (so the model page links the
Space). `create_space` checks that the model repo exists, creates the Space repo (``repo_type="space"``,
``space_sdk="gradio"``) and commits the files in one commit. Tokens go to the Hub client only: never into a file,
a message or a log line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import metadata

from .._version import __version__
from ..errors import HubError

SDK = "gradio"
APP_FILE = "app.py"
SPACE_TAGS = ("deepfake-detection", "r2m", "image-classification")

APP_TEMPLATE = '''"""Deepfake detector app for the model {model_json}, made with r2m-hf.

Upload an image or a video: faces are found and cropped as the detector was trained, scored, and compared with the
model's calibrated decision threshold (0.5 when it has none). For a private model, add an HF_TOKEN secret.
"""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from r2m_hf.detector.app import build_app, serve  # noqa: E402

MODEL_ID = {model_json}

demo = build_app(MODEL_ID, title={title_json}, token=os.environ.get("HF_TOKEN") or None, device="cpu")

if __name__ == "__main__":
    serve(demo)
'''


@dataclass(frozen=True)
class SpaceResult:
    """What `create_space` made.

    Attributes:
        space_repo (`str`): the Space's repo id.
        url (`str`): its page.
        commit_sha (`str`), commit_url (`str`): the commit holding the app.
        notes (`list[str]`): what the owner should know (e.g. a private model needs an ``HF_TOKEN`` secret).
    """

    space_repo: str
    url: str
    commit_sha: str
    commit_url: str
    notes: list[str] = field(default_factory=list)


def _installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def space_title(model_repo: str) -> str:
    """The Space's title: the model's name, at most 30 characters (the Hub's limit for ``title``)."""
    name = model_repo.split("/")[-1]
    return name if len(name) <= 30 else name[:29] + "…"


def space_readme(model_repo: str, *, title: str | None = None, endpoint: str | None = None) -> str:
    """The Space's README: front matter (``sdk: gradio``, ``app_file``, ``models``) and a short description."""
    import yaml

    meta = {
        "title": title or space_title(model_repo),
        "emoji": "🕵️",
        "colorFrom": "gray",
        "colorTo": "red",
        "sdk": SDK,
        **({"sdk_version": _installed("gradio")} if _installed("gradio") else {}),
        "python_version": "3.11",
        "app_file": APP_FILE,
        "pinned": False,
        "models": [model_repo],
        "tags": list(SPACE_TAGS),
        "short_description": "Real or fake? Faces in images and videos",
    }
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    link = f"{(endpoint or 'https://huggingface.co').rstrip('/')}/{model_repo}"
    body = (
        f"# {meta['title']}\n\n"
        f"A demo of the deepfake detector [{model_repo}]({link}). Upload an image or a video: faces are detected and "
        "cropped the way the detector was trained, each is scored, and the verdict compares P(fake) with the model's "
        "calibrated threshold (`r2m-hf calibrate`; 0.5 when the model has none). Videos are scored on 16 frames "
        "sampled evenly, averaged.\n\n"
        "The app is `r2m_hf.detector.app` from r2m-hf; run it locally with "
        f"`pip install 'r2m-hf[app]'` and `r2m-hf app {model_repo}`. Face detection uses OpenCV's Haar cascade here "
        "(MTCNN when `facenet-pytorch` is installed with `--no-deps`).\n"
    )
    return f"---\n{front}---\n\n{body}"


def space_requirements(requirement: str | None = None) -> str:
    """``requirements.txt``: CPU torch (as installed here) first, then r2m-hf with its ``app`` extra."""
    torch = (_installed("torch") or "").split("+")[0]
    lines = [
        "# CPU wheels of torch: a Space's basic hardware has no GPU, and the CUDA build is several GB.",
        "--extra-index-url https://download.pytorch.org/whl/cpu",
        f"torch=={torch}" if torch else "torch",
        requirement or f"r2m-hf[app]=={__version__}",
    ]
    return "\n".join(lines) + "\n"


def space_files(
    model_repo: str, *, title: str | None = None, requirement: str | None = None, endpoint: str | None = None
) -> dict[str, str]:
    """The files of the Space, by path: ``app.py``, ``requirements.txt`` and ``README.md``.

    Args:
        model_repo (`str`): the model's Hub repo id (the app loads it by id).
        title (`str`, *optional*): the Space's title (default: the model's name).
        requirement (`str`, *optional*): how the Space installs r2m-hf (default ``r2m-hf[app]==<this version>``;
            e.g. a ``git+https://…`` URL for an unreleased version).
        endpoint (`str`, *optional*): the Hub URL, for the README's link to the model.
    """
    title = title or space_title(model_repo)
    app = APP_TEMPLATE.format(model_json=json.dumps(model_repo), title_json=json.dumps(title, ensure_ascii=False))
    return {
        APP_FILE: app,
        "requirements.txt": space_requirements(requirement),
        "README.md": space_readme(model_repo, title=title, endpoint=endpoint),
    }


def create_space(
    model_repo: str,
    space_repo: str,
    *,
    private: bool = False,
    token: str | None = None,
    endpoint: str | None = None,
    title: str | None = None,
    requirement: str | None = None,
) -> SpaceResult:
    """Create (or update) a Gradio Space that serves the detector `model_repo`.

    Args:
        model_repo (`str`): ``namespace/name`` of the model on the Hub (it must exist and be readable with `token`).
        space_repo (`str`): ``namespace/name`` of the Space; created when missing, updated by a new commit otherwise.
        private (`bool`): create the Space private (an existing Space keeps its visibility).
        token (`str`, *optional*): a write token; default ``HF_TOKEN`` or the stored login.
        endpoint (`str`, *optional*): Hub URL; default ``HF_ENDPOINT`` or ``https://huggingface.co``.
        title (`str`, *optional*), requirement (`str`, *optional*): see `space_files`.

    Returns:
        `SpaceResult`: the Space's id, page URL, commit, and notes.

    Raises:
        `HubError`: no token, a model repo that does not exist or cannot be read, a rejected token, network failure.
    """
    from huggingface_hub import CommitOperationAdd, HfApi, get_token

    from ..hub import _Call, _hub_errors

    retry = f"retry with `r2m-hf space {model_repo} {space_repo}`"
    read = _Call("read", model_repo, "model", None, None, endpoint, retry)
    with _hub_errors(read):
        token = token if token is not None else get_token()
    if not token:
        raise HubError(f"creating the Space {space_repo} needs a Hugging Face token with write access: set HF_TOKEN")
    api = HfApi(endpoint=endpoint, token=token, library_name="r2m-hf")
    notes = []
    with _hub_errors(_Call("read", model_repo, "model", None, token, endpoint, retry)):
        info = api.model_info(model_repo)
    if info.private:
        notes.append(f"{model_repo} is private: add a secret HF_TOKEN (read access) in the Space's settings")
        if not private:
            notes.append("the Space is public: anyone can run the private model through it")
    files = space_files(model_repo, title=title, requirement=requirement, endpoint=api.endpoint)
    operations = [CommitOperationAdd(path, content.encode("utf-8")) for path, content in files.items()]
    with _hub_errors(_Call("push to", space_repo, "space", None, token, endpoint, retry)):
        url = api.create_repo(space_repo, repo_type="space", space_sdk=SDK, private=private, exist_ok=True)
        commit = api.create_commit(
            space_repo, operations, repo_type="space", commit_message=f"Detector app for {model_repo} (r2m-hf)"
        )
    return SpaceResult(space_repo, str(url), commit.oid, str(commit.commit_url), notes)
