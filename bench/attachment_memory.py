"""Memory with attachments: concurrent questions each carrying a large image, workers' peak RSS.

Starts the simulator and gunicorn (this checkout, `gunicorn.conf.py`), sends
--requests questions at once to `POST /callChatGPT`, each with a PNG of
--megabytes MB as a JSON data URL (the page's way), and prints the statuses,
the time they took and each worker's resident memory before and at its peak
(VmRSS and VmHWM of /proc/PID/status):

    python bench/attachment_memory.py [--requests 100] [--megabytes 5] [--workers 2]
        [--database URL] [--stream]

The image is a real PNG header over incompressible bytes, so every copy of it
(the body, its decoding, the data URL sent upstream, the row stored) costs
its full size. A figure, not a test; Linux only (/proc).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import struct
import sys
import tempfile
import time
import zlib
from collections import Counter
from pathlib import Path

import httpx2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stream_bench import begin_run, kill, start_gunicorn, start_simulator, worker_pids


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100, help="questions sent at once")
    parser.add_argument("--megabytes", type=float, default=5.0, help="each image's size in MB")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--database", help="DATABASE_URL (default: a fresh SQLite file)")
    parser.add_argument("--stream", action="store_true", help="ask for SSE answers")
    return parser.parse_args(argv)


def large_png(size: int) -> bytes:
    """A PNG of 1024 × 1024 px whose IDAT holds `size` bytes of random data (not decodable as
    pixels, but every check reads only the header, as chatproxy does)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", 1024, 1024, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", os.urandom(size))


def memory_kb(pid: int, field: str) -> int:
    """A field of /proc/PID/status in kB (VmRSS: now, VmHWM: the peak so far)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


async def ask_all(url: str, count: int, image_url: str, stream: bool) -> list[int]:
    limits = httpx2.Limits(max_connections=count)
    async with httpx2.AsyncClient(timeout=300, limits=limits) as client:

        async def one(i: int) -> int:
            body = {
                "input": f"What is in this picture? ({i})",
                "images": [image_url],
                "format": "json",
                "stream": stream,
            }
            try:
                response = await client.post(f"{url}/callChatGPT", json=body)
                await response.aread()
                return response.status_code
            except httpx2.HTTPError:
                return 0

        return list(await asyncio.gather(*(one(i) for i in range(count))))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    begin_run("chatproxy: questions with large images at once", "bench/attachment_memory.py", argv)
    logs = Path(tempfile.mkdtemp(prefix="chatproxy-attach-"))
    image = large_png(int(args.megabytes * 1024 * 1024))
    image_url = "data:image/png;base64," + base64.b64encode(image).decode()
    settings = {
        "DATABASE_URL": args.database or f"sqlite:///{logs / 'attach.db'}",
        "CHATPROXY_AUTH": "open",
        "CHATPROXY_MAX_IMAGE_BYTES": str(len(image) + 1024),
        "CHATPROXY_MAX_UPLOAD_BYTES": str(len(image_url) + 64 * 1024),
    }
    simulator, simulator_url = start_simulator(logs)
    gunicorn = None
    try:
        gunicorn, url = start_gunicorn(simulator_url, args.workers, logs, settings)
        workers = worker_pids(gunicorn.pid)
        before = {pid: memory_kb(pid, "VmRSS:") for pid in workers}
        started = time.monotonic()
        statuses = asyncio.run(ask_all(url, args.requests, image_url, args.stream))
        took = time.monotonic() - started
        print(f"logs: {logs}")
        print(
            f"{args.requests} questions at once, each with a {len(image) / 1e6:.1f} MB PNG "
            f"({len(image_url) / 1e6:.1f} MB as a data URL), {args.workers} workers"
        )
        print(f"statuses: {dict(sorted(Counter(statuses).items()))} in {took:.1f} s")
        for pid in workers:
            peak = memory_kb(pid, "VmHWM:")
            print(
                f"worker {pid}: RSS before {before[pid] / 1024:.0f} MB, peak {peak / 1024:.0f} MB"
            )
        total = sum(memory_kb(pid, "VmHWM:") for pid in workers)
        print(f"sum of the workers' peaks: {total / 1024:.0f} MB")
        return 0
    finally:
        if gunicorn is not None:
            kill(gunicorn)
        kill(simulator)


if __name__ == "__main__":
    sys.exit(main())
