"""``llm-supervisorctl status``'s fast path: the rendered table printed as is, the exit code
from the daemon's header, anything else left to ``llm_supervisor.control.cli``."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path

from llm_supervisor.control.ctl import fast_status


def serve(path: Path, answers: list[bytes]) -> list[bytes]:
    """A Unix socket answering each connection with the next canned response."""
    seen: list[bytes] = []
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen()

    def loop() -> None:
        for answer in answers:
            conn, _ = server.accept()
            seen.append(conn.recv(65536))
            conn.sendall(answer)
            conn.close()
        server.close()
    threading.Thread(target=loop, daemon=True).start()
    return seen


def http(body: bytes, content_type: str, unhealthy: str | None = "0", status: str = "200 OK"
         ) -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
    if unhealthy is not None:
        head += f"X-Unhealthy-Engines: {unhealthy}\r\n"
    return head.encode() + b"\r\n" + body


def test_the_table_is_printed_as_rendered_and_the_exit_code_comes_from_the_header(
        tmp_path, capfdbinary):
    sock = tmp_path / "s"
    seen = serve(sock, [http(b"ENGINE STATE\nmain healthy\n", "text/plain; charset=utf-8"),
                        http(b'{\n  "name": "main"\n}\n', "application/json", "1")])
    assert fast_status(["--socket", str(sock), "status"]) == 0
    assert fast_status(["--socket", str(sock), "status", "main", "--json"]) == 3
    out = capfdbinary.readouterr().out
    assert out == b'ENGINE STATE\nmain healthy\n{\n  "name": "main"\n}\n'
    assert seen[0].startswith(b"GET /v1/status?format=text HTTP/1.1\r\n")
    assert seen[1].startswith(b"GET /v1/engines/main?format=pretty HTTP/1.1\r\n")


def test_errors_and_older_daemons_go_through_the_full_client(tmp_path):
    sock = tmp_path / "s"
    serve(sock, [http(b'{"error": "no engine named \'x\'"}', "application/json", None,
                      "404 Not Found"),
                 http(b'{"api": 1, "engines": []}', "application/json", None)])
    assert fast_status(["--socket", str(sock), "status", "x"]) is None
    assert fast_status(["--socket", str(sock), "status"]) is None  # no rendering: cli's turn
    assert fast_status(["tiers"]) is None and fast_status(["status", "-v"]) is None
    assert fast_status(["--socket", str(tmp_path / "absent"), "status"]) == 4


def test_the_status_path_imports_neither_json_nor_argparse():
    """Beyond what the interpreter itself loaded (an editable install's finder loads ``re``)."""
    code = ("import sys; before = set(sys.modules)\n"
            "sys.argv = ['x', '--socket', '/nonexistent', 'status']\n"
            "from llm_supervisor.control import ctl\n"
            "try:\n    ctl.main()\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('json', 'argparse', 're', 'enum', 'llm_supervisor.control.cli')"
            " if m in sys.modules and m not in before))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "[]", done


async def test_a_followed_stream_reads_lines_over_the_full_socket_module(tmp_path):
    """The status path uses the interpreter's own _socket; ``events -f`` reads lines, through
    the socket module's file object, from the same connection."""
    import asyncio

    from llm_supervisor.control import client

    path = str(tmp_path / "s.sock")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b'HTTP/1.0 200 OK\r\n\r\n{"seq": 1}\n\n{"seq": 2}\n')
        await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(handle, path)
    try:
        got = await asyncio.to_thread(lambda: list(client.stream_lines(path, "/v1/events",
                                                                       timeout=5)))
    finally:
        server.close()
    assert got == [{"seq": 1}, {"seq": 2}]
