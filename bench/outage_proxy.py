"""A TCP proxy a bench cuts: PostgreSQL or Redis taken away under load, then brought back.

The proxy runs as a process of its own, so that copying every query of the
gateway never waits on the load generator's interpreter:

    .venv/bin/python bench/outage_proxy.py HOST:PORT

It listens on 127.0.0.1 (a port the system picks), prints `listening on PORT`,
and forwards each connection to HOST:PORT. Commands come on stdin, one a line,
each answered on stdout once done: `cut` (stop listening and close every
connection through it, as a host that went away: connections end, new ones are
refused) and `restore` (listen again on the same port). It exits when stdin
closes. `OutageProxy` starts and drives it from a bench. tests/servers.py's
`TcpProxy` does the same in a test's process (bench/ does not import tests/).
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from pathlib import Path

from stream_bench import ROOT, has_uvloop, kill, read_line

CHUNK = 65536  # bytes read at a time
ANSWER_TIMEOUT = 10.0  # seconds for the proxy to start or carry out a command


class Proxy:
    """The proxy itself: `listen()` on `port` (0: the system picks, then kept), `cut()`."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self.server: asyncio.Server | None = None
        self.connections: set[asyncio.StreamWriter] = set()

    async def listen(self) -> None:
        """Accept connections on 127.0.0.1:`port` (the same port again after a cut)."""
        self.server = await asyncio.start_server(
            self.forward, "127.0.0.1", self.port, reuse_address=True, backlog=512
        )
        self.port = self.server.sockets[0].getsockname()[1]

    def cut(self) -> None:
        """Stop listening and close every connection through the proxy, both ends."""
        if self.server is not None:
            self.server.close()
            self.server = None
        for writer in self.connections:
            writer.transport.abort()
        self.connections.clear()

    async def forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Carry one connection to the target and back until either side closes it."""
        server = self.server
        try:
            target_reader, target_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        if server is None or server is not self.server:  # cut while connecting
            writer.transport.abort()
            target_writer.transport.abort()
            return
        ends = {writer, target_writer}
        self.connections |= ends
        try:
            await asyncio.gather(pipe(reader, target_writer), pipe(target_reader, writer))
        finally:
            self.connections -= ends


async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Copy `source` to `sink` until it ends or fails; then close `sink` (the other way ends)."""
    with contextlib.suppress(OSError):
        while data := await source.read(CHUNK):
            sink.write(data)
            await sink.drain()
    sink.close()  # what is still buffered is sent first


async def serve(target: tuple[str, int]) -> None:
    """Run the proxy to `target`, obeying `cut` and `restore` on stdin until it closes."""
    proxy = Proxy(target)
    await proxy.listen()
    print(f"listening on {proxy.port}", flush=True)
    loop = asyncio.get_running_loop()
    commands = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
    while line := await commands.readline():
        command = line.decode().strip()
        if command == "cut":
            proxy.cut()
            print("cut", flush=True)
        elif command == "restore":
            if proxy.server is None:
                await proxy.listen()
            print("restored", flush=True)
        else:
            print(f"unknown command {command!r}", flush=True)
    proxy.cut()
    await asyncio.sleep(0.1)  # the pipes see their ends closed and finish


class OutageProxy:
    """A proxy process to `target` (host, port) started from a bench; its log goes to `log`.

    `port` is where it listens; `cut()` and `restore()` return once it has done so.
    """

    def __init__(self, target: tuple[str, int], log: Path) -> None:
        command = [sys.executable, str(Path(__file__).resolve()), f"{target[0]}:{target[1]}"]
        with log.open("w") as errors:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
                start_new_session=True,  # Ctrl-C reaches only the bench, which stops it
            )
        line = self._answer()
        if not line.startswith("listening on "):
            self.stop()
            raise RuntimeError(f"the proxy to {target[0]}:{target[1]} did not start; see {log}")
        self.port = int(line.rsplit(" ", 1)[1])

    def cut(self) -> None:
        """Take the target away: connections through the proxy end, new ones are refused."""
        self._command("cut", "cut")

    def restore(self) -> None:
        """Let connections through again, on the same port."""
        self._command("restore", "restored")

    def stop(self) -> None:
        """End the proxy (stdin closed), killing it if it does not exit at once."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(OSError):
            self.process.stdin.close()  # type: ignore[union-attr]
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            kill(self.process)

    def _command(self, command: str, answer: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        if (line := self._answer()) != answer:
            raise RuntimeError(f"the proxy answered {line!r} to {command!r}")

    def _answer(self) -> str:
        assert self.process.stdout is not None
        return read_line(self.process.stdout, ANSWER_TIMEOUT).strip()


def main(argv: list[str] | None = None) -> int:
    """`outage_proxy.py HOST:PORT`: run the proxy until stdin closes."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or ":" not in args[0]:
        print("usage: outage_proxy.py HOST:PORT", file=sys.stderr)
        return 2
    host, _, port = args[0].rpartition(":")
    loop_factory = None
    if has_uvloop():
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve((host, int(port))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
