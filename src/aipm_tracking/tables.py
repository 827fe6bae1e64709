"""Reading per-example eval tables: DataFrame, pyarrow Table, CSV, Parquet, JSONL.

Two ways in:

* :func:`load_table` reads a whole table into a pandas DataFrame (small and medium files);
* :func:`iter_chunks` streams a file as DataFrames of about ``chunk_rows`` rows with bounded
  memory (Parquet through ``ParquetFile.iter_batches``, CSV through ``pyarrow.csv.open_csv``,
  JSONL through ``pyarrow.json.open_json``).

A streamed CSV/JSONL column is typed from the file's first block; a later block that does not
fit raises :class:`~aipm_tracking.errors.ColumnTypeChanged`, and the evaluation reads the file
again with that column widened (int to float, anything to string), as the whole-file reader
types it.

Both apply the column map (``theirs -> canonical``, DESIGN §3) and turn every read failure
(truncated Parquet, unparsable CSV/JSONL, unknown extension, a mapped column that does not
exist) into a :class:`~aipm_tracking.errors.DataError` whose one line names the file and column.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ColumnTypeChanged, DataError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: Canonical per-example columns (DESIGN §3), in display order.
CANONICAL_COLUMNS = ("example_id", "label", "prediction", "confidence", "latency_ms", "cost_usd",
                     "overridden", "fallback", "slice")
#: Extra columns with a meaning (LLM pricing derives ``cost_usd`` from them).
TOKEN_COLUMNS = ("input_tokens", "output_tokens")

PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv",)
JSONL_SUFFIXES = (".jsonl", ".ndjson")

#: ``evaluate(path)`` streams a Parquet file with more rows than this ...
CHUNKED_MIN_ROWS = 5_000_000
#: ... and a CSV/JSONL file larger than this many bytes.
CHUNKED_MIN_BYTES = 512 * 1024 * 1024
#: Rows per chunk in streaming mode.
DEFAULT_CHUNK_ROWS = 1_000_000


def source_name(table: Any) -> str:
    """A short name for messages: the file path, or ``<dataframe>`` / ``<arrow table>``."""
    if isinstance(table, (str, os.PathLike)):
        return os.fspath(table)
    if type(table).__name__ == "Table":
        return "<arrow table>"
    return "<dataframe>"


def file_format(path: str | os.PathLike[str]) -> str:
    """``"parquet"``, ``"csv"`` or ``"jsonl"`` from the extension; anything else is a DataError."""
    p = os.fspath(path).lower()
    if p.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if p.endswith(CSV_SUFFIXES):
        return "csv"
    if p.endswith(JSONL_SUFFIXES):
        return "jsonl"
    raise DataError(f"{os.fspath(path)}: unknown eval file type (expected .csv, .parquet or .jsonl)")


def check_column_map(columns: list[str], column_map: Mapping[str, str] | None,
                     source: str) -> dict[str, str]:
    """Validate ``{theirs: canonical}`` against the table's columns; return the renames to do.

    A mapped column that does not exist is an error naming the file and the column; so is a
    map that would create two columns of the same name. Mapping a column to itself is a no-op.
    """
    renames: dict[str, str] = {}
    for theirs, canonical in (column_map or {}).items():
        if theirs == canonical:
            continue
        if theirs not in columns:
            if canonical in columns:  # already canonical (e.g. a guardrails map on clean data)
                continue
            raise DataError(f"{source}: column '{theirs}' (mapped to '{canonical}') not found; "
                            f"columns are: {', '.join(map(str, columns[:20]))}")
        renames[theirs] = canonical
    final = [renames.get(c, c) for c in columns]
    dupes = sorted({c for c in final if final.count(c) > 1})
    if dupes:
        raise DataError(f"{source}: column map gives two columns named '{dupes[0]}'")
    return renames


def _wrap_read_error(path: str, fmt: str, exc: BaseException) -> DataError:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return DataError(f"{path}: cannot read {fmt} file ({msg[:200]})")


def _read_file(path: str, columns: list[str] | None = None) -> pd.DataFrame:

    fmt = file_format(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such eval file")
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path, columns=columns).to_pandas()
        if fmt == "csv":
            import pyarrow.csv as pcsv

            conv = pcsv.ConvertOptions(include_columns=columns) if columns else None
            return pcsv.read_csv(path, convert_options=conv).to_pandas()
        import pyarrow.json as pjson  # same parser as streaming (no pandas dtype guessing)

        tbl = pjson.read_json(path)
        return (tbl.select(columns) if columns else tbl).to_pandas()
    except DataError:
        raise
    except (KeyError, MemoryError) as e:
        if isinstance(e, MemoryError):
            raise
        raise DataError(f"{path}: column {e} not found") from None
    except Exception as e:  # pyarrow/pandas raise many types for corrupt input
        raise _wrap_read_error(path, fmt, e) from None


def load_table(table: Any, column_map: Mapping[str, str] | None = None) -> tuple[pd.DataFrame, str]:
    """Any supported table -> ``(DataFrame with canonical names, source name)``.

    DataFrames are not copied (columns are renamed on a shallow copy); pyarrow Tables are
    converted; paths are read according to their extension.
    """
    import pandas as pd

    src = source_name(table)
    if isinstance(table, (str, os.PathLike)):
        df = _read_file(os.fspath(table))
    elif isinstance(table, pd.DataFrame):
        df = table
    elif type(table).__name__ == "Table" and hasattr(table, "to_pandas"):
        df = table.to_pandas()
    else:
        raise DataError(f"cannot evaluate a {type(table).__name__}: expected a pandas DataFrame, "
                        f"a pyarrow Table or a .csv/.parquet/.jsonl path")
    if not all(isinstance(c, str) for c in df.columns):
        df = df.rename(columns=str)  # never mutate the caller's frame
    renames = check_column_map(list(df.columns), column_map, src)
    if renames:
        df = df.rename(columns=renames)
    return df, src


def file_rows(path: str) -> int | None:
    """Row count from Parquet metadata (None for text formats, whose count needs a scan)."""
    if file_format(path) != "parquet":
        return None
    import pyarrow.parquet as pq

    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except Exception as e:
        raise _wrap_read_error(path, "parquet", e) from None


def should_stream(path: str) -> bool:
    """True when ``evaluate(path)`` should read the file chunk by chunk (see the thresholds)."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such eval file")
    rows = file_rows(path)
    if rows is not None:
        return rows > CHUNKED_MIN_ROWS
    return os.path.getsize(path) > CHUNKED_MIN_BYTES


def file_columns(path: str) -> list[str]:
    """Column names of a file without reading its data (Parquet schema, CSV/JSONL first chunk)."""
    fmt = file_format(path)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            return [str(n) for n in pq.ParquetFile(path).schema_arrow.names]
        except Exception as e:
            raise _wrap_read_error(path, fmt, e) from None
    for chunk in _iter_raw(path, 1000, None):
        return [str(c) for c in chunk.columns]
    return []


#: A streamed CSV block whose values do not fit the type inferred from the first block.
_CSV_TYPE_CHANGE = re.compile(r"In CSV column #(\d+): CSV conversion error to ([^:]+): "
                              r"invalid value '(.*)'")
#: ... and the JSON one (pyarrow names no column: see :func:`_json_int_column`).
_JSON_INT_CHANGE = re.compile(r"Failed to convert JSON to int64, couldn't parse:(\S+)")
#: Whose int64 type is widened first when a JSONL block holds a float (the usual suspects).
_WIDEN_ORDER = ("latency_ms", "cost_usd", "confidence", "input_tokens", "output_tokens",
                "label", "prediction")


def _parses_as_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _csv_header(path: str) -> list[str]:
    import csv

    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
        return next(csv.reader(f), [])


def _csv_type_change(path: str, exc: BaseException) -> DataError | None:
    m = _CSV_TYPE_CHANGE.search(str(exc))
    if m is None:
        return None
    names = _csv_header(path)  # the number counts the file's columns, read or not
    if int(m.group(1)) >= len(names):
        return None
    col, was, value = names[int(m.group(1))], m.group(2), m.group(3)
    widen = "float64" if was == "int64" and _parses_as_float(value) else "string"
    if was == "string":
        return None
    return ColumnTypeChanged(f"{path}: column '{col}' holds {value[:40]!r} after rows read "
                             f"as {was}", col, widen)


def _json_int_column(path: str, exc: BaseException, schema: Any,
                     types: Mapping[str, str]) -> DataError | None:
    """pyarrow's JSON reader does not say which int64 column met a float: widen the likeliest
    one still int64 (a second failure widens the next)."""
    m = _JSON_INT_CHANGE.search(str(exc))
    if m is None or schema is None or not _parses_as_float(m.group(1)):
        return None
    ints = [f.name for f in schema if str(f.type) == "int64" and f.name not in types]
    ints.sort(key=lambda c: (_WIDEN_ORDER.index(c) if c in _WIDEN_ORDER else len(_WIDEN_ORDER),
                             c == "example_id"))
    if not ints:
        return None
    return ColumnTypeChanged(f"{path}: column '{ints[0]}' holds {m.group(1)[:40]!r} after "
                             f"rows read as int64", ints[0], "float64")


def _iter_raw(path: str, chunk_rows: int, columns: list[str] | None,
              types: Mapping[str, str] | None = None) -> Iterator[pd.DataFrame]:
    fmt = file_format(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such eval file")
    types = dict(types or {})
    schema: Any = None
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            # pre_buffer=False: the default read-ahead caches whole row groups (RSS grows)
            pf = pq.ParquetFile(path, pre_buffer=False)
            for batch in pf.iter_batches(batch_size=chunk_rows, columns=columns):
                yield batch.to_pandas()
            return
        import pyarrow as pa

        # Text formats: blocks of bytes; ~64 bytes per row is a fair guess for eval rows.
        # A column's type is inferred from the first block; ``types`` widens the columns a
        # later block showed to hold more (the whole-file reader's type for them).
        block = max(1 << 20, min(chunk_rows * 64, 256 << 20))
        pinned = {c: pa.float64() if t == "float64" else pa.string() for c, t in types.items()}
        if fmt == "csv":
            import pyarrow.csv as pcsv

            reader = pcsv.open_csv(path, read_options=pcsv.ReadOptions(block_size=block),
                                   convert_options=pcsv.ConvertOptions(
                                       include_columns=columns, column_types=pinned))
        else:
            import pyarrow.json as pjson

            reader = pjson.open_json(
                path, read_options=pjson.ReadOptions(block_size=block),
                parse_options=pjson.ParseOptions(
                    explicit_schema=pa.schema(list(pinned.items())),
                    unexpected_field_behavior="infer") if pinned else None)
        schema = reader.schema
        for batch in reader:
            df = batch.to_pandas()
            yield df[columns] if (columns and fmt == "jsonl") else df
    except DataError:
        raise
    except KeyError as e:
        raise DataError(f"{path}: column {e} not found") from None
    except MemoryError:
        raise
    except Exception as e:
        changed = (_csv_type_change(path, e) if fmt == "csv"
                   else _json_int_column(path, e, schema, types))
        if changed is not None:
            raise changed from None
        if fmt == "jsonl" and "unexpected field" in str(e):
            raise DataError(f"{path}: a field that is not in the first rows appears later; a "
                            f"streamed JSONL file needs every field in its first 1 MiB (null "
                            f"is fine), or convert it to Parquet") from None
        raise _wrap_read_error(path, fmt, e) from None


def iter_chunks(path: str | Path, column_map: Mapping[str, str] | None = None, *,
                chunk_rows: int = DEFAULT_CHUNK_ROWS,
                columns: list[str] | None = None,
                types: Mapping[str, str] | None = None) -> Iterator[pd.DataFrame]:
    """Stream a file as DataFrames with canonical column names (``columns``: canonical names
    to read, default all). Memory is bounded by the chunk size.

    CSV/JSONL column types are inferred from the first block. A later block that does not fit
    raises :class:`~aipm_tracking.errors.ColumnTypeChanged`: stream again with ``types``
    (file column name -> ``"float64"`` or ``"string"``) updated from it."""
    path = os.fspath(path)
    src_cols = file_columns(path)
    renames = check_column_map(src_cols, column_map, path)
    read_cols = None
    if columns is not None:
        back = {v: k for k, v in renames.items()}
        final = [renames.get(c, c) for c in src_cols]
        read_cols = [back.get(c, c) for c in columns if c in final]
    for df in _iter_raw(path, chunk_rows, read_cols, types):
        yield df.rename(columns=renames) if renames else df
