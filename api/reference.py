"""`/docs`: the API reference as one self-contained page rendered from the OpenAPI document. FastAPI's own
page loads Swagger UI from a CDN, which a cluster without internet access shows blank; this one needs no
script and no network, and links the machine-readable document (`/openapi.json`) for clients and tools."""

from __future__ import annotations

from html import escape
from typing import Any

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #1d1d1f; }
h1 { margin-bottom: 0.2em; } .op { border: 1px solid #d0d7de; border-radius: 6px; margin: 1em 0; }
.op > h3 { margin: 0; padding: 0.5em 0.8em; background: #f6f8fa; font-size: 1em; }
.op > div { padding: 0.3em 0.8em 0.8em; } .m { display: inline-block; min-width: 4em; font-weight: 700; }
.get { color: #0969da; } .post { color: #1a7f37; } table { border-collapse: collapse; }
td, th { text-align: left; padding: 0.15em 0.8em 0.15em 0; vertical-align: top; } code { font-size: 0.95em; }
"""


def _type(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " | ".join(_type(s) for s in schema["anyOf"])
    if schema.get("type") == "array":
        return f"list[{_type(schema.get('items', {}))}]"
    if "enum" in schema:
        return " | ".join(repr(v) for v in schema["enum"])
    return str(schema.get("type", "any"))


def _parameters(op: dict[str, Any]) -> str:
    params = op.get("parameters", [])
    if not params:
        return ""
    rows = "".join(
        f"<tr><td><code>{escape(p['name'])}</code></td><td>{escape(p.get('in', ''))}</td>"
        f"<td>{escape(_type(p.get('schema', {})))}</td><td>{'required' if p.get('required') else ''}</td>"
        f"<td>{escape(p.get('description') or p.get('schema', {}).get('description', ''))}</td></tr>"
        for p in params
    )
    return f"<p>Parameters</p><table>{rows}</table>"


def _body(op: dict[str, Any]) -> str:
    content = op.get("requestBody", {}).get("content", {})
    if not content:
        return ""
    media, spec = next(iter(content.items()))
    return f"<p>Body: <code>{escape(media)}</code> {escape(_type(spec.get('schema', {})))}</p>"


def _responses(op: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td><code>{escape(code)}</code></td><td>{escape(r.get('description', ''))}</td></tr>"
        for code, r in sorted(op.get("responses", {}).items())
    )
    return f"<p>Responses</p><table>{rows}</table>"


def render_reference(doc: dict[str, Any], openapi_url: str = "/openapi.json") -> str:
    info = doc.get("info", {})
    ops = []
    for path, methods in doc.get("paths", {}).items():
        for method, op in methods.items():
            secured = " (needs <code>Authorization: Bearer</code>)" if op.get("security") else ""
            verb = f'<span class="m {escape(method)}">{escape(method.upper())}</span>'
            ops.append(
                f'<section class="op" id="{escape(method)}-{escape(path)}"><h3>'
                f"{verb} <code>{escape(path)}</code>"
                f" &mdash; {escape(op.get('summary', ''))}{secured}</h3><div>"
                f"<p>{escape(op.get('description', ''))}</p>{_parameters(op)}{_body(op)}{_responses(op)}"
                "</div></section>"
            )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(info.get('title', 'API'))} API"
        f"</title><style>{STYLE}</style></head><body><h1>{escape(info.get('title', 'API'))} API</h1>"
        f"<p>{escape(info.get('description', ''))}</p><p>Version {escape(str(info.get('version', '')))}. "
        f'The OpenAPI document: <a href="{escape(openapi_url)}">{escape(openapi_url)}</a>.</p>'
        + "".join(ops)
        + "</body></html>"
    )
