/* rtcp segment codec: encode, decode and checksum as CPython functions.
 *
 * Why this file exists: on the per-datagram path the C work (checksum,
 * validation) takes tens of nanoseconds, while a cffi call converts each
 * argument through its generic machinery (about 0.5 us for the 13 arguments
 * of rtcp_encode) and the Python around it must still walk the options and
 * build the Segment.  These functions take a Segment or a datagram whole,
 * read and build the Python objects directly, and call the same codec.c
 * routines, so every byte on the wire still comes from one implementation.
 *
 * They cover the common case only: ints in range, options of the known
 * kinds (or raw bytes), bytes-like payloads.  Anything else, and every error,
 * goes to the cffi-based functions of rtcp/_codec_cbackend.py, which raise
 * the exact exceptions and messages the pure-Python backend does.  So this
 * file can decline an input, but never decides its verdict.
 *
 * It is compiled into the same cffi module (rtcp._codec_c, built by
 * rtcp/_codec_build.py) on CPython only, and reached through one cffi call,
 * rtcp_fastpath_install(), at import.  That call needs the GIL, which the
 * module's wrappers keep (see the preamble in _codec_build.py).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#ifndef Py_T_OBJECT_EX /* Python < 3.12 */
#include <structmember.h>
#define Py_T_OBJECT_EX T_OBJECT_EX
#define Py_READONLY READONLY
#endif
#include <limits.h>
#include <string.h>

#include "codec.h"

int rtcp_fastpath_install(const char *module_name);

/* Segment's fields, in __slots__ order. */
enum { SRC_PORT, DST_PORT, SEQ, ACK, FLAGS, WINDOW, URGENT, OPTIONS, PAYLOAD, N_FIELDS };
static const char *const field_names[N_FIELDS] = {
    "src_port", "dst_port", "seq", "ack", "flags", "window", "urgent", "options", "payload",
};

static PyTypeObject *segment_type;        /* rtcp.segment.Segment */
static Py_ssize_t field_offset[N_FIELDS]; /* byte offset of each slot in the object */
static PyObject *slow_encode;             /* _codec_cbackend.cffi_encode */
static PyObject *slow_decode;             /* _codec_cbackend.cffi_decode */
static PyObject *slow_checksum;           /* _codec_cbackend.cffi_internet_checksum */
static Py_ssize_t view_min;               /* rtcp.segment.VIEW_MIN */

#define FIELD(obj, i) (*(PyObject **)((char *)(obj) + field_offset[i]))

/* After a failed PyObject_GetBuffer: 1 when the object is just not a plain
 * contiguous buffer (the slow path then decides what it is), 0 for anything
 * else, such as MemoryError or KeyboardInterrupt, which must propagate. */
static int buffer_declined(void)
{
    if (PyErr_ExceptionMatches(PyExc_TypeError) || PyErr_ExceptionMatches(PyExc_BufferError)
        || PyErr_ExceptionMatches(PyExc_ValueError)) {
        PyErr_Clear();
        return 1;
    }
    return 0;
}

/* -------------------------------------------------------------- encode */

/* An int in 0..max, or -1: the caller then declines the input.  Int
 * subclasses (bool, IntFlag) count by their int value, as struct and cffi
 * take them.  (An int subclass that overrides __eq__ so that 8 != 8 would be
 * taken by its value here, where _codec_py compares kinds with ==: a case we
 * accept rather than pay for.) */
static inline int get_uint(PyObject *o, unsigned long max, unsigned long *out)
{
    if (o == NULL || !PyLong_Check(o))
        return -1;
    unsigned long v = PyLong_AsUnsignedLong(o);
    if (v == (unsigned long)-1 && PyErr_Occurred()) {
        PyErr_Clear(); /* negative or too big */
        return -1;
    }
    if (v > max)
        return -1;
    *out = v;
    return 0;
}

static inline void put32(unsigned char *p, unsigned long v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* A (left, right) pair or (tsval, tsecr) pair of 32-bit values. */
static inline int get_pair(PyObject *o, unsigned char *out)
{
    unsigned long a, b;
    if (!PyTuple_CheckExact(o) || PyTuple_GET_SIZE(o) != 2
        || get_uint(PyTuple_GET_ITEM(o, 0), 0xFFFFFFFFUL, &a) < 0
        || get_uint(PyTuple_GET_ITEM(o, 1), 0xFFFFFFFFUL, &b) < 0)
        return -1;
    put32(out, a);
    put32(out + 4, b);
    return 0;
}

/* Serialise the options tuple into out (room for 40 bytes plus the longest
 * option), unpadded, as encode_options() in _codec_py.py does.  Returns the
 * length, or -1 to decline (odd types, bad values, more than 40 bytes). */
static Py_ssize_t encode_options(PyObject *opts, unsigned char *out)
{
    if (!PyTuple_CheckExact(opts))
        return -1;
    Py_ssize_t n = PyTuple_GET_SIZE(opts), len = 0;
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *item = PyTuple_GET_ITEM(opts, k);
        unsigned long kind, v;
        if (len > RTCP_MAX_OPTION_BYTES || !PyTuple_CheckExact(item)
            || PyTuple_GET_SIZE(item) != 2 || get_uint(PyTuple_GET_ITEM(item, 0), 255, &kind) < 0)
            return -1;
        PyObject *value = PyTuple_GET_ITEM(item, 1);
        unsigned char *p = out + len;
        switch (kind) {
        case 0:
        case 1: /* padding is not an option: the slow path says so */
            return -1;
        case 2: /* MSS */
            if (get_uint(value, 0xFFFF, &v) < 0)
                return -1;
            p[0] = 2, p[1] = 4, p[2] = (unsigned char)(v >> 8), p[3] = (unsigned char)v;
            len += 4;
            break;
        case 3: /* window scale */
            if (get_uint(value, 0xFF, &v) < 0)
                return -1;
            p[0] = 3, p[1] = 3, p[2] = (unsigned char)v;
            len += 3;
            break;
        case 4: /* SACK permitted */
            if (value != Py_None)
                return -1;
            p[0] = 4, p[1] = 2;
            len += 2;
            break;
        case 5: { /* SACK: 1..4 blocks */
            if (!PyTuple_CheckExact(value))
                return -1;
            Py_ssize_t blocks = PyTuple_GET_SIZE(value);
            if (blocks < 1 || blocks > 4)
                return -1;
            p[0] = 5, p[1] = (unsigned char)(2 + 8 * blocks);
            for (Py_ssize_t b = 0; b < blocks; b++)
                if (get_pair(PyTuple_GET_ITEM(value, b), p + 2 + 8 * b) < 0)
                    return -1;
            len += 2 + 8 * blocks;
            break;
        }
        case 8: /* timestamps */
            if (get_pair(value, p + 2) < 0)
                return -1;
            p[0] = 8, p[1] = 10;
            len += 10;
            break;
        default: { /* a kind we do not interpret: raw bytes */
            if (!PyBytes_CheckExact(value))
                return -1;
            Py_ssize_t vlen = PyBytes_GET_SIZE(value);
            if (vlen > 38)
                return -1;
            p[0] = (unsigned char)kind, p[1] = (unsigned char)(vlen + 2);
            memcpy(p + 2, PyBytes_AS_STRING(value), (size_t)vlen);
            len += 2 + vlen;
            break;
        }
        }
    }
    return len > RTCP_MAX_OPTION_BYTES ? -1 : len;
}

static PyObject *fast_encode(PyObject *self, PyObject *seg)
{
    (void)self;
    /* A 40-byte option area, plus room for one more option of up to 40 bytes
     * written before the length check catches it. */
    unsigned char opts[2 * RTCP_MAX_OPTION_BYTES];
    unsigned long sp, dp, seq, ack, flags, window, urgent;
    if (Py_TYPE(seg) != segment_type /* subclasses may override fields */
        || get_uint(FIELD(seg, SRC_PORT), 0xFFFF, &sp) < 0
        || get_uint(FIELD(seg, DST_PORT), 0xFFFF, &dp) < 0
        || get_uint(FIELD(seg, SEQ), 0xFFFFFFFFUL, &seq) < 0
        || get_uint(FIELD(seg, ACK), 0xFFFFFFFFUL, &ack) < 0
        || get_uint(FIELD(seg, FLAGS), 0xFF, &flags) < 0
        || get_uint(FIELD(seg, WINDOW), 0xFFFF, &window) < 0
        || get_uint(FIELD(seg, URGENT), 0xFFFF, &urgent) < 0)
        return PyObject_CallOneArg(slow_encode, seg);
    PyObject *options = FIELD(seg, OPTIONS), *payload = FIELD(seg, PAYLOAD);
    if (options == NULL || payload == NULL)
        return PyObject_CallOneArg(slow_encode, seg);
    Py_ssize_t opts_len = encode_options(options, opts);
    if (opts_len < 0)
        return PyObject_CallOneArg(slow_encode, seg);

    Py_buffer view;
    const char *data;
    Py_ssize_t size;
    int have_view = 0;
    /* Our own reference: on 3.12+ a Python-level __buffer__ could replace
     * seg.payload (a borrowed slot) while we hold its buffer. */
    Py_INCREF(payload);
    if (PyBytes_CheckExact(payload)) {
        data = PyBytes_AS_STRING(payload);
        size = PyBytes_GET_SIZE(payload);
    } else {
        if (PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE) < 0) {
            Py_DECREF(payload);
            return buffer_declined() ? PyObject_CallOneArg(slow_encode, seg) : NULL;
        }
        data = view.buf;
        size = view.len;
        have_view = 1;
    }
    Py_ssize_t total = RTCP_HEADER_SIZE + ((opts_len + 3) & ~(Py_ssize_t)3) + size;
    PyObject *out = NULL;
    if (total > LONG_MAX) { /* rtcp_encode returns a long (32 bits on Windows) */
        if (have_view)
            PyBuffer_Release(&view);
        Py_DECREF(payload);
        return PyObject_CallOneArg(slow_encode, seg);
    }
    out = PyBytes_FromStringAndSize(NULL, total);
    if (out != NULL) {
        long n = rtcp_encode(PyBytes_AS_STRING(out), (size_t)total, (uint16_t)sp, (uint16_t)dp,
                             (uint32_t)seq, (uint32_t)ack, (uint8_t)flags, (uint16_t)window,
                             (uint16_t)urgent, (const char *)opts, (size_t)opts_len, data,
                             (size_t)size);
        if (n != total) { /* cannot happen: the sizes were checked above */
            Py_DECREF(out);
            out = NULL;
            PyErr_Format(PyExc_SystemError, "rtcp_encode returned %ld for %zd bytes", n, total);
        }
    }
    if (have_view)
        PyBuffer_Release(&view);
    Py_DECREF(payload);
    return out;
}

/* -------------------------------------------------------------- decode */

static inline uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The tuple (a, b), taking both references; NULL if either is NULL. */
static PyObject *pair(PyObject *a, PyObject *b)
{
    PyObject *t = (a && b) ? PyTuple_New(2) : NULL;
    if (t == NULL) {
        Py_XDECREF(a);
        Py_XDECREF(b);
        return NULL;
    }
    PyTuple_SET_ITEM(t, 0, a);
    PyTuple_SET_ITEM(t, 1, b);
    return t;
}

static inline PyObject *u32(uint32_t v)
{
    return PyLong_FromUnsignedLong(v);
}

/* (kind, value) for one validated option record, as _codec_py decodes it. */
static PyObject *option_value(const rtcp_option *o, const unsigned char *p)
{
    switch (o->kind) {
    case 2:
    case 3:
        return pair(u32(o->kind), u32(o->a));
    case 4:
        return pair(u32(4), Py_NewRef(Py_None));
    case 8:
        return pair(u32(8), pair(u32(o->a), u32(o->b)));
    case 5: {
        PyObject *blocks = PyTuple_New(o->a);
        if (blocks == NULL)
            return NULL;
        for (uint32_t b = 0; b < o->a; b++) {
            const unsigned char *edge = p + o->offset + 8 * b;
            PyObject *block = pair(u32(be32(edge)), u32(be32(edge + 4)));
            if (block == NULL) {
                Py_DECREF(blocks);
                return NULL;
            }
            PyTuple_SET_ITEM(blocks, b, block);
        }
        return pair(u32(5), blocks);
    }
    default:
        return pair(u32(o->kind),
                    PyBytes_FromStringAndSize((const char *)p + o->offset, o->length));
    }
}

/* The payload: a copy, or (owner given, over view_min bytes) a
 * memoryview of owner, an immutable bytes object that holds p. */
static PyObject *payload_of(const unsigned char *p, Py_ssize_t start, Py_ssize_t size,
                            PyObject *owner)
{
    if (owner == NULL || size - start <= view_min)
        return PyBytes_FromStringAndSize((const char *)p + start, size - start);
    PyObject *whole = PyMemoryView_FromObject(owner);
    if (whole == NULL)
        return NULL;
    PyObject *part = PySequence_GetSlice(whole, start, size);
    Py_DECREF(whole);
    return part;
}

static PyObject *build_segment(const rtcp_segment_info *info, const unsigned char *p,
                               Py_ssize_t size, PyObject *owner)
{
    PyObject *fields[N_FIELDS] = {NULL};
    const uint32_t header[URGENT + 1] = {
        info->src_port, info->dst_port, info->seq, info->ack,
        info->flags,    info->window,   info->urgent,
    };
    for (int i = 0; i <= URGENT; i++)
        if ((fields[i] = u32(header[i])) == NULL)
            goto fail;
    if ((fields[OPTIONS] = PyTuple_New(info->n_options)) == NULL)
        goto fail;
    for (uint32_t k = 0; k < info->n_options; k++) {
        PyObject *opt = option_value(&info->options[k], p);
        if (opt == NULL)
            goto fail;
        PyTuple_SET_ITEM(fields[OPTIONS], k, opt);
    }
    fields[PAYLOAD] = payload_of(p, (Py_ssize_t)info->header_len, size, owner);
    if (fields[PAYLOAD] == NULL)
        goto fail;
    /* What object.__new__ does, minus the frozen dataclass's __init__ (which
     * sets each field through object.__setattr__): allocate, then store each
     * slot as its member descriptor would. */
    PyObject *seg = segment_type->tp_alloc(segment_type, 0);
    if (seg == NULL)
        goto fail;
    for (int i = 0; i < N_FIELDS; i++)
        FIELD(seg, i) = fields[i]; /* the slot takes our reference */
    return seg;
fail:
    for (int i = 0; i < N_FIELDS; i++)
        Py_XDECREF(fields[i]);
    return NULL;
}

/* decode, or (lend) decode_view: only a bytes datagram lends its payload,
 * since the caller may change a bytearray's or a view's memory later. */
static PyObject *decode(PyObject *data, int lend)
{
    Py_buffer view;
    const unsigned char *p;
    Py_ssize_t size;
    int have_view = 0;
    if (PyBytes_CheckExact(data)) {
        p = (const unsigned char *)PyBytes_AS_STRING(data);
        size = PyBytes_GET_SIZE(data);
    } else {
        if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
            return buffer_declined() ? PyObject_CallOneArg(slow_decode, data) : NULL;
        p = view.buf;
        size = view.len;
        have_view = 1;
    }
    rtcp_segment_info info;
    PyObject *seg;
    if (rtcp_decode_info((const char *)p, (size_t)size, &info) < 0)
        seg = NULL; /* the slow path below raises the right SegmentError */
    else
        seg = build_segment(&info, p, size, lend && !have_view ? data : NULL);
    if (have_view)
        PyBuffer_Release(&view);
    if (seg == NULL && !PyErr_Occurred())
        return PyObject_CallOneArg(slow_decode, data);
    return seg;
}

static PyObject *fast_decode(PyObject *self, PyObject *data)
{
    (void)self;
    return decode(data, 0);
}

static PyObject *fast_decode_view(PyObject *self, PyObject *data)
{
    (void)self;
    return decode(data, 1);
}

/* ------------------------------------------------------------ checksum */

static PyObject *fast_checksum(PyObject *self, PyObject *data)
{
    (void)self;
    if (PyBytes_CheckExact(data))
        return u32(rtcp_checksum(PyBytes_AS_STRING(data), (size_t)PyBytes_GET_SIZE(data)));
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
        return buffer_declined() ? PyObject_CallOneArg(slow_checksum, data) : NULL;
    uint16_t ck = rtcp_checksum(view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    return u32(ck);
}

/* ------------------------------------------------------------- install */

static PyMethodDef encode_def = {
    "encode", fast_encode, METH_O,
    "encode(seg) -> bytes: the datagram for seg, checksum filled in (C fast path)."};
static PyMethodDef decode_def = {
    "decode", fast_decode, METH_O,
    "decode(data) -> Segment: parse and verify one datagram (C fast path)."};
static PyMethodDef decode_view_def = {
    "decode_view", fast_decode_view, METH_O,
    "decode_view(data) -> Segment: decode, a large payload lent from data (C fast path)."};
static PyMethodDef checksum_def = {
    "internet_checksum", fast_checksum, METH_O,
    "internet_checksum(data) -> int: RFC 1071 checksum of a bytes-like object (C fast path)."};

/* Where each field lives: Segment is a slots dataclass, so each field is a
 * member descriptor of an object slot.  Anything else (a changed Segment, an
 * unusual interpreter) makes the install fail and rtcp keeps the cffi path.
 * Writes only to offsets, so a failed check leaves the installed state alone. */
static int find_fields(PyTypeObject *type, Py_ssize_t *offsets)
{
    for (int i = 0; i < N_FIELDS; i++) {
        PyObject *d = PyObject_GetAttrString((PyObject *)type, field_names[i]);
        if (d == NULL)
            return -1;
        int ok = Py_IS_TYPE(d, &PyMemberDescr_Type);
        if (ok) {
            PyMemberDescrObject *m = (PyMemberDescrObject *)d;
            Py_ssize_t off = m->d_member->offset;
            ok = m->d_common.d_type == type && m->d_member->type == Py_T_OBJECT_EX
                 && !(m->d_member->flags & Py_READONLY) && off >= (Py_ssize_t)sizeof(PyObject)
                 && off <= type->tp_basicsize - (Py_ssize_t)sizeof(PyObject *);
            offsets[i] = off;
        }
        Py_DECREF(d);
        if (!ok) {
            PyErr_Format(PyExc_TypeError, "Segment.%s is not a plain slot", field_names[i]);
            return -1;
        }
    }
    return 0;
}

/* Called through cffi by the module named module_name while it is being
 * imported: reads its Segment, VIEW_MIN and cffi_* functions, and sets its fast_*
 * functions.  Returns 0, or -1 (with no exception left set, since cffi would
 * not report it) when the fast path cannot be used.
 *
 * The state above is process-wide (plain C statics), so it is set once, by
 * the main interpreter: a subinterpreter's import, or a reload, gets -1 and
 * keeps the cffi path instead of redirecting the live fast path to its own
 * Segment class.  Everything is checked before anything is committed. */
#define N_FAST 4 /* encode, decode, internet_checksum, decode_view */

int rtcp_fastpath_install(const char *module_name)
{
    if (!PyGILState_Check())
        return -1; /* someone let cffi release the GIL: do not touch Python */
    if (segment_type != NULL || PyInterpreterState_Get() != PyInterpreterState_Main())
        return -1;
    PyObject *name = PyUnicode_FromString(module_name);
    PyObject *module = name ? PyImport_GetModule(name) : NULL;
    Py_XDECREF(name);
    if (module == NULL) {
        PyErr_Clear();
        return -1;
    }
    static const char *const slow_names[3] = {
        "cffi_encode", "cffi_decode", "cffi_internet_checksum"};
    static PyMethodDef *const defs[N_FAST] = {
        &encode_def, &decode_def, &checksum_def, &decode_view_def};
    static const char *const fast_names[N_FAST] = {
        "fast_encode", "fast_decode", "fast_internet_checksum", "fast_decode_view"};
    PyObject *seg = PyObject_GetAttrString(module, "Segment");
    Py_ssize_t min_value = -1;
    if (seg != NULL) { /* no Python call with an exception set */
        PyObject *min = PyObject_GetAttrString(module, "VIEW_MIN");
        min_value = min != NULL ? PyLong_AsSsize_t(min) : -1;
        Py_XDECREF(min);
    }
    PyObject *slow[3] = {NULL, NULL, NULL}, *fast[N_FAST] = {NULL, NULL, NULL, NULL};
    Py_ssize_t offsets[N_FIELDS];
    int ok = seg != NULL && PyType_Check(seg) && min_value >= 0
             && find_fields((PyTypeObject *)seg, offsets) == 0;
    for (int i = 0; ok && i < 3; i++) /* decode_view falls back to cffi_decode */
        ok = (slow[i] = PyObject_GetAttrString(module, slow_names[i])) != NULL;
    for (int i = 0; ok && i < N_FAST; i++)
        ok = (fast[i] = PyCFunction_New(defs[i], NULL)) != NULL;
    if (ok) { /* commit: kept for the life of the process */
        segment_type = (PyTypeObject *)seg;
        memcpy(field_offset, offsets, sizeof offsets);
        view_min = min_value;
        slow_encode = slow[0], slow_decode = slow[1], slow_checksum = slow[2];
        for (int i = 0; ok && i < N_FAST; i++)
            ok = PyObject_SetAttrString(module, fast_names[i], fast[i]) == 0;
    } else {
        Py_XDECREF(seg);
        for (int i = 0; i < 3; i++)
            Py_XDECREF(slow[i]);
    }
    for (int i = 0; i < N_FAST; i++)
        Py_XDECREF(fast[i]);
    Py_DECREF(module);
    if (!ok)
        PyErr_Clear();
    return ok ? 0 : -1;
}
