"""Faults: a server that is down, slow, rate-limits, errors or answers garbage.

Two kinds of fake servers, because a healthy ``mlflow server`` cannot be made to misbehave
on demand:

* ``responses`` mocks the HTTP layer (requests' adapter) to simulate a real misbehaving
  server: 500s, 429 + Retry-After, connect timeouts, malformed JSON. The retry policy under
  test is MLflow's real urllib3 ``Retry`` object, which ``responses`` drives (it emulates
  urllib3's retry loop, without sleeping).
* a real HTTP server (stdlib, in a thread) that answers 429 with ``Retry-After`` or answers too
  slowly, to check the waits really happen on the wire; and a closed port for "server down".

The conftest sets 2 retries (3 tries), no backoff and a 10 s timeout.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
import responses
from aipm_mlflow.testing import free_port
from mlflow_helpers import backend, make_record

from aipm_tracking.errors import BackendError

URL = "http://127.0.0.1:5999"
GET_EXP = re.compile(r"http://127\.0\.0\.1:5999/api/2\.0/mlflow/experiments/get-by-name.*")
SEARCH = re.compile(r"http://127\.0\.0\.1:5999/api/2\.0/mlflow/runs/search.*")
EXP_JSON = {"experiment": {"experiment_id": "7", "name": "x", "artifact_location": "/tmp/x",
                           "lifecycle_stage": "active"}}


@responses.activate
def test_500_is_retried_a_bounded_number_of_times_then_one_clear_error() -> None:
    responses.add(responses.GET, GET_EXP, status=500,
                  json={"error_code": "INTERNAL_ERROR", "message": "db down"})
    be = backend(URL)
    with pytest.raises(BackendError) as ei:
        be.write_run(make_record(n=5, with_examples=False), "x")
    msg = str(ei.value)
    assert msg.startswith(f"MLflow server at {URL} did not answer after 3 tries")
    assert "HTTP 500" in msg and "\n" not in msg
    assert len(responses.calls) == 3


@responses.activate
def test_429_with_retry_after_is_retried_and_then_succeeds() -> None:
    responses.add(responses.GET, GET_EXP, status=429, headers={"Retry-After": "1"},
                  json={"error_code": "REQUEST_LIMIT_EXCEEDED", "message": "slow down"})
    responses.add(responses.GET, GET_EXP, status=200, json=EXP_JSON)
    responses.add(responses.POST, SEARCH, status=200, json={"runs": []})
    be = backend(URL)
    assert list(be.list_runs("x")) == []
    assert [c.response.status_code for c in responses.calls] == [429, 200, 200]


@responses.activate
def test_429_forever_names_rate_limiting() -> None:
    responses.add(responses.GET, GET_EXP, status=429, headers={"Retry-After": "0"},
                  json={"error_code": "REQUEST_LIMIT_EXCEEDED", "message": "slow down"})
    with pytest.raises(BackendError, match=r"after 3 tries .*HTTP 429 \(rate limited\)"):
        list(backend(URL).list_runs("x"))


@responses.activate
def test_connect_timeout_is_one_clear_error() -> None:
    responses.add(responses.GET, GET_EXP,
                  body=requests.exceptions.ConnectTimeout("connect timed out"))
    with pytest.raises(BackendError, match=rf"^MLflow server at {URL} did not answer .*timed out"):
        list(backend(URL).list_runs("x"))


@responses.activate
def test_malformed_json_is_reported_as_such() -> None:
    responses.add(responses.GET, GET_EXP, status=200, body="<html>proxy login</html>",
                  content_type="text/html")
    with pytest.raises(BackendError, match=r"get experiment 'x'.* not valid JSON: '<html>proxy"):
        list(backend(URL).list_runs("x"))


@responses.activate
def test_credentials_in_the_uri_never_reach_the_message() -> None:
    responses.add(responses.GET, re.compile(r".*/experiments/get-by-name.*"), status=503,
                  json={"error_code": "TEMPORARILY_UNAVAILABLE", "message": "x"})
    with pytest.raises(BackendError) as ei:
        list(backend("http://alice:s3cret-pw@127.0.0.1:5999").list_runs("x"))
    assert "s3cret-pw" not in str(ei.value) and "alice" not in str(ei.value)
    assert "***@127.0.0.1:5999" in str(ei.value)


# -- real sockets -------------------------------------------------------------------------
class _Misbehaving(BaseHTTPRequestHandler):
    mode = "429"
    hits: list[float] = []

    def log_message(self, *a: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        type(self).hits.append(time.monotonic())
        if self.mode == "slow":
            time.sleep(3)
        if self.mode == "429" and len(self.hits) == 1:
            self._send(429, {"error_code": "REQUEST_LIMIT_EXCEEDED"}, {"Retry-After": "2"})
        else:
            self._send(200, EXP_JSON)

    def do_POST(self) -> None:  # noqa: N802
        self._send(200, {"runs": []})

    def _send(self, code: int, body: dict, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        try:
            self.send_response(code)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
            pass


@pytest.fixture
def misbehaving() -> Iterator[tuple[str, type[_Misbehaving]]]:
    handler = type("H", (_Misbehaving,), {"hits": []})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", handler
    srv.shutdown()
    srv.server_close()


def test_retry_after_is_honoured_on_the_wire(misbehaving) -> None:  # noqa: ANN001
    url, handler = misbehaving
    handler.mode = "429"
    assert list(backend(url).list_runs("x")) == []
    assert len(handler.hits) == 2
    assert handler.hits[1] - handler.hits[0] >= 1.9  # waited the server's Retry-After: 2


def test_slow_server_times_out_after_bounded_tries(misbehaving) -> None:  # noqa: ANN001
    url, handler = misbehaving
    handler.mode = "slow"
    be = backend(url, extra={"mlflow_timeout_s": 1, "mlflow_max_retries": 1})
    with pytest.raises(BackendError, match=r"did not answer after 2 tries .*timed out"):
        list(be.list_runs("x"))
    assert len(handler.hits) == 2


def test_server_down_is_one_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(BackendError) as ei:
        backend(url).write_run(make_record(n=5, with_examples=False), "x")
    assert str(ei.value) == (f"MLflow server at {url} did not answer after 3 tries "
                             f"(get experiment 'x'): connection refused")
