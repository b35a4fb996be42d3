"""viewer.py as a user runs it: one-line option errors with exit status 2, the Host guard it sets up on loopback
addresses, and the program serving the page."""
from __future__ import annotations

import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from conftest import default_sigint, viewer_settings
from utils import EXIT_USAGE

# The viewer's web stack: requirements.txt installs it, a stock GPU image (the device check's) may lack it.
pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

import viewer  # noqa: E402
from inference import viewer_app  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LR_H, LR_W = 12, 16
POLL_S = 0.02
ENCODE_TIMEOUT_S = 60


@pytest.mark.parametrize("argv,message", [
    (["--port", "70000"], "--port must be a whole number from 0 (any free port) to 65535"),
    (["--max-images", "0"], "expected a positive whole number"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--backend", "nonsense"], "nonsense"),
    (["--host", "no-such-host.invalid"], "--host no-such-host.invalid: "),
    (["--model", "missing.pth", "--port", "0"], "checkpoint not found: missing.pth"),
])
def test_bad_options_are_one_line_and_exit_2(capsys, argv, message):
    assert viewer.main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("viewer.py: error: ")


def test_a_port_in_use_is_a_usage_error(capsys):
    with viewer.listen("127.0.0.1", 0) as busy:
        assert viewer.main(["--port", str(busy.getsockname()[1])]) == EXIT_USAGE
    assert "cannot listen on 127.0.0.1:" in capsys.readouterr().err


@pytest.mark.slow
def test_the_program_serves_the_page_on_a_free_port(tiny_checkpoint):
    process = subprocess.Popen([sys.executable, str(ROOT / "viewer.py"), "--model", str(tiny_checkpoint),
                                "--port", "0", "--quiet"], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    try:
        line = process.stdout.readline()
        assert line.startswith("viewer: model tiny.pth on cpu; open http://127.0.0.1:"), line
        url = line.split("open ")[1].split()[0]
        with urllib.request.urlopen(url, timeout=30) as page:
            assert b"ContinuousSR viewer" in page.read()
        process.send_signal(signal.SIGINT)  # Ctrl+C: a clean stop, no traceback
        assert process.wait(timeout=30) == 0
        assert process.stderr.read() == "viewer: stopped\n"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize("header,allowed", [("127.0.0.1:8000", True), ("localhost", True), ("[::1]:8000", True),
                                            ("[::1]", True), ("LOCALHOST:1", True), ("rebound.example.com", False),
                                            ("rebound.example.com:8000", False), ("[::2]:8000", False), ("", False)])
def test_the_host_check_reads_ipv4_and_ipv6_hosts_and_answers_in_json(tiny_sr_model, header, allowed):
    app = viewer_app.create_app(tiny_sr_model, viewer_settings(), allowed_hosts=viewer.LOOPBACK_HOSTS)
    with TestClient(app) as client:
        response = client.get("/api/images/none", headers={"Host": header})
    assert response.status_code == (404 if allowed else 400)
    assert response.headers["content-type"] == "application/json"
    assert ("is not this viewer's address" in response.json()["error"]) != allowed


@pytest.mark.parametrize("host,loopback", [("127.0.0.1", True), ("::1", True), ("localhost", True),
                                           ("0.0.0.0", False), ("::", False)])
def test_every_loopback_address_is_guarded(host, loopback):
    assert viewer.is_loopback(host) == loopback


@pytest.mark.parametrize("value", ["1e308", "inf", "nan", "0", "-1", "1e-9", "2e6"])
def test_memory_sizes_beyond_what_a_byte_count_holds_are_refused(capsys, value):
    for option in ("--max-upload-mb", "--max-cache-mb"):
        assert viewer.main([option, value]) == EXIT_USAGE
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"viewer.py: error: argument {option}: expected a size")
