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
A column map whose target is a near-miss of a canonical column (``confidnce``) is a
:class:`~aipm_tracking.errors.UsageError` ("did you mean 'confidence'?"); other targets are
accepted (plugins may read columns of their own).

**Ids and slices are text.** In CSV and JSONL files the columns that become ``example_id`` and
``slice`` (after the column map; the ``slice_column`` too) are read as strings, never guessed:
``007`` and ``7`` are two ids, an id beyond 64 bits stays exact, and slice ``1`` is named
``slice=1`` even when some rows have no slice. In CSV an empty value there is missing (a null
id, a row in no slice); a JSON integer id too large for a 64-bit float to keep exactly is a
DataError (write such ids as JSON strings). Parquet columns keep their declared types.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ColumnTypeChanged, DataError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: Canonical per-example columns (DESIGN §3), in display order.
CANONICAL_COLUMNS = ("example_id", "label", "prediction", "confidence", "latency_ms", "cost_usd",
                     "overridden", "fallback", "slice")
#: Extra columns with a meaning (LLM pricing derives ``cost_usd`` from them).
TOKEN_COLUMNS = ("input_tokens", "output_tokens")
#: Canonical columns read as text from CSV/JSONL (never type-guessed: ``007`` is not ``7``).
TEXT_COLUMNS = ("example_id", "slice")

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


def _edit_distance(a: str, b: str) -> int:
    """Optimal-string-alignment distance (insert, delete, substitute, swap two neighbours)."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[-1]


def near_miss_column(name: str) -> str | None:
    """The canonical (or token) column ``name`` is a typo of, or None.

    A typo is one or two edits away (one for names of five letters or fewer: ``lable``,
    ``confidnce``, ``overriden``, ``slices``); a name that extends a canonical one with
    ``_...`` (``confidence_2``, ``label_id``) is taken as a column of its own (a plugin may
    read it), as is anything further away."""
    if name in CANONICAL_COLUMNS or name in TOKEN_COLUMNS:
        return None
    best: tuple[int, str] | None = None
    for canon in (*CANONICAL_COLUMNS, *TOKEN_COLUMNS):
        if name.startswith(canon + "_"):
            return None
        d = _edit_distance(name.lower(), canon)
        if d <= (1 if len(canon) <= 5 else 2) and (best is None or d < best[0]):
            best = (d, canon)
    return None if best is None else best[1]


def check_column_map_targets(column_map: Mapping[str, str] | None) -> None:
    """A target that is a near-miss of a canonical column is a UsageError naming the entry."""
    for theirs, target in (column_map or {}).items():
        close = near_miss_column(str(target))
        if close is not None:
            raise UsageError(f"column map {theirs}={target}: '{target}' is not a column aipm "
                             f"knows; did you mean '{close}'?")


def check_column_map(columns: list[str], column_map: Mapping[str, str] | None,
                     source: str) -> dict[str, str]:
    """Validate ``{theirs: canonical}`` against the table's columns; return the renames to do.

    A mapped column that does not exist is an error naming the file and the column; so is a
    map that would create two columns of the same name, and a target that is a typo of a
    canonical column (:func:`near_miss_column`). Mapping a column to itself is a no-op.
    """
    check_column_map_targets(column_map)
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


def text_sources(column_map: Mapping[str, str] | None, extra: Collection[str] = ()) -> set[str]:
    """File column names read as text: those the column map sends to ``example_id``/``slice``
    (or to a name in ``extra``, e.g. a ``slice_column``), and those names themselves unless
    the map sends them elsewhere. Names not in the file are harmless."""
    targets = {*TEXT_COLUMNS, *extra}
    cmap = dict(column_map or {})
    out = {theirs for theirs, canon in cmap.items() if canon in targets}
    out |= {t for t in targets if cmap.get(t, t) == t}
    return out


#: JSON numbers at or beyond this lose integer precision as float64 (pyarrow reads integers
#: that do not fit in int64 as doubles).
_EXACT_FLOAT = 2.0 ** 53


def _as_text(data: Any, names: Collection[str], path: str, fmt: str) -> Any:
    """Arrow Table/RecordBatch with the ``names`` columns as strings: CSV (already read as
    strings) gets empty values as nulls; JSONL numbers and booleans are cast (``7`` ->
    ``"7"``, ``1.0`` -> ``"1"``). Nested values are left for the evaluation to reject."""
    import pyarrow as pa
    import pyarrow.compute as pc

    fields = list(data.schema)
    arrays = list(data.columns)
    changed = False
    for i, f in enumerate(fields):
        if f.name not in names:
            continue
        t = f.type
        arr = arrays[i]
        if fmt == "csv" and (pa.types.is_string(t) or pa.types.is_large_string(t)):
            arr = pc.if_else(pc.equal(arr, ""), pa.scalar(None, t), arr)
        elif fmt == "jsonl" and (pa.types.is_integer(t) or pa.types.is_floating(t)
                                 or pa.types.is_boolean(t)):
            if pa.types.is_floating(t) and len(arr) and (pc.max(pc.abs(arr)).as_py() or 0.0
                                                          ) >= _EXACT_FLOAT:
                raise DataError(f"{path}: column '{f.name}' holds numbers too large to read "
                                f"exactly (beyond 2**53); write them as JSON strings")
            arr = pc.cast(arr, pa.string())
        else:
            continue
        fields[i] = pa.field(f.name, arr.type)
        arrays[i] = arr
        changed = True
    if not changed:
        return data
    return type(data).from_arrays(arrays, schema=pa.schema(fields))


def _read_file(path: str, columns: list[str] | None = None,
               text: Collection[str] = ()) -> pd.DataFrame:
    """Read a whole file; ``text``: file column names read as strings (see :func:`text_sources`)."""
    fmt = file_format(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such eval file")
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path, columns=columns).to_pandas()
        import pyarrow as pa

        if fmt == "csv":
            import pyarrow.csv as pcsv

            conv = pcsv.ConvertOptions(include_columns=columns or [],
                                       column_types={c: pa.string() for c in text})
            tbl = pcsv.read_csv(path, convert_options=conv)
            return _as_text(tbl, text, path, fmt).to_pandas()
        import pyarrow.json as pjson  # same parser as streaming (no pandas dtype guessing)

        tbl = pjson.read_json(path)
        tbl = tbl.select(columns) if columns else tbl
        return _as_text(tbl, text, path, fmt).to_pandas()
    except DataError:
        raise
    except (KeyError, MemoryError) as e:
        if isinstance(e, MemoryError):
            raise
        raise DataError(f"{path}: column {e} not found") from None
    except Exception as e:  # pyarrow/pandas raise many types for corrupt input
        raise _wrap_read_error(path, fmt, e) from None


def load_table(table: Any, column_map: Mapping[str, str] | None = None, *,
               text_columns: Collection[str] = ()) -> tuple[pd.DataFrame, str]:
    """Any supported table -> ``(DataFrame with canonical names, source name)``.

    DataFrames are not copied (columns are renamed on a shallow copy); pyarrow Tables are
    converted; paths are read according to their extension (``example_id``, ``slice`` and
    the names in ``text_columns`` read as text from CSV/JSONL, see :func:`text_sources`).
    """
    import pandas as pd

    src = source_name(table)
    check_column_map_targets(column_map)
    if isinstance(table, (str, os.PathLike)):
        df = _read_file(os.fspath(table), text=text_sources(column_map, text_columns))
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
              types: Mapping[str, str] | None = None,
              text: Collection[str] = ()) -> Iterator[pd.DataFrame]:
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
                                       include_columns=columns,
                                       column_types={**pinned, **{c: pa.string() for c in text}}))
        else:
            import pyarrow.json as pjson

            reader = pjson.open_json(
                path, read_options=pjson.ReadOptions(block_size=block),
                parse_options=pjson.ParseOptions(
                    explicit_schema=pa.schema(list(pinned.items())),
                    unexpected_field_behavior="infer") if pinned else None)
        schema = reader.schema
        for batch in reader:
            df = _as_text(batch, text, path, fmt).to_pandas()
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
    text = text_sources(column_map) & set(src_cols)
    for df in _iter_raw(path, chunk_rows, read_cols, types, text):
        yield df.rename(columns=renames) if renames else df
