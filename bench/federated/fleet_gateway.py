"""The SuperLink's public address: an HTTPS reverse proxy that forwards the Fleet API only.

Flower 1.41 serves its Fleet, Control and Runtime APIs on one HTTPS port and
authenticates no Control API caller (account login needs Flower Enterprise). A
party that reaches that port could register its own SuperNode key, list the
nodes and submit runs. So the SuperLink listens on 127.0.0.1 only (operator's
side: ``flwr`` CLI, the ServerApp, SuperExec), and this gateway is what the sites
reach: it terminates TLS with the SuperLink's certificate and forwards
``POST /v1/fleet/*`` to the SuperLink; everything else (``/v1/control/*``,
``/v1/runtime/*``, ``/docs``) is answered 404 without reaching Flower. Any
reverse proxy with the same rule does the same job (docs/DEPLOYMENT.md shows
nginx's); SuperNode authentication still happens in the SuperLink, on the
forwarded request's signed headers.

    python -m bench.federated.fleet_gateway --listen 0.0.0.0:9092 --superlink 127.0.0.1:9093 \
        --ssl-certfile superlink/server.pem --ssl-keyfile superlink/server.key \
        --ssl-ca-certfile for-sites/ca.crt
"""

from __future__ import annotations

import argparse
import re
import ssl

# Fleet API calls are POST /v1/fleet/<name>; nothing with dots, escapes or further segments.
FLEET_PATH = re.compile(r"/v1/fleet/[a-z][a-z0-9-]*")
# Headers that describe one hop, not the request (RFC 9110, 7.6.1), and those httpx recomputes.
HOP_HEADERS = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "content-encoding",
}


def is_forwarded(method: str, path: str) -> bool:
    """Whether the gateway passes a request on: Fleet API calls (POST /v1/fleet/...) only."""
    return method == "POST" and FLEET_PATH.fullmatch(path) is not None


def create_gateway(superlink: str, ca_certfile: str, timeout: float = 600.0):
    """The gateway's ASGI app, forwarding Fleet calls to ``superlink`` (host:port, HTTPS)."""
    import httpx
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route

    upstream = httpx.AsyncClient(
        base_url=f"https://{superlink}",
        verify=ssl.create_default_context(cafile=ca_certfile),
        timeout=timeout,
    )

    async def forward(request: Request) -> Response:
        path = request.url.path
        if not is_forwarded(request.method, path):
            return PlainTextResponse(
                "404: this address serves the Flower Fleet API only\n", status_code=404
            )
        headers = [
            (name, value) for name, value in request.headers.items() if name not in HOP_HEADERS
        ]
        try:
            answer = await upstream.post(path, content=await request.body(), headers=headers)
        except httpx.TransportError as error:
            return PlainTextResponse(f"502: SuperLink unreachable ({error})\n", status_code=502)
        return Response(
            answer.content,
            status_code=answer.status_code,
            headers={k: v for k, v in answer.headers.items() if k.lower() not in HOP_HEADERS},
        )

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
    app = Starlette(routes=[Route("/{path:path}", forward, methods=methods)])
    app.state.upstream = upstream
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.federated.fleet_gateway",
        description="Exposes a SuperLink's Fleet API (and nothing else) on a public address.",
    )
    parser.add_argument("--listen", required=True, help="host:port the sites connect to")
    parser.add_argument(
        "--superlink", required=True, help="the SuperLink's --host:--port (e.g. 127.0.0.1:9093)"
    )
    parser.add_argument("--ssl-certfile", required=True)
    parser.add_argument("--ssl-keyfile", required=True)
    parser.add_argument(
        "--ssl-ca-certfile", required=True, help="CA that signed the SuperLink's certificate"
    )
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        parser.exit(2, f"bench: error: --listen {args.listen!r} is not host:port\n")
    import uvicorn

    uvicorn.run(
        create_gateway(args.superlink, args.ssl_ca_certfile),
        host=host.strip("[]"),
        port=int(port),
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
        log_level="warning",
        access_log=False,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
