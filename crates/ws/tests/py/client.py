"""A websockets client for sinew's interop test (a sinew WsStream listener serves it).

Usage: client.py ECHO_URL CLOSE_URL
- ECHO_URL echoes bytes (sinew re-frames them: the echo of one message may come back in
  several). Checked: chunks of 1 byte to 1 MiB come back intact; a ping gets its pong; a close
  from this side with 1000 is answered with 1000; a message over sinew's 1 MiB limit gets
  the connection closed with 1009; a text message gets it closed with 1003.
- CLOSE_URL echoes 5 bytes, then sinew closes: this side sees a clean close with code 1000.
Prints "OK <check>" or "FAIL <check>: <why>" per check; exits 1 if any failed.
"""

import asyncio
import os
import sys

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

TIMEOUT = 10
SIZES = [1, 2, 1000, 65536, 1 << 20]
failures = 0


def report(check, ok, why=""):
    global failures
    if ok:
        print(f"OK {check}", flush=True)
    else:
        failures += 1
        print(f"FAIL {check}: {why}", flush=True)


def opts():
    return dict(max_size=4 << 20, ping_interval=None, compression=None, open_timeout=TIMEOUT,
                close_timeout=TIMEOUT)


async def receive_bytes(ws, n):
    got = bytearray()
    while len(got) < n:
        message = await asyncio.wait_for(ws.recv(), TIMEOUT)
        if not isinstance(message, bytes):
            raise AssertionError(f"a text message: {message!r}")
        got += message
    return bytes(got)


async def echo_checks(url):
    async with connect(url, **opts()) as ws:
        for size in SIZES:
            data = os.urandom(size)
            await ws.send(data)
            back = await receive_bytes(ws, size)
            report(f"echo {size} bytes", back == data, f"got {len(back)} bytes, different")
        pong = await ws.ping(b"sinew?")
        try:
            await asyncio.wait_for(pong, TIMEOUT)
            report("ping answered", True)
        except asyncio.TimeoutError:
            report("ping answered", False, "no pong")
        await ws.close(1000, "done")
        rcvd = ws.protocol.close_rcvd
        report("close from the client", rcvd is not None and rcvd.code == 1000,
                f"received {rcvd}")


async def close_checks(url):
    async with connect(url, **opts()) as ws:
        await ws.send(b"close")
        back = await receive_bytes(ws, 5)
        try:
            extra = await asyncio.wait_for(ws.recv(), TIMEOUT)
            report("close from sinew", False, f"a message {extra!r} instead of the close")
        except ConnectionClosedOK as e:
            report("close from sinew", back == b"close" and e.rcvd is not None
                   and e.rcvd.code == 1000, f"received {e.rcvd}")
        except ConnectionClosed as e:
            report("close from sinew", False, f"not a clean close: {e!r}")


async def refused(url, message, expected_code, check):
    async with connect(url, **opts()) as ws:
        await ws.send(message)
        try:
            extra = await asyncio.wait_for(ws.recv(), TIMEOUT)
            report(check, False, f"a message of {len(extra)} bytes instead of the close")
        except ConnectionClosed as e:
            report(check, e.rcvd is not None and e.rcvd.code == expected_code,
                   f"received {e.rcvd}")


async def main(echo_url, close_url):
    await echo_checks(echo_url)
    await close_checks(close_url)
    await refused(echo_url, os.urandom((1 << 20) + 1), 1009, "oversize message closed with 1009")
    await refused(echo_url, "text", 1003, "text message closed with 1003")


if __name__ == "__main__":
    try:
        asyncio.run(asyncio.wait_for(main(sys.argv[1], sys.argv[2]), 60))
    except Exception as e:  # any unexpected failure is a failed check
        report("run", False, repr(e))
    sys.exit(1 if failures else 0)
