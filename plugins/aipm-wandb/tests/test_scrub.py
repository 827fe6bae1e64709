"""scrub_message: camelCase secret names, ordinary messages left readable, quoted values
masked in full, presigned-URL signatures; the table version read without downloading every
version."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from fake_wandb_server import FakeRun, FakeWandbServer

from aipm_tracking import plugins
from aipm_tracking.backends.base import BackendOptions


@pytest.fixture(autouse=True)
def _no_known_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the pair and URL rules act (no literal of a known secret is in these texts)."""
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "z" * 40)


@pytest.mark.parametrize(("text", "want"), [
    ("accessToken=abc123secret", "accessToken=***"),
    ("{'refreshToken': 'zzzsecret'}", "{'refreshToken': '***'}"),
    ("clientSecret: qqq", "clientSecret: ***"),
    ("wandbApiKey: KKKK", "wandbApiKey: ***"),
    ('{"myAPIKey": "abc"}', '{"myAPIKey": "***"}'),
    ("apiKey=abc", "apiKey=***"),
    ("api_key=abc", "api_key=***"),
    ("x-api-key: abc", "x-api-key: ***"),
    ("WANDB_API_KEY=abc", "WANDB_API_KEY=***"),
    ("secret_key=abc", "secret_key=***"),
    ("private_key: abc", "private_key: ***"),
    ("apikey=abc", "apikey=***"),
    ("Authorization: Bearer eyJhbGciOi.payload.sig", "Authorization: ***"),
])
def test_camel_case_and_separated_secret_names_are_masked(text: str, want: str) -> None:
    from aipm_wandb.scrub import scrub_message

    assert scrub_message(text) == want


@pytest.mark.parametrize("text", [
    "invalid key: 'accuracy' not in summary",
    "key=value pairs are separated by ';'",
    "wandb: ERROR api_key not configured (no-tty). call wandb.login(key=[your_api_key])",
    "KeyError: 'api_key'",
    "token count: 5; max_tokens=7",
    "failed: monkey: 1",
    "Secret 'x' not found",
    "a KeyError: 'k' and monkeyToken",
    "Key: 'loss' missing",
])
def test_ordinary_messages_are_left_alone(text: str) -> None:
    from aipm_wandb.scrub import scrub_message

    assert scrub_message(text) == text


@pytest.mark.parametrize(("text", "want"), [
    ('password="hello world" rest', 'password="***" rest'),
    ("{'password': 'it is s3cret', 'n': 1}", "{'password': '***', 'n': 1}"),
    ('token="a\'b c"', 'token="***"'),
    ('password="unclosed secret text', 'password="***'),
    ("wandb.login(api_key=[your_api_key])", "wandb.login(api_key=[***])"),
    ("login(api_key=abc123) failed", "login(api_key=***) failed"),
    ("f(token=abc, n=1)", "f(token=***, n=1)"),
    ("{token: abc}", "{token: ***}"),
])
def test_quoted_values_are_masked_whole_and_closing_brackets_kept(text: str,
                                                                   want: str) -> None:
    from aipm_wandb.scrub import scrub_message

    assert scrub_message(text) == want


def test_presigned_url_signatures_are_masked() -> None:
    from aipm_wandb.scrub import scrub_message

    text = ("download failed: GET https://b.s3.amazonaws.com/f.json?X-Amz-Expires=60"
            "&X-Amz-Signature=deadbeef0123&X-Amz-Credential=AKIAX and "
            "https://a.blob.core.windows.net/c/b?sv=2020&sig=SIGVALUE&se=2025: 403.")
    out = scrub_message(text)
    assert "deadbeef0123" not in out and "AKIAX" not in out and "SIGVALUE" not in out, out
    assert "b.s3.amazonaws.com/f.json?X-Amz-Expires=60" in out
    assert "sv=2020&sig=***&se=2025: 403." in out


def test_known_secret_of_a_signed_base_url_is_masked_as_a_literal(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from aipm_wandb.scrub import scrub_message

    monkeypatch.setenv("WANDB_BASE_URL", "https://w.example/?sig=S1GNATUREVALUE")
    assert scrub_message("bad signature S1GNATUREVALUE") == "bad signature ***"


# -- the table version: entries whose size differs from the ref's are not downloaded --------

def _table(n: int) -> bytes:
    return json.dumps({"columns": ["example_id", "label", "prediction", "confidence"],
                       "data": [[f"e{i}", 1, 1, 0.9] for i in range(n)]}).encode()


def test_table_versions_of_another_size_are_not_downloaded(
        server: FakeWandbServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from wandb.sdk.artifacts.artifact_manifest_entry import ArtifactManifestEntry

    downloads: list[str] = []
    real = ArtifactManifestEntry.download

    def spy(self: Any, *a: Any, **kw: Any) -> Any:
        downloads.append(self.path)
        return real(self, *a, **kw)

    monkeypatch.setattr(ArtifactManifestEntry, "download", spy)
    run_file = _table(7)  # the ref names the run file: no artifact version has its sha256
    path = "media/table/predictions_3_x.table.json"
    ref = {"_type": "table-file", "path": path, "nrows": 7, "ncols": 4,
           "sha256": hashlib.sha256(run_file).hexdigest(), "size": len(run_file)}
    server.add_run(FakeRun(
        "acme", "legacy", "manyv", summary={"predictions": ref}, files={path: run_file},
        artifacts=[{"name": "run-manyv-predictions", "type": "run_table", "version": v,
                    "entries": {"predictions.table.json": _table(10 + v)}}
                   for v in range(5)]))
    plugins.reset()
    rec = plugins.get_backend("wandb", BackendOptions()).read_run("acme/legacy/manyv")
    assert rec.examples is not None and len(rec.examples) == 7  # from the run file
    assert downloads == []
