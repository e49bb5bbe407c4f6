"""CSV text in and out: user files read strictly, result cells written spreadsheet-safe.

Reading (:func:`read_table`): UTF-8, with or without a byte-order mark. Anything else
(UTF-16, Latin-1, a binary file), a NUL byte, a duplicate header, a row with more cells
than the header, a cell over :data:`MAX_CELL` characters or a header without rows is a
one-line :class:`~reprstore.errors.InputError` naming the file, the line and what is
wrong, never python csv's own "field larger than field limit".

Writing (:func:`spreadsheet_safe`): a text cell starting with ``= + - @``, a tab or a
carriage return is a formula to Excel, LibreOffice and Google Sheets (``=cmd|' /C
calc'!A0``), so result CSVs prefix it with ``'`` (the OWASP rule for CSV injection);
plain numbers such as ``-0.5`` are left alone. :func:`unescape_cell` undoes it when a
result CSV is read back.
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass
from typing import Any

from reprstore.errors import InputError
from reprstore.keys import nfc

#: the longest cell read, in characters: python csv's default field limit, kept on
#: purpose (attribute values are labels; a longer cell is a broken file, not a label)
MAX_CELL = 131_072
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_UTF8_BOM = b"\xef\xbb\xbf"
_SAVE_AS_UTF8 = "save it as UTF-8 text (in Excel: 'CSV UTF-8') and run again"


@dataclass(frozen=True)
class Table:
    """A CSV file's header and rows; each row with the line it ends on (1 = header)."""

    path: str
    header: list[str]
    rows: list[tuple[int, list[str]]]

    def where(self, line: int) -> str:
        """``runs.csv line 3``: how errors name a row."""
        return f"{self.path} line {line}"


def read_table(path: str | os.PathLike[str]) -> Table:
    """The header (stripped, in NFC) and the non-blank rows of a UTF-8 CSV, checked.

    Raises
    ------
    InputError
        Unreadable, not UTF-8, NUL bytes, CSV syntax, a cell over :data:`MAX_CELL`
        characters, an empty file, a duplicate header name, a row with more cells than
        the header, or a header without rows.
    """
    where = os.fspath(path)
    text = _decode(where, _read_bytes(where))
    records = _parse(where, text)
    if not records:
        raise InputError(f"{where} is empty: expected a header line, then one row per line.")
    (header_line, raw_header), rows = records[0], records[1:]
    header = [nfc(h.strip()) for h in raw_header]
    _check_header(where, header_line, header)
    for line, cells in rows:
        if len(cells) > len(header):
            raise InputError(
                f"{where} line {line}: {len(cells)} cells but the header has {len(header)} "
                "columns; quote cells that hold commas, or add the missing column name."
            )
    if not rows:
        raise InputError(f"{where} line {header_line}: a header but no rows; add one row per line.")
    return Table(where, header, rows)


def _read_bytes(where: str) -> bytes:
    try:
        with open(where, "rb") as fh:
            return fh.read()
    except OSError as err:
        raise InputError(f"Cannot read {where}: {err.strerror}.") from err


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def _decode(where: str, data: bytes) -> str:
    """UTF-8 text (a leading BOM dropped), or a one-line error saying to save it so."""
    if data.startswith(_UTF16_BOMS):
        raise InputError(f"{where} is UTF-16 text, not UTF-8; {_SAVE_AS_UTF8}.")
    nul = data.find(b"\0")
    if nul >= 0:
        raise InputError(
            f"{where} line {_line_of(data, nul)}: a NUL byte (a binary or UTF-16 file?); "
            f"{_SAVE_AS_UTF8}."
        )
    body = data[len(_UTF8_BOM) :] if data.startswith(_UTF8_BOM) else data
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(
            f"{where} line {_line_of(body, err.start)}: byte 0x{body[err.start]:02X} is not "
            f"UTF-8 (a Latin-1 or Windows-1252 file?); {_SAVE_AS_UTF8}."
        ) from None


def _parse(where: str, text: str) -> list[tuple[int, list[str]]]:
    """Every non-blank record with the line it ends on; cells over :data:`MAX_CELL` refused.

    python csv's field limit is raised for the parse (and put back), so that an over-long
    cell is reported with its row and column instead of csv's bare "field larger than
    field limit".
    """
    previous = csv.field_size_limit(max(len(text) + 1, MAX_CELL))
    try:
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        records = []
        for cells in reader:
            if cells and any(c.strip() for c in cells):  # blank lines are skipped
                records.append((reader.line_num, cells))
    except csv.Error as err:
        raise InputError(f"{where} line {reader.line_num}: not valid CSV ({err}).") from None
    finally:
        csv.field_size_limit(previous)
    for line, cells in records:
        for column, cell in enumerate(cells, start=1):
            if len(cell) > MAX_CELL:
                raise InputError(
                    f"{where} line {line} column {column}: a cell of {len(cell):,} characters; "
                    f"cells may have at most {MAX_CELL:,}."
                )
    return records


def _check_header(where: str, line: int, header: list[str]) -> None:
    seen: dict[str, int] = {}
    for column, name in enumerate(header, start=1):
        if name in seen:
            raise InputError(
                f"{where} line {line}: column {name!r} appears twice in the header (columns "
                f"{seen[name]} and {column}); give each column once."
            )
        seen[name] = column


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_ESCAPED = re.compile(r"'+[=+\-@\t\r]")


def spreadsheet_safe(value: Any) -> Any:
    """``value`` as a CSV cell no spreadsheet runs as a formula.

    Text starting with ``= + - @``, a tab or a carriage return (after any ``'``s) gets a
    leading ``'``, unless it is a plain number (``-0.5``, ``+3``, ``1e-5``); anything
    else, numbers included, is returned as it is. :func:`unescape_cell` reverses it.
    """
    if not isinstance(value, str) or _PLAIN_NUMBER.fullmatch(value):
        return value
    if value.lstrip("'").startswith(_FORMULA_START):
        return "'" + value
    return value


def unescape_cell(value: Any) -> Any:
    """A cell of a result CSV as it was before :func:`spreadsheet_safe`."""
    if isinstance(value, str) and _ESCAPED.match(value):
        return value[1:]
    return value
