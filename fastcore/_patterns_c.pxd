# cython: language_level=3
"""Declarations of fastcore._patterns_c, so other Cython modules can cimport PatternCache."""

cimport cython

from fastcore._lru_c cimport LRUCache


@cython.final
cdef class PatternCache:
    cdef LRUCache _lru  # key (see _cache_key) -> compiled re.Pattern

    cdef object _compile(self, object pattern, object flags)
