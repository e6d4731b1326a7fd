# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# distutils: extra_compile_args = -ffp-contract=off
"""Compiled RateWindows (see :mod:`fastcore.ratewin` for the API and semantics).

Layout: a key costs no Python object beyond the key string itself. An open
addressing table (linear probing, backward-shift deletion) maps the key's
hash to a slot number; per slot, one row of a growable int64 array holds
``(bucket, current, previous)`` per window, two int32 arrays link the slots
in LRU order (and chain free slots), and a pointer array owns the key.
``-ffp-contract=off`` keeps the compiler from fusing ``a * b + c`` so the
float results match the pure-Python twin bit for bit.
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_CheckExact
from cpython.long cimport PyLong_CheckExact
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.object cimport PyObject
from cpython.tuple cimport PyTuple_CheckExact, PyTuple_GET_ITEM, PyTuple_GET_SIZE
from cpython.ref cimport Py_INCREF, Py_XDECREF
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.math cimport INFINITY, nextafter
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset

from zlib import crc32

from fastcore._windows import (
    MAX_KEYS,
    SNAPSHOT_MAGIC,
    SNAPSHOT_VERSION,
    SnapshotError,
    Window,
    coerce_costs,
    coerce_key,
    coerce_time,
    normalize_windows,
    window_specs_bytes,
)

__all__ = ["RateWindows", "SnapshotError", "Window"]

cdef double BUCKET_INDEX_LIMIT = 4611686018427387904.0  # 2**62, as in fastcore._windows
cdef int64_t BUCKET_INDEX_MAX = 4611686018427387904
cdef uint64_t SIGN_BIT = 0x8000000000000000ULL
cdef uint64_t INF_KEY = 0xFFF0000000000000ULL  # _order_key(+inf)
cdef Py_ssize_t HEADER_SIZE = 5  # magic + version byte
cdef tuple ALLOWED = (True, 0.0)


cdef inline double _estimate(char calendar, int64_t bucket, int64_t current, int64_t previous,
                             int64_t index, double frac) noexcept:
    """Used amount at bucket ``index`` + ``frac`` (mirrors _ratewin_py._estimate)."""
    if calendar:
        return <double>current if index <= bucket else 0.0
    if index < bucket:  # time went backwards: read as the start of the stored bucket
        frac = 0.0
    if index <= bucket:
        return <double>previous * (1.0 - frac) + <double>current
    if index == bucket + 1:
        return <double>current * (1.0 - frac)
    return 0.0


cdef inline double _floor(double q) noexcept:
    """floor(q) for |q| < 2**62, where the int64 round trip is exact (and
    cheaper than a libm call on baseline x86-64)."""
    cdef double whole = <double><int64_t>q
    return whole - 1.0 if whole > q else whole


cdef extern from *:
    """
    /* An exact int in 0..2**63-1 into *out: 1; anything else: 0, no exception.
       Compact ints (one digit) are read directly, like Cython's own conversions. */
    static CYTHON_INLINE int fastcore_small_count(PyObject *value, int64_t *out) {
        long long wide;
        int overflow = 0;
        if (!PyLong_CheckExact(value)) return 0;
    #if PY_VERSION_HEX >= 0x030C0000
        if (PyUnstable_Long_IsCompact((PyLongObject *)value)) {
            Py_ssize_t small = PyUnstable_Long_CompactValue((PyLongObject *)value);
            *out = small;
            return small >= 0;
        }
    #else
        Py_ssize_t size = Py_SIZE(value);
        if (size == 0 || size == 1) {
            *out = size ? (int64_t)((PyLongObject *)value)->ob_digit[0] : 0;
            return 1;
        }
    #endif
        wide = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (overflow || wide < 0) return 0;  /* an exact int sets no error here */
        *out = wide;
        return 1;
    }
    """
    bint _small_count "fastcore_small_count"(object value, int64_t *out) noexcept


cdef inline double _time_arg(object now) except? -1.0:
    if PyFloat_CheckExact(now):
        return PyFloat_AS_DOUBLE(now)
    return coerce_time(now)


cdef inline void _roll(int64_t *window, int64_t index, char calendar) noexcept:
    """Advance one window's (bucket, current, previous) to ``index``, never backwards."""
    cdef int64_t bucket = window[0]
    if index > bucket:
        window[2] = window[1] if (index == bucket + 1 and not calendar) else 0
        window[1] = 0
        window[0] = index


cdef inline uint64_t _order_key(double value) noexcept:
    """A uint64 that orders like the floats (mirrors _ratewin_py._order_key)."""
    cdef uint64_t bits
    memcpy(&bits, &value, 8)
    return bits | SIGN_BIT if bits < SIGN_BIT else ~bits


cdef inline double _from_order_key(uint64_t key) noexcept:
    cdef uint64_t bits = key & ~SIGN_BIT if key & SIGN_BIT else ~key
    cdef double value
    memcpy(&value, &bits, 8)
    return value


cdef inline void _table_insert(uint64_t *table, uint32_t mask, uint64_t entry) noexcept:
    cdef uint32_t position = <uint32_t>(entry >> 32) & mask
    while table[position] != 0:
        position = (position + 1) & mask
    table[position] = entry


cdef inline uint64_t _table_entry(Py_hash_t hash_value, int32_t slot) noexcept:
    return (<uint64_t><uint32_t>hash_value << 32) | <uint64_t>(slot + 1)


cdef inline int32_t _entry_slot(uint64_t entry) noexcept:
    return <int32_t><uint32_t>entry - 1


cdef inline void _write_u64(unsigned char *out, uint64_t value) noexcept:
    cdef int i
    for i in range(8):
        out[i] = <unsigned char>(value >> (8 * i))


cdef inline int64_t _read_i64(const unsigned char *data) noexcept:
    cdef uint64_t value = 0
    cdef int i
    for i in range(8):
        value |= (<uint64_t>data[i]) << (8 * i)
    return <int64_t>value


cdef inline Py_ssize_t _write_varint(unsigned char *out, uint64_t value) noexcept:
    cdef Py_ssize_t n = 0
    while value >= 0x80:
        out[n] = <unsigned char>((value & 0x7F) | 0x80)
        value >>= 7
        n += 1
    out[n] = <unsigned char>value
    return n + 1


cdef inline Py_ssize_t _varint_size(uint64_t value) noexcept:
    cdef Py_ssize_t n = 1
    while value >= 0x80:
        value >>= 7
        n += 1
    return n


cdef uint64_t _read_varint(const unsigned char *data, Py_ssize_t end, Py_ssize_t *position) except? 0xFFFFFFFFFFFFFFFF:
    """Unsigned LEB128 at ``position[0]`` (at most 10 bytes, < 2**64); advances it."""
    cdef uint64_t value = 0
    cdef unsigned int shift = 0
    cdef unsigned char byte
    while True:
        if position[0] >= end:
            raise SnapshotError("snapshot truncated in a varint")
        byte = data[position[0]]
        position[0] += 1
        if shift == 63 and (byte & 0x7F) > 1:
            raise SnapshotError("snapshot varint too large")
        value |= (<uint64_t>(byte & 0x7F)) << shift
        if not (byte & 0x80):
            return value
        shift += 7
        if shift > 63:
            raise SnapshotError("snapshot varint too long")


def _rebuild(windows, max_keys, data):
    """Unpickle helper: a RateWindows restored from its snapshot."""
    limiter = RateWindows(windows, max_keys)
    limiter.restore(data)
    return limiter


@cython.final
@cython.no_gc
cdef class RateWindows:
    """Several quota windows per key, checked and recorded together.

    See :mod:`fastcore.ratewin` for the full description and error behaviour.
    """

    def __cinit__(self, windows, max_keys):
        self._oldest = -1
        self._newest = -1
        self._free = -1
        windows = normalize_windows(windows)
        if isinstance(max_keys, bool) or not isinstance(max_keys, int):
            raise TypeError(f"max_keys must be an int, not {type(max_keys).__name__}")
        if not 1 <= max_keys <= MAX_KEYS:
            raise ValueError(f"max_keys must be in 1..2**30, got {max_keys}")
        self.windows = windows
        self.max_keys = max_keys
        self._specs = window_specs_bytes(windows)
        cdef Py_ssize_t n = len(windows)
        self._limit = <int64_t *>PyMem_Malloc(n * sizeof(int64_t))
        self._period = <double *>PyMem_Malloc(n * sizeof(double))
        self._offset = <double *>PyMem_Malloc(n * sizeof(double))
        self._calendar = <char *>PyMem_Malloc(n * sizeof(char))
        self._at_index = <int64_t *>PyMem_Malloc(n * sizeof(int64_t))
        self._at_frac = <double *>PyMem_Malloc(n * sizeof(double))
        self._at_cost = <int64_t *>PyMem_Malloc(n * sizeof(int64_t))
        if (self._limit == NULL or self._period == NULL or self._offset == NULL or self._calendar == NULL
                or self._at_index == NULL or self._at_frac == NULL or self._at_cost == NULL):
            raise MemoryError()
        self._min_limit = min(w.limit for w in windows)
        for j, window in enumerate(windows):
            self._limit[j] = window.limit
            self._period[j] = window.period
            self._offset[j] = window.utc_offset
            self._calendar[j] = window.calendar
        self._nwin = n

    def __dealloc__(self):
        self._free_all()
        PyMem_Free(self._limit)
        PyMem_Free(self._period)
        PyMem_Free(self._offset)
        PyMem_Free(self._calendar)
        PyMem_Free(self._at_index)
        PyMem_Free(self._at_frac)
        PyMem_Free(self._at_cost)

    cdef void _free_all(self) noexcept:
        """Release every key and slot array: the empty state."""
        cdef int32_t slot
        if self._keys != NULL:
            for slot in range(self._high):
                Py_XDECREF(self._keys[slot])
        PyMem_Free(self._state)
        PyMem_Free(self._older)
        PyMem_Free(self._newer)
        PyMem_Free(<void *>self._keys)
        PyMem_Free(self._table)
        self._state = NULL
        self._older = NULL
        self._newer = NULL
        self._keys = NULL
        self._table = NULL
        self._table_mask = 0
        self._capacity = 0
        self._high = 0
        self._count = 0
        self._oldest = -1
        self._newest = -1
        self._free = -1

    def __repr__(self):
        return f"RateWindows({list(self.windows)!r}, max_keys={self.max_keys}) with {self._count} keys"

    def __reduce__(self):
        return (_rebuild, (self.windows, self.max_keys, self.snapshot()))

    def __len__(self):
        return self._count

    def __contains__(self, key):
        if not isinstance(key, str):
            return False
        cdef str exact = coerce_key(key)
        return self._find(exact, hash(exact)) >= 0

    # -- helpers -----------------------------------------------------------

    cdef int _locate(self, double now) except -1:
        """Fill _at_index/_at_frac with where ``now`` falls in each window."""
        cdef Py_ssize_t j
        cdef double q, whole
        for j in range(self._nwin):
            q = (now + self._offset[j]) / self._period[j]
            if not (q > -BUCKET_INDEX_LIMIT and q < BUCKET_INDEX_LIMIT):
                raise ValueError(f"now must be finite and within range, got {now!r}")
            whole = _floor(q)
            self._at_index[j] = <int64_t>whole
            self._at_frac[j] = q - whole
        return 0

    cdef int _costs(self, object cost, bint for_acquire) except -1:
        """Fill _at_cost from an int (every window) or a tuple/list (one per
        window); for an acquire, a cost above its window's limit: ValueError."""
        cdef int64_t value
        cdef Py_ssize_t j
        cdef bint done = False
        if _small_count(cost, &value):
            if for_acquire and value > self._min_limit:
                raise ValueError(f"cost {value} exceeds a window limit ({self._min_limit}): it can never succeed")
            for j in range(self._nwin):
                self._at_cost[j] = value
            return 0
        if PyTuple_CheckExact(cost) and PyTuple_GET_SIZE(cost) == self._nwin:
            done = True
            for j in range(self._nwin):
                if not _small_count(<object>PyTuple_GET_ITEM(cost, j), self._at_cost + j):
                    done = False
                    break
        if not done:
            # Everything else (and every error) goes through the twin's rules.
            for j, value in enumerate(coerce_costs(cost, self._nwin)):
                self._at_cost[j] = value
        if for_acquire:
            for j in range(self._nwin):
                if self._at_cost[j] > self._limit[j]:
                    raise ValueError(f"cost {self._at_cost[j]} exceeds its window's limit {self._limit[j]}: "
                                     "it can never succeed")
        return 0

    cdef Py_ssize_t _find(self, str key, Py_hash_t hash_value) noexcept:
        """Table position of ``key``'s entry, or -1."""
        cdef uint32_t tag = <uint32_t>hash_value
        cdef uint32_t mask = self._table_mask
        cdef uint32_t position = tag & mask
        cdef uint64_t entry
        cdef PyObject *stored
        if self._table == NULL:
            return -1
        while True:
            entry = self._table[position]
            if entry == 0:
                return -1
            if <uint32_t>(entry >> 32) == tag:
                stored = self._keys[_entry_slot(entry)]
                if stored == <PyObject *>key or (<str>stored) == key:
                    return position
            position = (position + 1) & mask

    cdef Py_ssize_t _find_slot_entry(self, int32_t slot, Py_hash_t hash_value) noexcept:
        """Table position of the entry for ``slot`` (which must be in the table)."""
        cdef uint32_t mask = self._table_mask
        cdef uint32_t position = <uint32_t>hash_value & mask
        cdef uint32_t wanted = <uint32_t>(slot + 1)
        while <uint32_t>self._table[position] != wanted:
            position = (position + 1) & mask
        return position

    cdef void _table_remove(self, Py_ssize_t position) noexcept:
        """Delete by backward shift: pull later entries of the probe run into the hole."""
        cdef uint64_t *table = self._table
        cdef uint32_t mask = self._table_mask
        cdef uint32_t hole = <uint32_t>position
        cdef uint32_t probe = hole
        cdef uint32_t home
        cdef uint64_t entry
        while True:
            probe = (probe + 1) & mask
            entry = table[probe]
            if entry == 0:
                break
            home = <uint32_t>(entry >> 32) & mask
            # The entry stays if its home lies cyclically in (hole, probe].
            if hole <= probe:
                if hole < home <= probe:
                    continue
            elif home > hole or home <= probe:
                continue
            table[hole] = entry
            hole = probe
        table[hole] = 0

    cdef void _table_put(self, uint64_t entry) noexcept:
        _table_insert(self._table, self._table_mask, entry)

    cdef int _reserve_one(self) except -1:
        """Make room for one more key (table load <= 3/4, a free slot)."""
        cdef uint32_t size, new_size, position
        cdef uint64_t *table
        cdef int32_t capacity
        cdef void *grown
        size = 0 if self._table == NULL else self._table_mask + 1
        if (<uint64_t>self._count + 1) * 4 > <uint64_t>size * 3:
            new_size = 8 if size == 0 else size * 2
            table = <uint64_t *>PyMem_Malloc(new_size * sizeof(uint64_t))
            if table == NULL:
                raise MemoryError()
            memset(table, 0, new_size * sizeof(uint64_t))
            for position in range(size):
                if self._table[position] != 0:
                    _table_insert(table, new_size - 1, self._table[position])
            PyMem_Free(self._table)
            self._table = table
            self._table_mask = new_size - 1
        if self._free == -1 and self._high == self._capacity:
            # Grow by 1/4: memory per key matters more than the rare realloc.
            capacity = <int32_t>min(<Py_ssize_t>self.max_keys, self._capacity + self._capacity // 4 + 8)
            # Each array is committed as soon as it is grown: an array larger than
            # _capacity is harmless if a later realloc fails.
            grown = PyMem_Realloc(self._state, <size_t>capacity * 3 * self._nwin * sizeof(int64_t))
            if grown == NULL:
                raise MemoryError()
            self._state = <int64_t *>grown
            grown = PyMem_Realloc(self._older, <size_t>capacity * sizeof(int32_t))
            if grown == NULL:
                raise MemoryError()
            self._older = <int32_t *>grown
            grown = PyMem_Realloc(self._newer, <size_t>capacity * sizeof(int32_t))
            if grown == NULL:
                raise MemoryError()
            self._newer = <int32_t *>grown
            grown = PyMem_Realloc(<void *>self._keys, <size_t>capacity * sizeof(PyObject *))
            if grown == NULL:
                raise MemoryError()
            self._keys = <PyObject **>grown
            self._capacity = capacity
        return 0

    cdef int32_t _take_slot(self) noexcept:
        cdef int32_t slot = self._free
        if slot != -1:
            self._free = self._newer[slot]
        else:
            slot = self._high
            self._high += 1
        return slot

    cdef void _unlink(self, int32_t slot) noexcept:
        cdef int32_t older = self._older[slot]
        cdef int32_t newer = self._newer[slot]
        if older != -1:
            self._newer[older] = newer
        else:
            self._oldest = newer
        if newer != -1:
            self._older[newer] = older
        else:
            self._newest = older

    cdef void _link_newest(self, int32_t slot) noexcept:
        self._older[slot] = self._newest
        self._newer[slot] = -1
        if self._newest != -1:
            self._newer[self._newest] = slot
        else:
            self._oldest = slot
        self._newest = slot

    cdef void _drop_slot(self, int32_t slot) noexcept:
        """Remove the key in ``slot`` from the table and LRU list and release it."""
        cdef PyObject *key = self._keys[slot]
        self._table_remove(self._find_slot_entry(slot, hash(<str>key)))
        self._unlink(slot)
        self._keys[slot] = NULL
        self._count -= 1
        Py_XDECREF(key)

    cdef bint _allowed_at(self, int64_t *state, double now) noexcept:
        """Would the call's cost fit in every window at ``now``? A window whose
        bucket index is out of range (only in the far future) counts as empty."""
        cdef Py_ssize_t j
        cdef double q, whole
        cdef int64_t *window
        for j in range(self._nwin):
            q = (now + self._offset[j]) / self._period[j]
            if q > -BUCKET_INDEX_LIMIT and q < BUCKET_INDEX_LIMIT:
                whole = _floor(q)
                window = state + 3 * j
                if _estimate(self._calendar[j], window[0], window[1], window[2],
                             <int64_t>whole, q - whole) > <double>(self._limit[j] - self._at_cost[j]):
                    return False
        return True

    cdef double _retry_after(self, int64_t *state, double now) noexcept:
        """Seconds until the earliest float time at which every window has room.

        A closed-form guess per denying window (the time its estimate falls to
        ``limit - cost``, in this bucket or the next) is refined by a search
        over the floats in time order, so the answer is exact under the very
        arithmetic try_acquire uses.
        """
        cdef Py_ssize_t j
        cdef double target = now
        cdef double q, whole, q_free, candidate
        cdef int64_t index, room, base, older, newer
        cdef int64_t *window
        for j in range(self._nwin):
            q = (now + self._offset[j]) / self._period[j]
            whole = _floor(q)
            index = <int64_t>whole
            window = state + 3 * j
            room = self._limit[j] - self._at_cost[j]
            if _estimate(self._calendar[j], window[0], window[1], window[2], index, q - whole) <= <double>room:
                continue
            if self._calendar[j]:
                q_free = <double>(window[0] + 1)
            else:
                if index <= window[0]:
                    base, older, newer = window[0], window[2], window[1]
                else:  # index == bucket + 1: the stored current bucket is now the previous one
                    base, older, newer = index, window[1], 0
                if newer <= room:
                    q_free = <double>base + (1.0 - <double>(room - newer) / <double>older)
                else:
                    q_free = <double>(base + 1) + (1.0 - <double>room / <double>newer)
            candidate = q_free * self._period[j] - self._offset[j]
            if candidate > target:
                target = candidate
        return self._retry_from(state, now, target)

    cdef double _retry_from(self, int64_t *state, double now, double guess) noexcept:
        """Seconds from ``now`` to the earliest float time at which the request
        fits (mirrors _ratewin_py._retry_from): gallop from ``guess``, bisect
        over float order keys, then the offset from ``now`` to it."""
        cdef uint64_t low = _order_key(now)
        cdef uint64_t start = _order_key(guess) if guess > now else low
        cdef uint64_t high, probe, step = 1
        cdef double earliest, retry
        if start > low and self._allowed_at(state, _from_order_key(start)):
            high = start
            while high - low > step:
                probe = high - step
                if not self._allowed_at(state, _from_order_key(probe)):
                    low = probe
                    break
                high = probe
                step <<= 1
        else:
            low = start
            while True:
                if step >= INF_KEY - low:
                    high = INF_KEY
                    break
                probe = low + step
                if self._allowed_at(state, _from_order_key(probe)):
                    high = probe
                    break
                low = probe
                step <<= 1
        while high - low > 1:
            probe = low + (high - low) // 2
            if self._allowed_at(state, _from_order_key(probe)):
                high = probe
            else:
                low = probe
        earliest = _from_order_key(high)
        retry = earliest - now
        while now + retry < earliest:  # the subtraction rounded down
            retry = nextafter(retry, INFINITY)
        return retry

    # -- operations --------------------------------------------------------

    def try_acquire(self, key, now, cost=1):
        """Take ``cost`` from every window of ``key`` at time ``now``, or nothing.

        Returns ``(True, 0.0)``, or ``(False, retry_after)``: ``now +
        retry_after`` is the earliest float time at which the same call
        succeeds if nothing else is acquired (any earlier time fails).
        """
        cdef double t
        cdef Py_hash_t hash_value
        cdef Py_ssize_t position, j
        cdef int32_t slot
        cdef int64_t *state
        cdef int64_t *window
        if type(key) is not str:
            key = coerce_key(key)
        t = _time_arg(now)
        self._costs(cost, True)
        self._locate(t)
        hash_value = hash(<str>key)
        position = self._find(<str>key, hash_value)
        if position < 0:
            if self._count >= self.max_keys:
                slot = self._oldest
                self._drop_slot(slot)
                self._evictions += 1
            else:
                self._reserve_one()
                slot = self._take_slot()
            Py_INCREF(key)
            self._keys[slot] = <PyObject *>key
            state = self._state + 3 * self._nwin * slot
            for j in range(self._nwin):
                state[3 * j] = self._at_index[j]
                state[3 * j + 1] = self._at_cost[j]
                state[3 * j + 2] = 0
            self._link_newest(slot)
            self._table_put(_table_entry(hash_value, slot))
            self._count += 1
            self._allowed += 1
            return ALLOWED
        slot = _entry_slot(self._table[position])
        if slot != self._newest:
            self._unlink(slot)
            self._link_newest(slot)
        state = self._state + 3 * self._nwin * slot
        for j in range(self._nwin):
            window = state + 3 * j
            if _estimate(self._calendar[j], window[0], window[1], window[2],
                         self._at_index[j], self._at_frac[j]) > <double>(self._limit[j] - self._at_cost[j]):
                self._denied += 1
                return (False, self._retry_after(state, t))
        for j in range(self._nwin):
            window = state + 3 * j
            _roll(window, self._at_index[j], self._calendar[j])
            window[1] += self._at_cost[j]
        self._allowed += 1
        return ALLOWED

    def refund(self, key, now, cost=1):
        """Give ``cost`` back to every window's current bucket (floored at 0).

        An unknown key is a no-op; arguments are validated either way.
        """
        cdef double t
        cdef Py_ssize_t position, j
        cdef int64_t *window
        if type(key) is not str:
            key = coerce_key(key)
        t = _time_arg(now)
        self._costs(cost, False)
        self._locate(t)
        position = self._find(<str>key, hash(<str>key))
        if position < 0:
            return None
        window = self._state + 3 * self._nwin * _entry_slot(self._table[position])
        for j in range(self._nwin):
            _roll(window, self._at_index[j], self._calendar[j])
            window[1] = window[1] - self._at_cost[j] if window[1] > self._at_cost[j] else 0
            window += 3
        return None

    def usage(self, key, now):
        """``(estimated used, limit)`` per window at ``now``; zeros for an unknown key."""
        cdef double t
        cdef Py_ssize_t position, j
        cdef int64_t *window
        if type(key) is not str:
            key = coerce_key(key)
        t = _time_arg(now)
        self._locate(t)
        position = self._find(<str>key, hash(<str>key))
        if position < 0:
            return [(0.0, self._limit[j]) for j in range(self._nwin)]
        window = self._state + 3 * self._nwin * _entry_slot(self._table[position])
        result = []
        for j in range(self._nwin):
            result.append((_estimate(self._calendar[j], window[0], window[1], window[2],
                                     self._at_index[j], self._at_frac[j]), self._limit[j]))
            window += 3
        return result

    def forget(self, key):
        """Drop ``key``; True if it was present. TypeError for a non-str key."""
        cdef Py_ssize_t position
        cdef int32_t slot
        if type(key) is not str:
            key = coerce_key(key)
        position = self._find(<str>key, hash(<str>key))
        if position < 0:
            return False
        slot = _entry_slot(self._table[position])
        self._drop_slot(slot)
        self._newer[slot] = self._free
        self._free = slot
        return True

    def clear(self):
        """Forget every key (the stats counters keep counting)."""
        self._free_all()

    def stats(self):
        return {
            "keys": self._count,
            "max_keys": self.max_keys,
            "evictions": self._evictions,
            "allowed": self._allowed,
            "denied": self._denied,
        }

    # -- snapshots ---------------------------------------------------------

    def snapshot(self):
        """The whole state as compact versioned bytes (format in fastcore.ratewin)."""
        cdef Py_ssize_t row = 3 * self._nwin
        cdef Py_ssize_t size = HEADER_SIZE + len(self._specs) + _varint_size(<uint64_t>self._count) + 4
        cdef Py_ssize_t position, m
        cdef int32_t slot
        cdef bytes encoded, out
        cdef unsigned char *buffer
        cdef int64_t *state
        cdef uint32_t checksum
        cdef bytes magic = SNAPSHOT_MAGIC
        cdef list encoded_keys = []
        slot = self._oldest
        while slot != -1:
            encoded = (<str>self._keys[slot]).encode("utf-8", "surrogatepass")
            encoded_keys.append(encoded)
            size += _varint_size(<uint64_t>len(encoded)) + len(encoded) + 8 * row
            slot = self._newer[slot]
        out = PyBytes_FromStringAndSize(NULL, size)
        buffer = <unsigned char *>PyBytes_AS_STRING(out)
        memcpy(buffer, <char *>magic, 4)
        buffer[4] = SNAPSHOT_VERSION
        position = HEADER_SIZE
        memcpy(buffer + position, <char *>self._specs, len(self._specs))
        position += len(self._specs)
        position += _write_varint(buffer + position, <uint64_t>self._count)
        slot = self._oldest
        for encoded in encoded_keys:
            position += _write_varint(buffer + position, <uint64_t>len(encoded))
            memcpy(buffer + position, <char *>encoded, len(encoded))
            position += len(encoded)
            state = self._state + row * slot
            for m in range(row):
                _write_u64(buffer + position, <uint64_t>state[m])
                position += 8
            slot = self._newer[slot]
        checksum = <uint32_t>crc32(memoryview(out)[:position])
        for m in range(4):
            buffer[position + m] = <unsigned char>(checksum >> (8 * m))
        return out

    def restore(self, data):
        """Replace the state with a snapshot's, or raise and change nothing.

        TypeError if ``data`` is not bytes-like; SnapshotError for anything
        wrong in it. Keeps the newest ``max_keys`` keys of a larger snapshot.
        """
        cdef bytes raw = bytes(memoryview(data))
        cdef const unsigned char *buffer = <const unsigned char *>PyBytes_AS_STRING(raw)
        cdef Py_ssize_t size = len(raw)
        cdef Py_ssize_t end, position, row, n, keep, first, k, m, j
        cdef uint64_t count, length, stored_checksum
        cdef int64_t *parsed = NULL
        cdef int64_t *values
        cdef int64_t bucket, current, previous
        cdef uint32_t table_size
        cdef int64_t *new_state = NULL
        cdef int32_t *new_older = NULL
        cdef int32_t *new_newer = NULL
        cdef PyObject **new_keys = NULL
        cdef uint64_t *new_table = NULL
        cdef int32_t slot
        cdef list keys = []
        cdef set seen = set()
        if size < HEADER_SIZE + 4:
            raise SnapshotError("snapshot truncated")
        if raw[:4] != SNAPSHOT_MAGIC:
            raise SnapshotError("not a RateWindows snapshot (bad magic)")
        if buffer[4] != SNAPSHOT_VERSION:
            raise SnapshotError(f"unsupported snapshot version {buffer[4]}")
        end = size - 4
        stored_checksum = <uint64_t>buffer[end] | (<uint64_t>buffer[end + 1] << 8) | (
            <uint64_t>buffer[end + 2] << 16) | (<uint64_t>buffer[end + 3] << 24)
        if stored_checksum != <uint64_t>crc32(memoryview(raw)[:end]):
            raise SnapshotError("snapshot checksum mismatch")
        position = HEADER_SIZE
        if raw[position:position + len(self._specs)] != self._specs:
            raise SnapshotError("snapshot was taken with different windows")
        position += len(self._specs)
        count = _read_varint(buffer, end, &position)
        row = 3 * self._nwin
        if count > <uint64_t>((end - position) // (1 + 8 * row)):
            raise SnapshotError(f"snapshot declares {count} keys, more than its size allows")
        n = <Py_ssize_t>count
        # Bounded by the input size: each declared key has at least 1 + 8 * row bytes.
        parsed = <int64_t *>PyMem_Malloc(<size_t>max(n, 1) * row * sizeof(int64_t))
        if parsed == NULL:
            raise MemoryError()
        try:
            for k in range(n):
                length = _read_varint(buffer, end, &position)
                if length > <uint64_t>(end - position):
                    raise SnapshotError("snapshot key overruns the data")
                try:
                    key = PyUnicode_DecodeUTF8(<char *>buffer + position, <Py_ssize_t>length, "surrogatepass")
                except UnicodeDecodeError:
                    raise SnapshotError("snapshot key is not valid UTF-8") from None
                position += <Py_ssize_t>length
                if end - position < 8 * row:
                    raise SnapshotError("snapshot truncated in a key's state")
                values = parsed + k * row
                for m in range(row):
                    values[m] = _read_i64(buffer + position)
                    position += 8
                for j in range(self._nwin):
                    bucket, current, previous = values[3 * j], values[3 * j + 1], values[3 * j + 2]
                    if not (-BUCKET_INDEX_MAX < bucket < BUCKET_INDEX_MAX):
                        raise SnapshotError("snapshot bucket index out of range")
                    if not (0 <= current <= self._limit[j] and 0 <= previous <= self._limit[j]):
                        raise SnapshotError("snapshot count out of range")
                    if self._calendar[j] and previous:
                        raise SnapshotError("snapshot has a previous count for a calendar window")
                if key in seen:
                    raise SnapshotError("snapshot repeats a key")
                seen.add(key)
                keys.append(key)
            if position != end:
                raise SnapshotError("snapshot has trailing bytes")

            keep = min(n, <Py_ssize_t>self.max_keys)
            first = n - keep
            table_size = 8
            while <uint64_t>keep * 4 > <uint64_t>table_size * 3:
                table_size *= 2
            new_state = <int64_t *>PyMem_Malloc(<size_t>max(keep, 1) * row * sizeof(int64_t))
            new_older = <int32_t *>PyMem_Malloc(<size_t>max(keep, 1) * sizeof(int32_t))
            new_newer = <int32_t *>PyMem_Malloc(<size_t>max(keep, 1) * sizeof(int32_t))
            new_keys = <PyObject **>PyMem_Malloc(<size_t>max(keep, 1) * sizeof(PyObject *))
            new_table = <uint64_t *>PyMem_Malloc(<size_t>table_size * sizeof(uint64_t))
            if new_state == NULL or new_older == NULL or new_newer == NULL or new_keys == NULL or new_table == NULL:
                PyMem_Free(new_state)
                PyMem_Free(new_older)
                PyMem_Free(new_newer)
                PyMem_Free(<void *>new_keys)
                PyMem_Free(new_table)
                raise MemoryError()
            memset(new_table, 0, <size_t>table_size * sizeof(uint64_t))
            if keep:
                memcpy(new_state, parsed + first * row, <size_t>keep * row * sizeof(int64_t))
            for slot in range(<int32_t>keep):
                key = keys[first + slot]
                Py_INCREF(key)
                new_keys[slot] = <PyObject *>key
                new_older[slot] = slot - 1
                new_newer[slot] = slot + 1 if slot + 1 < keep else -1
                _table_insert(new_table, table_size - 1, _table_entry(hash(<str>key), slot))
        finally:
            PyMem_Free(parsed)

        self._free_all()
        self._state = new_state
        self._older = new_older
        self._newer = new_newer
        self._keys = new_keys
        self._table = new_table
        self._table_mask = table_size - 1
        self._capacity = <int32_t>max(keep, 1)
        self._high = <int32_t>keep
        self._count = <int32_t>keep
        self._oldest = 0 if keep else -1
        self._newest = <int32_t>keep - 1 if keep else -1
        self._free = -1
