"""What every local stub of a cloud API runs on: an HTTP server on 127.0.0.1, in a daemon thread."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Type


class LoopbackServer:
    """Serves ``handler`` on a free port (or ``port``) of 127.0.0.1 at ``endpoint``; :meth:`close` stops it."""

    def serve(self, handler: Type[BaseHTTPRequestHandler], port: int = 0) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
