from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from cpython.object cimport PyObject


cdef class RateWindows:
    # Window specs, one C array entry per window.
    cdef readonly tuple windows
    cdef readonly Py_ssize_t max_keys
    cdef bytes _specs              # the snapshot's window section
    cdef Py_ssize_t _nwin
    cdef int64_t *_limit
    cdef double *_period
    cdef double *_offset
    cdef char *_calendar
    cdef int64_t _min_limit

    # Where ``now`` falls in each window, filled by _locate for one call.
    cdef int64_t *_at_index
    cdef double *_at_frac
    cdef int64_t *_at_cost          # the call's cost per window

    # Per slot: _state[slot * 3 * nwin ...] holds (bucket, current, previous)
    # per window; _older/_newer are the LRU links (-1 = none), _newer also
    # chains free slots; _keys owns a reference to the slot's key (NULL if free).
    cdef int64_t *_state
    cdef int32_t *_older
    cdef int32_t *_newer
    cdef PyObject **_keys
    cdef int32_t _capacity         # slots allocated
    cdef int32_t _high             # slots ever handed out (the rest are untouched)
    cdef int32_t _count
    cdef int32_t _oldest
    cdef int32_t _newest
    cdef int32_t _free

    # Open addressing, linear probing: an entry is (low 32 hash bits << 32) | (slot + 1), 0 = empty.
    cdef uint64_t *_table
    cdef uint32_t _table_mask

    cdef uint64_t _evictions
    cdef uint64_t _allowed
    cdef uint64_t _denied

    cdef int _locate(self, double now) except -1
    cdef int _costs(self, object cost, bint for_acquire) except -1
    cdef Py_ssize_t _find(self, str key, Py_hash_t hash_value) noexcept
    cdef Py_ssize_t _find_slot_entry(self, int32_t slot, Py_hash_t hash_value) noexcept
    cdef void _table_remove(self, Py_ssize_t position) noexcept
    cdef void _table_put(self, uint64_t entry) noexcept
    cdef int _reserve_one(self) except -1
    cdef int32_t _take_slot(self) noexcept
    cdef void _unlink(self, int32_t slot) noexcept
    cdef void _link_newest(self, int32_t slot) noexcept
    cdef void _drop_slot(self, int32_t slot) noexcept
    cdef bint _allowed_at(self, int64_t *state, double now) noexcept
    cdef double _retry_after(self, int64_t *state, double now) noexcept
    cdef double _retry_from(self, int64_t *state, double now, double guess) noexcept
    cdef void _free_all(self) noexcept
