"""A small fake Kubernetes API server that speaks the real wire protocol for exactly the endpoints prewarm
uses, so the official `kubernetes` client is tested over HTTP, never patched.

What it implements faithfully:
- objects under /api/v1 and /apis/{group}/{version}, namespaced: GET (one, list with labelSelector
  equality), POST (create; 409 AlreadyExists), PUT (replace; 409 Conflict when metadata.resourceVersion is
  stale), PATCH (merge patch and strategic merge patch treated as a JSON merge patch), and the `scale`
  subresource of Deployments and StatefulSets (an autoscaling/v1 Scale object);
- a cluster-wide resourceVersion counter bumped on every write;
- Status bodies for 403 (RBAC, from a deny list of (verb, resource)), 404, 409 and 422 (a negative replica
  count);
- watch=true streams of newline-delimited JSON events newer than the given resourceVersion. A real server
  holds a watch open until timeoutSeconds; this one ends it once the backlog is sent when
  `close_idle_watches` is set (clients must handle a watch ending either way), so tests need no sleep.
Test hooks: `conflict_next` (another writer updates the object just before our next PUT) and `fail_next`
(answer the next matching request with a status such as 503).
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
        self.events: list[tuple[int, str, tuple[str, str, str], dict[str, Any]]] = []  # (rv, type, key, obj)
        self.rv = 1000
        self.deny: set[tuple[str, str]] = set()  # (verb, plural): answered 403
        self.conflict_next: dict[tuple[str, str], int] = {}  # (plural, name) -> PUTs to make stale
        self.fail_next: dict[tuple[str, str], list[int]] = {}  # (verb, plural) -> statuses to answer
        self.close_idle_watches = True
        self.log: list[tuple[str, str]] = []
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
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

    # -- state ---------------------------------------------------------------------------------------

    def _prefix(self, m: re.Match[str]) -> str:
        return "v1" if m.group("cv") else f"{m.group('group')}/{m.group('gv')}"

    def put_object(self, api: str, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or overwrite an object as another client would (bumps resourceVersion, emits an event)."""
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
        self.events.append((self.rv, kind, key[:3], copy.deepcopy(obj)))
        self.changed.notify_all()

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
        watch = query.get("watch") in ("true", "1")
        verb = {
            "GET": "watch" if watch else ("get" if name else "list"),
            "POST": "create",
            "PUT": "update",
            "PATCH": "patch",
            "DELETE": "delete",
        }[method]
        resource = f"{plural}/{sub}" if sub else plural
        with self.lock:
            self.log.append((verb, resource))
            if (verb, resource) in self.deny:
                group = m.group("group") or ""
                self._send(
                    h,
                    403,
                    self.status(
                        403,
                        "Forbidden",
                        f'{resource} "{name or ""}" is forbidden: User '
                        f'"system:serviceaccount:prewarm:prewarm" cannot {verb} resource "{resource}" '
                        f'in API group "{group}" in the namespace "{m.group("ns")}"',
                        plural,
                        name or "",
                    ),
                )
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
        if watch:
            self._watch(h, self._prefix(m), m.group("ns"), plural, query)
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
            if self.conflict_next.get((plural, name)):
                self.conflict_next[(plural, name)] -= 1
                obj = copy.deepcopy(obj)
                obj["metadata"].setdefault("labels", {})["touched-by"] = "another-writer"
                self._store(key, obj, "MODIFIED")
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
            self.events.append((self.rv, "DELETED", key[:3], copy.deepcopy(obj)))
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
            if method == "PUT" and self.conflict_next.get((key[2], key[3])):
                self.conflict_next[(key[2], key[3])] -= 1
                bumped = copy.deepcopy(obj)
                bumped["metadata"].setdefault("labels", {})["touched-by"] = "another-writer"
                self._store(key, bumped, "MODIFIED")
                obj = bumped
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

    def _watch(
        self, h: BaseHTTPRequestHandler, api: str, ns: str, plural: str, query: dict[str, str]
    ) -> None:
        since = int(query.get("resourceVersion") or 0)
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()

        def chunk(data: bytes) -> None:
            h.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

        sent = since
        with self.lock:
            while True:
                for rv, kind, key, obj in self.events:
                    if (
                        rv > sent
                        and key == (api, ns, plural)
                        and self._selected(obj, query.get("labelSelector"))
                    ):
                        chunk(json.dumps({"type": kind, "object": obj}).encode() + b"\n")
                        sent = rv
                if self.close_idle_watches:
                    break
                if not self.changed.wait(timeout=float(query.get("timeoutSeconds") or 30)):
                    break
        chunk(b"")

    @contextmanager
    def hooks(self) -> Iterator[FakeKube]:
        with self.lock:
            yield self
