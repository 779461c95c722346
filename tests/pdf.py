"""Reading a PDF as its reader does, with poppler's tools: its text (pdftotext), its pages as pictures
(pdftoppm), its fonts (pdffonts). A test that needs them is skipped where poppler-utils is not installed
(``make system-deps`` installs it)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

# no-break spaces (Babel puts them between a number and its currency or unit) read as spaces
_SPACES = re.compile(r"[\s\xa0\u202f]+")


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} (poppler-utils) is not installed")
    return path


def _run(tool: str, pdf: bytes, *args: str) -> str:
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "document.pdf"
        source.write_bytes(pdf)
        done = subprocess.run([_tool(tool), *args, str(source), "-"], check=True, capture_output=True)
        return done.stdout.decode()


def pdf_text(pdf: bytes, page: int | None = None) -> str:
    """The document's text (or one page's, counted from 1), every run of spaces and line breaks as one space."""
    pages = () if page is None else ("-f", str(page), "-l", str(page))
    return _SPACES.sub(" ", _run("pdftotext", pdf, *pages)).strip()


def pdf_rows(pdf: bytes) -> list[str]:
    """The document's text as laid out on its pages, one string per printed row (its cells one space apart)."""
    rows = (_SPACES.sub(" ", row).strip() for row in _run("pdftotext", pdf, "-layout").splitlines())
    return [row for row in rows if row]


def pdf_fonts(pdf: bytes) -> str:
    """pdffonts' table of the fonts the document embeds."""
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "document.pdf"
        source.write_bytes(pdf)
        return subprocess.run([_tool("pdffonts"), str(source)], check=True, capture_output=True).stdout.decode()


def pdf_pictures(pdf: bytes, folder: Path, dpi: int = 60) -> list[Path]:
    """Each page as a PNG picture, in order (their number is the page count)."""
    source = folder / "document.pdf"
    source.write_bytes(pdf)
    subprocess.run([_tool("pdftoppm"), "-png", "-r", str(dpi), str(source), str(folder / "page")], check=True)
    return sorted(folder.glob("page*.png"), key=lambda path: int(path.stem.rsplit("-", 1)[1]))


def pdf_words(pdf: bytes) -> tuple[float, list[tuple[float, float, str]]]:
    """The first page's width and each word of the document with where it starts and ends across the page (in
    points, from the left edge)."""
    laid = _run("pdftotext", pdf, "-bbox")
    width = float(re.search(r'<page width="([\d.]+)"', laid).group(1))  # type: ignore[union-attr]
    words = re.findall(r'<word xMin="([\d.]+)" yMin="[\d.]+" xMax="([\d.]+)" yMax="[\d.]+">([^<]*)</word>', laid)
    return width, [(float(start), float(end), word) for start, end, word in words]
