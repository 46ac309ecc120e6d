"""A websockets echo server for sinew's interop test (sinew's WsStream dials it).

Prints "PORT <n>" once listening, then one line per connection when it ends:
"CLOSED rcvd=<code or None> sent=<code or None>". Binary messages are echoed as they come; the
message b"please-close" makes the server close the connection with code 1000. Messages over
1 MiB are refused by websockets (close code 1009). Runs until stdin closes.
"""

import asyncio
import sys

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

MAX_SIZE = 1 << 20


def code(frame):
    return None if frame is None else int(frame.code)


async def handler(ws):
    try:
        async for message in ws:
            if message == b"please-close":
                await ws.close(1000, "bye")
                break
            await ws.send(message)
    except ConnectionClosed:
        pass
    await ws.wait_closed()
    print(f"CLOSED rcvd={code(ws.protocol.close_rcvd)} sent={code(ws.protocol.close_sent)}",
          flush=True)


async def main():
    async with serve(handler, "127.0.0.1", 0, max_size=MAX_SIZE, ping_interval=None,
                     compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"PORT {port}", flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    asyncio.run(main())
