"""CLI audit: bad input is one clear line and exit 2, and nothing is written before the input
is known to be good (DESIGN §6, §7b). Each test here reproduces a bug an audit found."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aipm_tracking.cli import main


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``aipm ARGS`` in process -> (exit code, stdout, stderr)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as ei:
        main(list(args))
    code = ei.value.code
    out = capsys.readouterr()
    return (0 if code is None else int(code)), out.out, out.err


def _one_error_line(err: str) -> str:
    """stderr is exactly one line, ``aipm: error: ...`` (no Usage/Try block, no traceback)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("aipm: error: "), err
    return lines[0]


def _stored_runs(capsys: pytest.CaptureFixture[str]) -> list[str]:
    code, out, err = _run(capsys, "runs", "list", "--format", "json")
    assert code == 0, err
    return [r["ref"] for r in json.loads(out)]


def _eval_df(n: int = 300, acc: float = 0.85, seed: int = 0) -> pd.DataFrame:
    label = np.random.default_rng(12345).integers(0, 3, n)
    rng = np.random.default_rng(seed)
    pred = np.where(rng.random(n) < acc, label, (label + 1) % 3)
    return pd.DataFrame({
        "example_id": np.arange(n),
        "label": label.astype(str),
        "prediction": pred.astype(str),
        "confidence": rng.uniform(0.3, 1.0, n).round(3),
        "slice": np.where(rng.random(n) < 0.5, "de", "en"),
    })


@pytest.fixture
def evals(tmp_path: Path) -> tuple[str, str]:
    e1, e2 = tmp_path / "e1.csv", tmp_path / "e2.csv"
    _eval_df(seed=0).to_csv(e1, index=False)
    _eval_df(acc=0.8, seed=1).to_csv(e2, index=False)
    return str(e1), str(e2)


@pytest.fixture
def dup(tmp_path: Path) -> str:
    """An eval file whose example_id 1 appears twice."""
    p = tmp_path / "dup.csv"
    p.write_text("example_id,label,prediction,confidence,slice\n"
                 "1,a,a,0.9,de\n1,b,b,0.8,en\n3,a,b,0.7,de\n4,b,b,0.95,en\n")
    return str(p)


# -- 1. out-of-range numbers are usage errors, not internal errors (exit 4) ----------------
@pytest.mark.parametrize("argv, option", [
    (["compare", "{e1}", "{e2}", "--seed", "-1"], "--seed"),
    (["demo", "--dir", "{d}", "--seed", "-1"], "--seed"),
    (["demo", "--dir", "{d}", "--n", "-1"], "--n"),
    (["demo", "--dir", "{d}", "--n", "99999999999999"], "--n"),
])
def test_out_of_range_seed_and_n_are_usage_errors(argv: list[str], option: str,
                                                  evals: tuple[str, str], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    args = [a.format(e1=evals[0], e2=evals[1], d=tmp_path / "demo") for a in argv]
    code, out, err = _run(capsys, *args)
    assert code == 2, err
    line = _one_error_line(err)
    assert f"'{option}'" in line and "not in the range" in line
    assert out == ""
    assert _stored_runs(capsys) == []


# -- 2. no side effects before a usage error -------------------------------------------------
def test_demo_unknown_format_logs_nothing(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "demo"
    code, _out, err = _run(capsys, "demo", "--n", "100", "--format", "bogus", "--dir", str(d))
    assert code == 2
    assert "unknown format 'bogus'" in _one_error_line(err)
    assert _stored_runs(capsys) == []
    assert not d.exists()


@pytest.mark.parametrize("to, says", [
    ("bogus:x", "no backend for scheme 'bogus:'"),
    ("bad target", "cannot read destination 'bad target'"),
    ("local", "--to local: backend 'local' cannot store comparisons"),  # bug 3
])
def test_compare_bad_to_writes_nothing(to: str, says: str, evals: tuple[str, str],
                                       tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    out_html = tmp_path / "out.html"
    out_html.write_text("old report")
    summary = tmp_path / "summary.md"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GITHUB_STEP_SUMMARY", str(summary))
        code, out, err = _run(capsys, "compare", *evals, "-o", str(out_html), "--to", to)
    assert code == 2, err
    assert says in _one_error_line(err)
    assert out_html.read_text() == "old report"
    assert not summary.exists()
    assert out == ""


def test_compare_to_local_refused_before_any_work(evals: tuple[str, str], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Bug 3: nothing is evaluated, so even a missing candidate is not what is reported."""
    code, out, err = _run(capsys, "compare", evals[0], str(tmp_path / "missing.csv"),
                          "--to", "local")
    assert code == 2 and out == ""
    line = _one_error_line(err)
    assert "cannot store comparisons" in line and "missing.csv" not in line


def test_compare_to_wandb_without_project_writes_nothing(evals: tuple[str, str],
                                                         tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    pytest.importorskip("aipm_wandb")
    out_html = tmp_path / "out.html"
    out_html.write_text("old report")
    code, _out, err = _run(capsys, "compare", *evals, "-o", str(out_html), "--to", "wandb:")
    assert code == 2
    assert "needs a project" in _one_error_line(err)
    assert out_html.read_text() == "old report"


# -- 4. compare --drop-bad-rows ---------------------------------------------------------------
def test_compare_drop_bad_rows(dup: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = _run(capsys, "compare", dup, dup)
    assert code == 2 and "--drop-bad-rows" in _one_error_line(err)
    code, out, err = _run(capsys, "compare", dup, dup, "--drop-bad-rows", "--format", "json")
    assert code in (0, 3), err
    doc = json.loads(out)
    assert doc["baseline"]["ref"] == dup
    note = (f"aipm: {dup}: dropped bad rows: column 'example_id': 1 row(s) duplicate (e.g. 1) "
            "(3 rows evaluated)")
    assert err.strip().splitlines() == [note, note]
    code, _out, err = _run(capsys, "-q", "compare", dup, dup, "--drop-bad-rows")
    assert code in (0, 3) and err == ""


# -- 5. log --drop-bad-rows says what it dropped ------------------------------------------------
def test_log_drop_bad_rows_notes_dropped_rows(dup: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "log", dup, "--model", "m", "--drop-bad-rows")
    assert code == 0, err
    assert (f"aipm: {dup}: dropped bad rows: column 'example_id': 1 row(s) duplicate (e.g. 1) "
            "(3 rows evaluated)") in err.splitlines()
    ref = out.strip().splitlines()[-1]
    code, shown, err = _run(capsys, "runs", "show", ref, "--format", "json")
    assert code == 0, err
    assert json.loads(shown)["dataset"]["size"] == 3
    code, out, err = _run(capsys, "-q", "log", dup, "--model", "m", "--drop-bad-rows")
    assert code == 0 and err == ""
    assert len(_stored_runs(capsys)) == 2


# -- 6. report on a model with no runs --------------------------------------------------------
def test_report_unknown_model_is_an_error(evals: tuple[str, str], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(capsys, "log", evals[0], "--model", "bot")[0] == 0
    out_html = tmp_path / "trend.html"
    code, out, err = _run(capsys, "report", "--model", "no-such-model", "-o", str(out_html))
    assert code == 2
    assert _one_error_line(err) == "aipm: error: no runs of model 'no-such-model' in local"
    assert out == "" and not out_html.exists()
    code, _out, err = _run(capsys, "report", "--model", "bot", "-o", str(out_html))
    assert code == 0 and out_html.exists(), err


# -- 7. messages that name the wrong thing ----------------------------------------------------
def test_runs_list_from_wandb_without_project_names_from(capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    pytest.importorskip("aipm_wandb")
    for source in ("wandb:", "wandb"):
        code, _out, err = _run(capsys, "runs", "list", "--from", source)
        assert code == 2
        line = _one_error_line(err)
        assert "--from wandb:ENTITY/PROJECT" in line and "--to" not in line
    code, _out, err = _run(capsys, "report", "--model", "m", "--from", "wandb:")
    assert code == 2 and "--from wandb:ENTITY/PROJECT" in _one_error_line(err)


def test_directory_named_like_an_eval_file(evals: tuple[str, str], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "somedir.csv"
    d.mkdir()
    for argv in (["compare", str(d), evals[1]], ["compare", evals[0], str(d)],
                 ["thresholds", str(d), "--max-risk", "0.1"], ["report", str(d)],
                 ["runs", "show", str(d)]):
        code, _out, err = _run(capsys, *argv)
        assert code == 2, argv
        line = _one_error_line(err)
        assert f"{d}: is a directory, not an eval file" in line, argv
        assert "no such eval file" not in line


def test_runs_history_of_an_eval_file(evals: tuple[str, str],
                                      capsys: pytest.CaptureFixture[str]) -> None:
    for ref in (evals[0], "demo.parquet"):
        code, out, err = _run(capsys, "runs", "history", ref)
        assert code == 2 and out == ""
        line = _one_error_line(err)
        assert "runs history needs a run reference" in line and ref in line
        assert "no backend for scheme" not in line


# -- 8. click's own usage errors: one line ----------------------------------------------------
@pytest.mark.parametrize("argv, says, command", [
    (["log", "{d}", "--model", "m"], "'EVAL_FILE': File '{d}' is a directory", "aipm log"),
    (["push", "local:abc123"], "missing option '--to'", "aipm push"),
    (["compare", "{e1}", "{e2}", "--queries-per-day", "abc"],
     "invalid value for '--queries-per-day': 'abc' is not a valid float", "aipm compare"),
    (["compare", "{e1}", "{e2}", "--to"], "option '--to' requires an argument",
     "aipm compare"),
    (["--store", "{d}", "runs", "list", "--limit"], "option '--limit' requires an argument",
     "aipm runs list"),
    (["compare", "{e1}"], "missing argument 'CANDIDATE'", "aipm compare"),
    (["no-such-command"], "no such command 'no-such-command'", "aipm"),
])
def test_click_usage_errors_are_one_line(argv: list[str], says: str, command: str,
                                         evals: tuple[str, str], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "somedir.csv"
    d.mkdir()
    fill = {"d": str(d), "e1": evals[0], "e2": evals[1]}
    code, out, err = _run(capsys, *(a.format(**fill) for a in argv))
    assert code == 2 and out == ""
    line = _one_error_line(err)
    assert says.format(**fill) in line
    assert line.endswith(f"(see '{command} --help')")
    # what click shows as help stays as it was
    code, out, err = _run(capsys)
    assert code == 2 and err.startswith("Usage: aipm [OPTIONS] COMMAND [ARGS]...")
    code, out, err = _run(capsys, "compare", "--help")
    assert code == 0 and out.startswith("Usage: aipm compare [OPTIONS] BASELINE CANDIDATE")
