"""triobot's benchmark suite (pyperf). Run ``python -m bench --help``."""
