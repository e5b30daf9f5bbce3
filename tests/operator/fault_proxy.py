"""A fault-injecting API server for the operator: answers chosen requests with
errors, forwards everything else to the real test cluster.

Only the faults are mocked (5xx, 429, 409 on create, 410 Gone on a watch, as an
HTTP answer or as an ERROR event in the stream); all other behaviour is the
real API server's, so the test checks the operator's recovery, not a model.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from dataclasses import dataclass
from typing import Any

import aiohttp
import kopf
from aiohttp import web

from tests.operator.operator_process import free_port


@dataclass
class Fault:
    method: str
    path: str  # regular expression, matched against the path
    status: int
    times: int = 1
    watch: bool | None = None  # only watch requests (True), only non-watch (False), or any
    in_stream: bool = False  # answer 200 with one ERROR event carrying `status`
    hits: int = 0

    def matches(self, request: web.Request) -> bool:
        is_watch = request.query.get("watch") in ("true", "1")
        return (self.hits < self.times and request.method == self.method
                and re.search(self.path, request.path) is not None
                and (self.watch is None or self.watch == is_watch))


class FaultProxy:
    def __init__(self, upstream: kopf.ConnectionInfo, faults: list[Fault]) -> None:
        self.upstream, self.faults = upstream, faults
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kubeconfig(self) -> str:
        return json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "faults",
            "clusters": [{"name": "faults", "cluster": {"server": self.url}}],
            "users": [{"name": "faults", "user": {}}],
            "contexts": [{"name": "faults", "context": {"cluster": "faults", "user": "faults"}}],
        })

    def start(self) -> FaultProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fault proxy did not start")
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._setup())
        self._ready.set()
        self._loop.run_forever()

    async def _setup(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self.upstream.as_ssl_context()),
            headers=self.upstream.as_http_headers(),
        )
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        for fault in self.faults:
            if fault.matches(request):
                fault.hits += 1
                return await self._inject(request, fault)
        return await self._forward(request)

    async def _inject(self, request: web.Request, fault: Fault) -> web.StreamResponse:
        status: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": fault.status,
                                  "reason": {409: "AlreadyExists", 410: "Expired", 429: "TooManyRequests"}.get(
                                      fault.status, "InternalError"),
                                  "message": f"injected fault {fault.status}"}
        if fault.in_stream:
            response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
            await response.prepare(request)
            await response.write(json.dumps({"type": "ERROR", "object": status}).encode() + b"\n")
            await response.write_eof()
            return response
        return web.json_response(status, status=fault.status)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "accept")}
        async with self._session.request(request.method, self.upstream.server.rstrip("/") + request.path_qs,
                                         data=body or None, headers=headers,
                                         timeout=aiohttp.ClientTimeout(total=None)) as upstream:
            response = web.StreamResponse(status=upstream.status, headers={
                "Content-Type": upstream.headers.get("Content-Type", "application/json")})
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response
