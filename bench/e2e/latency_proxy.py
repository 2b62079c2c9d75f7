#!/usr/bin/env python3
"""A TCP proxy that delays every chunk by a fixed time in each direction: a database
"across a network" for benchmarks on one machine (the round trips a sink makes then
cost what they cost against a server in another rack or zone).

    python3 bench/e2e/latency_proxy.py --listen 127.0.0.1:15432 --to 127.0.0.1:5432 --delay-ms 1

Order is kept per direction; throughput is not limited (chunks are delayed, not paced).
"""
import argparse
import asyncio


async def pipe(reader, writer, delay):
    loop = asyncio.get_running_loop()
    queue = asyncio.Queue()

    async def pump():
        while True:
            at, data = await queue.get()
            if data is None:
                break
            wait = at - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        writer.close()

    task = asyncio.create_task(pump())
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            queue.put_nowait((loop.time() + delay, data))
    finally:
        queue.put_nowait((0, None))
        await task


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True)
    ap.add_argument("--to", required=True)
    ap.add_argument("--delay-ms", type=float, default=1.0)
    a = ap.parse_args()
    delay = a.delay_ms / 1000
    to_host, to_port = a.to.rsplit(":", 1)

    async def handle(client_r, client_w):
        try:
            server_r, server_w = await asyncio.open_connection(to_host, int(to_port))
        except OSError:
            client_w.close()
            return
        await asyncio.gather(
            pipe(client_r, server_w, delay), pipe(server_r, client_w, delay),
            return_exceptions=True,
        )

    host, port = a.listen.rsplit(":", 1)
    server = await asyncio.start_server(handle, host, int(port))
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
