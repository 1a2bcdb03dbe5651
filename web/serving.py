"""Running the app under a production WSGI server.

gunicorn (POSIX) through its ``BaseApplication`` API: the master process never
imports torch or loads the app (``preload_app=False``); each worker calls
:func:`web.create_app` with ``warm=True`` and so loads its own model and index
once, then serves many requests on a few threads (``gthread`` worker: a
worker's threads share one model). waitress (one process, threads) where
gunicorn cannot run (Windows), or when asked.

Forwarded headers are judged by the app alone (``trusted_proxies``, Werkzeug's
``ProxyFix``, see web/app.py): gunicorn is told to trust no peer for them, so whether
a request counts as HTTPS (``Secure`` cookies) never depends on gunicorn's default
of trusting 127.0.0.1.

Workers die with the master: each calls :func:`search.lifetime.die_with_parent` right
after the fork (the master forks from its main thread), so a master killed by SIGKILL or
the OOM killer takes its workers (and their decoder processes) with it at once, instead of
leaving them serving until gunicorn's own parent check notices.

With several gunicorn workers, Prometheus metrics need a shared folder
(``PROMETHEUS_MULTIPROC_DIR``); it is created here before any worker starts,
unless the environment already names one, and removed when the server exits. A
master killed by SIGKILL cannot remove it: its folder carries the master's pid, and
the next server started removes the folders whose master is gone.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile

from search.config import Settings
from search.lifetime import alive

log = logging.getLogger(__name__)

# Access log without the query string: search texts are the users' business.
ACCESS_LOG_FORMAT = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms'
DEFAULT_THREADS = 4
WORKER_TIMEOUT = 120  # seconds; a worker loads its model before it answers heartbeats
PROM_PREFIX = "clipsearch-prometheus-"  # + the master's pid + "-" + random


def _sweep_metric_folders() -> None:
    """Remove metric folders that killed masters left (their pid no longer runs)."""
    root = tempfile.gettempdir()
    for name in os.listdir(root):
        pid = name[len(PROM_PREFIX):].split("-", 1)[0]
        if not name.startswith(PROM_PREFIX) or not pid.isdigit() or alive([int(pid)]):
            continue
        path = os.path.join(root, name)
        try:
            mine = os.stat(path).st_uid == os.getuid()
        except OSError:  # gone meanwhile
            continue
        if mine:
            log.info("removing %s, left by a server that was killed", path)
            shutil.rmtree(path, ignore_errors=True)


def bind_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def choose_server(requested: str = "auto") -> str:
    if requested != "auto":
        return requested
    if os.name == "nt":
        return "waitress"
    try:
        import gunicorn  # noqa: F401
    except ImportError:
        return "waitress"
    return "gunicorn"


def serve(settings: Settings, *, threads: int = DEFAULT_THREADS, server: str = "auto",
          access_log: bool = True) -> None:
    """Serve until stopped (SIGINT/SIGTERM). Blocks.

    Raises BadRequest before anything starts for settings the app refuses (a short
    API key): one clear message instead of workers that fail to boot."""
    from .auth import check_key_strength

    check_key_strength(settings.api_keys)
    kind = choose_server(server)
    log.info("serving on http://%s with %s (%d worker(s) x %d threads)",
             bind_address(settings.host, settings.port), kind, settings.web_workers, threads)
    if kind == "gunicorn":
        _serve_gunicorn(settings, threads=threads, access_log=access_log)
    else:
        _serve_waitress(settings, threads=threads)


def _serve_waitress(settings: Settings, *, threads: int) -> None:
    import waitress

    from . import create_app

    if settings.web_workers > 1:
        log.warning("waitress runs one process; --workers %d ignored (use --threads)",
                    settings.web_workers)
    app = create_app(settings, warm=True)
    # waitress would strip X-Forwarded-* before the app's ProxyFix could judge them.
    waitress.serve(app, host=settings.host, port=settings.port, threads=threads,
                   ident="clipsearch", clear_untrusted_proxy_headers=False)


def _serve_gunicorn(settings: Settings, *, threads: int, access_log: bool) -> None:
    from gunicorn.app.base import BaseApplication

    prom_dir = None
    if settings.web_workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        _sweep_metric_folders()
        prom_dir = tempfile.mkdtemp(prefix=f"{PROM_PREFIX}{os.getpid()}-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = prom_dir  # read by workers' prometheus_client

    def post_fork(server, worker):
        from search.lifetime import die_with_parent
        die_with_parent(server.pid)

    def child_exit(server, worker):
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess
            multiprocess.mark_process_dead(worker.pid)

    def on_exit(server):
        if prom_dir:
            shutil.rmtree(prom_dir, ignore_errors=True)

    options = {
        "bind": [bind_address(settings.host, settings.port)],
        "workers": max(1, settings.web_workers),
        "worker_class": "gthread",
        "threads": max(1, threads),
        "preload_app": False,
        "timeout": WORKER_TIMEOUT,
        "graceful_timeout": 30,
        "keepalive": 5,
        "proc_name": "clipsearch",
        "accesslog": "-" if access_log else None,
        "access_log_format": ACCESS_LOG_FORMAT,
        "errorlog": "-",
        "loglevel": "info",
        "post_fork": post_fork,
        "child_exit": child_exit,
        "on_exit": on_exit,
        # X-Forwarded-* belong to the app's ProxyFix (CLIPSEARCH_TRUSTED_PROXIES), never to
        # gunicorn's own trust of 127.0.0.1.
        "forwarded_allow_ips": "",
        "secure_scheme_headers": {},
        # gunicorn >= 25.1 opens an admin socket in $HOME by default: not for us.
        "control_socket_disable": True,
    }

    class ClipsearchGunicorn(BaseApplication):
        def load_config(self):
            for key, value in options.items():
                if key in self.cfg.settings:  # older gunicorns lack some settings
                    self.cfg.set(key, value)

        def load(self):
            from . import create_app
            return create_app(settings, warm=True)

    ClipsearchGunicorn().run()
