# C types for scan.py (Cython's augmenting .pxd: the .py stays plain Python). ``p`` is the
# message's bytes as a C array, so ``p[i]`` reads one byte, the loops run in C and ``p[a:b]``
# makes its bytes straight from the buffer (``data[a:b]`` would go through a slice object).
# cython: language_level=3
cimport cython

ctypedef const unsigned char* chars

cdef Py_ssize_t _CR, _LF, _SP, _HTAB, _COLON
cdef int _NONE, _KEEP_ALIVE, _CLOSE, _OTHER
cdef bytes _NAME, _VALUE, _TARGET
cdef list _REQUEST_KINDS, _RESPONSE_KINDS

@cython.locals(size=Py_ssize_t, k=Py_ssize_t)
cdef bint _literal(chars p, Py_ssize_t n, Py_ssize_t i, chars text)

@cython.locals(k=Py_ssize_t)
cdef bint _lower_is(chars p, Py_ssize_t start, Py_ssize_t end, chars text)

@cython.locals(name=bytes, kind=int)
cdef int _kind(list table, chars p, Py_ssize_t start, Py_ssize_t end)

cdef int _connection(chars p, Py_ssize_t start, Py_ssize_t end, int seen)

cdef bint _keeps_alive(bint http11, int connection)

@cython.locals(name_ok=chars, value_ok=chars, start=Py_ssize_t, name_end=Py_ssize_t,
               value_start=Py_ssize_t)
cdef (Py_ssize_t, Py_ssize_t, Py_ssize_t) _header_at(chars p, Py_ssize_t n, Py_ssize_t i)

cdef bytes _line(chars p, Py_ssize_t start, Py_ssize_t name_end, Py_ssize_t value_start,
                 Py_ssize_t end)

@cython.locals(p=chars, n=Py_ssize_t, i=Py_ssize_t, target_start=Py_ssize_t,
               target_end=Py_ssize_t, target_ok=chars, http11=bint, connection=int,
               name_end=Py_ssize_t, value_start=Py_ssize_t, end=Py_ssize_t, kind=int)
cpdef scan_request(bytes data, Py_ssize_t limit)

@cython.locals(p=chars, n=Py_ssize_t, i=Py_ssize_t, http11=bint, status=int, value_ok=chars,
               reason_end=Py_ssize_t, connection=int, length=cython.longlong,
               name_end=Py_ssize_t, value_start=Py_ssize_t, end=Py_ssize_t, kind=int,
               k=Py_ssize_t)
cpdef scan_response(bytes data)
