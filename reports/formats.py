"""The formats a report comes in, and their media types (light to import: the command line's options use them)."""

from __future__ import annotations

import enum


class Format(enum.StrEnum):
    HTML = "html"
    PDF = "pdf"


MEDIA_TYPES = {Format.HTML: "text/html; charset=utf-8", Format.PDF: "application/pdf"}
