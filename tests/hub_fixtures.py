"""pytest fixtures that point the real ``huggingface_hub`` client (and ``transformers``) at a loopback Hub.

Load them as a plugin from ``tests/conftest.py``::

    pytest_plugins = ["tests.hub_fixtures"]

(``tests`` must be importable: ``python -m pytest`` from the repo root puts it on ``sys.path``.) A test then asks for
``hub_server`` (the :class:`tests.hub_server.HubServer`), ``hub_endpoint`` (its URL), ``hub_token`` (a write token
of ``hub_user``) and ``hub_user``. Each test gets a fresh, empty server.

Why constants are monkeypatched and not only environment variables: ``huggingface_hub`` reads ``HF_ENDPOINT``,
``HF_HOME``, ``HF_HUB_CACHE``, ``HF_TOKEN_PATH``, ``HF_HUB_OFFLINE``, ``HF_HUB_DISABLE_XET`` … once, when it is
imported, into ``huggingface_hub.constants``; in a test process it is long imported by then. So ``hf_isolated`` sets
the environment (for subprocesses and for what is read at call time, such as ``HF_TOKEN``) *and* the constants. The
default endpoint lives in three places, all patched while a ``hub_server`` is up:

- ``constants.ENDPOINT``: read at call time by every ``HfApi()`` created later, ``ModelCard.validate``, ``RepoUrl``;
- ``constants.HUGGINGFACE_CO_URL_TEMPLATE``: ``hf_hub_url`` builds every download URL from it, so
  ``hf_hub_download``/``snapshot_download``/``ModelCard.load``/``transformers`` ``from_pretrained`` follow it;
- ``huggingface_hub.hf_api.api.endpoint``: the module-level ``HfApi`` whose bound methods (``upload_file``,
  ``create_repo``, … used by ``ModelCard.push_to_hub``) froze the endpoint at import.

``transformers`` also keeps one ``HfApi`` per process (``transformers.utils.hub._hf_api``, made on first use with the
endpoint of that moment) to resolve ``main`` to a commit before a load; it is dropped before and after each test, so
a test never resolves revisions against the server of an earlier one.

With that, code under test needs no ``endpoint=`` at all; passing ``endpoint=hub_endpoint`` explicitly also works.
Outside pytest (a subprocess, the CLI), set ``HF_ENDPOINT`` before Python starts instead.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import constants
from huggingface_hub import hf_api as _hf_api

from tests.hub_server import HubServer

__all__ = ["hf_isolated", "hub_endpoint", "hub_server", "hub_token", "hub_user"]

HUB_USER = "r2m-tester"
HUB_TOKEN = "hf_r2mLoopbackTestToken0123456789"  # only ever valid on the loopback server

_UNSET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_OIDC_RESOURCE")


@pytest.fixture
def hf_isolated(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private ``HF_HOME`` (cache, token file) and no ambient token, offline flag, telemetry or Xet."""
    home = tmp_path_factory.mktemp("hf_home")
    cache = home / "hub"
    for name in _UNSET_ENV:
        monkeypatch.delenv(name, raising=False)
    env = {
        "HF_HOME": home,
        "HF_HUB_CACHE": cache,
        "HF_ASSETS_CACHE": home / "assets",
        "HF_XET_CACHE": home / "xet",
        "HF_TOKEN_PATH": home / "token",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    patched = {
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(cache),
        "HF_ASSETS_CACHE": str(home / "assets"),
        "HF_XET_CACHE": str(home / "xet"),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_DISABLE_UPDATE_CHECK": True,
    }
    for name, value in patched.items():
        monkeypatch.setattr(constants, name, value, raising=False)
    # `huggingface_hub.utils.tqdm` copied the flag at import (and the package attribute of that name is the class).
    monkeypatch.setattr(importlib.import_module("huggingface_hub.utils.tqdm"), "HF_HUB_DISABLE_PROGRESS_BARS", True)
    return home


@pytest.fixture
def hub_user() -> str:
    """The user that `hub_token` authenticates as; the namespace tests may write to."""
    return HUB_USER


@pytest.fixture
def hub_token() -> str:
    """A write token of `hub_user` on the loopback server (never valid anywhere else)."""
    return HUB_TOKEN


@pytest.fixture
def hub_server(
    hf_isolated: Path, hub_token: str, hub_user: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[HubServer]:
    """A fresh loopback Hub, made the process-wide default endpoint for the test's duration."""
    with HubServer() as server:
        server.add_token(hub_token, hub_user)
        endpoint = server.endpoint
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)
        monkeypatch.setattr(
            constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}"
        )
        monkeypatch.setattr(_hf_api.api, "endpoint", endpoint)
        _forget_transformers_hub_client()
        try:
            yield server
        finally:
            _forget_transformers_hub_client()


def _forget_transformers_hub_client() -> None:
    """Drop transformers' shared ``HfApi`` (it froze the endpoint it was made with); the next load makes a new one."""
    hub = sys.modules.get("transformers.utils.hub")
    if hub is not None and getattr(hub, "_hf_api", None) is not None:
        hub._hf_api = None


@pytest.fixture
def hub_endpoint(hub_server: HubServer) -> str:
    """URL of the loopback Hub (``http://127.0.0.1:PORT``)."""
    return hub_server.endpoint
