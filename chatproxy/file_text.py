"""The text of a file attached to a question: plain text and code, PDF, Word `.docx`.

What a file is comes from its bytes, not its name: `%PDF-` begins a PDF, a ZIP
holding `word/document.xml` is a `.docx`, and UTF-8 without NUL bytes is text
(`.txt`, `.md`, `.csv`, `.json`, source files alike). PDF text is extracted
with pypdf, a `.docx`'s paragraphs and table cells with python-docx; both are
imported only when such a file arrives.
"""

from __future__ import annotations

import io
import logging
import zipfile
from dataclasses import dataclass

TEXT_TYPE = "text/plain"
PDF_TYPE = "application/pdf"
DOCX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
MAX_PDF_PAGES = 2000  # a PDF claiming more is refused before its pages are read
log = logging.getLogger(__name__)


class UnreadableFile(ValueError):
    """The file is of no kind a question takes, or its text cannot be read (`str()` says why)."""


@dataclass(frozen=True)
class FileText:
    """A file's media type (read from its bytes) and its text."""

    media_type: str
    text: str


def read_file_text(data: bytes) -> FileText:
    """The media type and text of a file's `data`.

    Raises UnreadableFile for a file that is none of text, PDF or `.docx`, a
    damaged one, or a PDF with no text to extract (a scan).
    """
    if data.startswith(b"%PDF-"):
        return FileText(PDF_TYPE, _pdf_text(data))
    if data.startswith(b"PK\x03\x04"):
        return FileText(DOCX_TYPE, _docx_text(data))
    if b"\x00" in data:
        raise UnreadableFile("it is not text, PDF or Word .docx")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UnreadableFile("it is not UTF-8 text, PDF or Word .docx") from None
    return FileText(TEXT_TYPE, text)


def _pdf_text(data: bytes) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    # pypdf logs warnings about a damaged PDF's structure with the file's own bytes in them.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise UnreadableFile("the PDF is encrypted")
        if len(reader.pages) > MAX_PDF_PAGES:
            raise UnreadableFile(f"the PDF has more than {MAX_PDF_PAGES} pages")
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as error:
        if isinstance(error, UnreadableFile):
            raise
        raise UnreadableFile("the PDF cannot be read") from None
    text = "\n\n".join(page.strip() for page in pages if page.strip())
    if not text:
        raise UnreadableFile(
            "the PDF has no text to extract (a scan? its pages are images; "
            "attach them as images instead)"
        )
    return text


def _docx_text(data: bytes) -> str:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            if "word/document.xml" not in archive.namelist():
                raise UnreadableFile("it is a ZIP archive, not a Word .docx")
    except zipfile.BadZipFile:
        raise UnreadableFile("it is not text, PDF or Word .docx") from None
    import docx

    try:
        document = docx.Document(io.BytesIO(data))
    except Exception:  # python-docx raises lxml's, zipfile's and its own errors alike
        raise UnreadableFile("the Word .docx cannot be read") from None
    lines = [paragraph.text for paragraph in document.paragraphs]
    for table in document.tables:
        for row in table.rows:
            lines.append("\t".join(cell.text for cell in row.cells))
    text = "\n".join(lines).strip()
    if not text:
        raise UnreadableFile("the Word .docx has no text")
    return text
