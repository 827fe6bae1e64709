"""Guardrails files: loading, validation errors (file:line: key), hash, validate/init commands."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from aipm_tracking.errors import ConfigError
from aipm_tracking.guardrails import (
    Guardrails,
    Margin,
    bound_checks,
    load_guardrails,
    parse_guardrails,
    parse_margin,
    spec_hash,
    starter_text,
)
from aipm_tracking.metrics import MetricDef, MetricRegistry, default_registry
from aipm_tracking.pricing import Pricing

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "guardrails.yaml"

DESIGN_EXAMPLE = """\
version: 1
name: support-bot-release
fallback_threshold: 0.6          # confidence below this falls back (when no fallback column)
alpha: 0.05                      # significance level, Holm-corrected across tested metrics
column_map: {pred: prediction}   # optional
metric_map: {"val/acc": accuracy}# optional: names in foreign W&B/MLflow runs -> canonical
metrics:
  accuracy:        {min: 0.90, max_regression: 0.01, severity: block}
  latency_ms_p95:  {max: 800, max_regression: "10%"}
  cost_per_query_usd: {max: 0.002}
  override_rate:   {max: 0.05, severity: warn}
  ece:             {max: 0.05}
  my_custom_score: {direction: higher, min: 0.7}   # direction required for unknown metrics
slices:
  "slice=de": {accuracy: {min: 0.85}}
"""


def parse(text: str, file: str = "g.yaml") -> Guardrails:
    return parse_guardrails(text, file, default_registry())


def error_of(text: str, file: str = "g.yaml") -> str:
    with pytest.raises(ConfigError) as ei:
        parse(text, file)
    msg = str(ei.value)
    assert "\n" not in msg  # one line
    return msg


# -- loading ----------------------------------------------------------------------------------

def test_design_example_loads_with_every_field() -> None:
    g = parse(DESIGN_EXAMPLE)
    assert g.name == "support-bot-release"
    assert g.fallback_threshold == 0.6 and g.alpha == 0.05
    assert dict(g.column_map) == {"pred": "prediction"}
    assert dict(g.metric_map) == {"val/acc": "accuracy"}
    assert g.metric_names == ["accuracy", "latency_ms_p95", "cost_per_query_usd", "override_rate",
                              "ece", "my_custom_score", "accuracy[slice=de]"]
    acc = g.get("accuracy")
    assert acc is not None
    assert (acc.min, acc.max, acc.severity, acc.direction) == (0.9, None, "block", "higher")
    assert acc.max_regression == Margin(0.01, relative=False)
    assert acc.line == 8
    lat = g.get("latency_ms_p95")
    assert lat is not None and lat.max_regression == Margin(0.10, relative=True)
    assert lat.direction == "lower" and lat.describe() == "max 800 · max_regression 10%"
    ovr = g.get("override_rate")
    assert ovr is not None and ovr.severity == "warn"
    custom = g.get("my_custom_score")
    assert custom is not None and custom.direction == "higher" and custom.min == 0.7
    de = g.get("accuracy[slice=de]")
    assert de is not None and de.slice == "slice=de" and de.min == 0.85 and de.line == 15
    assert re.fullmatch(r"[0-9a-f]{16}", g.hash)


def test_example_file_is_the_design_example_and_valid() -> None:
    g = load_guardrails(EXAMPLE)
    assert g.hash == parse(DESIGN_EXAMPLE).hash
    assert g.source == str(EXAMPLE)


def test_defaults_traffic_mix_and_pricing() -> None:
    g = parse("version: 1\ntraffic_mix: {de: 3, en: 7}\n"
              "pricing: {input_per_1m_tokens: 0.5, output_per_1m_tokens: 1.5}\n")
    assert g.fallback_threshold == 0.5 and g.alpha == 0.05 and g.guardrails == ()
    assert g.traffic_mix == pytest.approx({"de": 0.3, "en": 0.7})
    assert g.pricing == Pricing(0.5, 1.5)
    # the same mix given as fractions is the same spec
    assert parse("version: 1\ntraffic_mix: {en: 0.7, de: 0.3}\n"
                 "pricing: {output_per_1m_tokens: 1.5, input_per_1m_tokens: 0.5}\n").hash == g.hash


def test_dict_and_guardrails_sources() -> None:
    raw = yaml.safe_load(DESIGN_EXAMPLE)
    g = load_guardrails(raw, default_registry())
    assert g.hash == parse(DESIGN_EXAMPLE).hash
    assert load_guardrails(g) is g


def test_plugin_metric_direction_comes_from_the_registry() -> None:
    reg = MetricRegistry([*default_registry(), MetricDef("toxicity", "lower", "fraction", "x")])
    g = parse_guardrails("version: 1\nmetrics:\n  toxicity: {max_regression: 0.01}\n", "g.yaml",
                         reg)
    assert g.guardrails[0].direction == "lower"


def test_info_metric_may_be_given_a_direction() -> None:
    g = parse("version: 1\nmetrics:\n  n_examples: {direction: higher, min: 1000}\n")
    assert g.guardrails[0].direction == "higher"


@pytest.mark.parametrize("metric", ["cost_total_usd", "n_examples", "cost_total_usd[slice=de]"])
def test_info_metric_without_direction_says_so_and_never_suggests_itself(metric: str) -> None:
    msg = error_of(f"version: 1\nmetrics:\n  {metric}: {{max: 10}}\n")
    assert msg.startswith(f"g.yaml:3: metrics.{metric}: is an info metric")
    assert "direction: higher or lower" in msg
    assert "did you mean" not in msg and "is not a known metric" not in msg


def test_unknown_metric_hint_is_never_the_name_written() -> None:
    # a plugin metric that has no direction is an info metric, not a typo of itself
    reg = MetricRegistry([*default_registry(), MetricDef("signups", "info", "users", "x", source="p")])
    with pytest.raises(ConfigError) as e:
        parse_guardrails("version: 1\nmetrics:\n  signups: {min: 100}\n", "g.yaml", reg)
    assert "did you mean 'signups'" not in str(e.value) and "is an info metric" in str(e.value)
    # a typo still gets a hint, and it is another name
    msg = error_of("version: 1\nmetrics:\n  cost_totl_usd: {max: 1}\n")
    assert "did you mean 'cost_total_usd'" in msg


def test_margin() -> None:
    assert parse_margin(0.01) == Margin(0.01, False)
    assert parse_margin("10%") == Margin(0.1, True)
    assert parse_margin("12.5%").allowed(-200.0) == pytest.approx(25.0)
    assert parse_margin(0).allowed(5.0) == 0.0
    assert str(Margin(0.1, True)) == "10%"


# -- errors: file, line, key --------------------------------------------------------------------

def test_malformed_percentage_names_file_line_and_key() -> None:
    text = DESIGN_EXAMPLE.replace('"10%"', '"10 %"')
    assert error_of(text) == ('g.yaml:9: metrics.latency_ms_p95.max_regression: "10 %" is not a '
                              'number or a percentage like "10%"')


@pytest.mark.parametrize("bad", ['"ten%"', '"10"', '"%"', "-0.1", "true", "[1]"])
def test_other_bad_margins(bad: str) -> None:
    msg = error_of(f"version: 1\nmetrics:\n  accuracy: {{max_regression: {bad}}}\n")
    assert msg.startswith("g.yaml:3: metrics.accuracy.max_regression:")


def test_unknown_metric_without_direction() -> None:
    msg = error_of("version: 1\nname: x\nmetrics:\n  accuracy: {min: 0.9}\n"
                   "  my_score: {min: 0.7}\n")
    assert msg.startswith("g.yaml:5: metrics.my_score: is not a known metric")
    assert "direction" in msg


def test_unknown_metric_suggests_a_known_one() -> None:
    msg = error_of("version: 1\nmetrics:\n  accuarcy: {min: 0.9}\n")
    assert "g.yaml:3: metrics.accuarcy" in msg and "did you mean 'accuracy'" in msg


def test_direction_may_not_contradict_the_registry() -> None:
    msg = error_of("version: 1\nmetrics:\n  latency_ms_p95:\n    direction: higher\n")
    assert msg.startswith("g.yaml:4: metrics.latency_ms_p95.direction:")
    assert "contradicts" in msg


@pytest.mark.parametrize("text, where, hint", [
    ("version: 1\nmetric:\n  accuracy: {min: 0.9}\n", "g.yaml:2: metric:", "did you mean 'metrics'"),
    ("version: 1\nmetrics:\n  accuracy: {mni: 0.9}\n", "g.yaml:3: metrics.accuracy.mni:",
     "did you mean 'min'"),
    ("version: 1\nmetrics:\n  accuracy:\n    min: 0.9\n    serverity: warn\n",
     "g.yaml:5: metrics.accuracy.serverity:", "did you mean 'severity'"),
    ("version: 1\npricing: {input_per_1k_tokens: 1}\n", "g.yaml:2: pricing.input_per_1k_tokens:",
     "did you mean 'input_per_1m_tokens'"),
])
def test_unknown_keys_with_suggestion(text: str, where: str, hint: str) -> None:
    msg = error_of(text)
    assert msg.startswith(where) and hint in msg


@pytest.mark.parametrize("text, start", [
    ("version: 1\nmetrics:\n  accuracy: {min: high}\n", 'g.yaml:3: metrics.accuracy.min: "high"'),
    ("version: 1\nmetrics:\n  accuracy: {min: 0.9, max: 0.5}\n", "g.yaml:3: metrics.accuracy.min:"),
    ("version: 1\nmetrics:\n  accuracy: {severity: fatal}\n", "g.yaml:3: metrics.accuracy.severity"),
    ("version: 1\nmetrics:\n  accuracy: 0.9\n", "g.yaml:3: metrics.accuracy: 0.9 must be a mapping"),
    ("version: 1\nmetrics: [accuracy]\n", "g.yaml:2: metrics:"),
    ("version: 1\nalpha: 0\n", "g.yaml:2: alpha: 0 must be > 0"),
    ("version: 1\nfallback_threshold: 1.5\n", "g.yaml:2: fallback_threshold: 1.5 must be <= 1"),
    ("version: 1\nfallback_threshold: yes\n", "g.yaml:2: fallback_threshold: True is not a number"),
    ("version: 1\nname: [a]\n", "g.yaml:2: name:"),
    ("version: 1\ncolumn_map: {pred: 3}\n", "g.yaml:2: column_map.pred: 3 must be a non-empty"),
    ("version: 1\ntraffic_mix: {de: -1}\n", "g.yaml:2: traffic_mix.de: -1 must be >= 0"),
    ("version: 1\ntraffic_mix: {de: 0, en: 0}\n", "g.yaml:2: traffic_mix: weights must not"),
    ("version: 1\nslices:\n  de: {accuracy: {min: 0.8}}\n", 'g.yaml:3: slices.de: slice key "de"'),
    ("version: 1\nslices:\n  \"slice=de\": {accurcy: {min: 0.8}}\n",
     'g.yaml:3: slices.slice=de.accurcy: is not a known metric'),
    ("version: 2\n", "g.yaml:1: version: 2 is not supported"),
    ("name: x\n", "g.yaml:1: version: missing"),
    ("version: 1\nmetrics:\n  accuracy: {min: 0.9}\n  accuracy: {min: 0.8}\n",
     "g.yaml:4: metrics.accuracy: duplicate key (first on line 3)"),
    ("version: 1\nmetrics:\n  accuracy[slice=de]: {min: 0.9}\nslices:\n"
     "  \"slice=de\": {accuracy: {min: 0.8}}\n", "g.yaml:5: accuracy[slice=de]: guardrail given twice"),
    ("- 1\n- 2\n", "g.yaml: top level must be a mapping"),
])
def test_wrong_types_and_values(text: str, start: str) -> None:
    assert error_of(text).startswith(start)


def test_malformed_yaml_gives_the_line() -> None:
    msg = error_of("version: 1\nmetrics:\n  accuracy: {min: 0.9\n  ece: {max: 0.1}\n")
    assert re.match(r"g\.yaml:\d+: malformed YAML: ", msg)
    line = int(msg.split(":")[1])
    assert 3 <= line <= 5
    msg = error_of("version: 1\nmetrics:\n\taccuracy: {}\n")
    assert msg.startswith("g.yaml:3: malformed YAML")


def test_empty_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "e.yaml").write_text("# nothing\n")
    with pytest.raises(ConfigError, match="e.yaml: empty guardrails file"):
        load_guardrails(tmp_path / "e.yaml")
    with pytest.raises(ConfigError, match="nope.yaml: guardrails file not found"):
        load_guardrails(tmp_path / "nope.yaml")


def test_yaml_tags_are_refused_by_the_safe_loader() -> None:
    msg = error_of("version: 1\nname: !!python/object/apply:os.system ['echo hi']\n")
    assert "malformed YAML" in msg or "could not determine a constructor" in msg


def test_dict_errors_name_the_key_without_a_line() -> None:
    with pytest.raises(ConfigError, match=r"^<guardrails dict>: metrics\.accuracy\.min: "):
        load_guardrails({"version": 1, "metrics": {"accuracy": {"min": "x"}}},
                        default_registry())


# -- hash ---------------------------------------------------------------------------------------

REORDERED = """\
# the same criteria, reordered, reformatted and commented
name: support-bot-release
version: 1
slices:
  "slice=de":
    accuracy:
      min: 0.850          # German users
metrics:
  my_custom_score: {min: 0.70, direction: higher}
  ece: {max: 5.0e-2}
  override_rate: {severity: warn, max: 0.05}
  cost_per_query_usd:
    max: 0.0020
  latency_ms_p95: {max_regression: "10.0%", max: 800.0}
  accuracy: {max_regression: 0.01, min: 0.9}
metric_map: {"val/acc": accuracy}
column_map:
  pred: prediction
alpha: 0.05
fallback_threshold: 0.60
"""


def test_hash_is_stable_under_order_comments_and_formatting() -> None:
    assert parse(REORDERED).hash == parse(DESIGN_EXAMPLE).hash


def test_hash_changes_with_any_threshold() -> None:
    h = parse(DESIGN_EXAMPLE).hash
    for old, new in [("min: 0.90", "min: 0.91"), ('"10%"', '"11%"'), ("max: 800", "max: 801"),
                     ("severity: warn", "severity: block"), ("0.01, sev", "0.02, sev"),
                     ("{min: 0.85}", "{min: 0.86}"), ("alpha: 0.05", "alpha: 0.01"),
                     ("fallback_threshold: 0.6", "fallback_threshold: 0.5"),
                     ("{pred: prediction}", "{p: prediction}")]:
        changed = DESIGN_EXAMPLE.replace(old, new, 1)
        assert changed != DESIGN_EXAMPLE
        assert parse(changed).hash != h, (old, new)
    # a relative margin is not the same criterion as the absolute one
    assert parse(DESIGN_EXAMPLE.replace('"10%"', "0.1")).hash != h


def test_hash_is_sha256_of_the_canonical_normalized_spec() -> None:
    import hashlib

    g = parse(DESIGN_EXAMPLE)
    spec = g.to_spec()
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    assert g.hash == hashlib.sha256(canonical.encode()).hexdigest()[:16] == spec_hash(spec)[:16]
    # defaults filled and directions resolved in the normalized form
    assert spec["metrics"]["ece"] == {"direction": "lower", "min": None, "max": 0.05,
                                      "max_regression": None, "severity": "block"}
    # the name is a label, not a criterion
    assert parse(DESIGN_EXAMPLE.replace("support-bot-release", "renamed")).hash == g.hash


# -- starter file and commands --------------------------------------------------------------------

def test_starter_file_validates() -> None:
    g = parse(starter_text("x.yaml"), "x.yaml")
    assert {"accuracy", "fallback_rate", "ece"} <= set(g.metric_names)
    assert "#" in starter_text()


def _main(*args: str) -> int:
    from aipm_tracking.cli import main

    with pytest.raises(SystemExit) as ei:
        main(list(args))
    code = ei.value.code
    return 0 if code is None else int(code)


def test_cli_validate_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert _main("guardrails", "validate", str(EXAMPLE)) == 0
    out = capsys.readouterr().out
    g = load_guardrails(EXAMPLE)
    assert f"hash: {g.hash}" in out and "name: support-bot-release" in out
    assert re.search(r"accuracy\[slice=de\]\s+higher\s+block\s+min 0.85", out)
    assert re.search(r"override_rate\s+lower\s+warn\s+max 0.05", out)


def test_cli_validate_error_is_one_line_exit_2(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "g.yaml"
    bad.write_text("version: 1\nmetrics:\n  latency_ms_p95: {max_regression: \"10 %\"}\n")
    assert _main("guardrails", "validate", str(bad)) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln]
    assert err == [f'aipm: error: {bad}:3: metrics.latency_ms_p95.max_regression: "10 %" is not '
                   'a number or a percentage like "10%"']


def test_cli_init_writes_a_valid_file_and_refuses_to_overwrite(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "g.yaml"
    assert _main("guardrails", "init", "-o", str(out)) == 0
    text = out.read_text()
    assert "# " in text and parse(text).metric_names
    out.write_text("version: 1\n")
    assert _main("guardrails", "init", "-o", str(out)) == 2
    assert "already exists" in capsys.readouterr().err
    assert out.read_text() == "version: 1\n"  # untouched
    assert _main("guardrails", "init", "-o", str(out), "--force") == 0
    assert out.read_text() == text
    assert [p.name for p in tmp_path.iterdir()] == ["g.yaml"]  # no temp files left


def test_docs_reference_example_validates() -> None:
    text = (REPO / "docs" / "guardrails.md").read_text()
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    g = parse(block, "docs/guardrails.md")
    assert g.traffic_mix == pytest.approx({"de": 0.3, "en": 0.7})
    assert g.pricing == Pricing(0.5, 1.5)
    assert g.get("psi_confidence") is not None
    # the documented example file is this block without the last three keys
    assert "psi_confidence" not in EXAMPLE.read_text()


def test_bound_checks_one_run_against_absolute_bounds() -> None:
    g = parse_guardrails("version: 1\nmetrics:\n"
                         "  accuracy: {min: 0.9, max_regression: 0.01}\n"
                         "  latency_ms_p95: {max: 800}\n"
                         "  ece: {max: 0.05}\n"
                         "  cost_per_query_usd: {max_regression: '10%'}\n",
                         "g.yaml", default_registry())
    rows = {r["metric"]: r for r in bound_checks(
        g, {"accuracy": 0.9, "latency_ms_p95": 812.5, "cost_per_query_usd": 0.001})}
    assert rows["accuracy"]["verdict"] == "pass"  # a tie with the bound passes
    assert rows["latency_ms_p95"]["verdict"] == "breach"
    assert rows["latency_ms_p95"]["reason"] == "above max 800"
    assert rows["ece"]["verdict"] == "inconclusive" and rows["ece"]["value"] is None
    assert rows["cost_per_query_usd"]["verdict"] == "n/a"
    assert rows["accuracy"]["threshold"] == "min 0.9 · max_regression 0.01"

