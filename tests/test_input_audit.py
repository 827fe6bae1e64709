"""Bad input in the evaluation path: one clear line and exit 2, never a crash (exit 4) and
never a silent wrong number (input audit: nested values, boolean confidence, bytes that are
not UTF-8, a non-finite traffic mix, typos in column/metric maps, CSV type guessing of ids
and slices, a deeply nested guardrails file)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aipm_tracking.errors import ConfigError, DataError, UsageError
from aipm_tracking.evaluation import evaluate


def _main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the real CLI entry point in-process -> (exit code, stdout, stderr)."""
    from aipm_tracking.cli import main

    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = 0 if e.code is None else int(e.code)
    out = capsys.readouterr()
    return code, out.out, out.err


def _error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("aipm: error: "), err
    assert "Traceback" not in err and "internal error" not in err
    return lines[0][len("aipm: error: "):]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _commands(f: Path) -> list[list[str]]:
    return [["log", str(f), "--model", "m"], ["compare", str(f), str(f)],
            ["thresholds", str(f), "--max-risk", "0.5"]]


# -- 1. nested values (JSON objects/lists, Parquet list/struct columns) -----------------------

def _nested_files(tmp: Path) -> list[tuple[Path, str]]:
    base = [{"example_id": 1, "label": "a", "prediction": "a", "confidence": 0.9},
            {"example_id": 2, "label": "b", "prediction": "a", "confidence": 0.3}]
    out = []
    for col, vals in (("label", [{"x": 1}, {"x": 2}]), ("label", [[1, 2], [3]]),
                      ("prediction", [[1], [2, 3]]), ("slice", [{"lang": "de"}, {"lang": "en"}]),
                      ("example_id", [{"a": 1}, {"a": 2}]), ("example_id", [[1], [2]])):
        p = _jsonl(tmp / f"nested_{col}_{type(vals[0]).__name__}.jsonl",
                   [{**r, col: v} for r, v in zip(base, vals, strict=True)])
        out.append((p, col))
    p = tmp / "list_label.parquet"
    pq.write_table(pa.table({"example_id": [1, 2], "label": [[1, 2], [3]],
                             "prediction": [[1, 2], [4]], "confidence": [0.9, 0.3]}), p)
    out.append((p, "label"))
    return out


def test_nested_values_are_one_line_exit_2(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    for f, col in _nested_files(tmp_path):
        for args in _commands(f):
            code, _, err = _main(capsys, *args)
            assert code == 2, (args, err)
            assert _error_line(err) == f"{f}: column '{col}' holds nested values (objects/lists)"


def test_nested_values_streamed_and_dataframe(tmp_path: Path) -> None:
    f = _jsonl(tmp_path / "n.jsonl", [{"example_id": i, "label": {"x": i}, "prediction": "a"}
                                      for i in range(5)])
    with pytest.raises(DataError, match=r"column 'label' holds nested values \(objects/lists\)"):
        evaluate(f, chunk_rows=2)
    f = _jsonl(tmp_path / "i.jsonl", [{"example_id": [i], "label": "a", "prediction": "a"}
                                      for i in range(5)])
    with pytest.raises(DataError, match="column 'example_id' holds nested values"):
        evaluate(f, chunk_rows=2)
    df = pd.DataFrame({"label": ["a", "b"], "prediction": ["a", "b"], "slice": [{"l": 1}, None]})
    with pytest.raises(DataError, match="^<dataframe>: column 'slice' holds nested values"):
        evaluate(df)


# -- 2. boolean confidence ---------------------------------------------------------------------

def test_boolean_confidence_is_one_line_exit_2(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    j = _jsonl(tmp_path / "b.jsonl", [
        {"example_id": 1, "label": "a", "prediction": "a", "confidence": True},
        {"example_id": 2, "label": "b", "prediction": "a", "confidence": False}])
    p = tmp_path / "b.parquet"
    pq.write_table(pa.table({"example_id": [1, 2], "label": ["a", "b"],
                             "prediction": ["a", "a"], "confidence": [True, False]}), p)
    for f in (j, p):
        for args in _commands(f):
            code, _, err = _main(capsys, *args)
            assert code == 2, (args, err)
            assert _error_line(err) == f"{f}: column 'confidence' is boolean, not a number"


# -- 3. bytes that are not UTF-8 ------------------------------------------------------------------

def test_csv_not_utf8_is_one_line_exit_2_in_every_command(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "latin1.csv"
    f.write_bytes(b"example_id,label,prediction,confidence\n1,caf\xe9,caf\xe9,0.9\n2,b,a,0.3\n")
    ref_code, ref_out, _ = _main(capsys, "log", str(_clean_csv(tmp_path)), "--model", "ok")
    assert ref_code == 0
    ref = ref_out.strip().splitlines()[-1]
    for args in [*_commands(f), ["compare", ref, str(f)]]:
        code, _, err = _main(capsys, *args)
        assert code == 2, (args, err)
        line = _error_line(err)
        assert line.startswith(f"{f}: column 'label' is not valid UTF-8"), line
    with pytest.raises(DataError, match="column 'label' is not valid UTF-8"):
        evaluate(f, chunk_rows=1)


def _clean_csv(tmp: Path) -> Path:
    p = tmp / "clean.csv"
    p.write_text("example_id,label,prediction,confidence\n1,a,a,0.9\n2,b,a,0.3\n")
    return p


def test_parquet_binary_ids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bin.parquet"
    pq.write_table(pa.table({"example_id": pa.array([b"\x00", b"\xff"], pa.binary()),
                             "label": ["a", "b"], "prediction": ["a", "a"],
                             "confidence": [0.9, 0.3]}), bad)
    for args in _commands(bad):
        code, _, err = _main(capsys, *args)
        assert code == 2, (args, err)
        assert _error_line(err).startswith(f"{bad}: column 'example_id' is not valid UTF-8")
    # binary columns holding UTF-8 text (old Parquet writers) are read as text
    ok = tmp_path / "bin_ok.parquet"
    pq.write_table(pa.table({"example_id": pa.array([b"x", "é".encode()], pa.binary()),
                             "label": pa.array([b"a", b"b"], pa.binary()),
                             "prediction": ["a", "a"], "confidence": [0.9, 0.3]}), ok)
    res = evaluate(ok)
    assert res.metrics["accuracy"] == 0.5
    assert res.examples is not None
    assert res.examples["example_id"].tolist() == ["x", "é"]
    code, out, err = _main(capsys, "log", str(ok), "--model", "m")
    assert code == 0, err


def test_digest_does_not_crash_on_bytes() -> None:
    from aipm_tracking.api import _digest

    df = pd.DataFrame({"example_id": [b"\x00", b"\xff"], "label": ["a", "b"]})
    d = _digest(df)
    assert isinstance(d, str) and len(d) == 16
    # plain data keeps its digest (stored runs stay comparable)
    plain = pd.DataFrame({"example_id": [1, 2], "label": ["a", "b"]})
    assert _digest(plain) == _digest(plain.assign(example_id=["1", "2"]))


# -- 4. traffic mix weights that are not finite -----------------------------------------------

def test_traffic_mix_nan_is_one_line_exit_2(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "m.csv"
    f.write_text("example_id,label,prediction,confidence,slice\n1,a,a,0.9,de\n2,b,a,0.3,en\n"
                 "3,a,a,0.8,de\n4,b,b,0.6,en\n")
    for mix in ("de=nan", "de=nan,en=1", "de=inf,en=0"):
        code, _, err = _main(capsys, "compare", str(f), str(f), "--traffic-mix", mix)
        assert code == 2, (mix, err)
        assert _error_line(err) == "traffic mix: weight for 'de' is not a finite number"
    with pytest.raises(UsageError, match="^traffic mix: weight for 'en' is not a finite number$"):
        evaluate(f, traffic_mix={"de": 0.5, "en": float("nan")})


# -- 5. typos in column maps and metric maps ----------------------------------------------------

def test_column_map_typo_is_one_line_exit_2(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "conf.csv"
    f.write_text("example_id,label,prediction,conf\n1,a,a,0.9\n2,b,a,0.3\n")
    code, _, err = _main(capsys, "log", str(f), "--model", "m", "--map", "conf=confidnce")
    assert code == 2, err
    line = _error_line(err)
    assert "conf=confidnce" in line and "did you mean 'confidence'?" in line, line
    for typo, canon in (("lable", "label"), ("overriden", "overridden"), ("slices", "slice")):
        with pytest.raises(UsageError, match=f"did you mean '{canon}'"):
            evaluate(f, column_map={"conf": typo})
        with pytest.raises(UsageError, match=f"did you mean '{canon}'"):
            evaluate(f, column_map={"conf": typo}, chunk_rows=10)
    # a name that is no near-miss is a column of its own (a plugin may read it)
    for other in ("toxicity", "confidence_2"):
        res = evaluate(f, column_map={"conf": other})
        assert "ece" not in res.metrics and res.metrics["accuracy"] == 0.5
    code, _, err = _main(capsys, "log", str(f), "--model", "m", "--map", "conf=confidence")
    assert code == 0, err


def test_guardrails_map_typos_are_one_line_exit_2(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    g = tmp_path / "g.yaml"
    g.write_text("version: 1\ncolumn_map: {conf: confidnce}\n")
    code, _, err = _main(capsys, "guardrails", "validate", str(g))
    assert code == 2, err
    assert _error_line(err) == (f"{g}:2: column_map.conf: \"confidnce\" is not a column aipm "
                                f"knows; did you mean 'confidence'?")
    g.write_text('version: 1\nmetric_map: {"val/acc": acuracy}\n')
    code, _, err = _main(capsys, "guardrails", "validate", str(g))
    assert code == 2, err
    assert _error_line(err) == (f"{g}:2: metric_map.val/acc: \"acuracy\" is not a known "
                                f"metric; did you mean 'accuracy'?")
    g.write_text('version: 1\nmetric_map: {"val/acc": "acuracy[slice=de]"}\n')
    code, _, err = _main(capsys, "guardrails", "validate", str(g))
    assert code == 2 and "did you mean 'accuracy'?" in _error_line(err)
    # registry names (per-slice too), metrics guarded in the file, unrelated names: accepted
    g.write_text('version: 1\ncolumn_map: {a: toxicity, b: confidence_2, c: confidence}\n'
                 'metric_map: {"val/acc": "accuracy[slice=de]", "eval/f1": my_f1s, '
                 '"x": wandb_thing, "y": dau}\n'
                 'metrics:\n  my_f1s: {direction: higher, min: 0.5}\n')
    code, out, err = _main(capsys, "guardrails", "validate", str(g))
    assert code == 0, err
    # a near-miss of a metric guarded in the file is a typo too
    g.write_text('version: 1\nmetric_map: {"eval/f1": my_f1}\n'
                 'metrics:\n  my_f1s: {direction: higher, min: 0.5}\n')
    code, _, err = _main(capsys, "guardrails", "validate", str(g))
    assert code == 2 and "did you mean 'my_f1s'?" in _error_line(err)


# -- 6. CSV/JSONL ids and slices are read as text ---------------------------------------------

def test_csv_ids_are_text_not_numbers(tmp_path: Path) -> None:
    f = tmp_path / "ids.csv"
    f.write_text("example_id,label,prediction\n007,a,a\n7,b,a\n"
                 "18446744073709551616,c,c\n18446744073709551617,d,c\n")
    ref = pd.read_csv(f, dtype={"example_id": str})
    want_acc = float((ref.label == ref.prediction).mean())
    for kw in ({}, {"chunk_rows": 2}):
        res = evaluate(f, **kw)  # type: ignore[arg-type]
        assert res.metrics["n_examples"] == 4
        assert res.metrics["accuracy"] == want_acc
    res = evaluate(f)
    assert res.examples is not None
    assert res.examples["example_id"].tolist() == ref["example_id"].tolist()
    # duplicates are still found (the same text twice), in memory and streamed
    d = tmp_path / "dup.csv"
    d.write_text("example_id,label,prediction\n007,a,a\n7,a,b\n007,b,b\n")
    for kw in ({}, {"chunk_rows": 1}):
        with pytest.raises(DataError, match=r"example_id': 1 row\(s\) duplicate \(e.g. 007\)"):
            evaluate(d, **kw)  # type: ignore[arg-type]


def test_csv_ids_mapped_and_compared_against_parquet_int_ids(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    n = 200
    rng = np.random.default_rng(3)
    lab = rng.integers(0, 3, n)
    pred = np.where(rng.random(n) < 0.8, lab, (lab + 1) % 3)
    base = pd.DataFrame({"id": np.arange(n), "label": lab, "prediction": pred,
                         "confidence": rng.uniform(0.3, 1, n)})
    csv = tmp_path / "base.csv"
    base.to_csv(csv, index=False)
    par = tmp_path / "cand.parquet"
    base.rename(columns={"id": "example_id"}).to_parquet(par, index=False)
    g = tmp_path / "g.yaml"
    g.write_text("version: 1\ncolumn_map: {id: example_id}\nmetrics:\n  accuracy: {min: 0.5}\n")
    code, out, err = _main(capsys, "compare", str(csv), str(par), "--guardrails", str(g),
                           "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["details"]["pairing"]["matched"] == n
    assert doc["details"]["pairing"]["paired"] is True


def test_csv_slice_1_with_empty_rows_is_named_1(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    n = 200
    rng = np.random.default_rng(5)
    lab = rng.integers(0, 2, n)
    pred = np.where(rng.random(n) < 0.9, lab, 1 - lab)
    sl = np.where(rng.random(n) < 0.5, "1", "")
    f = tmp_path / "sl.csv"
    pd.DataFrame({"example_id": np.arange(n), "label": lab, "prediction": pred,
                  "seg": sl}).to_csv(f, index=False)
    want = float((lab == pred)[sl == "1"].mean())
    for kw in ({"column_map": {"seg": "slice"}}, {"slice_column": "seg"},
               {"column_map": {"seg": "slice"}, "chunk_rows": 10}):
        res = evaluate(f, **kw)  # type: ignore[arg-type]
        assert res.metrics["accuracy[slice=1]"] == pytest.approx(want, abs=1e-12)
        assert not any("slice=1.0" in k or "slice=]" in k or "slice=nan" in k
                       for k in res.metrics), sorted(res.metrics)
        assert res.details["slices"]["values"] == {"1": int((sl == "1").sum())}
    g = tmp_path / "g.yaml"
    g.write_text('version: 1\ncolumn_map: {seg: slice}\nslices:\n  "slice=1": '
                 "{accuracy: {min: 0.5}}\n")
    code, out, err = _main(capsys, "compare", str(f), str(f), "--guardrails", str(g),
                           "--format", "json")
    assert code == 0, err
    rows = {m["metric"]: m["verdict"] for m in json.loads(out)["metrics"]}
    assert rows == {"accuracy[slice=1]": "pass"}


def test_jsonl_ids_and_slices_are_text(tmp_path: Path) -> None:
    rows = [{"example_id": i, "label": i % 2, "prediction": 0, "slice": 1 if i % 3 else None}
            for i in range(30)]
    f = _jsonl(tmp_path / "s.jsonl", rows)
    lab = np.array([r["label"] for r in rows])
    has = np.array([r["slice"] is not None for r in rows])
    for kw in ({}, {"chunk_rows": 7}):
        res = evaluate(f, **kw)  # type: ignore[arg-type]
        assert res.metrics["accuracy[slice=1]"] == pytest.approx(float((lab == 0)[has].mean()))
        assert "accuracy[slice=1.0]" not in res.metrics
    big = _jsonl(tmp_path / "big.jsonl", [
        {"example_id": 18446744073709551616, "label": "a", "prediction": "a"},
        {"example_id": 18446744073709551617, "label": "b", "prediction": "a"}])
    with pytest.raises(DataError, match="column 'example_id' holds numbers too large"):
        evaluate(big)


# -- 7. a deeply nested guardrails file ----------------------------------------------------------

def test_deep_guardrails_yaml_is_one_line_exit_2(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    deep = tmp_path / "deep.yaml"
    deep.write_text("version: 1\nname: " + "[" * 3000 + "]" * 3000 + "\n")
    code, _, err = _main(capsys, "guardrails", "validate", str(deep))
    assert code == 2, err
    assert _error_line(err) == f"{deep}: nesting too deep"
    deep.write_text("version: 1\nname: x\nmetrics:\n" + "".join(
        "  " * (i + 1) + f"k{i}:\n" for i in range(3000)))
    with pytest.raises(ConfigError, match="nesting too deep"):
        from aipm_tracking.guardrails import load_guardrails

        load_guardrails(deep)
