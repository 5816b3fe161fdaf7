"""A thin, synchronous etcd v3 client for the election, over etcd's JSON gateway.

etcd3gw speaks to one endpoint; this adapter keeps one client per configured endpoint
and moves to the next when one does not answer. Calls block (requests): the election
service runs them in a thread, one at a time, each bounded by ``request_timeout``.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import etcd3gw
from etcd3gw import exceptions
from etcd3gw.client import Etcd3Client

from vipcast.config import EtcdConfig

API_PATH = "/v3/"  # etcd 3.4+; no discovery request at the first call
# etcd's answers to a token it no longer knows (simple tokens live in the members' memory)
TOKEN_REFUSED = ("invalid auth token", "user name is empty")
WATCH_IDLE = 10.0  # s a watch stream may stay silent before it is opened anew
WATCH_RETRY = 0.5  # s before the next endpoint is tried after a watch failed


class StoreError(Exception):
    """etcd did not answer, or refused: the request had no effect we can count on."""


@dataclass(frozen=True)
class Holder:
    """Who holds the election key: its value, its lease, its creation revision (the term)."""

    value: str
    lease: int
    term: int


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(text: str) -> str:
    return base64.b64decode(text).decode(errors="replace")


class EtcdStore:
    def __init__(self, cfg: EtcdConfig) -> None:
        self.cfg = cfg
        self.clients = [self._client(url) for url in cfg.endpoints]
        self.current = 0
        self.key = _b64(cfg.election)

    def _client(self, url: str) -> Etcd3Client:
        scheme, _, rest = url.partition("://")
        host, _, port = rest.rpartition(":")
        client = etcd3gw.client(
            host=host.strip("[]"),
            port=int(port),
            protocol=scheme,
            ca_cert=self.cfg.ca_file,
            cert_key=self.cfg.key_file,
            cert_cert=self.cfg.cert_file,
            timeout=self.cfg.timeout,
            api_path=API_PATH,
        )
        # the configured TLS files only: requests would let REQUESTS_CA_BUNDLE override
        # ca_file, and take proxies and .netrc credentials from the environment
        client.session.trust_env = False
        return client

    @property
    def endpoint(self) -> str:
        return self.cfg.endpoints[self.current]

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        client = self.clients[self.current]
        try:
            self._authenticate(client)
            return client.post(client.get_url(path), json=body)
        except (exceptions.Etcd3Exception, ValueError, OSError) as e:
            self.current = (self.current + 1) % len(self.clients)  # the next one, next time
            detail = getattr(e, "detail_text", None) or str(e) or type(e).__name__
            if any(text in detail for text in TOKEN_REFUSED):
                client.session.headers.pop("Authorization", None)  # a new token next time
            raise StoreError(f"{client.base_url}{path}: {detail}") from None

    def _authenticate(self, client: Etcd3Client) -> None:
        """etcd's user/password (etcd3gw has none): the gateway's /v3/auth/authenticate
        on the client's own session, its token in the Authorization header until etcd
        refuses it (a member restarted, the token's TTL passed)."""
        if self.cfg.user is None or "Authorization" in client.session.headers:
            return
        answer = client.post(
            client.get_url("/auth/authenticate"),
            json={"name": self.cfg.user, "password": self._password()},
        )
        client.session.headers["Authorization"] = answer["token"]

    def _password(self) -> str:
        if self.cfg.password is not None:
            return self.cfg.password
        assert self.cfg.password_file is not None
        lines = Path(self.cfg.password_file).read_text().splitlines()  # read anew: rotation
        return lines[0] if lines else ""

    # --- the election's requests ------------------------------------------------------

    def grant(self, ttl: int) -> tuple[int, int]:
        """A new lease: (id, granted TTL)."""
        answer = self._post("/lease/grant", {"TTL": ttl})
        if answer.get("error"):
            raise StoreError(f"lease grant refused: {answer['error']}")
        return int(answer["ID"]), int(answer["TTL"])

    def renew(self, lease: int) -> int:
        """One keep-alive: the lease's new TTL, or -1 if it had already expired."""
        answer = self._post("/lease/keepalive", {"ID": lease})
        return int(answer.get("result", {}).get("TTL", -1))

    def campaign(self, value: str, lease: int) -> Holder | None:
        """Create the key on ``lease`` if nobody holds it; either way, who holds it now."""
        txn = {
            "compare": [{"key": self.key, "result": "EQUAL", "target": "CREATE"}],
            "success": [{"request_put": {"key": self.key, "value": _b64(value), "lease": lease}}],
            "failure": [{"request_range": {"key": self.key}}],
        }
        answer = self._post("/kv/txn", txn)
        if answer.get("succeeded"):
            return Holder(value, lease, int(answer["header"]["revision"]))
        ranged = answer["responses"][0]["response_range"]
        return self._holder(ranged)

    def observe(self) -> Holder | None:
        return self._holder(self._post("/kv/range", {"key": self.key}))

    def revoke(self, lease: int) -> None:
        """Give the lease up; its key goes with it. An unknown lease is not an error."""
        try:
            self._post("/lease/revoke", {"ID": lease})
        except StoreError as e:
            if "lease not found" not in str(e):
                raise

    @staticmethod
    def _holder(ranged: dict[str, Any]) -> Holder | None:
        kvs = ranged.get("kvs") or []
        if not kvs:
            return None
        kv = kvs[0]
        return Holder(
            _unb64(kv.get("value", "")), int(kv.get("lease", 0)), int(kv["create_revision"])
        )


class KeyWatch:
    """A watch on the election key (etcd's /v3/watch stream), run in a thread of its own.

    Only a hint: every event, and every new stream (the time between two streams is not
    watched), calls ``changed``; the election then reads the key through its ordinary
    requests, so nothing learned here bypasses the lease's rules. A stream that cannot
    be opened calls ``failed`` and the next endpoint is tried after ``WATCH_RETRY``; a
    stream silent for ``WATCH_IDLE`` (an endpoint cut off without a reset) is opened anew.
    The watch has its own clients (a requests session is not shared between threads).
    """

    def __init__(
        self, cfg: EtcdConfig, changed: Callable[[], None], failed: Callable[[str], None]
    ) -> None:
        self.store = EtcdStore(cfg)
        self.changed = changed
        self.failed = failed
        self.stopping = threading.Event()
        self.streams = 0  # watches created (counted in the thread, read by status)
        self.events = 0  # changes of the key it reported
        self._stream: Any = None  # the response being read, for stop()
        self._thread = threading.Thread(target=self._run, name="etcd-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """End the thread: its blocking read is woken by shutting the socket down."""
        self.stopping.set()
        stream = self._stream
        try:
            fd = stream.raw._fp.fp.raw._sock.fileno()  # urllib3's socket under the response
            socket.socket(fileno=os.dup(fd)).shutdown(socket.SHUT_RDWR)
        except (AttributeError, OSError, ValueError):
            pass  # not reading now, or already closed: the thread ends at its next check

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                self._watch_once()
            except (StoreError, exceptions.Etcd3Exception, ValueError, OSError) as e:
                if self.stopping.is_set():
                    return
                client = self.store.clients[self.store.current]
                client.session.headers.pop("Authorization", None)
                self.store.current = (self.store.current + 1) % len(self.store.clients)
                self.failed(f"{client.base_url}: {e or type(e).__name__}")
                self.stopping.wait(WATCH_RETRY)

    def _watch_once(self) -> None:
        """One stream, until it ends; raises what kept it from being opened."""
        client = self.store.clients[self.store.current]
        self.store._authenticate(client)
        body = {"create_request": {"key": self.store.key}}
        timeout = (self.store.cfg.timeout, WATCH_IDLE)
        with client.session.post(
            client.get_url("/watch"), json=body, stream=True, timeout=timeout
        ) as stream:
            self._stream = stream
            if stream.status_code != 200:
                raise StoreError(f"watch refused: HTTP {stream.status_code}")
            self._read(stream)

    def _read(self, stream: Any) -> None:
        created = False
        try:
            for line in stream.iter_lines():
                if self.stopping.is_set():
                    return
                if not line.strip():
                    continue
                chunk = json.loads(line)
                result = chunk.get("result") or {}
                if "error" in chunk or result.get("canceled"):
                    raise StoreError(f"watch ended: {chunk}")
                if result.get("created"):
                    created = True
                    self.streams += 1
                self.events += len(result.get("events") or ())
                self.changed()
        except OSError:
            if not created:
                raise
            return  # an idle stream timed out, or the member went: open the next one now
        if not created:
            raise StoreError("the watch stream ended before the watch was created")
