"""``ds.utils``: data utilities (``ds.utils.data``) and ``check_env``."""
