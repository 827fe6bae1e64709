"""Config redaction: secrets hidden, keys about token counts kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from aipm_tracking.redact import REDACTED, is_secret_key, redact_config

SECRETS = ("token", "api_token", "access_token", "auth_token", "hf_token", "hub_token",
           "push_to_hub_token", "wandb_token", "WANDB_TOKEN", "HF_TOKEN", "apiToken",
           "accessToken", "refresh_token", "bearer_token", "github_token", "hftoken",
           "token_value", "api_key", "wandb_api_key", "db_password", "client_secret",
           "aws_secret_access_key", "credentials", "passwd")
NOT_SECRETS = ("average_tokens_across_devices", "include_num_input_tokens_seen",
               "include_tokens_per_second", "max_tokens", "max_new_tokens", "num_tokens",
               "total_tokens", "tokenizer", "tokenizer_name", "pad_token_id", "eos_token_id",
               "token_type_ids", "padTokenId", "pad_token", "max_token_length",
               "learning_rate", "model_name")


@pytest.mark.parametrize("key", SECRETS)
def test_secret_keys_are_redacted(key: str) -> None:
    assert is_secret_key(key)
    assert redact_config({key: "s3cr3t", "nested": [{key: "x"}]}) == {
        key: REDACTED, "nested": [{key: REDACTED}]}


@pytest.mark.parametrize("key", NOT_SECRETS)
def test_keys_about_tokens_are_kept(key: str) -> None:
    assert not is_secret_key(key)
    assert redact_config({key: 7}) == {key: 7}


def test_hf_training_arguments_keep_token_counts(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    args = transformers.TrainingArguments(output_dir=str(tmp_path / "out"), report_to=[],
                                          hub_token="hf_secret", use_cpu=True)
    cfg = redact_config({k: v for k, v in args.to_dict().items()
                         if isinstance(v, (str, int, float, bool)) or v is None})
    assert cfg["hub_token"] == REDACTED
    assert cfg["average_tokens_across_devices"] != REDACTED
    assert cfg["include_num_input_tokens_seen"] != REDACTED
    assert "hf_secret" not in repr(cfg)


# -- scrub_url: credentials and signed-URL signatures out, the rest readable ---------------

@pytest.mark.parametrize(("url", "hidden", "kept"), [
    ("https://bucket.s3.amazonaws.com/runs/f.json?X-Amz-Algorithm=AWS4-HMAC-SHA256"
     "&X-Amz-Credential=AKIAEXAMPLE%2F20250101%2Fus-east-1%2Fs3%2Faws4_request"
     "&X-Amz-Date=20250101T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host"
     "&X-Amz-Security-Token=FQoGZXIvYXdzEXAMPLE&X-Amz-Signature=deadbeef0123456789",
     ("AKIAEXAMPLE", "FQoGZXIvYXdzEXAMPLE", "deadbeef0123456789"),
     ("bucket.s3.amazonaws.com/runs/f.json", "X-Amz-Algorithm=AWS4-HMAC-SHA256",
      "X-Amz-Expires=3600", "X-Amz-SignedHeaders=host", "X-Amz-Signature=***",
      "X-Amz-Credential=***", "X-Amz-Security-Token=***")),
    ("https://storage.googleapis.com/b/o.json?X-Goog-Algorithm=GOOG4-RSA-SHA256"
     "&X-Goog-Credential=svc%40p.iam.gserviceaccount.com%2F20250101&X-Goog-Expires=900"
     "&X-Goog-Signature=abcdef0123456789",
     ("svc%40p.iam", "abcdef0123456789"),
     ("storage.googleapis.com/b/o.json", "X-Goog-Expires=900", "X-Goog-Signature=***",
      "X-Goog-Credential=***")),
    ("https://acct.blob.core.windows.net/c/b.json?sv=2020-08-04&se=2025-01-01&sp=r"
     "&sig=SIGVALUE%3D&design=kept",
     ("SIGVALUE",), ("acct.blob.core.windows.net/c/b.json", "sv=2020-08-04",
                     "se=2025-01-01", "sp=r", "sig=***", "design=kept")),
    ("https://h.example/f?signature=S1GN&n=1", ("S1GN",), ("signature=***", "n=1")),
    ("https://u:pw@h.example/p?api_key=K3Y&page=2", ("pw", "K3Y"),
     ("***@h.example/p", "api_key=***", "page=2")),
])
def test_scrub_url_masks_signed_url_signatures(url: str, hidden: tuple[str, ...],
                                               kept: tuple[str, ...]) -> None:
    from aipm_tracking.redact import scrub_url

    out = scrub_url(url)
    assert not [s for s in hidden if s in out], out
    assert all(k in out for k in kept), out
