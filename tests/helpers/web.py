"""A local HTTP server for download tests: Range requests and transfers cut short."""

import contextlib
import functools
import http.server
import io
import threading


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with HTTP Range support (206, and 416 past the end), as dataset hosts do.

    `cut` (a list shared with the test) makes the next responses announce the full length but
    close the connection after that many bytes: a transfer cut mid-way.
    """

    cut: list = []

    def log_message(self, *args):
        pass

    def send_head(self):
        rng = self.headers.get("Range")
        path = self.translate_path(self.path)
        try:
            data = open(path, "rb").read()
        except OSError:
            self.send_error(404)
            return None
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        if start >= len(data) and rng:
            self.send_error(416)
            return None
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        if self.cut:
            self.close_connection = True
            return io.BytesIO(data[start:start + self.cut.pop(0)])
        return io.BytesIO(data[start:])


@contextlib.contextmanager
def serve(root, cut=None):
    """An HTTP server on 127.0.0.1 for the files under `root`; yields its base URL."""
    handler = type("Handler", (RangeHandler,), {"cut": cut if cut is not None else []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
