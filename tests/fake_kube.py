"""A small fake Kubernetes API server, kept for what a real one cannot be made to do on purpose: answer 5xx
or 429, drop a connection without an answer, or send a malformed body. Everything a real server can show
(validation, 409s on a stale resourceVersion, RBAC refusals, status subresources, watches, the controllers)
is tested against the real control plane instead (tests/kube_cluster.py, tests/test_kube_real.py).

It speaks the real wire protocol for the endpoints prewarm's actuator walks through, so the official
`kubernetes` client is tested over HTTP, never patched: objects under /api/v1 and /apis/{group}/{version},
namespaced GET (one, or a list with labelSelector equality), POST, PUT (409 on a stale resourceVersion),
PATCH (as a JSON merge patch) and the `scale` subresource, with a resourceVersion bumped on every write.

Fault hooks, per (verb, resource), each taken by the next matching request: `fail_next` (answer with a status
such as 503 or 429, with a Status body), `drop_next` (close the connection without an answer) and
`garbage_next` (answer 200 with a truncated JSON body) and `hang_next` (accept the request and never answer
until the test ends: a server that has stopped responding).
"""

from __future__ import annotations

import copy
import json
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlparse

from tests.loopback import LoopbackServer

PATH = re.compile(
    r"^/(?:api/(?P<cv>v1)|apis/(?P<group>[^/]+)/(?P<gv>[^/]+))/namespaces/(?P<ns>[^/]+)/(?P<plural>[^/]+)"
    r"(?:/(?P<name>[^/]+))?(?:/(?P<sub>scale|status))?$"
)
KINDS = {
    "deployments": "Deployment",
    "statefulsets": "StatefulSet",
    "horizontalpodautoscalers": "HorizontalPodAutoscaler",
    "scaledobjects": "ScaledObject",
    "events": "Event",
    "pods": "Pod",
    "leases": "Lease",
    "resourcequotas": "ResourceQuota",
}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


class FakeKube(LoopbackServer):
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        self.rv = 1000
        self.fail_next: dict[tuple[str, str], list[int]] = {}  # (verb, plural) -> statuses to answer
        self.drop_next: dict[tuple[str, str], int] = {}  # (verb, plural) -> connections to close unanswered
        self.garbage_next: dict[tuple[str, str], int] = {}  # (verb, plural) -> truncated bodies to send
        self.hang_next: dict[tuple[str, str], int] = {}  # (verb, plural) -> requests left unanswered
        self.released = threading.Event()  # set by close(): a hung request ends with the server
        self.log: list[tuple[str, str]] = []
        self.lock = threading.RLock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

            def do_PUT(self) -> None:
                fake._handle(self, "PUT")

            def do_PATCH(self) -> None:
                fake._handle(self, "PATCH")

            def do_DELETE(self) -> None:
                fake._handle(self, "DELETE")

            def log_message(self, format: str, *args: object) -> None:
                return

        super().__init__(Handler)

    def close(self) -> None:
        self.released.set()  # a hung request ends first: closing waits for every handler thread
        super().close()

    # -- state ---------------------------------------------------------------------------------------

    def _prefix(self, m: re.Match[str]) -> str:
        return "v1" if m.group("cv") else f"{m.group('group')}/{m.group('gv')}"

    def put_object(self, api: str, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or overwrite an object as another client would (bumps resourceVersion)."""
        with self.lock:
            meta = obj.setdefault("metadata", {})
            key = (api, meta["namespace"], plural, meta["name"])
            kind = "MODIFIED" if key in self.objects else "ADDED"
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", "2026-01-05T00:00:00Z")
            obj.setdefault("apiVersion", api)
            obj.setdefault("kind", KINDS.get(plural, plural))
            self._store(key, obj, kind)
            return obj

    def get_object(self, api: str, namespace: str, plural: str, name: str) -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy(self.objects[(api, namespace, plural, name)])

    def _store(self, key: tuple[str, str, str, str], obj: dict[str, Any], kind: str) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.objects[key] = obj

    # -- protocol ------------------------------------------------------------------------------------

    @staticmethod
    def status(code: int, reason: str, message: str, kind: str = "", name: str = "") -> dict[str, Any]:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "details": {"name": name, "kind": kind},
            "code": code,
        }

    def _send(self, h: BaseHTTPRequestHandler, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        h.send_response(code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        url = urlparse(h.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        length = int(h.headers.get("Content-Length") or 0)
        body = json.loads(h.rfile.read(length) or b"null") if length else None
        m = PATH.match(url.path)
        if m is None:
            self._send(
                h, 404, self.status(404, "NotFound", "the server could not find the requested resource")
            )
            return
        plural, name, sub = m.group("plural"), m.group("name"), m.group("sub")
        verb = {
            "GET": "get" if name else "list",
            "POST": "create",
            "PUT": "update",
            "PATCH": "patch",
            "DELETE": "delete",
        }[method]
        resource = f"{plural}/{sub}" if sub else plural
        with self.lock:
            hang = bool(self.hang_next.get((verb, resource)))
            if hang:
                self.hang_next[(verb, resource)] -= 1
        if hang:  # outside the lock: other requests are answered while this one waits for nothing
            self.released.wait()
            h.close_connection = True
            return
        with self.lock:
            self.log.append((verb, resource))
            if self.drop_next.get((verb, resource)):
                self.drop_next[(verb, resource)] -= 1
                h.close_connection = True  # no status line, no body: the peer sees the connection end
                return
            if self.garbage_next.get((verb, resource)):
                self.garbage_next[(verb, resource)] -= 1
                data = b'{"kind": "Status", "metadata": {'  # cut off, as by a proxy that gave up
                h.send_response(200)
                h.send_header("Content-Type", "application/json")
                h.send_header("Content-Length", str(len(data)))
                h.end_headers()
                h.wfile.write(data)
                return
            queued = self.fail_next.get((verb, resource))
            if queued:
                code = queued.pop(0)
                self._send(
                    h,
                    code,
                    self.status(
                        code, "ServiceUnavailable" if code >= 500 else "TooManyRequests", f"injected {code}"
                    ),
                )
                return
        with self.lock:
            code, out = self._apply(method, self._prefix(m), m.group("ns"), plural, name, sub, body, query)
        self._send(h, code, out)

    def _apply(
        self,
        method: str,
        api: str,
        ns: str,
        plural: str,
        name: str | None,
        sub: str | None,
        body: Any,
        query: dict[str, str],
    ) -> tuple[int, dict[str, Any]]:
        kind = KINDS.get(plural, plural)
        if name is None:
            if method == "GET":
                items = [
                    copy.deepcopy(o)
                    for (a, n, p, _), o in sorted(self.objects.items())
                    if a == api and n == ns and p == plural and self._selected(o, query.get("labelSelector"))
                ]
                return 200, {
                    "kind": f"{kind}List",
                    "apiVersion": api,
                    "metadata": {"resourceVersion": str(self.rv)},
                    "items": items,
                }
            if method == "POST":
                obj = body
                meta = obj.setdefault("metadata", {})
                if not meta.get("name") and meta.get("generateName"):
                    meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
                meta["namespace"] = ns
                key = (api, ns, plural, meta["name"])
                if key in self.objects:
                    return 409, self.status(
                        409,
                        "AlreadyExists",
                        f'{plural} "{meta["name"]}" already exists',
                        plural,
                        meta["name"],
                    )
                meta["uid"] = str(uuid.uuid4())
                meta.setdefault("creationTimestamp", "2026-01-05T00:00:00Z")
                self._store(key, obj, "ADDED")
                return 201, copy.deepcopy(obj)
            return 405, self.status(405, "MethodNotAllowed", "method not allowed")
        key = (api, ns, plural, name)
        obj = self.objects.get(key)
        if obj is None:
            return 404, self.status(
                404, "NotFound", f'{plural}.{api.split("/")[0]} "{name}" not found', plural, name
            )
        if sub == "scale":
            return self._scale(method, key, obj, body)
        if method == "GET":
            return 200, copy.deepcopy(obj)
        if method == "PUT":
            sent_rv = (body.get("metadata") or {}).get("resourceVersion")
            if sent_rv and sent_rv != obj["metadata"]["resourceVersion"]:
                return 409, self.status(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {plural} "{name}": the object has been modified; '
                    "please apply your changes to the latest version and try again",
                    plural,
                    name,
                )
            new = copy.deepcopy(body)
            new["metadata"] = {
                **obj["metadata"],
                **{k: v for k, v in new.get("metadata", {}).items() if k in ("labels", "annotations")},
            }
            err = self._invalid(plural, name, new)
            if err:
                return 422, err
            self._store(key, new, "MODIFIED")
            return 200, copy.deepcopy(new)
        if method == "PATCH":
            sent_rv = ((body or {}).get("metadata") or {}).get("resourceVersion")
            if sent_rv and sent_rv != obj["metadata"]["resourceVersion"]:
                return 409, self.status(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {plural} "{name}": the object has been modified',
                    plural,
                    name,
                )
            new = merge_patch(obj, body)
            err = self._invalid(plural, name, new)
            if err:
                return 422, err
            self._store(key, new, "MODIFIED")
            return 200, copy.deepcopy(new)
        if method == "DELETE":
            del self.objects[key]
            self.rv += 1
            return 200, self.status(200, "", "deleted")
        return 405, self.status(405, "MethodNotAllowed", "method not allowed")

    def _invalid(self, plural: str, name: str, obj: dict[str, Any]) -> dict[str, Any] | None:
        spec = obj.get("spec") or {}
        for field in ("replicas", "minReplicas", "maxReplicas", "minReplicaCount"):
            v = spec.get(field)
            if v is not None and (not isinstance(v, int) or v < 0):
                return self.status(
                    422,
                    "Invalid",
                    f'{KINDS.get(plural, plural)} "{name}" is invalid: '
                    f"spec.{field}: Invalid value: {v}: must be greater than or equal to 0",
                    plural,
                    name,
                )
        if plural == "horizontalpodautoscalers" and spec.get("minReplicas", 1) > spec.get(
            "maxReplicas", 10**9
        ):
            return self.status(
                422,
                "Invalid",
                f'HorizontalPodAutoscaler "{name}" is invalid: spec.minReplicas: '
                "Invalid value: must be less than or equal to maxReplicas",
                plural,
                name,
            )
        return None

    def _scale(
        self, method: str, key: tuple[str, str, str, str], obj: dict[str, Any], body: Any
    ) -> tuple[int, dict[str, Any]]:
        def scale_of(o: dict[str, Any]) -> dict[str, Any]:
            return {
                "kind": "Scale",
                "apiVersion": "autoscaling/v1",
                "metadata": {
                    "name": o["metadata"]["name"],
                    "namespace": o["metadata"]["namespace"],
                    "resourceVersion": o["metadata"]["resourceVersion"],
                    "uid": o["metadata"]["uid"],
                },
                "spec": {"replicas": o.get("spec", {}).get("replicas", 1)},
                "status": {
                    "replicas": o.get("status", {}).get("replicas", 0),
                    "selector": ",".join(
                        f"{k}={v}"
                        for k, v in o.get("spec", {}).get("selector", {}).get("matchLabels", {}).items()
                    ),
                },
            }

        if method == "GET":
            return 200, scale_of(obj)
        if method in ("PUT", "PATCH"):
            sent_rv = ((body or {}).get("metadata") or {}).get("resourceVersion")
            if sent_rv and sent_rv != obj["metadata"]["resourceVersion"]:
                return 409, self.status(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {key[2]} "{key[3]}": '
                    "the object has been modified; please apply your changes to the latest "
                    "version and try again",
                    key[2],
                    key[3],
                )
            replicas = ((body or {}).get("spec") or {}).get("replicas")
            new = copy.deepcopy(obj)
            new.setdefault("spec", {})["replicas"] = replicas
            err = self._invalid(key[2], key[3], new)
            if err:
                return 422, err
            self._store(key, new, "MODIFIED")
            return 200, scale_of(new)
        return 405, self.status(405, "MethodNotAllowed", "method not allowed")

    @staticmethod
    def _selected(obj: dict[str, Any], selector: str | None) -> bool:
        if not selector:
            return True
        labels = obj.get("metadata", {}).get("labels", {})
        for term in selector.split(","):
            k, _, v = term.partition("=")
            if labels.get(k.strip()) != v.strip():
                return False
        return True

    @contextmanager
    def hooks(self) -> Iterator[FakeKube]:
        with self.lock:
            yield self
