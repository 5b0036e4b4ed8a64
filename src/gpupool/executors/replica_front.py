"""The front of an inference-service replica: ``python -I -m gpupool.executors.replica_front
--socket PATH --port N -- COMMAND...`` (or ``python -I .../replica_front.py ...``).

A replica is the user's HTTP server COMMAND, which must listen on ``127.0.0.1:$PORT``.
gpupool reaches it only through its gateway, over the Unix socket PATH, so that no other
workload can bypass the gateway on the replica's TCP port (the replica runs in a sandbox
with a network of its own: ``LaunchSpec.private_network``). The front:

* starts COMMAND as its child, with ``PORT=N`` added to the front's environment, in the
  front's process group (no new session: the shim above signals the group, COMMAND too);
* listens on PATH (a stale file there is removed first; mode 0600: the gateway connects as
  root or as the same account) and relays each connection, bytes both ways, to a fresh TCP
  connection to ``127.0.0.1:N`` (TCP_NODELAY) until both sides are done: an end of file on
  one side shuts down writing on the other, an error on either side closes both;
* when that TCP connection cannot be made (nothing listens yet), answers on the Unix
  connection ``502`` with ``x-gpupool-unreached: 1``, ``connection: close`` and the JSON
  ``{"detail": "the service is not listening on its port N yet"}``, reads and drops what
  the client sent until it closes (at most 16 MiB or 2 s: a client still sending its body
  sees the answer instead of a reset; nothing is forwarded anywhere), then closes: the
  gateway may take that 502 as "the request never reached the service";
* on SIGTERM or SIGINT: passes the signal on to COMMAND, stops accepting connections, and
  keeps relaying those in flight until COMMAND exits. A signal sent to the whole group (as
  the executor sends SIGTERM) thus reaches COMMAND twice, directly and passed on: COMMAND
  must take a second SIGTERM as the same request (uvicorn does; a second SIGINT makes it
  quit at once);
* exits when COMMAND exits, with its exit status (128+N when killed by signal N, as a shell
  reports it), once what it sent has reached its clients (at most 2 s more), removing PATH
  (if it is still this front's socket). A COMMAND that cannot be started: the front says
  why on stderr and exits 127 (not found) or 126 (not runnable); PATH it cannot listen on: 1.

It prints one line on stderr once it listens, and nothing per request. Standard library only
and no package imports, like the shim: it runs under ``-I`` with whatever interpreter the
replica's sandbox offers, as a module or as a file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import stat
import sys
from collections.abc import Sequence

PROG = "gpupool replica front"
CHUNK = 1 << 18
GRACE_S = 2.0
"""How long relays may go on flushing COMMAND's last bytes to their clients once it exited."""
DRAIN_S = 2.0
DRAIN_MAX = 16 << 20
"""After a 502: how long and how much of what the client sent is read (and dropped)."""


def unreached_response(port: int) -> bytes:
    """The complete HTTP/1.1 502 answered when nothing listens on ``port``."""
    body = json.dumps({"detail": f"the service is not listening on its port {port} yet"})
    data = body.encode()
    head = ("HTTP/1.1 502 Bad Gateway\r\n"
            "x-gpupool-unreached: 1\r\n"
            "content-type: application/json\r\n"
            f"content-length: {len(data)}\r\n"
            "connection: close\r\n\r\n")
    return head.encode() + data


def exit_status(returncode: int) -> int:
    """A child's return code as a shell reports it: 128+N for "killed by signal N"."""
    return 128 - returncode if returncode < 0 else returncode


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Copy ``reader`` into ``writer`` until end of file, then shut down writing; True if
    it ended so, False on an error (reset, closed under it)."""
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof() and not writer.is_closing():
            writer.write_eof()
        return True
    except (OSError, RuntimeError):
        return False


class Front:
    """The listening socket, the relays in flight and COMMAND."""

    def __init__(self, path: str, port: int, command: Sequence[str]) -> None:
        self.path = path
        self.port = port
        self.command = list(command)
        self.proc: asyncio.subprocess.Process | None = None
        self.server: asyncio.AbstractServer | None = None
        self.relays: set[asyncio.Task[None]] = set()
        self.downs: set[asyncio.Future[bool]] = set()  # the relays' copies towards clients
        self.pending: list[int] = []  # signals received before COMMAND started
        self.ident: tuple[int, int] | None = None

    def bind(self) -> socket.socket:
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISDIR(os.lstat(self.path).st_mode):
                raise IsADirectoryError(f"{self.path} is a directory")
            os.unlink(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # never connectable by others, not even for an instant
        try:
            sock.bind(self.path)
        except OSError:
            sock.close()
            raise
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        info = os.stat(self.path)
        self.ident = (info.st_dev, info.st_ino)
        return sock

    def unlink(self) -> None:
        """Remove PATH if it is still the socket this front made."""
        with contextlib.suppress(OSError):
            info = os.lstat(self.path)
            if (info.st_dev, info.st_ino) == self.ident:
                os.unlink(self.path)

    def on_signal(self, sig: int) -> None:
        if self.server is not None:
            self.server.close()  # stop accepting; connections in flight go on
        if self.proc is None:
            self.pending.append(sig)
        elif self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    async def relay(self, client_r: asyncio.StreamReader,
                    client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.relays.add(task)
        tcp_w: asyncio.StreamWriter | None = None
        try:
            try:
                tcp_r, tcp_w = await asyncio.open_connection("127.0.0.1", self.port,
                                                              limit=CHUNK)
            except OSError:
                await self.unreached(client_r, client_w)
                return
            sock = tcp_w.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pumps = [asyncio.ensure_future(_pump(client_r, tcp_w)),
                     asyncio.ensure_future(_pump(tcp_r, client_w))]
            self.downs.add(pumps[1])
            pumps[1].add_done_callback(self.downs.discard)
            try:
                for done in asyncio.as_completed(pumps):
                    if not await done:  # one side failed: the other cannot finish
                        client_w.transport.abort()
                        tcp_w.transport.abort()
            finally:
                for pump in pumps:
                    pump.cancel()
        finally:
            for writer in (client_w, tcp_w):
                if writer is not None:
                    writer.close()
            self.relays.discard(task)

    async def unreached(self, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            writer.write(unreached_response(self.port))
            await writer.drain()
            writer.write_eof()
            # read (and drop) what the client sent until it closes, so that closing never
            # resets the connection under a response it has not read yet
            got = 0
            async with asyncio.timeout(DRAIN_S):
                while got < DRAIN_MAX and (data := await reader.read(CHUNK)):
                    got += len(data)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.on_signal, sig)
        try:
            sock = self.bind()
        except OSError as exc:
            print(f"{PROG}: cannot listen on {self.path}: {exc}", file=sys.stderr, flush=True)
            return 1
        try:
            self.server = await asyncio.start_unix_server(self.relay, sock=sock, limit=CHUNK)
            env = {**os.environ, "PORT": str(self.port)}
            try:
                self.proc = await asyncio.create_subprocess_exec(*self.command, env=env)
            except OSError as exc:
                why = exc.strerror or str(exc)
                print(f"{PROG}: cannot start {self.command[0]!r}: {why}", file=sys.stderr,
                      flush=True)
                return 127 if isinstance(exc, FileNotFoundError) else 126
            for pending in self.pending:
                self.on_signal(pending)
            print(f"{PROG}: {self.path} -> 127.0.0.1:{self.port}", file=sys.stderr,
                  flush=True)
            code = await self.proc.wait()
            self.server.close()
            if self.downs:  # what COMMAND sent before it exited still reaches its clients
                await asyncio.wait(set(self.downs), timeout=GRACE_S)
            for task in set(self.relays):
                task.cancel()
            if self.relays:
                await asyncio.wait(set(self.relays), timeout=GRACE_S)
            return exit_status(code)
        finally:
            if self.server is not None:
                self.server.close()
            sock.close()
            self.unlink()


def parse(argv: Sequence[str]) -> argparse.Namespace:
    args = list(argv)
    split = args.index("--") if "--" in args else len(args)
    parser = argparse.ArgumentParser(
        prog="python -I -m gpupool.executors.replica_front",
        usage="%(prog)s --socket PATH --port N -- COMMAND...",
        description="Relay a Unix socket to the replica COMMAND listening on 127.0.0.1:$PORT.")
    parser.add_argument("--socket", required=True, help="the Unix socket to listen on")
    parser.add_argument("--port", required=True, type=int, help="COMMAND's TCP port ($PORT)")
    options = parser.parse_args(args[:split])
    options.command = args[split + 1:]
    if not options.command or not options.command[0]:
        parser.error("no COMMAND after --")
    if not 0 < options.port < 65536:
        parser.error(f"--port {options.port} is not a TCP port")
    return options


def main(argv: Sequence[str] | None = None) -> int:
    options = parse(sys.argv[1:] if argv is None else argv)
    front = Front(os.path.abspath(options.socket), options.port, options.command)
    return asyncio.run(front.run())


if __name__ == "__main__":
    sys.exit(main())
