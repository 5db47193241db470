"""`mailer preview --serve`: a local page of campaigns and their sample mails.

Like a caught mail in Mailpit: subject, from, to and every header, the HTML in
a frame, the text part, and the .eml to download. The samples are rendered once
at start; the server only hands out what is already rendered. It listens on
loopback by default and changes nothing in the store.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from email import message_from_bytes
from email.policy import default
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

from mailer.app.preview import Sample

_STYLE = """<style>
body { font-family: system-ui, sans-serif; margin: 0; color: #222; }
header { background: #24553d; color: #fff; padding: 12px 20px; }
header a { color: #fff; } main { padding: 16px 20px; }
table { border-collapse: collapse; } td, th { padding: 6px 10px; text-align: left;
  border-bottom: 1px solid #e4e4e4; vertical-align: top; }
iframe { width: 100%; height: 720px; border: 1px solid #ccc; background: #fff; }
pre { white-space: pre-wrap; background: #f6f6f6; padding: 12px; }
.current { background: #fff6e0; }
</style>"""


def _page(title: str, body: str) -> bytes:
    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
            f"</title>{_STYLE}</head><body><header><a href=\"/\">mailer preview</a> · "
            f"{html.escape(title)}</header><main>{body}</main></body></html>").encode()


def index_page(campaigns: dict[str, list[Sample]], current: str) -> bytes:
    rows = "".join(
        f"<tr class=\"{'current' if slug == current else ''}\"><td><a href=\"/c/{slug}\">"
        f"{html.escape(slug)}</a></td><td>{len(samples)} samples</td>"
        f"<td>{html.escape(samples[0].subject) if samples else 'no customers in its segment'}"
        "</td></tr>" for slug, samples in campaigns.items())
    return _page("campaigns", f"<table><tr><th>campaign</th><th>samples</th>"
                              f"<th>first subject</th></tr>{rows}</table>")


def campaign_page(slug: str, samples: list[Sample]) -> bytes:
    rows = "".join(
        f"<tr><td><a href=\"/c/{slug}/{number}\">{html.escape(s.subject)}</a></td>"
        f"<td>{html.escape(s.customer)}</td><td>{html.escape(s.email)}</td>"
        f"<td>{html.escape(s.intro or '')}</td><td>{s.variant + 1}</td></tr>"
        for number, s in enumerate(samples, 1))
    return _page(slug, f"<h1>{html.escape(slug)}</h1><table><tr><th>subject</th>"
                       "<th>customer</th><th>email</th><th>intro</th><th>variant</th></tr>"
                       f"{rows}</table>")


def mail_page(slug: str, number: int, sample: Sample) -> bytes:
    message = message_from_bytes(sample.eml, policy=default)
    headers = "".join(f"<tr><th>{html.escape(name)}</th><td>{html.escape(str(value))}</td></tr>"
                      for name, value in message.items()
                      if not name.lower().startswith(("content-", "mime-")))
    return _page(f"{slug} #{number}", (
        f"<h1 id=\"subject\">{html.escape(sample.subject)}</h1>"
        f"<table id=\"headers\">{headers}</table>"
        f"<p><a href=\"/c/{slug}/{number}/eml\">download .eml</a></p>"
        f"<h2>HTML</h2><iframe id=\"html\" sandbox src=\"/c/{slug}/{number}/html\"></iframe>"
        f"<h2>Text</h2><pre id=\"text\">{html.escape(sample.text)}</pre>"))


def resolve(campaigns: dict[str, list[Sample]], current: str,
            parts: list[str]) -> tuple[str, bytes] | None:
    """The content type and body for a path, or None for "not found"."""
    page = "text/html; charset=utf-8"
    if not parts:
        return page, index_page(campaigns, current)
    if parts[0] != "c" or len(parts) < 2 or parts[1] not in campaigns:
        return None
    slug, samples = parts[1], campaigns[parts[1]]
    if len(parts) == 2:
        return page, campaign_page(slug, samples)
    if not parts[2].isdigit() or not 1 <= int(parts[2]) <= len(samples):
        return None
    number = int(parts[2])
    sample = samples[number - 1]
    kind = parts[3] if len(parts) > 3 else "page"
    if kind == "page":
        return page, mail_page(slug, number, sample)
    if kind == "html":
        return page, sample.html.encode()
    if kind == "eml":
        return "message/rfc822", sample.eml
    return None


def make_handler(campaigns: dict[str, list[Sample]],
                 current: str) -> type[BaseHTTPRequestHandler]:
    """A request handler serving the rendered samples."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = [unquote(p) for p in self.path.split("?", 1)[0].strip("/").split("/") if p]
            found = resolve(campaigns, current, parts)
            if found is None:
                self.send_error(HTTPStatus.NOT_FOUND)
                return
            content_type, body = found
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # one line per request would drown the terminal

    return Handler


def serve(campaigns: dict[str, list[Sample]], current: str, *, host: str, port: int,
          ready: Callable[[str, int], None]) -> None:
    """Serve until interrupted; READY is told the address once listening."""
    server = ThreadingHTTPServer((host, port), make_handler(campaigns, current))
    ready(host, server.server_address[1])
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
