"""A local HTTP server standing in for the Hugging Face Hub in upload tests: just the endpoints `create_repo` and
`upload_folder` of huggingface_hub call (read off `hf_api.py`, `_commit_api.py` and `_upload_pipeline.py`).

- `POST /api/repos/create`: creates the repo, or answers 409 (with its url, as the Hub does) when it exists, or 403
  outside the user's namespace.
- `POST /api/validate-yaml`: accepts any README metadata (`upload_folder`, and `create_commit` without hf_xet, ask
  before uploading a README.md).
- `POST /api/models/{repo_id}/preupload/{revision}`: answers upload mode "regular" for every file, so contents come
  inline (base64) in the commit and neither LFS nor xet storage is ever contacted.
- `POST /api/models/{repo_id}/commit/{revision}`: reads the NDJSON commit (a header, then one line per file) and stores
  the files; anything but inline files is refused.

Every request is recorded; any other one gets a 404 and is recorded as unexpected. Clients should run with
HF_HUB_DISABLE_TELEMETRY=1: otherwise huggingface_hub also fetches `GET /api/agent-harnesses` from the endpoint for
its user-agent header.
"""

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


REPO_PATH = r"/api/models/(?P<repo>[^/]+/[^/]+)/(?P<action>preupload|commit)/(?P<revision>[^/?]+)"


class FakeHub:
    """Run with `with FakeHub() as hub:`; `hub.endpoint` is the URL to use as HF_ENDPOINT. The user may create repos
    in the namespace `user` only."""

    def __init__(self, user: str = "me"):
        self.user = user
        self.repos: dict[str, dict[str, bytes]] = {}
        self.requests: list[tuple[str, str]] = []
        self.unexpected: list[tuple[str, str]] = []
        self.commits: list[dict] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "FakeHub":
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler_class(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                path = self.path.split("?")[0]
                hub.requests.append(("POST", path))
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if path == "/api/repos/create":
                    return self._reply(*hub.create_repo(json.loads(body)))
                if path == "/api/validate-yaml":
                    return self._reply(200, {"errors": [], "warnings": []})
                match = re.fullmatch(REPO_PATH, path)
                if match and match["repo"] not in hub.repos:
                    return self._reply(404, {"error": f"Repository {match['repo']} not found"})
                if match and match["action"] == "preupload":
                    return self._reply(200, hub.preupload(json.loads(body)))
                if match and match["action"] == "commit":
                    return self._reply(*hub.commit(match["repo"], body))
                self._unexpected()

            def do_GET(self):
                hub.requests.append(("GET", self.path.split("?")[0]))
                self._unexpected()

            do_PUT = do_GET

            def _unexpected(self):
                hub.unexpected.append(hub.requests[-1])
                self._reply(404, {"error": f"the fake Hub does not serve {hub.requests[-1]}"})

            def _reply(self, status: int, payload: dict):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        return Handler

    def create_repo(self, payload: dict) -> tuple[int, dict]:
        repo = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        url = f"{self.endpoint}/{repo}"
        if payload.get("organization") not in (None, self.user):
            namespace = payload["organization"]
            return 403, {"error": f"You don't have the rights to create a model under the namespace {namespace}"}
        if repo in self.repos:
            return 409, {"error": "You already created this model repo", "url": url}
        self.repos[repo] = {}
        return 200, {"url": url}

    def preupload(self, payload: dict) -> dict:
        return {
            "files": [
                {"path": file["path"], "uploadMode": "regular", "shouldIgnore": False} for file in payload["files"]
            ]
        }

    def commit(self, repo: str, body: bytes) -> tuple[int, dict]:
        lines = [json.loads(line) for line in body.decode().splitlines() if line]
        header, operations = lines[0], lines[1:]
        if header["key"] != "header":
            return 400, {"error": f"the commit must start with its header, got {header['key']!r}"}
        refused = [operation["key"] for operation in operations if operation["key"] != "file"]
        if refused:
            return 400, {"error": f"the fake Hub takes inline files only, got {refused}"}
        files = {item["value"]["path"]: base64.b64decode(item["value"]["content"]) for item in operations}
        self.repos[repo].update(files)
        self.commits.append({"repo": repo, "summary": header["value"]["summary"], "paths": sorted(files)})
        oid = hashlib.sha1(body).hexdigest()
        return 200, {"commitUrl": f"{self.endpoint}/{repo}/commit/{oid}", "commitOid": oid, "pullRequestUrl": None}
