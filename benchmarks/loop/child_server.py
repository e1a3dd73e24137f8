"""Child of http_callgrind.py: a real HTTP server on 127.0.0.1 in a fresh
process, its loop in the main thread.

    python child_server.py SERVER VARIANT SCALE
    SERVER: aiohttp (aiohttp.web on asyncio) | uvicorn (uvicorn with its
        h11 protocol on uvloop, a raw ASGI app)
    VARIANT: single | realistic | plain | watched-10ms | watched-1ms (as in
        child_chain.py: realistic = one unrelated timer, one idle thread,
        loopwatch imported; plain = the same without the import; watched
        = realistic + the native monitor, its resolution and threshold
        times SCALE)

Prints "port N" once it accepts connections. GET / answers "ok"; GET
/__start and /__stop open and close the measured window
(lw_bench.CallgrindWindow: under callgrind, the loop thread's instructions
between them); GET /__quit stops the server.
"""

from __future__ import annotations

import asyncio
import socket
import sys

import lw_bench


def serve_aiohttp(loop: asyncio.AbstractEventLoop, sock: socket.socket,
                  window: lw_bench.CallgrindWindow) -> None:
    from aiohttp import web

    quit_ = asyncio.Event()

    async def index(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def start(request: web.Request) -> web.Response:
        window.start()
        return web.Response(text="started")

    async def stop(request: web.Request) -> web.Response:
        window.stop()
        return web.Response(text="stopped")

    async def quit_server(request: web.Request) -> web.Response:
        quit_.set()
        return web.Response(text="bye")

    app = web.Application()
    app.add_routes([web.get("/", index), web.get("/__start", start), web.get("/__stop", stop),
                    web.get("/__quit", quit_server)])

    async def main() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.SockSite(runner, sock)
        await site.start()
        print(f"port {sock.getsockname()[1]}", flush=True)
        await quit_.wait()
        await runner.cleanup()

    loop.run_until_complete(main())


def serve_uvicorn(loop: asyncio.AbstractEventLoop, sock: socket.socket,
                  window: lw_bench.CallgrindWindow) -> None:
    import uvicorn

    server: uvicorn.Server

    async def app(scope, receive, send):  # a raw ASGI app: the server's cost, not a framework's
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/__start":
            window.start()
        body = b"ok"
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
        if path == "/__stop":
            window.stop()
        elif path == "/__quit":
            server.should_exit = True

    config = uvicorn.Config(app, http="h11", lifespan="off", log_level="warning",
                            access_log=False, timeout_keep_alive=60)
    server = uvicorn.Server(config)

    async def main() -> None:
        async def announce() -> None:
            while not server.started:
                await asyncio.sleep(0.01)
            print(f"port {sock.getsockname()[1]}", flush=True)

        announcer = asyncio.ensure_future(announce())
        await server.serve(sockets=[sock])
        announcer.cancel()

    loop.run_until_complete(main())


def main() -> None:
    server_kind, variant, scale = sys.argv[1], sys.argv[2], float(sys.argv[3])
    loop = lw_bench.new_loop("uvloop" if server_kind == "uvicorn" else "asyncio")
    asyncio.set_event_loop(loop)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    if variant != "single":
        lw_bench.realistic(loop, import_loopwatch=variant != "plain")
    if variant.startswith("watched-"):
        resolution = float(variant.split("-")[1][:-2]) / 1000
        lw_bench.start_monitor(loop, resolution, scale)  # starts with the loop's first run
    window = lw_bench.CallgrindWindow()
    if server_kind == "aiohttp":
        serve_aiohttp(loop, sock, window)
    else:
        serve_uvicorn(loop, sock, window)
    loop.close()


if __name__ == "__main__":
    main()
