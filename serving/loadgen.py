"""A closed-loop HTTP load generator: N clients, each sends its next request when the
previous answer arrives, for a fixed time (the serving benchmark's client).

A minimal asyncio HTTP/1.1 keep-alive client (pre-encoded requests, the status line and
Content-Length parsed, the body read and dropped): on a 2-core machine the client shares
the CPUs with the server, and a heavyweight client would measure itself. Its own CPU use is
reported with the results.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

REQUEST_TIMEOUT_S = 10.0


class HttpConnection:
    """One keep-alive HTTP/1.1 connection that POSTs pre-encoded requests."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def send(self, raw_request: bytes) -> tuple[int, bytes]:
        """(status, body) of one request/response exchange."""
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        self.writer.write(raw_request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length, chunked = 0, False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if not chunked:
            return status, await self.reader.readexactly(length)
        body = b""
        while size := int((await self.reader.readuntil(b"\r\n")).strip(), 16):
            body += (await self.reader.readexactly(size + 2))[:-2]
        await self.reader.readuntil(b"\r\n")
        return status, body


def encode_post(host: str, port: int, path: str, payload: dict[str, Any]) -> bytes:
    body = json.dumps(payload).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@dataclass
class Samples:
    """Per-request (start time, latency s, ok) of one load level."""

    starts: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    ok: list[bool] = field(default_factory=list)


async def _client(
    host: str, port: int, requests: list[bytes], stop_at: float, samples: Samples
) -> None:
    conn = HttpConnection(host, port)
    i = random.randrange(len(requests))
    while (start := time.perf_counter()) < stop_at:
        i = (i + 1) % len(requests)
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                status, _ = await conn.send(requests[i])
            ok = status == 200
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
            conn.close()  # reconnect on the next request
            ok = False
        samples.starts.append(start)
        samples.latencies.append(time.perf_counter() - start)
        samples.ok.append(ok)
    conn.close()


async def closed_loop(
    host: str, port: int, requests: list[bytes], concurrency: int, warmup_s: float, seconds: float
) -> dict[str, Any]:
    """Run `concurrency` closed-loop clients; statistics of the requests started after
    the warm-up and finished within the measured window."""
    samples = Samples()
    t0 = time.perf_counter()
    begin, end = t0 + warmup_s, t0 + warmup_s + seconds
    clients = [
        asyncio.create_task(_client(host, port, requests, end, samples)) for _ in range(concurrency)
    ]
    await asyncio.sleep(max(0.0, begin - time.perf_counter()))
    cpu0 = time.process_time()
    await asyncio.gather(*clients)
    client_cpu = (time.process_time() - cpu0) / seconds
    starts, lat, ok = (np.asarray(x) for x in (samples.starts, samples.latencies, samples.ok))
    window = (starts >= begin) & (starts + lat <= end)
    lat_ms, ok = lat[window] * 1000, ok[window]
    good = lat_ms[ok] if ok.any() else np.full(1, np.nan)
    return {
        "concurrency": concurrency,
        "seconds": seconds,
        "requests": int(window.sum()),
        "rps": round(float(ok.sum()) / seconds, 1),
        "p50_ms": round(float(np.percentile(good, 50)), 2),
        "p95_ms": round(float(np.percentile(good, 95)), 2),
        "p99_ms": round(float(np.percentile(good, 99)), 2),
        "errors": int((~ok).sum()),
        "client_cpu_cores": round(client_cpu, 2),
    }


async def send_each(host: str, port: int, requests: list[bytes], concurrency: int) -> int:
    """Send every request once over `concurrency` connections; the number of non-200s."""
    pending = iter(requests)
    failures = 0

    async def worker() -> None:
        nonlocal failures
        conn = HttpConnection(host, port)
        for raw in pending:  # one shared iterator: each request goes out once
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    status, _ = await conn.send(raw)
                failures += status != 200
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
                conn.close()
                failures += 1
        conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return failures
