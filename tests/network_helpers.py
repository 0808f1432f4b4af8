"""Local servers for the tests of network failures: one that accepts connections and never answers, and one that
answers every request with one HTTP status; both count what they were sent."""

import http.server
import socket
import threading


class SilentServer:
    """Accepts connections on 127.0.0.1 and never answers; `connections` counts the connections made."""

    def __init__(self):
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(16)
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.accepted = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def connections(self) -> int:
        return len(self.accepted)

    def _accept(self):
        while True:
            try:
                self.accepted.append(self.socket.accept()[0])
            except OSError:
                return

    def close(self):
        self.socket.close()
        for connection in self.accepted:
            connection.close()


class StatusServer(http.server.ThreadingHTTPServer):
    """Answers every GET on 127.0.0.1 with `status` and an empty body; `requests` lists the paths asked for."""

    def __init__(self, status: int):
        self.status, self.requests = status, []
        super().__init__(("127.0.0.1", 0), self._Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()

    class _Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the http.server name)
            self.server.requests.append(self.path)
            self.send_response(self.server.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    def close(self):
        self.shutdown()
        self.server_close()
