"""A small asynchronous Kubernetes API client on aiohttp (already a kopf dependency).

kopf's own client is not public, and the official `kubernetes` package would
add tens of megabytes and a thread pool for the handful of calls the operator
makes (create Job, merge-patch status, delete Job, post Event, list). This
client sends JSON, retries what is worth retrying — connection errors, 429 and
5xx — with backoff, re-reads the credentials on 401, and turns other answers
into `ApiError` with the server's message.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp
import kopf

log = logging.getLogger("gpubatch.operator")

RETRY_DELAYS_S: tuple[float, ...] = (0.1, 0.3, 1.0, 2.0, 4.0)
MERGE_PATCH = "application/merge-patch+json"


class ApiError(Exception):
    """A non-retryable answer (or a retryable one that kept coming)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        self.status, self.reason, self.message = status, reason, message
        super().__init__(f"{status} {reason}: {message}")

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def already_exists(self) -> bool:
        return self.status == 409


def connection_info(settings: kopf.OperatorSettings | None = None) -> kopf.ConnectionInfo:
    """The credentials of the pod's ServiceAccount, else of $KUBECONFIG / ~/.kube/config."""
    settings = settings or kopf.OperatorSettings()
    info = kopf.login_with_service_account(settings=settings)
    if info is not None:
        info = dataclasses.replace(info, server=in_cluster_server(info.server))
    info = info or kopf.login_with_kubeconfig(settings=settings)
    if info is None:
        raise kopf.LoginError("no credentials: neither a pod ServiceAccount token nor a kubeconfig was found")
    return info


def in_cluster_server(default: str) -> str:
    """The API server as the kubelet tells a pod: KUBERNETES_SERVICE_HOST and _PORT.

    kopf's minimal ServiceAccount login names it `kubernetes.default.svc`, which
    needs cluster DNS; the official clients use these variables, which work
    without it (the Service's IP is in the API server's certificate).
    """
    host = os.environ.get("KUBERNETES_SERVICE_HOST", "").strip()
    if not host:
        return default
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443").strip() or "443"
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


class KubeClient:
    def __init__(
        self,
        login: Callable[[], kopf.ConnectionInfo] = connection_info,
        *,
        timeout_s: float = 30,
        retry_delays: Sequence[float] = RETRY_DELAYS_S,
        connections: int = 32,
    ) -> None:
        self._login = login
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._retry_delays = tuple(retry_delays)
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        self._server = ""

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            info = self._login()
            self._server = info.server.rstrip("/")
            headers = {"Accept": "application/json", "User-Agent": "gpubatch-operator", **info.as_http_headers()}
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._connections, ssl=info.as_ssl_context()),
                headers=headers,
                timeout=self._timeout,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self, method: str, path: str, *, body: Any = None, params: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        relogged = False
        for attempt in range(len(self._retry_delays) + 1):
            session = self._open()
            try:
                async with session.request(
                    method, self._server + path, json=body, params=params,
                    headers={"Content-Type": content_type} if body is not None else None,
                ) as response:
                    if response.status < 300:
                        return await response.json(content_type=None) or {}
                    payload = await _payload(response)
                    error = ApiError(response.status, payload.get("reason", response.reason or ""),
                                     payload.get("message", ""))
                    if response.status == 401 and not relogged:
                        relogged = True
                        await self.close()
                        continue
                    if response.status != 429 and response.status < 500:
                        raise error
            except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as err:
                error = ApiError(0, "Unreachable", str(err) or type(err).__name__)
            if attempt < len(self._retry_delays):
                log.debug("%s %s: %s; retrying", method, path, error)
                await asyncio.sleep(self._retry_delays[attempt])
        raise error

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self.request("POST", path, body=body)

    async def get(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        return await self.request("GET", path, params=params)

    async def merge_patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self.request("PATCH", path, body=body, content_type=MERGE_PATCH)

    async def delete(self, path: str, *, propagation: str = "Background") -> dict[str, Any]:
        return await self.request("DELETE", path, body={"propagationPolicy": propagation})

    async def list_all(self, path: str, *, label_selector: str = "", limit: int = 500) -> list[dict[str, Any]]:
        """Every item of a (possibly long) list, fetched in pages."""
        items: list[dict[str, Any]] = []
        params = {"limit": str(limit)}
        if label_selector:
            params["labelSelector"] = label_selector
        while True:
            page = await self.get(path, params)
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items
            params["continue"] = token


async def _payload(response: aiohttp.ClientResponse) -> dict[str, Any]:
    try:
        payload = await response.json(content_type=None)
    except (ValueError, aiohttp.ContentTypeError):
        return {"message": (await response.text())[:500]}
    return payload if isinstance(payload, dict) else {}


def namespaced(group_version: str, plural: str, namespace: str, name: str = "", sub: str = "") -> str:
    """The URL path of a namespaced collection, object or subresource."""
    root = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    path = f"{root}/namespaces/{namespace}/{plural}"
    if name:
        path += f"/{name}"
    if sub:
        path += f"/{sub}"
    return path


def cluster_path(group_version: str, plural: str, namespace: str | None = None) -> str:
    """A list path: one namespace, or all of them when namespace is None."""
    root = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    return f"{root}/namespaces/{namespace}/{plural}" if namespace else f"{root}/{plural}"
