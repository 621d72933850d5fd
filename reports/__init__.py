"""The demonstration report: what it holds (``content``), its words in Korean and English, and its HTML and PDF."""
