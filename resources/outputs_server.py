"""A read-only HTTP server for the plots under the local outputs root, so the Dagster UI shows
them inline (asset metadata holds a short image link to it instead of a base64 PNG), and for
the repo's operator docs at /docs/ (asset descriptions link to their stage page there).

Only files with an image suffix are served from the outputs root, by GET/HEAD, with no
directory listing: the root also holds tables and configs a browser has no business reading.
Under /docs/ the markdown pages are served as HTML (markdown-it-py, which Dagster already
installs through rich) with their screenshots. It binds to 127.0.0.1 by default. Python's
``http.server`` does the HTTP (stdlib, no extra dependency for a process that serves a few
files to one browser).

    .venv/bin/python -m resources.outputs_server --root data/outputs --port 3030
"""
from __future__ import annotations

import argparse
import functools
import io
import os
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

SERVED_SUFFIXES = (".png", ".jpg", ".jpeg", ".svg")
DOCS = Path(__file__).resolve().parents[1] / "docs"
DOCS_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title><style>
body {{font-family: sans-serif; max-width: 60rem; margin: 2rem auto; line-height: 1.45}}
code, pre {{background: #f4f4f4}} pre {{padding: .6rem; overflow: auto}} img {{max-width: 100%; border: 1px solid #ccc}}
table {{border-collapse: collapse}} td, th {{border: 1px solid #ccc; padding: .2rem .5rem}}
</style></head><body>{body}</body></html>"""


class PlotHandler(SimpleHTTPRequestHandler):
    """GET/HEAD of image files under the root; 404 for anything else (no listings)."""

    def send_head(self):
        rel = unquote(urlsplit(self.path).path).lstrip("/")
        root = Path(self.directory).resolve()
        if rel.startswith("docs/"):
            root, rel = DOCS, rel.removeprefix("docs/")
            if rel.endswith(".md"):
                return self._docs_page(rel)
        target = (root / rel).resolve()
        if root not in target.parents or target.suffix.lower() not in SERVED_SUFFIXES or not target.is_file():
            self.send_error(HTTPStatus.NOT_FOUND, f"no plot at /{rel} (only image files under the outputs root)")
            return None
        f = open(target, "rb")
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", self.guess_type(str(target)))
        self.send_header("Content-Length", str(os.fstat(f.fileno()).st_size))
        self.end_headers()
        return f

    def _docs_page(self, rel: str):
        page = (DOCS / rel).resolve()
        if DOCS not in page.parents or not page.is_file():
            self.send_error(HTTPStatus.NOT_FOUND, f"no page docs/{rel}")
            return None
        from markdown_it import MarkdownIt

        body = MarkdownIt("commonmark").enable("table").render(page.read_text(encoding="utf-8"))
        data = DOCS_PAGE.format(title=page.stem, body=body).encode()
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        return io.BytesIO(data)

    def end_headers(self):
        # The link carries the PNG's hash (?v=...), so a long cache life is safe.
        self.send_header("Cache-Control", "public, max-age=86400")
        super().end_headers()

    def log_message(self, format, *args):  # one line per request is noise in the UI's terminal
        pass


def make_server(root: str | os.PathLike, host: str = "127.0.0.1", port: int = 3030) -> ThreadingHTTPServer:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    return ThreadingHTTPServer((host, port), functools.partial(PlotHandler, directory=str(root)))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=os.path.join(os.environ.get("DARKHALO_DATA_DIR", "data"), "outputs"))
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=3030)
    args = ap.parse_args(argv)
    server = make_server(args.root, args.host, args.port)
    print(f"outputs server: plots under {Path(args.root).resolve()} at http://{args.host}:{server.server_port}",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
