"""Model files, one model per file (``bert.py``)."""
