"""Gunicorn settings for chatproxy: `gunicorn -c gunicorn.conf.py wsgi:app`.

Each setting comes from the environment (or `.env`), read and checked by
`chatproxy.config.load_server_settings`; see `.env.example` for the defaults.
Modelled on gunicorn's examples/example_config.py.
"""

import gc
import os
import shutil
import signal
import sys
import tempfile
import traceback

from dotenv import load_dotenv
from gunicorn.glogging import Logger, SafeAtoms

from chatproxy import load_configuration
from chatproxy.config import ConfigError, load_server_settings, require_upstream
from chatproxy.logsafe import escape_controls
from chatproxy.simulator_process import SimulatorProcess, start_simulator

load_dotenv(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".env"))
try:
    # Every start-up check (settings, personas, prices) here in the master: one
    # line naming what is wrong, instead of a traceback from every worker.
    _server = load_server_settings(os.environ)
    _app = load_configuration(os.environ).settings
    require_upstream(_app)
except ConfigError as error:
    sys.exit(f"chatproxy: {error}")

# Server socket: where to listen (host:port or unix:PATH; BIND).
bind = _server.bind
# Pending connections the kernel queues before accept().
backlog = 2048

# Worker processes (WORKERS): with an async worker, one per core is enough.
workers = _server.workers
# Worker class (WORKER_CLASS): gevent holds many slow streaming answers per
# worker; the sync worker would serve one answer per worker at a time. The
# gevent worker patches the standard library before it loads the app.
worker_class = _server.worker_class
# Simultaneous connections per async worker (WORKER_CONNECTIONS).
worker_connections = _server.worker_connections
# Seconds a silent worker may go before it is killed and restarted (TIMEOUT).
timeout = _server.timeout
# Seconds for answers in flight to finish after a restart or stop (GRACEFUL_TIMEOUT).
graceful_timeout = _server.graceful_timeout
# Seconds to hold an idle keep-alive connection (KEEPALIVE); nginx reuses them.
keepalive = _server.keepalive
# Long GET questions (`/callChatGPT?input=...`) need a long request line; 8190 is
# gunicorn's maximum; longer questions should be POSTed.
limit_request_line = 8190

# Logging: the error log (ERROR_LOG, "-" is stderr) at LOG_LEVEL.
errorlog = _server.error_log
loglevel = _server.log_level
# Access log (ACCESS_LOG: a path or "-"; off when unset). The format leaves out
# the query string: it carries questions (and later, access keys).
accesslog = _server.access_log
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms'


class _EscapedAtoms(SafeAtoms):
    """The access log's fields with control characters escaped (`chatproxy.logsafe`), then
    quotes (gunicorn's own): a `%0D%0A` in a path must not start a line of the client's."""

    def __init__(self, atoms):
        escaped = {k: escape_controls(v) if isinstance(v, str) else v for k, v in atoms.items()}
        super().__init__(escaped)


class _AccessLogger(Logger):
    """gunicorn's logger, its access log lines written with `_EscapedAtoms`."""

    atoms_wrapper_class = _EscapedAtoms


# The logger: gunicorn's own, but for the escaping above.
logger_class = _AccessLogger
# The process name shown by ps and top.
proc_name = "chatproxy"
# gunicorn's control socket is one fixed path per user, so a second instance on
# the same host would take over the first one's; chatproxy is managed by signals.
control_socket_disable = True

_simulator: SimulatorProcess | None = None


def on_starting(server):
    """Prepare the metrics folder, bring the database to the newest schema, start the simulator."""
    _prepare_metrics()
    _upgrade_database(server)
    _start_simulator(server)
    if _server.workers > 1 and not _app.redis_url and (_app.auth == "keys" or _app.ip_rpm):
        server.log.warning(
            "WORKERS=%d and no REDIS_URL: each worker counts rate limits and token quotas "
            "on its own, so a key may use up to %d times its limits; set REDIS_URL",
            _server.workers,
            _server.workers,
        )


def _upgrade_database(server):
    """Apply the migrations in migrations/ (Alembic) once, before any worker starts.

    In a child process: SQLAlchemy and Alembic would stay in the master's memory
    (about 40 MB) and be copied into every worker forked from it.
    """
    pid = os.fork()
    if pid == 0:
        os._exit(_upgrade_in_child())
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(1)  # the child said why


def _upgrade_in_child():
    """The child's part of `_upgrade_database`; returns its exit status."""
    try:
        from sqlalchemy.exc import SQLAlchemyError

        from chatproxy.store.schema import upgrade_database

        try:
            upgrade_database(os.environ)
        except SQLAlchemyError as error:
            # The driver's message names the host and database, never the password.
            # One line: psycopg's message continues with a hint on the next.
            reason = " ".join(str(getattr(error, "orig", None) or error).split())
            print(
                f"chatproxy: the database (DATABASE_URL) cannot be migrated: {reason}",
                file=sys.stderr,
            )
            return 1
        return 0
    except BaseException:
        traceback.print_exc()
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def _start_simulator(server):
    """Start the built-in simulator when chosen and no OPENAI_BASE_URL points at one."""
    global _simulator
    if _app.simulator_port is None:
        return
    try:
        _simulator = start_simulator(_app.simulator_port, _app.upstream_key)
    except ConfigError as error:
        sys.exit(f"chatproxy: {error}")
    # Workers are forked from this process and inherit the setting.
    os.environ["OPENAI_BASE_URL"] = _simulator.url
    server.log.warning(
        "CHATPROXY_UPSTREAM=simulator: answers come from %s", os.environ["OPENAI_BASE_URL"]
    )


def on_exit(server):
    """Stop the simulator started by on_starting; remove the metrics folder made there."""
    if _simulator is not None:
        _simulator.stop()
    if _metrics_folder_made:
        shutil.rmtree(_metrics_folder_made, ignore_errors=True)


def post_worker_init(worker):
    """Each new worker ignores SIGINT, then finishes what a dead worker left (in the background).

    A terminal's Ctrl-C sends SIGINT to the whole foreground process group, so
    each worker got it twice, from the terminal and from the master (which
    stops the workers itself, with SIGQUIT), and the second exit printed
    gevent's SystemExit traceback. Then answers a dead worker left streaming
    are marked interrupted and the spool is written (`chatproxy.recover`).

    Last, the garbage collector is told what lives as long as the worker
    (`_settle_collector`).
    """
    from chatproxy import recover

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    recover(worker.wsgi)
    _settle_collector()


# Allocations (of objects the collector tracks, net of those freed) between two collections
# of the youngest generation; Python's default is 700.
YOUNG_GENERATION_THRESHOLD = 10_000


def _settle_collector():
    """Freeze what the worker has made so far and collect its young objects less often.

    The ~90,000 objects of the loaded app (modules, routes, the ORM's
    metadata) live as long as the worker: frozen (`gc.freeze`), no collection
    walks them again, where each full one took 100-180 ms at 1,000 streams,
    holding every stream of the worker. The objects of a request mostly die
    young: at 700 a young collection ran every few requests and moved objects
    of answers still streaming to older generations, to be walked again; at
    10,000 the collector took a quarter of the time it did (bench/README.md).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, *gc.get_threshold()[1:])


def child_exit(server, worker):
    """A worker's gauges (streams in flight) stop counting when it exits (prometheus-client)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


_metrics_folder_made = None


def _prepare_metrics():
    """PROMETHEUS_MULTIPROC_DIR: where each worker writes its metrics, for /metrics to add up.

    Made here (a fresh temporary folder) unless set; a given one is emptied, as
    prometheus-client asks, so figures of an earlier run do not count. Workers
    inherit it and read it when they first import prometheus-client.
    """
    global _metrics_folder_made
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        os.makedirs(folder, exist_ok=True)
        for name in os.listdir(folder):
            if name.endswith(".db"):
                os.remove(os.path.join(folder, name))
        return
    _metrics_folder_made = tempfile.mkdtemp(prefix="chatproxy-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_folder_made
