"""The reference point: the simplest fast pass-through proxy (raw ASGI + aiohttp, no features).

Run: python bench/reference_proxy.py UPSTREAM_URL PORT
"""

import sys

import aiohttp
import uvicorn

UPSTREAM = sys.argv[1].rstrip("/")
session: aiohttp.ClientSession | None = None


async def app(scope, receive, send):
    global session
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = {"content-type": "application/json", "authorization": "Bearer sk-bench"}
    async with session.post(UPSTREAM + scope["path"], data=body, headers=headers) as resp:
        data = await resp.read()
        status = resp.status
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[2]),
        http="httptools",
        loop="uvloop",
        access_log=False,
        log_level="warning",
        # the same server settings as `rainbridge serve`, so only the app differs
        proxy_headers=False,
        server_header=False,
        date_header=False,
    )
