"""A small XRPC client over httpx: queries, procedures and the error shape every AT Protocol service returns."""

from __future__ import annotations

from typing import Any

import httpx

from void_pipeline.lib.ingest.resilience import ResilientHttp

# What XrpcClient sends through: a plain httpx client, or one with rate limits and retries.
Requester = httpx.Client | ResilientHttp


class XrpcError(RuntimeError):
    """A non-2xx XRPC answer, with the service's error name and message when it sent JSON."""

    def __init__(self, method: str, status: int, error: str, message: str) -> None:
        super().__init__(f"{method} -> HTTP {status} {error}: {message}")
        self.method = method
        self.status = status
        self.error = error
        self.message = message


def raise_for_xrpc(method: str, response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        body = response.json()
        error, message = str(body.get("error", "")), str(body.get("message", ""))
    except ValueError:
        error, message = "", response.text[:200]
    raise XrpcError(method, response.status_code, error or response.reason_phrase, message)


class XrpcClient:
    """One service's XRPC endpoint (``{base_url}/xrpc/{nsid}``), with an optional bearer token."""

    def __init__(
        self, base_url: str, timeout: float = 60.0, client: Requester | None = None, token: str | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token  # sent with every call that names no token of its own
        self._owned: Requester | None = None
        self._client: Requester = client if client is not None else httpx.Client(timeout=timeout)
        if client is None:
            self._owned = self._client

    def query_raw(self, nsid: str, token: str | None = None, **params: Any) -> httpx.Response:
        """GET ``nsid``; the checked response (for binary answers such as a CAR file)."""
        response = self._client.request(
            "GET",
            f"{self.base_url}/xrpc/{nsid}",
            params={k: v for k, v in params.items() if v is not None},
            headers=auth_header(token or self._token),
        )
        raise_for_xrpc(nsid, response)
        return response

    def query(self, nsid: str, token: str | None = None, **params: Any) -> Any:
        response = self.query_raw(nsid, token, **params)
        try:
            return response.json()
        except ValueError:
            raise XrpcError(nsid, response.status_code, "InvalidResponse", "the body is not JSON") from None

    def procedure(self, nsid: str, body: dict[str, Any], token: str | None = None) -> Any:
        response = self._client.request(
            "POST", f"{self.base_url}/xrpc/{nsid}", json=body, headers=auth_header(token or self._token)
        )
        raise_for_xrpc(nsid, response)
        return response.json() if response.content else None

    def close(self) -> None:
        if self._owned is not None:
            self._owned.close()

    def __enter__(self) -> XrpcClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def auth_header(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}
