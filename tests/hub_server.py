"""A loopback Hugging Face Hub for tests, so the real ``huggingface_hub`` client can run without the network.

It speaks the subset of the Hub HTTP API that ``huggingface_hub`` 2.4 uses to create repos, commit files, manage
branches, tags and pull-request refs, list trees, read repo info and download files (``hf_hub_download``,
``snapshot_download``, ``ModelCard``, ``transformers``' ``from_pretrained``), for model, dataset and Space repos (a
Space needs an SDK when it is created, starts with the Hub's default README, and reports its ``sdk`` in its info).
Storage is in memory and git-like: a commit is a full snapshot ``path -> bytes`` with a sha1 id and a parent. Every
file is answered ``uploadMode: "regular"`` at preupload, so its content travels base64 in the NDJSON commit and
neither LFS nor Xet is involved; downloads never carry ``X-Xet-Hash``, so the client always takes the plain HTTP
path.

Authentication follows the Hub: an unknown bearer token is a 401 ("Invalid credentials in Authorization header");
a private repo, or a missing one, is a 401 ``RepoNotFound`` without a token and a 404 ``RepoNotFound`` with a token
that may not read it (the client turns both into ``RepositoryNotFoundError``); writes need a token of a user who
owns the namespace (401 without one, 403 with a read-only or foreign one).

Standard library only, except that YAML front matter is parsed with PyYAML when it is importable (it always is
beside ``huggingface_hub``) and only checked for its ``---`` fences otherwise.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, quote, unquote

try:  # only to parse README front matter (validate-yaml, cardData); PyYAML ships with huggingface_hub
    import yaml
except ImportError:  # pragma: no cover
    yaml = None

__all__ = ["Commit", "HubServer", "Repo", "RequestRecord"]

REPO_TYPES = ("model", "dataset", "space")
SPACE_SDKS = ("gradio", "streamlit", "docker", "static")
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_API_PLURAL = {"models": "model", "datasets": "dataset", "spaces": "space"}
_COMMIT_PATH = r"/api/(models|datasets|spaces)/.+/commit/"
_REPO_SUBROUTES = {"revision", "tree", "preupload", "commit", "commits", "branch", "tag", "refs"}
_DEFAULT_GITATTRIBUTES = (
    b"*.bin filter=lfs diff=lfs merge=lfs -text\n"
    b"*.pt filter=lfs diff=lfs merge=lfs -text\n"
    b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
)
_FULL_SHA = re.compile(r"[0-9a-f]{40}")


def git_blob_sha(content: bytes) -> str:
    """Git blob id of `content`, which the Hub uses as the ETag of a non-LFS file."""
    return hashlib.sha1(b"blob %d\x00" % len(content) + content).hexdigest()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True)
class Commit:
    """One commit: a full snapshot of the repo."""

    oid: str
    parent: str | None
    title: str
    message: str
    files: dict[str, bytes]
    author: str
    date: str


@dataclass
class Repo:
    """A repo with its commits and refs (branches, tags, pull-request refs ``refs/pr/N``)."""

    repo_id: str
    repo_type: str
    private: bool
    owner: str
    created_at: str
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    pull_requests: dict[int, str] = field(default_factory=dict)
    sdk: str | None = None  # Spaces only

    def resolve(self, revision: str) -> str | None:
        """Commit oid of a branch, tag, ``refs/heads|tags/...``, ``refs/pr/N``, full or short (≥ 7) commit sha."""
        for prefix, refs in (("refs/heads/", self.branches), ("refs/tags/", self.tags)):
            if revision.startswith(prefix):
                return refs.get(revision[len(prefix) :])
        if revision in self.branches:
            return self.branches[revision]
        if revision in self.tags:
            return self.tags[revision]
        match = re.fullmatch(r"refs/pr/(\d+)", revision)
        if match:
            return self.pull_requests.get(int(match[1]))
        if revision in self.commits:
            return revision
        if re.fullmatch(r"[0-9a-f]{7,39}", revision):
            found = [oid for oid in self.commits if oid.startswith(revision)]
            return found[0] if len(found) == 1 else None
        return None

    def files_at(self, revision: str = "main") -> dict[str, bytes]:
        """Snapshot at `revision` (raises KeyError when it does not resolve)."""
        oid = self.resolve(revision)
        if oid is None:
            raise KeyError(revision)
        return self.commits[oid].files

    def history(self, revision: str = "main") -> list[Commit]:
        """Commits reachable from `revision`, newest first."""
        oid, out = self.resolve(revision), []
        while oid is not None:
            out.append(self.commits[oid])
            oid = self.commits[oid].parent
        return out


@dataclass(frozen=True)
class RequestRecord:
    """One request as the server saw it. The Authorization header is redacted; the body is kept verbatim."""

    method: str
    path: str
    status: int
    user: str | None
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class _Token:
    user: str
    write: bool


@dataclass
class _Fault:
    method: str
    pattern: re.Pattern[str]
    status: int
    times: int
    skip: int


class _HttpError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


def _front_matter_error(content: str) -> str | None:
    """Why the YAML front matter of a README is invalid, or None when it is valid (or absent)."""
    text = content.lstrip("\ufeff")
    if not text.startswith("---"):
        return None
    match = re.match(r"^---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(\r?\n|$)", text, flags=re.DOTALL)
    if match is None:
        return "the YAML front matter is not closed by a `---` line"
    if yaml is None:  # pragma: no cover
        return None
    try:
        data = yaml.safe_load(match[1])
    except yaml.YAMLError as err:
        return f"the YAML front matter does not parse: {str(err).splitlines()[0]}"
    if data is not None and not isinstance(data, dict):
        return "the YAML front matter must be a mapping"
    return None


def _card_data(files: dict[str, bytes]) -> dict[str, Any] | None:
    readme = files.get("README.md")
    if readme is None or yaml is None:
        return None
    text = readme.decode("utf-8", errors="replace").lstrip("\ufeff")
    match = re.match(r"^---[ \t]*\r?\n(.*?)\r?\n---", text, flags=re.DOTALL)
    if match is None or _front_matter_error(text) is not None:
        return None
    data = yaml.safe_load(match[1])
    return data if isinstance(data, dict) else None


class HubServer:
    """In-memory Hub on ``127.0.0.1``; ``start()`` returns the endpoint to pass as ``endpoint=``.

    Example:
        ```py
        with HubServer() as hub:
            hub.add_token("hf_test", "alice")
            HfApi(endpoint=hub.endpoint, token="hf_test").create_repo("alice/m")
        ```
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._repos: dict[tuple[str, str], Repo] = {}
        self._tokens: dict[str, _Token] = {}
        self._faults: list[_Fault] = []
        self._log: list[RequestRecord] = []
        self._clock = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._sockets: set[socket.socket] = set()
        self.endpoint = ""

    # ----------------------------------------------------------------------------------------------- lifecycle
    def start(self) -> str:
        """Start serving in a background thread and return the endpoint URL (``http://127.0.0.1:PORT``)."""
        if self._httpd is not None:
            return self.endpoint
        hub = self

        class Handler(_Handler):
            server_hub = hub

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        self._httpd = httpd
        self.endpoint = f"http://127.0.0.1:{httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="hub-server", daemon=True
        )
        self._thread.start()
        return self.endpoint

    def stop(self) -> None:
        """Stop serving and drop the kept-alive client connections."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            for sock in list(self._sockets):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self._sockets.clear()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------------------------------- configuration
    def add_token(self, token: str, user: str, *, write: bool = True) -> None:
        """Accept `token` as `user`; a token with ``write=False`` can read but not create or commit."""
        with self._lock:
            self._tokens[token] = _Token(user=user, write=write)

    def fail_next_commit(self, status: int = 500, *, times: int = 1) -> None:
        """Make the next `times` commit requests fail with `status` (nothing is committed)."""
        self.inject_fault("POST", _COMMIT_PATH, status=status, times=times)

    def fail_commit(self, n: int, status: int = 500) -> None:
        """Make the `n`-th commit request from now (1 = the next one) fail with `status`."""
        self.inject_fault("POST", _COMMIT_PATH, status=status, skip=n - 1)

    def inject_fault(self, method: str, path_regex: str, *, status: int = 500, times: int = 1, skip: int = 0) -> None:
        """Answer `status` to the matching requests (after letting `skip` of them through), `times` times."""
        with self._lock:
            self._faults.append(_Fault(method.upper(), re.compile(path_regex), status, times, skip))

    # ------------------------------------------------------------------------------------------- inspection
    @property
    def repos(self) -> dict[str, Repo]:
        """Repos by URL name: ``ns/name`` for models, ``datasets/ns/name`` for datasets."""
        with self._lock:
            return {_URL_PREFIX[t] + rid: repo for (t, rid), repo in self._repos.items()}

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        """The stored repo (KeyError when absent)."""
        with self._lock:
            return self._repos[(repo_type, repo_id)]

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        """Snapshot of a repo at `revision`."""
        return self.repo(repo_id, repo_type).files_at(revision)

    @property
    def requests(self) -> list[RequestRecord]:
        """Every request served so far, oldest first."""
        with self._lock:
            return list(self._log)

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    # ------------------------------------------------------------------------------- server-side seeding
    def create_repo(
        self,
        repo_id: str,
        *,
        repo_type: str = "model",
        private: bool = False,
        owner: str | None = None,
        sdk: str | None = None,
    ) -> Repo:
        """Create a repo directly (no HTTP), with the Hub's initial commit on ``main``: ``.gitattributes``, and for a
        Space (whose `sdk` is required) the default ``README.md`` whose front matter names the SDK."""
        if repo_type not in REPO_TYPES or repo_id.count("/") != 1:
            raise ValueError(f"unsupported repo {repo_type}:{repo_id}")
        if (repo_type == "space") != (sdk is not None) or (sdk is not None and sdk not in SPACE_SDKS):
            raise ValueError(f"a Space needs an sdk among {SPACE_SDKS}, other repos none (got {sdk!r})")
        with self._lock:
            if (repo_type, repo_id) in self._repos:
                raise ValueError(f"{repo_type} repo {repo_id} exists")
            repo = Repo(repo_id, repo_type, private, owner or repo_id.split("/")[0], _now(), sdk=sdk)
            self._repos[(repo_type, repo_id)] = repo
            files = {".gitattributes": _DEFAULT_GITATTRIBUTES}
            if sdk is not None:
                name = repo_id.split("/")[1]
                files["README.md"] = (
                    f"---\ntitle: {name}\nemoji: 🚀\ncolorFrom: blue\ncolorTo: gray\nsdk: {sdk}\npinned: false\n---\n\n"
                    "Check out the configuration reference at https://huggingface.co/docs/hub/spaces-config-reference\n"
                ).encode()
            oid = self._new_commit(repo, None, "initial commit", "", files, "hub")
            repo.branches["main"] = oid
            return repo

    def commit_files(
        self,
        repo_id: str,
        files: dict[str, bytes],
        *,
        repo_type: str = "model",
        revision: str = "main",
        message: str = "seed",
        deletions: tuple[str, ...] = (),
    ) -> str:
        """Commit `files` on branch `revision` directly (no HTTP); returns the commit oid."""
        with self._lock:
            repo = self.repo(repo_id, repo_type)
            head = repo.branches[revision]
            snapshot = {p: c for p, c in repo.commits[head].files.items() if p not in deletions}
            snapshot.update(files)
            oid = self._new_commit(repo, head, message, "", snapshot, "hub")
            repo.branches[revision] = oid
            return oid

    def _new_commit(
        self, repo: Repo, parent: str | None, title: str, description: str, files: dict, author: str
    ) -> str:
        self._clock += 1
        digest = hashlib.sha1()
        for part in (repo.repo_type, repo.repo_id, parent or "", title, description, str(self._clock)):
            digest.update(part.encode() + b"\x00")
        for path in sorted(files):
            digest.update(f"{path}\x00{git_blob_sha(files[path])}\x00".encode())
        oid = digest.hexdigest()
        message = title + ("\n\n" + description if description else "")
        repo.commits[oid] = Commit(oid, parent, title, message, dict(files), author, _now())
        return oid

    def _take_fault(self, method: str, path: str) -> int | None:
        for fault in self._faults:
            if fault.method == method and fault.pattern.search(path) and fault.times > 0:
                if fault.skip > 0:
                    fault.skip -= 1
                    return None
                fault.times -= 1
                return fault.status
        return None


class _Handler(BaseHTTPRequestHandler):
    """Routes one request to the hub. Holds the hub lock for the whole request: tests are small and serial."""

    protocol_version = "HTTP/1.1"
    server_version = "r2m-test-hub/1.0"
    server_hub: HubServer

    def setup(self) -> None:
        super().setup()
        with self.server_hub._lock:
            self.server_hub._sockets.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server_hub._lock:
                self.server_hub._sockets.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    # ------------------------------------------------------------------------------------------- plumbing
    def _read_body(self) -> bytes:
        # Always drain the body, even for requests we reject: leftovers would corrupt the next keep-alive request.
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self) -> None:
        hub = self.server_hub
        body = self._read_body()
        raw_path, _, query = self.path.partition("?")
        self.query = {k: v[-1] for k, v in parse_qs(query).items()}
        self.body = body
        status, payload, headers = 500, b"", {}
        with hub._lock:
            self.user: str | None = None
            try:
                self.token = self._authenticate()
                self.user = self.token.user if self.token else None
                fault = hub._take_fault(self.command, raw_path)
                if fault is not None:
                    raise _HttpError(fault, f"Injected failure (HTTP {fault})")
                status, payload, headers = self._route(raw_path)
            except _HttpError as err:
                status = err.status
                payload = json.dumps({"error": err.message}).encode()
                headers = {"Content-Type": "application/json", "X-Error-Message": err.message, **err.headers}
                if err.code:
                    headers["X-Error-Code"] = err.code
            except Exception as err:  # noqa: BLE001 - a bug in the test server must answer 500, not hang the client
                status, payload = 500, json.dumps({"error": f"test hub crashed: {err!r}"}).encode()
                headers = {"Content-Type": "application/json"}
            redacted = {k: ("<redacted>" if k.lower() == "authorization" else v) for k, v in self.headers.items()}
            hub._log.append(RequestRecord(self.command, self.path, status, self.user, redacted, body))
        self._send(status, payload, headers)

    def _send(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        headers = {"Content-Type": "application/json", **headers}
        headers.setdefault("Content-Length", str(len(payload)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD" and payload:
            self.wfile.write(payload)

    def _json(self) -> Any:
        try:
            return json.loads(self.body or b"{}")
        except ValueError:
            raise _HttpError(400, "Request body is not valid JSON") from None

    @staticmethod
    def _ok(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict]:
        return status, json.dumps(data).encode(), {"Content-Type": "application/json", **(headers or {})}

    # ---------------------------------------------------------------------------------------------- auth
    def _authenticate(self) -> _Token | None:
        auth = self.headers.get("Authorization")
        if not auth:
            return None
        scheme, _, value = auth.partition(" ")
        token = self.server_hub._tokens.get(value.strip()) if scheme.lower() == "bearer" else None
        if token is None:
            raise _HttpError(401, "Invalid credentials in Authorization header")
        return token

    def _get_repo(self, repo_type: str, repo_id: str) -> Repo:
        """The repo when the caller may read it; otherwise the Hub's RepoNotFound (401 anonymous, 404 signed in)."""
        repo = self.server_hub._repos.get((repo_type, repo_id))
        if repo is None or (repo.private and self.user != repo.owner):
            status = 404 if self.token else 401
            raise _HttpError(status, "Repository not found", code="RepoNotFound")
        return repo

    def _require_write(self, namespace: str) -> None:
        if self.token is None:
            raise _HttpError(401, "You must be authenticated to access this resource")
        if not self.token.write:
            raise _HttpError(403, "This token has read access only: use a token with write permission")
        if namespace != self.token.user:
            raise _HttpError(403, f"You don't have the rights to write under the namespace '{namespace}'")

    def _resolve(self, repo: Repo, revision: str) -> str:
        oid = repo.resolve(revision)
        if oid is None:
            raise _HttpError(404, f"Invalid rev id: {revision}", code="RevisionNotFound")
        return oid

    # -------------------------------------------------------------------------------------------- routing
    def _route(self, raw_path: str) -> tuple[int, bytes, dict]:
        parts = raw_path.strip("/").split("/")
        method = self.command
        if parts[:1] == ["api"]:
            if parts[1:3] == ["repos", "create"] and method == "POST":
                return self._create_repo()
            if parts[1:3] == ["repos", "delete"] and method in ("POST", "DELETE"):
                return self._delete_repo()
            if parts[1:] == ["validate-yaml"] and method == "POST":
                return self._validate_yaml()
            if parts[1:] == ["whoami-v2"] and method == "GET":
                if self.token is None:
                    raise _HttpError(401, "Invalid credentials in Authorization header")
                role = "write" if self.token.write else "read"
                return self._ok({"type": "user", "name": self.user, "auth": {"accessToken": {"role": role}}})
            if len(parts) >= 4 and parts[1] in _API_PLURAL:
                return self._repo_api(_API_PLURAL[parts[1]], f"{unquote(parts[2])}/{unquote(parts[3])}", parts[4:])
            raise _HttpError(404, f"Not found: {raw_path}")
        repo_type = "model"
        if parts[:1] in (["datasets"], ["spaces"]):
            repo_type, parts = _API_PLURAL[parts[0]], parts[1:]
        if len(parts) >= 5 and parts[2] == "resolve" and method in ("GET", "HEAD"):
            repo_id = f"{unquote(parts[0])}/{unquote(parts[1])}"
            revision, rest = self._split_revision(parts[3:])
            return self._resolve_file(repo_type, repo_id, revision, unquote("/".join(rest)))
        raise _HttpError(404, f"Not found: {raw_path}")

    @staticmethod
    def _split_revision(parts: list[str]) -> tuple[str, list[str]]:
        """Revision and the remaining segments: revisions come URL-quoted (``refs%2Fpr%2F1``) but accept raw too."""
        if len(parts) >= 3 and parts[0] == "refs" and parts[1] in ("pr", "heads", "tags", "convert"):
            return "/".join(parts[:3]), parts[3:]
        return unquote(parts[0]), parts[1:]

    def _repo_api(self, repo_type: str, repo_id: str, rest: list[str]) -> tuple[int, bytes, dict]:
        method = self.command
        if not rest:
            if method == "GET":
                return self._repo_info(repo_type, repo_id, "main")
            raise _HttpError(405, "Method not allowed")
        action = rest[0]
        if action not in _REPO_SUBROUTES:
            raise _HttpError(404, f"Not found: {action}")
        if action == "refs" and method == "GET":
            return self._refs(repo_type, repo_id)
        if len(rest) < 2:
            raise _HttpError(404, f"Not found: {action}")
        revision, tail = self._split_revision(rest[1:])
        if action == "revision" and method == "GET":
            return self._repo_info(repo_type, repo_id, revision)
        if action == "tree" and method == "GET":
            return self._tree(repo_type, repo_id, revision, unquote("/".join(tail)).strip("/"))
        if action == "commits" and method == "GET":
            return self._commits(repo_type, repo_id, revision)
        if action == "preupload" and method == "POST":
            return self._preupload(repo_type, repo_id, revision)
        if action == "commit" and method == "POST":
            return self._commit(repo_type, repo_id, revision)
        if action == "branch" and method in ("POST", "DELETE"):
            return self._branch(repo_type, repo_id, revision)
        if action == "tag" and method in ("POST", "DELETE"):
            return self._tag(repo_type, repo_id, revision)
        raise _HttpError(405, "Method not allowed")

    # ---------------------------------------------------------------------------------------------- routes
    def _repo_url(self, repo: Repo) -> str:
        return f"{self.server_hub.endpoint}/{_URL_PREFIX[repo.repo_type]}{repo.repo_id}"

    def _create_repo(self) -> tuple[int, bytes, dict]:
        data = self._json()
        repo_type = data.get("type") or "model"
        name, namespace = data.get("name"), data.get("organization") or self.user
        if repo_type not in REPO_TYPES:
            raise _HttpError(400, f"Repo type '{repo_type}' is not supported by the test hub")
        self._require_write(namespace or "")
        if not name or not re.fullmatch(r"[\w.-]+", name) or "--" in name:
            raise _HttpError(400, f"Invalid repo name: {name!r}")
        repo_id = f"{namespace}/{name}"
        hub = self.server_hub
        existing = hub._repos.get((repo_type, repo_id))
        if existing is not None:
            body = {"error": "You already created this repo", "url": self._repo_url(existing)}
            return 409, json.dumps(body).encode(), {"X-Error-Message": body["error"]}
        sdk = data.get("sdk") if repo_type == "space" else None
        if repo_type == "space" and sdk not in SPACE_SDKS:
            raise _HttpError(400, f"Invalid Space SDK {sdk!r}: use one of {', '.join(SPACE_SDKS)}")
        private = data.get("visibility") == "private" or bool(data.get("private"))
        repo = hub.create_repo(repo_id, repo_type=repo_type, private=private, owner=namespace, sdk=sdk)
        return self._ok({"url": self._repo_url(repo), "name": repo_id, "id": repo_id})

    def _delete_repo(self) -> tuple[int, bytes, dict]:
        data = self._json()
        repo_type = data.get("type") or "model"
        namespace = data.get("organization") or self.user
        self._require_write(namespace or "")
        repo_id = f"{namespace}/{data.get('name')}"
        if self.server_hub._repos.pop((repo_type, repo_id), None) is None:
            raise _HttpError(404, "Repository not found", code="RepoNotFound")
        return self._ok({})

    def _validate_yaml(self) -> tuple[int, bytes, dict]:
        error = _front_matter_error(str(self._json().get("content", "")))
        if error is not None:
            return self._ok({"error": error, "errors": [{"message": error}], "warnings": []}, status=400)
        return self._ok({"errors": [], "warnings": []})

    def _repo_info(self, repo_type: str, repo_id: str, revision: str) -> tuple[int, bytes, dict]:
        repo = self._get_repo(repo_type, repo_id)
        commit = repo.commits[self._resolve(repo, revision)]
        siblings = [
            {"rfilename": p, "size": len(c), "blobId": git_blob_sha(c)} for p, c in sorted(commit.files.items())
        ]
        info: dict[str, Any] = {
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
            "id": repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit.oid,
            "lastModified": commit.date,
            "createdAt": repo.created_at,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
        }
        card = _card_data(commit.files)
        if card is not None:
            info["cardData"] = card
            if repo_type == "model" and isinstance(card.get("library_name"), str):
                info["library_name"] = card["library_name"]
        if repo_type == "model":
            info["modelId"] = repo_id
        if repo_type == "space":
            info["sdk"] = repo.sdk
        return self._ok(info)

    def _tree(self, repo_type: str, repo_id: str, revision: str, path: str) -> tuple[int, bytes, dict]:
        repo = self._get_repo(repo_type, repo_id)
        files = repo.commits[self._resolve(repo, revision)].files
        recursive = self.query.get("recursive", "").lower() in ("1", "true")
        prefix = f"{path}/" if path else ""
        below = {p: c for p, c in files.items() if p.startswith(prefix)}
        if path and not below:
            raise _HttpError(404, f"{path} does not exist on {revision}", code="EntryNotFound")
        entries: dict[str, dict] = {}
        for file_path, content in sorted(below.items()):
            relative = file_path[len(prefix) :].split("/")
            folders = relative[:-1] if recursive else relative[:1] if len(relative) > 1 else []
            for depth in range(len(folders)):
                folder = prefix + "/".join(relative[: depth + 1])
                entries.setdefault(folder, {"type": "directory", "oid": git_blob_sha(folder.encode()), "path": folder})
            if recursive or len(relative) == 1:
                entries[file_path] = {
                    "type": "file",
                    "oid": git_blob_sha(content),
                    "size": len(content),
                    "path": file_path,
                }
        return self._ok([entries[k] for k in sorted(entries)])

    def _commits(self, repo_type: str, repo_id: str, revision: str) -> tuple[int, bytes, dict]:
        repo = self._get_repo(repo_type, repo_id)
        self._resolve(repo, revision)
        return self._ok(
            [
                {"id": c.oid, "title": c.title, "message": c.message, "authors": [{"user": c.author}], "date": c.date}
                for c in repo.history(revision)
            ]
        )

    def _refs(self, repo_type: str, repo_id: str) -> tuple[int, bytes, dict]:
        repo = self._get_repo(repo_type, repo_id)

        def ref(name: str, full: str, oid: str) -> dict[str, str]:
            return {"name": name, "ref": full, "targetCommit": oid}

        data = {
            "branches": [ref(n, f"refs/heads/{n}", o) for n, o in sorted(repo.branches.items())],
            "tags": [ref(n, f"refs/tags/{n}", o) for n, o in sorted(repo.tags.items())],
            "converts": [],
        }
        if self.query.get("include_prs") in ("1", "true", "True"):
            data["pullRequests"] = [
                ref(f"refs/pr/{n}", f"refs/pr/{n}", o) for n, o in sorted(repo.pull_requests.items())
            ]
        return self._ok(data)

    def _preupload(self, repo_type: str, repo_id: str, revision: str) -> tuple[int, bytes, dict]:
        repo = self._get_repo(repo_type, repo_id)
        self._require_write(repo.owner)
        head = self._resolve(repo, revision)
        files = repo.commits[head].files
        out = []
        for item in self._json().get("files", []):
            existing = files.get(item["path"])
            out.append(
                {
                    "path": item["path"],
                    "uploadMode": "regular",
                    "shouldIgnore": False,
                    "oid": git_blob_sha(existing) if existing is not None else None,
                }
            )
        return self._ok({"files": out, "commitOid": head})

    def _commit(self, repo_type: str, repo_id: str, revision: str) -> tuple[int, bytes, dict]:
        hub = self.server_hub
        repo = self._get_repo(repo_type, repo_id)
        self._require_write(repo.owner)
        create_pr = self.query.get("create_pr") in ("1", "true", "True")
        pr_match = re.fullmatch(r"refs/pr/(\d+)", revision)
        if create_pr and revision not in repo.branches:
            raise _HttpError(404, f"Invalid rev id: {revision} is not a branch", code="RevisionNotFound")
        if (
            not create_pr
            and revision not in repo.branches
            and not (pr_match and int(pr_match[1]) in repo.pull_requests)
        ):
            raise _HttpError(404, f"Invalid rev id: {revision}", code="RevisionNotFound")
        head = self._resolve(repo, revision)

        lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise _HttpError(400, "The commit payload must start with a header line")
        header = lines[0]["value"]
        parent = header.get("parentCommit")
        if parent:
            parent_oid = repo.resolve(parent)
            if parent_oid is None:
                raise _HttpError(404, f"Invalid parent commit: {parent}", code="RevisionNotFound")
            if not create_pr and parent_oid != head:
                raise _HttpError(412, "A commit has happened since the parent commit. Please retry.")
            head = parent_oid
        snapshot = dict(repo.commits[head].files)
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value", {})
            path = str(value.get("path", "")).strip("/")
            if key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise _HttpError(400, f"Unsupported encoding for {path}")
                snapshot[path] = base64.b64decode(value.get("content", ""))
            elif key == "deletedFile":
                if snapshot.pop(path, None) is None:
                    raise _HttpError(404, f"A file with this name doesn't exist: {path}", code="EntryNotFound")
            elif key == "deletedFolder":
                doomed = [p for p in snapshot if p.startswith(path + "/")]
                if not doomed:
                    raise _HttpError(404, f"A folder with this name doesn't exist: {path}", code="EntryNotFound")
                for doomed_path in doomed:
                    del snapshot[doomed_path]
            elif key in ("lfsFile", "copyFile"):
                raise _HttpError(400, f"'{key}' operations are not supported by the test hub (preupload says regular)")
            else:
                raise _HttpError(400, f"Unknown commit operation: {key!r}")

        oid = hub._new_commit(
            repo, head, header.get("summary") or "", header.get("description") or "", snapshot, self.user or ""
        )
        url = self._repo_url(repo)
        pr_url = None
        if create_pr:
            number = max(repo.pull_requests, default=0) + 1
            repo.pull_requests[number] = oid
            pr_url = f"{url}/discussions/{number}"
        elif pr_match:
            repo.pull_requests[int(pr_match[1])] = oid
        else:
            repo.branches[revision] = oid
        return self._ok(
            {"success": True, "commitOid": oid, "commitUrl": f"{url}/commit/{oid}", "pullRequestUrl": pr_url}
        )

    def _branch(self, repo_type: str, repo_id: str, branch: str) -> tuple[int, bytes, dict]:
        repo = self._get_repo(repo_type, repo_id)
        self._require_write(repo.owner)
        if self.command == "DELETE":
            if branch == "main" or repo.branches.pop(branch, None) is None:
                raise _HttpError(404 if branch != "main" else 403, f"Cannot delete branch {branch}")
            return self._ok({})
        if branch in repo.branches or branch in repo.tags:
            raise _HttpError(409, f"Reference already exists: {branch}")
        if not re.fullmatch(r"[\w.\-/]+", branch) or branch.startswith("refs/"):
            raise _HttpError(400, f"Invalid branch name: {branch}")
        start = self._json().get("startingPoint") or "main"
        repo.branches[branch] = self._resolve(repo, start)
        return self._ok({})

    def _tag(self, repo_type: str, repo_id: str, revision: str) -> tuple[int, bytes, dict]:
        repo = self._get_repo(repo_type, repo_id)
        self._require_write(repo.owner)
        if self.command == "DELETE":
            if repo.tags.pop(revision, None) is None:
                raise _HttpError(404, f"Tag {revision} does not exist", code="RevisionNotFound")
            return self._ok({})
        tag = self._json().get("tag")
        if not tag or not re.fullmatch(r"[\w.\-/]+", tag):
            raise _HttpError(400, f"Invalid tag name: {tag!r}")
        if tag in repo.tags or tag in repo.branches:
            raise _HttpError(409, f"Reference already exists: {tag}")
        repo.tags[tag] = self._resolve(repo, revision)
        return self._ok({})

    def _resolve_file(self, repo_type: str, repo_id: str, revision: str, path: str) -> tuple[int, bytes, dict]:
        repo = self._get_repo(repo_type, repo_id)
        oid = self._resolve(repo, revision)
        content = repo.commits[oid].files.get(path)
        if content is None:
            raise _HttpError(404, "Entry not found", code="EntryNotFound", headers={"X-Repo-Commit": oid})
        headers = {
            "Content-Type": "application/octet-stream",
            "ETag": f'"{git_blob_sha(content)}"',
            "X-Repo-Commit": oid,
            "Accept-Ranges": "bytes",
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(path.split('/')[-1])}",
        }
        byte_range = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if byte_range and self.command == "GET":
            start = int(byte_range[1])
            end = min(int(byte_range[2]) if byte_range[2] else len(content) - 1, len(content) - 1)
            if start >= len(content):
                raise _HttpError(
                    416, "Requested range not satisfiable", headers={"Content-Range": f"bytes */{len(content)}"}
                )
            headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
            return 206, content[start : end + 1], headers
        return 200, content, headers


if __name__ == "__main__":  # pragma: no cover - `python tests/hub_server.py` serves until Ctrl-C
    import sys
    import time

    server = HubServer()
    server.add_token(sys.argv[1] if len(sys.argv) > 1 else "hf_local_test_token", "tester")
    print(server.start(), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
