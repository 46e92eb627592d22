"""chatproxy behind nginx, configured by the sample site in deploy/nginx/, as a real program."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from chatproxy.simulator import Simulator
from tests.conftest import need
from tests.servers import (
    ROOT,
    Gunicorn,
    Launcher,
    accepts_connections,
    free_port,
    upstream_settings,
)
from tests.test_ask import read_events

pytestmark = pytest.mark.e2e

SITE = ROOT / "deploy" / "nginx" / "chatproxy.conf"


def site_for_test(gunicorn_address: str, port: int, folder: Path) -> str:
    """The sample site with its addresses and paths pointed at this test's servers."""
    site = SITE.read_text()
    replacements = {
        "listen 80;": f"listen 127.0.0.1:{port};",
        "server 127.0.0.1:8000;": f"server {gunicorn_address};",
        "/srv/chatproxy/static/": f"{ROOT}/static/",
        "/var/log/nginx/chatproxy.access.log": f"{folder}/access.log",
    }
    for sample, ours in replacements.items():
        assert sample in site, f"deploy/nginx/chatproxy.conf no longer has {sample!r}"
        site = site.replace(sample, ours)
    return site


@pytest.fixture(scope="module")
def upstream_gunicorn(
    tmp_path_factory: pytest.TempPathFactory, simulator: Simulator, database_url: str
) -> Iterator[Gunicorn]:
    launcher = Launcher(tmp_path_factory.mktemp("gunicorn-behind-nginx"), database_url)
    try:
        settings = upstream_settings(simulator, WORKERS="1", CHATPROXY_TRUSTED_PROXIES="1")
        yield launcher("behind-nginx", **settings)
    finally:
        launcher.stop_all()


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory, upstream_gunicorn: Gunicorn) -> Iterator[str]:
    """nginx on a free loopback port in front of gunicorn; yields its base URL."""
    binary = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if binary is None:
        need("nginx", "apt-get install nginx-light")
    folder = tmp_path_factory.mktemp("nginx")
    port = free_port()
    (folder / "site.conf").write_text(
        site_for_test(upstream_gunicorn.url.removeprefix("http://"), port, folder)
    )
    (folder / "nginx.conf").write_text(
        f"""daemon off;
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log;
events {{ worker_connections 256; }}
http {{
    include /etc/nginx/mime.types;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    include {folder}/site.conf;
}}
"""
    )
    process = subprocess.Popen(
        [
            binary,
            "-p",
            str(folder),
            "-c",
            str(folder / "nginx.conf"),
            "-e",
            str(folder / "error.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while not accepts_connections(port):
            if process.poll() is not None or time.monotonic() > deadline:
                errors = process.stderr.read().decode() if process.stderr else ""
                pytest.fail(f"nginx did not start on port {port}: {errors}")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_page_and_static_files_load_through_nginx(nginx):
    page = httpx2.get(nginx + "/")
    script = httpx2.get(nginx + "/static/js/app.js")

    assert page.status_code == 200
    assert "<title>" in page.text
    assert script.status_code == 200
    # nginx itself served the file: gunicorn would have added chatproxy's headers.
    assert "content-security-policy" not in script.headers
    assert script.headers["server"].startswith("nginx")


def test_answer_streams_piece_by_piece_through_nginx(nginx):
    with httpx2.stream(
        "GET",
        nginx + "/callChatGPT",
        params={"input": "tell me [[sim: chunks=8 delay=0.15]]", "stream": "1"},
        timeout=30,
    ) as response:
        events = read_events(response)

    deltas = [at for name, _, at in events if name == "delta"]
    assert len(deltas) == 8
    # Buffered by nginx, the pieces would arrive together at the end.
    assert deltas[-1] - deltas[0] > 0.6
    assert events[-1][0] == "done"


def test_questions_stay_out_of_the_access_log(nginx, tmp_path_factory):
    response = httpx2.get(nginx + "/callChatGPT", params={"input": "my private question 4711"})
    assert response.status_code == 200

    logs = list(Path(tmp_path_factory.getbasetemp()).glob("nginx*/access.log"))
    text = "".join(log.read_text() for log in logs)
    assert "GET /callChatGPT HTTP/1.1" in text
    assert "4711" not in text


def test_oversized_body_is_413_in_openai_shape(nginx):
    response = httpx2.post(nginx + "/callChatGPT", data={"input": "x" * (2 * 1024 * 1024)})

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_the_client_address_is_the_clients_not_nginxs(nginx, upstream_gunicorn):
    """Behind nginx (CHATPROXY_TRUSTED_PROXIES=1) chatproxy sees the client's address.

    It is what the per-address rate limit counts by (`request.remote_addr`), and
    what the request log says. The client connects from 127.0.0.2, nginx from
    127.0.0.1; a forged X-Forwarded-For from the client does not change it.
    """
    request_id = uuid.uuid4().hex
    transport = httpx2.HTTPTransport(local_address="127.0.0.2")
    with httpx2.Client(transport=transport, timeout=10) as client:
        response = client.get(
            f"{nginx}/healthz",
            headers={"X-Request-Id": request_id, "X-Forwarded-For": "203.0.113.9"},
        )
    assert response.status_code == 200
    deadline = time.monotonic() + 10
    while request_id not in upstream_gunicorn.log():
        assert time.monotonic() < deadline, upstream_gunicorn.log()[-2000:]
        time.sleep(0.05)
    line = next(line for line in upstream_gunicorn.log().splitlines() if request_id in line)
    assert "client=127.0.0.2 " in line, line
