# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Hub requests that end: every call to the Hub that `xgenmm convert` and `xgenmm publish` make waits a bounded time
and is tried a bounded number of times, and a failure says which request failed and why."""

import time
from collections.abc import Callable
from typing import TypeVar

from huggingface_hub import constants
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
from huggingface_hub.utils import get_session, httpx
from transformers.utils import logging


logger = logging.get_logger(__name__)

HUB_ATTEMPTS = 3
# What is worth another try: the network or the server failing, not the Hub refusing (404, 401, ...), and not a
# server that took the request and stayed silent for the whole timeout (asking it again would only wait as long).
TRANSIENT = (httpx.ConnectTimeout, httpx.NetworkError, httpx.RemoteProtocolError)

T = TypeVar("T")


class HubRequestError(OSError):
    """A request to the Hub that failed for good; the message names what was asked and the cause."""


def hub_timeout() -> httpx.Timeout:
    """Seconds to wait for the Hub, from `huggingface_hub`'s own settings: `HF_HUB_ETAG_TIMEOUT` to connect (10 by
    default), `HF_HUB_DOWNLOAD_TIMEOUT` for each read or write of a request (10; not a whole download or upload)."""
    return httpx.Timeout(float(constants.HF_HUB_DOWNLOAD_TIMEOUT), connect=float(constants.HF_HUB_ETAG_TIMEOUT))


def _bound_request_timeout(request: "httpx.Request") -> None:
    """A request hook: the connect, read and write timeouts a request left unset (`None`: wait forever) get
    `hub_timeout()`'s. `huggingface_hub` passes `timeout=None` to some API calls, which overrides a client default."""
    timeouts = dict(request.extensions.get("timeout") or {})
    bounded = hub_timeout().as_dict()
    for key in ("connect", "read", "write"):
        if timeouts.get(key) is None:
            timeouts[key] = bounded[key]
    request.extensions["timeout"] = timeouts


def bound_hub_session() -> None:
    """Makes every request of `huggingface_hub`'s shared HTTP client wait a bounded time (`_bound_request_timeout`);
    the requests that set their own timeouts keep them."""
    session = get_session()
    hooks = session.event_hooks
    if _bound_request_timeout not in hooks["request"]:
        session.event_hooks = {**hooks, "request": [*hooks["request"], _bound_request_timeout]}


def hub_failure_cause(error: BaseException) -> str:
    """What went wrong, in words: a timeout, a refused or unresolvable host, an HTTP status, offline mode."""
    if isinstance(error, httpx.TimeoutException):
        return f"no answer within {get_session().timeout.read or hub_timeout().read:g} s (timeout)"
    if isinstance(error, httpx.ConnectError):
        reason = str(error)
        if "Name or service not known" in reason or "getaddrinfo" in reason or "nodename nor servname" in reason:
            return f"the host name could not be resolved (DNS: {reason})"
        if "refused" in reason.lower():
            return f"the connection was refused ({reason})"
        return f"the connection failed ({reason or type(error).__name__})"
    if isinstance(error, HfHubHTTPError) and error.response is not None:
        return f"the Hub answered HTTP {error.response.status_code}: {' '.join(str(error).split())}"
    if isinstance(error, LocalEntryNotFoundError) or constants.HF_HUB_OFFLINE:
        return "the Hub cannot be reached (no network, or HF_HUB_OFFLINE=1) and the files are not in the local cache"
    return f"{type(error).__name__}: {error}"


def call_hub(what: str, request: Callable[[], T], attempts: int = HUB_ATTEMPTS) -> T:
    """`request()` with the session bounded (`bound_hub_session`), tried again after 1, 2, ... s when the network or
    the server fails (`TRANSIENT`, HTTP 5xx), at most `attempts` times; raises `HubRequestError` saying `what` failed
    and why. A server that never answers holds it for one read timeout (`hub_timeout`), not one per attempt."""
    bound_hub_session()
    for attempt in range(1, attempts + 1):
        try:
            return request()
        except Exception as error:  # noqa: BLE001 (classified below, re-raised as one clear error)
            # huggingface_hub wraps network failures (e.g. in LocalEntryNotFoundError): judge by the root cause.
            root = error.__cause__ if isinstance(error.__cause__, (httpx.TimeoutException, *TRANSIENT)) else error
            status = getattr(getattr(error, "response", None), "status_code", None)
            transient = isinstance(root, TRANSIENT) or (isinstance(status, int) and status >= 500)
            if not transient or attempt == attempts:
                tries = f" (after {attempt} attempts)" if attempt > 1 else ""
                raise HubRequestError(f"{what} failed: {hub_failure_cause(root)}{tries}") from error
            logger.warning(f"{what}: {hub_failure_cause(root)}; trying again ({attempt + 1} of {attempts})")
            time.sleep(attempt)
    raise AssertionError("unreachable")


__all__ = ["HUB_ATTEMPTS", "HubRequestError", "bound_hub_session", "call_hub", "hub_failure_cause", "hub_timeout"]
