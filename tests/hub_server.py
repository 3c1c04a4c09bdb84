"""A local stand-in for the Hugging Face Hub on 127.0.0.1: the endpoints `huggingface_hub` calls to
create a repo and upload a folder over the LFS protocol (`HF_HUB_DISABLE_XET=1`; the Xet path needs the
Hub's storage service). It keeps the files it received and every request's path and Authorization."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LFS_SUFFIXES = (".safetensors", ".gguf", ".bin")


@dataclass
class HubState:
    token: str
    repos: dict[str, dict[str, Any]] = field(default_factory=dict)  # repo -> {"private": bool, "files": {...}}
    lfs: dict[str, bytes] = field(default_factory=dict)  # sha256 -> content
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # method, path, Authorization
    commits: list[dict[str, Any]] = field(default_factory=list)


class HubHandler(BaseHTTPRequestHandler):
    state: HubState

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _reply(self, status: int, data: Any = None) -> None:
        body = json.dumps(data if data is not None else {}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _authorized(self) -> bool:
        auth = self.headers.get("Authorization")
        self.state.requests.append((self.command, self.path, auth))
        if auth != f"Bearer {self.state.token}":
            self._reply(401, {"error": "Invalid credentials in Authorization header"})
            return False
        return True

    def do_POST(self) -> None:
        if not self._authorized():
            return
        body = self._body()
        path = self.path.split("?")[0]
        base = f"http://{self.headers['Host']}"
        if path == "/api/repos/create":
            payload = json.loads(body)
            repo = f"{payload['organization']}/{payload['name']}"
            self.state.repos.setdefault(repo, {"private": payload.get("visibility") == "private", "files": {}})
            return self._reply(200, {"url": f"{base}/{repo}"})
        if path == "/api/validate-yaml":
            return self._reply(200, {"errors": [], "warnings": []})
        if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/preupload/([^/]+)", path):
            files = json.loads(body)["files"]
            modes = [
                {
                    "path": f["path"],
                    "uploadMode": "lfs" if f["path"].endswith(LFS_SUFFIXES) else "regular",
                    "shouldIgnore": False,
                }
                for f in files
            ]
            return self._reply(200, {"files": modes})
        if m := re.fullmatch(r"/([^/]+/[^/]+)\.git/info/lfs/objects/batch", path):
            objects = json.loads(body)["objects"]
            return self._reply(
                200,
                {
                    "transfer": "basic",
                    "objects": [
                        {**o, "actions": {"upload": {"href": f"{base}/lfs-upload/{o['oid']}"}}} for o in objects
                    ],
                },
            )
        if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/commit/([^/]+)", path):
            return self._commit(m.group(1), body, base)
        self._reply(404, {"error": f"not implemented here: POST {path}"})

    def _commit(self, repo: str, body: bytes, base: str) -> None:
        if repo not in self.state.repos:
            return self._reply(404, {"error": "Repository not found"})
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        files = self.state.repos[repo]["files"]
        for line in lines:
            value = line["value"]
            if line["key"] == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif line["key"] == "lfsFile":
                if value["oid"] not in self.state.lfs:
                    return self._reply(422, {"error": f"LFS object {value['oid']} was never uploaded"})
                files[value["path"]] = self.state.lfs[value["oid"]]
        self.state.commits.append({"repo": repo, "header": lines[0]["value"]})
        oid = hashlib.sha1(body).hexdigest()
        self._reply(200, {"commitUrl": f"{base}/{repo}/commit/{oid}", "commitOid": oid, "pullRequestUrl": None})

    def do_PUT(self) -> None:
        # An LFS upload goes to the href the batch answer gave; the real Hub signs that URL instead of
        # asking for the token, so none is required here either.
        self.state.requests.append((self.command, self.path, self.headers.get("Authorization")))
        body = self._body()
        if m := re.fullmatch(r"/lfs-upload/([0-9a-f]{64})", self.path):
            if hashlib.sha256(body).hexdigest() != m.group(1):
                return self._reply(400, {"error": "sha256 mismatch"})
            self.state.lfs[m.group(1)] = body
            return self._reply(200)
        self._reply(404, {"error": f"not implemented here: PUT {self.path}"})

    def do_GET(self) -> None:
        if not self._authorized():
            return
        self._reply(404, {"error": f"not implemented here: GET {self.path}"})


class HubServer:
    def __init__(self, token: str) -> None:
        self.state = HubState(token)
        handler = type("Handler", (HubHandler,), {"state": self.state})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> HubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
