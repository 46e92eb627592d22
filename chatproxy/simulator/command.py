"""`python -m chatproxy.simulator`: serve the simulator from the command line until stopped.

python -m chatproxy.simulator --port 8001 [--chunk-delay 0.05] [--uvloop]
    [--models deepseek-chat,deepseek-reasoner] [--no-stream-options]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal

from chatproxy.simulator.server import DEFAULT_API_KEY, FAULTS, Simulator


def _parser() -> argparse.ArgumentParser:
    description = "An OpenAI-compatible fake upstream server."
    parser = argparse.ArgumentParser(prog="python -m chatproxy.simulator", description=description)
    add = parser.add_argument
    add("--host", default="127.0.0.1")
    add("--port", type=int, default=8001)
    add("--api-key", help=f"key clients send (env SIMULATOR_API_KEY, else {DEFAULT_API_KEY})")
    add("--latency", type=float, default=0.0, help="seconds before the first byte")
    add("--chunks", type=int, help="content chunks per streamed answer (default: 1-3 words)")
    add("--chunk-delay", type=float, default=0.0, help="seconds before each content chunk")
    add("--fault", choices=FAULTS, help="fault to inject")
    add("--fault-rate", type=float, default=1.0, help="fraction of completions that get it")
    add("--uvloop", action="store_true", help="run on uvloop (installed separately)")
    add("--no-record", dest="record", action="store_false", help="keep no received requests")
    add("--exit-with-parent", action="store_true", help="stop when the parent process is gone")
    add(
        "--models",
        help="comma-separated models it serves, others 404 model_not_found, as a provider's "
        "server (env SIMULATOR_MODELS; default: OpenAI's)",
    )
    add(
        "--no-stream-options",
        dest="stream_options",
        action="store_false",
        default=None,
        help="answer 400 to a body with stream_options, as some servers do "
        "(env SIMULATOR_STREAM_OPTIONS=0)",
    )
    return parser


def _models(value: str | None) -> list[str] | None:
    """`--models` as a list; None (OpenAI's models) when not given or empty."""
    names = [name.strip() for name in (value or "").split(",") if name.strip()]
    return names or None


async def _watch_parent(parent: int, stopping: asyncio.Event) -> None:
    """Set `stopping` once the parent dies (we are re-parented), so no orphan keeps the port."""
    while os.getppid() == parent:
        await asyncio.sleep(1.0)
    stopping.set()


def main(argv: list[str] | None = None) -> int:
    """`python -m chatproxy.simulator`: print the base URL, serve until SIGINT or SIGTERM."""
    args = _parser().parse_args(argv)
    simulator = Simulator(
        api_key=args.api_key or os.environ.get("SIMULATOR_API_KEY") or DEFAULT_API_KEY,
        latency=args.latency,
        chunks=args.chunks,
        chunk_delay=args.chunk_delay,
        fault=args.fault,
        fault_rate=args.fault_rate,
        record=args.record,
        models=_models(args.models or os.environ.get("SIMULATOR_MODELS")),
        stream_options=(
            args.stream_options
            if args.stream_options is not None
            else os.environ.get("SIMULATOR_STREAM_OPTIONS", "1") != "0"
        ),
    )

    async def serve() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stopping.set)
        try:
            url = await simulator.start(args.host, args.port)
        except OSError as exc:
            raise SystemExit(
                f"simulator: cannot listen on {args.host}:{args.port}: {exc.strerror}"
            ) from None
        print(f"simulator listening on {url}", flush=True)
        watch = None
        if args.exit_with_parent:
            watch = asyncio.create_task(_watch_parent(os.getppid(), stopping))
        await stopping.wait()
        if watch is not None:
            watch.cancel()
        await simulator.close()

    loop_factory = None
    if args.uvloop:
        import uvloop  # optional, for benchmarks: imported only when asked for

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve())
    return 0
