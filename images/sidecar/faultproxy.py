#!/usr/bin/env python3
"""A userspace latency proxy for kernels without sch_netem.

The sidecar runs it inside a target's network namespace; iptables REDIRECTs the chosen TCP
connections to it (nat PREROUTING for traffic into the target, nat OUTPUT for traffic the
target sends to a dependency). It reads each redirected connection's original destination
(SO_ORIGINAL_DST), connects there with its own sockets marked so the redirect rule skips
them, and delays every chunk in each direction by ``delay ± jitter`` milliseconds, keeping
order within a connection as a real slow link would.

    lab-faultproxy --listen 15001 --delay-ms 200 --jitter-ms 50 --mark 0x1ab --seed 7
"""

import argparse
import asyncio
import random
import socket
import struct
import sys
import time

SO_ORIGINAL_DST = 80


def original_destination(sock: socket.socket) -> tuple[str, int]:
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port, packed = struct.unpack_from("!2xH4s", raw)
    return socket.inet_ntoa(packed), port


async def pipe(reader, writer, delay_s, jitter_s, rng):
    """Forward chunks, each released ``delay`` after it arrived, in arrival order."""
    queue: asyncio.Queue = asyncio.Queue()

    async def release():
        while True:
            due, data = await queue.get()
            pause = due - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
            if data is None:
                break
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    sender = asyncio.ensure_future(release())
    last_due = 0.0
    try:
        while True:
            data = await reader.read(65536)
            extra = max(0.0, delay_s + rng.uniform(-jitter_s, jitter_s))
            # Never reorder within one connection: a chunk leaves no earlier than the last.
            last_due = max(last_due, time.monotonic() + extra)
            await queue.put((last_due, data or None))
            if not data:
                break
        await sender
    except (ConnectionError, asyncio.CancelledError):
        sender.cancel()
    finally:
        writer.close()


async def main(args):
    rng = random.Random(args.seed)

    async def handle(client_reader, client_writer):
        sock = client_writer.get_extra_info("socket")
        try:
            host, port = original_destination(sock)
            upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            upstream.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, args.mark)
            upstream.setblocking(False)
            await asyncio.get_running_loop().sock_connect(upstream, (host, port))
            server_reader, server_writer = await asyncio.open_connection(sock=upstream)
        except OSError as exc:
            print(f"faultproxy: cannot reach original destination: {exc}", file=sys.stderr,
                  flush=True)
            client_writer.close()
            return
        delay, jitter = args.delay_ms / 1000, args.jitter_ms / 1000
        await asyncio.gather(
            pipe(client_reader, server_writer, delay, jitter, rng),
            pipe(server_reader, client_writer, delay, jitter, rng),
            return_exceptions=True,
        )

    server = await asyncio.start_server(handle, "0.0.0.0", args.listen, reuse_address=True)
    print(f"faultproxy: listening on {args.listen}, delay {args.delay_ms}±{args.jitter_ms} ms",
          flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, required=True)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--mark", type=lambda v: int(v, 0), default=0x1AB)
    parser.add_argument("--seed", type=int, default=0)
    try:
        asyncio.run(main(parser.parse_args()))
    except KeyboardInterrupt:
        pass
