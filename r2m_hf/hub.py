"""Talk to the Hugging Face Hub: push an output folder as one commit, download a repo snapshot.

This module owns r2m-hf's calls to ``huggingface_hub`` and turns its exceptions into :class:`HubError`, whose
one-line message says what went wrong and what to do. Tokens come from the standard places (the ``token``
argument, ``HF_TOKEN``, the token stored by ``hf auth login``); they are only ever handed to ``huggingface_hub``,
never printed, logged or written, and they are scrubbed from every message this module raises. ``endpoint=None``
means the client's default (``HF_ENDPOINT``, read when ``huggingface_hub`` is imported).
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi, constants, get_token, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    IncompleteSnapshotError,
    LocalEntryNotFoundError,
    LocalTokenNotFoundError,
    OfflineModeIsEnabled,
    OIDCError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import httpx

from .errors import HubError, clip

__all__ = ["HubError", "PushResult", "download_snapshot", "files_to_push", "push_folder"]

# Never pushed: caches, VCS data and the leftovers of interrupted or atomic writes.
_IGNORED_DIRS = frozenset({".cache", ".git", ".hg", "__pycache__", ".ipynb_checkpoints"})
_IGNORED_NAMES = frozenset({".DS_Store", "Thumbs.db"})
_IGNORED_SUFFIXES = (".tmp", ".temp", ".part", ".partial", ".incomplete", ".lock", ".swp", "~")
_IGNORED_PREFIXES = (".tmp", "tmp.", ".~")
_LOGIN_HINT = "set HF_TOKEN or run `hf auth login`"


@dataclass(frozen=True)
class PushResult:
    """What a push created.

    Args:
        repo_id (`str`): the repo pushed to.
        commit_sha (`str`): id of the new commit (of the current head when nothing changed).
        commit_url (`str`): web URL of that commit.
        pr_url (`str`, *optional*): web URL of the pull request, when ``create_pr=True``.
    """

    repo_id: str
    commit_sha: str
    commit_url: str
    pr_url: str | None = None


@dataclass(frozen=True)
class _Call:
    """What a Hub call was about, to phrase its errors."""

    verb: str  # "push to" | "download"
    repo_id: str
    repo_type: str
    revision: str | None
    token: str | None
    endpoint: str | None
    retry: str

    @property
    def repo(self) -> str:
        return f"{self.repo_type} repo '{clip(self.repo_id)}'"


def files_to_push(folder: str | Path) -> list[tuple[Path, str]]:
    """Files of `folder` that a push uploads, as ``(local path, path in repo)`` sorted by path in repo.

    Args:
        folder (`str` or `Path`): the output folder.

    Returns:
        `list[tuple[Path, str]]`: caches (``.cache/``, ``.git/``, ``__pycache__/``) and temporary or partial files
        (``*.tmp``, ``*.part``, ``*.incomplete``, ``*.lock``, …) are left out.
    """
    folder = Path(folder)
    out = []
    for path in folder.rglob("*"):
        relative = path.relative_to(folder)
        name = relative.name
        if not path.is_file() or _IGNORED_DIRS.intersection(relative.parts[:-1]):
            continue
        if name in _IGNORED_NAMES or name.endswith(_IGNORED_SUFFIXES) or name.startswith(_IGNORED_PREFIXES):
            continue
        out.append((path, relative.as_posix()))
    return sorted(out, key=lambda item: item[1])


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    endpoint: str | None = None,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
    exist_ok: bool = True,
) -> PushResult:
    """Upload every file of `folder` (see :func:`files_to_push`) to a model repo in one commit.

    Creates the repo when it is missing, and the branch `revision` (from ``main``) when it names a branch that does
    not exist yet. Files already on the Hub with the same content are not sent again.

    Args:
        folder (`str` or `Path`): the output folder of a merge.
        repo_id (`str`): ``namespace/name`` of the model repo.
        token (`str`, *optional*): a write token; defaults to ``HF_TOKEN`` or the token of ``hf auth login``.
        endpoint (`str`, *optional*): Hub URL; defaults to ``HF_ENDPOINT`` or ``https://huggingface.co``.
        private (`bool`): create the repo private (an existing repo keeps its visibility).
        revision (`str`, *optional*): branch to commit to (default ``main``), or ``refs/pr/N`` to add to a PR.
        create_pr (`bool`): open a pull request against `revision` instead of committing to it.
        commit_message (`str`, *optional*): commit title; defaults to ``Upload <folder name> with r2m-hf``.
        exist_ok (`bool`): when False, fail if the repo already exists.

    Returns:
        `PushResult`: the repo, commit sha and URL, and the pull-request URL when one was opened.

    Raises:
        `HubError`: no token, rejected token, missing repo or revision, network or server failure.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise HubError(f"cannot push {folder}: it is not a folder; pass the output folder of `r2m-hf merge`")
    files = files_to_push(folder)
    if not files:
        raise HubError(f"cannot push {folder}: it holds no files to upload")
    call = _Call(
        verb="push to",
        repo_id=repo_id,
        repo_type="model",
        revision=revision,
        token=None,
        endpoint=endpoint,
        retry=f"the local output is intact; retry with `r2m-hf push {shlex.quote(str(folder))} {shlex.quote(repo_id)}`",
    )
    with _hub_errors(call):
        token = token if token is not None else get_token()
    if not token:
        raise HubError(f"pushing to {call.repo} needs a Hugging Face token with write access: {_LOGIN_HINT}")
    call = replace(call, token=token)

    api = HfApi(endpoint=endpoint, token=token, library_name="r2m-hf")
    with _hub_errors(call):
        api.create_repo(repo_id, private=private, exist_ok=exist_ok)
        if revision is not None and revision != constants.DEFAULT_REVISION and not revision.startswith("refs/"):
            refs = api.list_repo_refs(repo_id)
            if revision in {tag.name for tag in refs.tags}:
                raise HubError(f"cannot push to '{revision}' of {call.repo}: it is a tag; name a branch instead")
            if revision not in {branch.name for branch in refs.branches}:
                api.create_branch(repo_id, branch=revision, exist_ok=True)
        operations = [CommitOperationAdd(path_in_repo=in_repo, path_or_fileobj=path) for path, in_repo in files]
        info = api.create_commit(
            repo_id,
            operations,
            commit_message=commit_message or f"Upload {folder.resolve().name} with r2m-hf",
            revision=revision,
            create_pr=create_pr,
        )
    return PushResult(repo_id=repo_id, commit_sha=info.oid, commit_url=str(info.commit_url), pr_url=info.pr_url)


def download_snapshot(
    repo_id: str,
    revision: str | None = None,
    *,
    token: str | None = None,
    endpoint: str | None = None,
    repo_type: str = "model",
    allow_patterns: list[str] | str | None = None,
) -> Path:
    """Download (or find in the local cache) a repo snapshot and return its folder.

    Args:
        repo_id (`str`): ``namespace/name`` on the Hub; a local folder must be told apart before calling this.
        revision (`str`, *optional*): branch, tag, commit sha or ``refs/pr/N``; defaults to ``main``.
        token (`str`, *optional*): defaults to ``HF_TOKEN`` or the token of ``hf auth login`` (public repos need none).
        endpoint (`str`, *optional*): Hub URL; defaults to ``HF_ENDPOINT`` or ``https://huggingface.co``.
        repo_type (`str`): ``"model"`` or ``"dataset"``.
        allow_patterns (`list[str]` or `str`, *optional*): only download files matching these glob patterns.

    Returns:
        `Path`: the snapshot folder in the Hugging Face cache.

    Raises:
        `HubError`: repo or revision not found, private repo without access, offline and not cached, network or
        server failure.
    """
    call = _Call(
        verb="download",
        repo_id=repo_id,
        repo_type=repo_type,
        revision=revision,
        token=None,
        endpoint=endpoint,
        retry="retry the download later",
    )
    with _hub_errors(call):
        # Only to phrase errors (anonymous or not) and scrub messages; snapshot_download resolves it again itself.
        known_token = token if token is not None else get_token()
    call = replace(call, token=known_token)
    with _hub_errors(call):
        folder = snapshot_download(
            repo_id,
            revision=revision,
            repo_type=repo_type,
            token=token,
            endpoint=endpoint,
            allow_patterns=allow_patterns,
        )
    if not Path(folder).is_dir():  # snapshot_download only warns when the patterns match nothing
        raise HubError(
            f"no file of {call.repo} at revision '{revision or constants.DEFAULT_REVISION}' matches "
            f"allow_patterns={allow_patterns!r}: check the repo holds the expected files"
        )
    return Path(folder)


@contextmanager
def _hub_errors(call: _Call) -> Iterator[None]:
    """Re-raise the client's exceptions as one-line :class:`HubError` messages that say what to do."""
    try:
        yield
    except HubError:
        raise
    except (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        LocalTokenNotFoundError,
        OfflineModeIsEnabled,
        HFValidationError,
        OIDCError,
        httpx.TransportError,
    ) as err:
        raise HubError(clip(_scrub(_message(err, call), call.token), 1000)) from err  # scrubbed before clipped
    except ValueError as err:
        if "Invalid metadata in README.md" not in str(err):
            raise
        detail = " ".join(line.strip("- ") for line in str(err).splitlines()[1:] if line.strip())
        message = f"README.md of the output has invalid YAML metadata ({detail or 'rejected by the Hub'}): fix it"
        raise HubError(_scrub(message, call.token)) from err


def _message(err: Exception, call: _Call) -> str:
    endpoint = call.endpoint or constants.ENDPOINT
    revision = clip(call.revision or constants.DEFAULT_REVISION)
    if isinstance(err, IncompleteSnapshotError):
        return (
            f"the cached snapshot of {call.repo} (revision '{revision}') is incomplete and the Hub cannot be "
            f"reached to complete it: download it again with network access (HF_HUB_OFFLINE unset)"
        )
    if isinstance(err, LocalEntryNotFoundError):
        cause = err.__cause__
        if isinstance(cause, HfHubHTTPError):
            return _message(cause, call)
        if isinstance(cause, OfflineModeIsEnabled) or constants.is_offline_mode():
            return (
                f"{call.repo} (revision '{revision}') is not in the local Hugging Face cache and HF_HUB_OFFLINE is "
                "set: unset HF_HUB_OFFLINE to download it, or download it once while online"
            )
        return (
            f"cannot reach the Hub at {endpoint} and {call.repo} (revision '{revision}') is not in the local cache: "
            "check the network connection (or HF_ENDPOINT)"
        )
    if isinstance(err, OfflineModeIsEnabled):
        return f"cannot {call.verb} {call.repo}: HF_HUB_OFFLINE is set; unset it to reach the Hub"
    if isinstance(err, httpx.TransportError):
        return f"cannot reach the Hub at {endpoint} to {call.verb} {call.repo}: check the network; {call.retry}"
    if isinstance(err, LocalTokenNotFoundError | OIDCError):
        return f"no usable Hugging Face token to {call.verb} {call.repo}: {_LOGIN_HINT}"
    if isinstance(err, HFValidationError):
        return f"'{clip(call.repo_id)}' is not a valid repo id: use namespace/name (letters, digits, '-', '_', '.')"
    if isinstance(err, GatedRepoError):
        return f"{call.repo} is gated: request access on its Hub page, then use a token of that account ({_LOGIN_HINT})"
    if isinstance(err, RepositoryNotFoundError):
        if call.token:
            return f"{call.repo} not found, or your token cannot access it: check the repo id and the token's rights"
        return f"{call.repo} not found, or it is private and no token was given: check the repo id; {_LOGIN_HINT}"
    if isinstance(err, RevisionNotFoundError):
        return f"revision '{revision}' not found in {call.repo}: name an existing branch, tag or commit"
    if isinstance(err, RemoteEntryNotFoundError):
        return f"a file is missing at revision '{revision}' of {call.repo}: {_first_line(err)}"
    assert isinstance(err, HfHubHTTPError)
    status = err.response.status_code if err.response is not None else None
    if status == 401:
        return f"the Hub rejected the token (HTTP 401) to {call.verb} {call.repo}: {_LOGIN_HINT} with a valid token"
    if status == 403:
        return (
            f"the token may not {call.verb} {call.repo} (HTTP 403): use a token with write access to "
            f"'{call.repo_id.split('/')[0]}' ({_LOGIN_HINT})"
        )
    if status == 409:
        return f"{call.repo} already exists: push with exist_ok=True to add a commit to it, or pick another name"
    if status == 412:
        return f"{call.repo} changed while pushing (HTTP 412): {call.retry}"
    if status == 429:
        return f"the Hub rate-limited this client (HTTP 429) to {call.verb} {call.repo}: wait, then {call.retry}"
    if status is not None and status >= 500:
        return f"the Hub failed (HTTP {status}) to {call.verb} {call.repo}: {call.retry}"
    return f"the Hub refused to {call.verb} {call.repo} (HTTP {status}): {_first_line(err)}"


def _first_line(err: Exception) -> str:
    server = getattr(err, "server_message", None)
    text = server or str(err)
    return next((line.strip() for line in text.splitlines() if line.strip()), type(err).__name__)


def _scrub(message: str, token: str | None) -> str:
    """Drop line breaks and any occurrence of the token (defence in depth: a proxy may echo headers)."""
    message = " ".join(message.split())
    return message.replace(token, "***") if token else message
