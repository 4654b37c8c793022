/*
 * tunring._native: the CPython side of the native core.  Only argument handling, buffers, the
 * GIL and error messages live here; the kernels (hdlc.c, lzs.c, inflate.c) are plain C so the
 * fuzz targets link them without Python.  Each function mirrors the Python function it
 * replaces (see tunring._impl and the bottom of the modules it names) argument for argument,
 * result for result and message for message.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pythread.h>

#include "hdlc.h"
#include "inflate.h"
#include "lzs.h"

/* Bumped when a function is added or changed, so a stale build is noticed (tunring._impl). */
#define NATIVE_ABI 1
/* Below this many bytes the GIL is kept: releasing it costs more than the work. */
#define NOGIL_BYTES 65536
#define ACCM_ALL 0xFFFFFFFFu

static PyObject *FramingError; /* tunring.errors.FramingError */

/* ---- arguments -------------------------------------------------------------------------- */

/* METH_FASTCALL | METH_KEYWORDS arguments into out[0:total] by name (NULL when not given): at
 * most `positional` by position, the first `required` needed, the rest keyword-only. */
static int parse_args(const char *fname, const char *const *names, Py_ssize_t total, Py_ssize_t positional,
                      Py_ssize_t required, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, PyObject **out)
{
    for (Py_ssize_t i = 0; i < total; i++)
        out[i] = i < nargs ? args[i] : NULL;
    if (nargs > positional) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %zd positional arguments (%zd given)", fname, positional,
                     nargs);
        return -1;
    }
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, k);
        Py_ssize_t i = 0;
        while (i < total && PyUnicode_CompareWithASCIIString(key, names[i]) != 0)
            i++;
        if (i == total) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'", fname, key);
            return -1;
        }
        if (out[i]) {
            PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'", fname, names[i]);
            return -1;
        }
        out[i] = args[nargs + k];
    }
    for (Py_ssize_t i = 0; i < required; i++)
        if (!out[i]) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'", fname, names[i]);
            return -1;
        }
    return 0;
}

/* An ACCM argument as the reference uses it: any int, masked to 32 bits. */
static int accm_arg(PyObject *obj, uint32_t fallback, uint32_t *accm)
{
    if (!obj) {
        *accm = fallback;
        return 0;
    }
    unsigned long value = PyLong_AsUnsignedLongMask(obj);
    if (value == (unsigned long)-1 && PyErr_Occurred())
        return -1;
    *accm = (uint32_t)(value & ACCM_ALL);
    return 0;
}

/* Run `statement` without the GIL when the work is big (the buffers stay held meanwhile). */
#define MAYBE_WITHOUT_GIL(big, statement)                                                                       \
    do {                                                                                                        \
        if (big) {                                                                                              \
            Py_BEGIN_ALLOW_THREADS statement;                                                                   \
            Py_END_ALLOW_THREADS                                                                                \
        } else {                                                                                                \
            statement;                                                                                          \
        }                                                                                                       \
    } while (0)

/* Two buffers: src read-only, dst writable; on failure neither is held. */
static int get_buffers(PyObject *src, Py_buffer *in, PyObject *dst, Py_buffer *out)
{
    if (PyObject_GetBuffer(src, in, PyBUF_SIMPLE) < 0)
        return -1;
    if (PyObject_GetBuffer(dst, out, PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(in);
        return -1;
    }
    return 0;
}

/* Where a decompressor reads src from.  The codecs decompress a record in the slot it was read
 * into, so src may lie inside dst, and the kernels write dst while they still read src: then src
 * is first copied aside (*scratch, freed by the caller with PyMem_Free; the codec counts this copy
 * through the decompressors' ``copies_overlapping_src``).  NULL with MemoryError on failure. */
static const uint8_t *readable_src(const Py_buffer *in, const Py_buffer *out, void **scratch)
{
    const uint8_t *s = in->buf, *d = out->buf;
    *scratch = NULL;
    if (!in->len || !out->len || s >= d + out->len || d >= s + in->len)
        return s;
    *scratch = PyMem_Malloc((size_t)in->len);
    if (!*scratch) {
        PyErr_NoMemory();
        return NULL;
    }
    memcpy(*scratch, s, (size_t)in->len);
    return *scratch;
}

/* The (src, dst) arguments of the decompress_into functions, as buffers. */
static int src_dst_args(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, Py_buffer *in,
                        Py_buffer *out)
{
    static const char *const names[] = {"src", "dst"};
    PyObject *a[2];
    if (parse_args(fname, names, 2, 2, 2, args, nargs, kwnames, a) < 0)
        return -1;
    return get_buffers(a[0], in, a[1], out);
}

/* ---- HDLC (tunring.proto.rfc1662) ------------------------------------------------------- */

static PyObject *py_fcs16(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"data", "fcs"};
    PyObject *a[2];
    if (parse_args("fcs16", names, 2, 2, 1, args, nargs, kwnames, a) < 0)
        return NULL;
    long fcs = TR_HDLC_FCS_INIT;
    if (a[1]) {
        fcs = PyLong_AsLong(a[1]);
        if (fcs == -1 && PyErr_Occurred())
            return NULL;
        if (fcs < 0 || fcs > 0xFFFF) {
            PyErr_SetString(PyExc_OverflowError, "FCS-16 register out of range (0..0xFFFF)");
            return NULL;
        }
    }
    Py_buffer view;
    if (PyObject_GetBuffer(a[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    uint16_t result = tr_fcs16((uint16_t)fcs, view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    return PyLong_FromLong(result);
}

/* The reference's words for the statuses that carry no numbers. */
static const char *const hdlc_errors[] = {
    [TR_HDLC_FLAG_INSIDE] = "HDLC frame contains a flag (0x7E): split the stream on flags first",
    [TR_HDLC_TRAILING_ESCAPE] = "HDLC frame ends with a control escape (0x7D): aborted or truncated frame",
    [TR_HDLC_BAD_FCS] = "HDLC frame has a bad FCS",
    [TR_HDLC_CHANGED] = "HDLC frame changed while it was decoded (memory another process writes?)",
};

static PyObject *py_hdlc_decode_frame(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"buf", "rx_accm"};
    PyObject *a[2];
    uint32_t accm;
    if (parse_args("decode_frame", names, 2, 2, 1, args, nargs, kwnames, a) < 0 || accm_arg(a[1], 0, &accm) < 0)
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(a[0], &view, PyBUF_WRITABLE) < 0)
        return NULL;
    size_t n = 0, len = (size_t)view.len;
    enum tr_hdlc_status status;
    MAYBE_WITHOUT_GIL(len >= NOGIL_BYTES, status = tr_hdlc_decode_frame(view.buf, len, accm, &n));
    PyBuffer_Release(&view);
    if (status == TR_HDLC_OK)
        return PyLong_FromSize_t(n - TR_HDLC_FCS_BYTES);
    if (status == TR_HDLC_TOO_SHORT)
        PyErr_Format(FramingError, "HDLC frame of %zu bytes is too short (minimum %d with the FCS)", n,
                     TR_HDLC_MIN_FRAME_BYTES);
    else
        PyErr_SetString(FramingError, hdlc_errors[status]);
    return NULL;
}

static PyObject *py_hdlc_encode_frame(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"src", "dst", "tx_accm", "leading_flag"};
    PyObject *a[4];
    uint32_t accm;
    if (parse_args("encode_frame", names, 4, 3, 2, args, nargs, kwnames, a) < 0 || accm_arg(a[2], ACCM_ALL, &accm) < 0)
        return NULL;
    int leading = a[3] ? PyObject_IsTrue(a[3]) : 1;
    if (leading < 0)
        return NULL;
    Py_buffer in, out;
    if (get_buffers(a[0], &in, a[1], &out) < 0)
        return NULL;
    const uint8_t *src = in.buf;
    uint8_t *copy = NULL, *dst = out.buf;
    size_t len = (size_t)in.len, room = (size_t)out.len, written = 0;
    if (src < dst + room && dst < src + len) {
        /* A packet encoded into its own memory: read it whole first, as the reference does. */
        if (!(copy = PyMem_Malloc(len ? len : 1))) {
            PyErr_NoMemory();
            goto done;
        }
        memcpy(copy, src, len);
        src = copy;
    }
    uint16_t fcs;
    size_t need = tr_hdlc_encoded_size(src, len, accm, leading, &fcs);
    if (need > room) {
        PyErr_Format(PyExc_ValueError, "HDLC frame needs %zu bytes but the buffer holds %zu", need, room);
        goto done;
    }
    written = tr_hdlc_encode_frame(src, len, fcs, dst, room, accm, leading);
    if (written != need) {
        PyErr_SetString(PyExc_ValueError, "HDLC frame source changed while it was encoded");
        written = 0;
    }
done:
    PyMem_Free(copy);
    PyBuffer_Release(&in);
    PyBuffer_Release(&out);
    return written ? PyLong_FromSize_t(written) : NULL;
}

struct span_list {
    PyObject *list;
};

static int add_span(void *ctx, size_t start, size_t end)
{
    PyObject *span = Py_BuildValue("(nn)", (Py_ssize_t)start, (Py_ssize_t)end);
    if (!span)
        return -1;
    int failed = PyList_Append(((struct span_list *)ctx)->list, span);
    Py_DECREF(span);
    return failed;
}

/* hdlc_scan(result_type, data): result_type is rfc1662.HdlcScan (a NamedTuple), built with
 * tuple.__new__ as its _make does. */
static PyObject *py_hdlc_scan(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyType_Check(args[0]) || !PyType_IsSubtype((PyTypeObject *)args[0], &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "hdlc_scan(result_type, data): result_type is a tuple subclass");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[1], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    struct span_list spans = {PyList_New(0)};
    PyObject *result = NULL;
    size_t rest, garbage;
    if (spans.list && tr_hdlc_scan(view.buf, (size_t)view.len, add_span, &spans, &rest, &garbage) == 0) {
        PyObject *fields = Py_BuildValue("(Onn)", spans.list, (Py_ssize_t)rest, (Py_ssize_t)garbage);
        if (fields) {
            PyObject *init = PyTuple_Pack(1, fields);
            if (init)
                result = PyTuple_Type.tp_new((PyTypeObject *)args[0], init, NULL);
            Py_XDECREF(init);
            Py_DECREF(fields);
        }
    }
    Py_XDECREF(spans.list);
    PyBuffer_Release(&view);
    return result;
}

/* ---- LZS and LZ4 (tunring.proto.compress) ----------------------------------------------- */

static const char *const lzs_errors[] = {
    [TR_LZS_NO_END] = "LZS data ends without an end marker",
    [TR_LZS_END_CUT] = "LZS data ends inside the end marker",
    [TR_LZS_OFFSET_ZERO] = "LZS match with offset 0",
};

static PyObject *py_lzs_decompress_into(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    Py_buffer in, out;
    void *scratch;
    if (src_dst_args("lzs_decompress_into", args, nargs, kwnames, &in, &out) < 0)
        return NULL;
    const uint8_t *src = readable_src(&in, &out, &scratch);
    if (!src) {
        PyBuffer_Release(&in);
        PyBuffer_Release(&out);
        return NULL;
    }
    size_t n = 0, cap = (size_t)out.len;
    struct tr_lzs_error err = {0, 0};
    enum tr_lzs_status status;
    MAYBE_WITHOUT_GIL((size_t)in.len >= NOGIL_BYTES || cap >= NOGIL_BYTES,
                      status = tr_lzs_decompress(src, (size_t)in.len, out.buf, cap, &n, &err));
    PyMem_Free(scratch);
    PyBuffer_Release(&in);
    PyBuffer_Release(&out);
    if (status == TR_LZS_OK)
        return PyLong_FromSize_t(n);
    if (status == TR_LZS_TRAILING)
        PyErr_Format(FramingError, "%zu bytes after the LZS end marker", err.count);
    else if (status == TR_LZS_EXCEEDS)
        PyErr_Format(FramingError, "LZS output exceeds the %zu-byte buffer", cap);
    else if (status == TR_LZS_TOO_FAR)
        PyErr_Format(FramingError, "LZS match reaches %zu bytes back but only %zu were output", err.offset, err.count);
    else
        PyErr_SetString(FramingError, lzs_errors[status]);
    return NULL;
}

static PyObject *py_lzs_compress(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"src"};
    PyObject *a[1];
    Py_buffer in;
    if (parse_args("lzs_compress", names, 1, 1, 1, args, nargs, kwnames, a) < 0 ||
        PyObject_GetBuffer(a[0], &in, PyBUF_SIMPLE) < 0)
        return NULL;
    size_t len = (size_t)in.len, n;
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)tr_lzs_compress_bound(len));
    if (!out) {
        PyBuffer_Release(&in);
        return NULL;
    }
    uint8_t *dst = (uint8_t *)PyBytes_AS_STRING(out);
    MAYBE_WITHOUT_GIL(len >= NOGIL_BYTES, n = tr_lzs_compress(in.buf, len, dst));
    PyBuffer_Release(&in);
    if (!n) {
        Py_DECREF(out);
        return PyErr_NoMemory();
    }
    if (_PyBytes_Resize(&out, (Py_ssize_t)n) < 0)
        return NULL;
    return out;
}

static PyObject *py_lz4_decompress_into(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    Py_buffer in, out;
    void *scratch;
    if (src_dst_args("lz4_decompress_into", args, nargs, kwnames, &in, &out) < 0)
        return NULL;
    const uint8_t *src = readable_src(&in, &out, &scratch);
    if (!src) {
        PyBuffer_Release(&in);
        PyBuffer_Release(&out);
        return NULL;
    }
    size_t cap = (size_t)out.len;
    long n;
    MAYBE_WITHOUT_GIL((size_t)in.len >= NOGIL_BYTES || cap >= NOGIL_BYTES,
                      n = tr_lz4_decompress(src, (size_t)in.len, out.buf, cap));
    PyMem_Free(scratch);
    PyBuffer_Release(&in);
    PyBuffer_Release(&out);
    if (n >= 0)
        return PyLong_FromLong(n);
    if (!cap)
        PyErr_SetString(FramingError, "no room to decompress an LZ4 block");
    else /* the lz4 package's words for LZ4_decompress_safe's error, as the reference passes them on */
        PyErr_Format(FramingError,
                     "bad LZ4 block or output over %zu bytes: Decompression failed: corrupt input or insufficient "
                     "space in destination buffer. Error code: %ld",
                     cap, -n);
    return NULL;
}

/* ---- CSTP deflate (tunring.proto.compress.DeflateDecompressor) -------------------------- */

typedef struct {
    PyObject_HEAD
    z_stream z;
    uint32_t adler;
    PyObject *error; /* why the stream is unusable (str), or NULL */
    PyThread_type_lock lock;
} Inflater;

static void *z_alloc(void *opaque, uInt items, uInt size)
{
    (void)opaque;
    return size && items > PY_SSIZE_T_MAX / size ? NULL : PyMem_RawMalloc((size_t)items * size);
}

static void z_free(void *opaque, void *ptr)
{
    (void)opaque;
    PyMem_RawFree(ptr);
}

static PyObject *inflater_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    if (PyTuple_GET_SIZE(args) || (kwargs && PyDict_GET_SIZE(kwargs))) {
        PyErr_SetString(PyExc_TypeError, "DeflateDecompressor() takes no arguments");
        return NULL;
    }
    Inflater *self = (Inflater *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    self->adler = 1;
    self->z.zalloc = z_alloc, self->z.zfree = z_free, self->z.opaque = NULL;
    if (!(self->lock = PyThread_allocate_lock())) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    int status = inflateInit2(&self->z, TR_DEFLATE_WBITS);
    if (status != Z_OK) {
        self->z.zfree = NULL; /* nothing to end */
        Py_DECREF(self);
        return status == Z_MEM_ERROR ? PyErr_NoMemory()
                                     : PyErr_Format(PyExc_RuntimeError, "zlib inflateInit2 failed (%d)", status);
    }
    return (PyObject *)self;
}

static void inflater_dealloc(Inflater *self)
{
    if (self->z.zfree)
        inflateEnd(&self->z);
    if (self->lock)
        PyThread_free_lock(self->lock);
    Py_XDECREF(self->error);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Raise FramingError(reason) and remember it: the stream is unusable from now on. */
static PyObject *inflater_fail(Inflater *self, PyObject *reason)
{
    if (!reason)
        return NULL;
    Py_XSETREF(self->error, reason);
    PyErr_SetObject(FramingError, reason);
    return NULL;
}

static PyObject *inflater_failure(Inflater *self, enum tr_inflate_status status, size_t len, size_t cap, int zerr)
{
    switch (status) {
    case TR_INFLATE_NO_ADLER:
        return inflater_fail(self, PyUnicode_FromFormat("deflate record of %zu bytes has no adler32", len));
    case TR_INFLATE_CORRUPT: { /* worded as Python's zlib module words it */
        const char *msg = self->z.msg;
        if (!msg)
            msg = zerr == Z_BUF_ERROR ? "incomplete or truncated stream"
                  : zerr == Z_STREAM_ERROR ? "inconsistent stream state"
                  : zerr == Z_DATA_ERROR ? "invalid input data"
                                          : NULL;
        return inflater_fail(self, msg ? PyUnicode_FromFormat("corrupt deflate data: Error %d while decompressing "
                                                              "data: %.200s", zerr, msg)
                                       : PyUnicode_FromFormat("corrupt deflate data: Error %d while decompressing "
                                                              "data", zerr));
    }
    case TR_INFLATE_EXCEEDS:
        return inflater_fail(self, PyUnicode_FromFormat("deflate output exceeds the %zu-byte buffer", cap));
    case TR_INFLATE_ENDED:
        return inflater_fail(self, PyUnicode_FromString("deflate stream ended (a final block), which CSTP never sends"));
    default:
        return inflater_fail(self, PyUnicode_FromString("deflate adler32 mismatch"));
    }
}

static PyObject *inflater_decompress_into(Inflater *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    Py_buffer in, out;
    if (self->error) {
        PyErr_Format(FramingError, "deflate stream unusable after an earlier error (%U); reconnect", self->error);
        return NULL;
    }
    if (src_dst_args("decompress_into", args, nargs, kwnames, &in, &out) < 0)
        return NULL;
    size_t len = (size_t)in.len, cap = (size_t)out.len, n = 0;
    int zerr = Z_OK;
    enum tr_inflate_status status;
    /* The stream is this object's: one caller at a time, the GIL released for big records. */
    if (!PyThread_acquire_lock(self->lock, NOWAIT_LOCK)) {
        Py_BEGIN_ALLOW_THREADS
        PyThread_acquire_lock(self->lock, WAIT_LOCK);
        Py_END_ALLOW_THREADS
    }
    if (self->error) { /* set by the caller we waited for */
        PyThread_release_lock(self->lock);
        PyBuffer_Release(&in);
        PyBuffer_Release(&out);
        PyErr_Format(FramingError, "deflate stream unusable after an earlier error (%U); reconnect", self->error);
        return NULL;
    }
    void *scratch;
    const uint8_t *src = readable_src(&in, &out, &scratch);
    if (!src) {
        PyThread_release_lock(self->lock);
        PyBuffer_Release(&in);
        PyBuffer_Release(&out);
        return NULL;
    }
    MAYBE_WITHOUT_GIL(len >= NOGIL_BYTES || cap >= NOGIL_BYTES,
                      status = tr_cstp_inflate(&self->z, &self->adler, src, len, out.buf, cap, &n, &zerr));
    PyMem_Free(scratch);
    PyObject *result = status == TR_INFLATE_OK ? PyLong_FromSize_t(n) : inflater_failure(self, status, len, cap, zerr);
    PyThread_release_lock(self->lock);
    PyBuffer_Release(&in);
    PyBuffer_Release(&out);
    return result;
}

static PyObject *inflater_broken(Inflater *self, void *closure)
{
    return PyBool_FromLong(self->error != NULL);
}

static PyMethodDef inflater_methods[] = {
    {"decompress_into", (PyCFunction)(void (*)(void))inflater_decompress_into, METH_FASTCALL | METH_KEYWORDS,
     "decompress_into(src, dst) -> int: one record body (deflate data + adler32) into dst."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef inflater_getset[] = {
    {"broken", (getter)inflater_broken, NULL, "True once an error has made the stream unusable.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject InflaterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tunring._native.DeflateDecompressor",
    .tp_basicsize = sizeof(Inflater),
    .tp_dealloc = (destructor)inflater_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The receiving half of CSTP deflate (see tunring.proto.compress.DeflateDecompressor), inflating\n"
              "straight into dst: on an error dst may hold unchecked bytes (the caller drops the packet).",
    .tp_methods = inflater_methods,
    .tp_getset = inflater_getset,
    .tp_new = inflater_new,
};

/* ---- module ----------------------------------------------------------------------------- */

#define FASTCALL_KW(name, fn, doc) {name, (PyCFunction)(void (*)(void))fn, METH_FASTCALL | METH_KEYWORDS, doc}

static PyMethodDef native_methods[] = {
    FASTCALL_KW("fcs16", py_fcs16, "fcs16(data, fcs=0xFFFF) -> int: rfc1662.fcs16."),
    FASTCALL_KW("hdlc_decode_frame", py_hdlc_decode_frame, "hdlc_decode_frame(buf, rx_accm=0) -> int: rfc1662.decode_frame."),
    FASTCALL_KW("hdlc_encode_frame", py_hdlc_encode_frame,
                "hdlc_encode_frame(src, dst, tx_accm=0xFFFFFFFF, *, leading_flag=True) -> int: rfc1662.encode_frame."),
    {"hdlc_scan", (PyCFunction)(void (*)(void))py_hdlc_scan, METH_FASTCALL,
     "hdlc_scan(result_type, data) -> result_type(spans, rest, garbage): rfc1662.scan."},
    FASTCALL_KW("lzs_decompress_into", py_lzs_decompress_into,
                "lzs_decompress_into(src, dst) -> int: compress.lzs_decompress_into."),
    FASTCALL_KW("lzs_compress", py_lzs_compress, "lzs_compress(src) -> bytes: compress.lzs_compress."),
    FASTCALL_KW("lz4_decompress_into", py_lz4_decompress_into,
                "lz4_decompress_into(src, dst) -> int: compress.lz4_decompress_into, with the system liblz4."),
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "tunring._native",
    .m_doc = "The native core: C versions of tunring's hot loops, selected by tunring._impl.",
    .m_size = -1,
    .m_methods = native_methods,
};

PyMODINIT_FUNC PyInit__native(void)
{
    PyObject *errors = PyImport_ImportModule("tunring.errors");
    if (!errors)
        return NULL;
    FramingError = PyObject_GetAttrString(errors, "FramingError");
    Py_DECREF(errors);
    if (!FramingError || PyType_Ready(&InflaterType) < 0)
        return NULL;
    PyObject *name = PyUnicode_FromString("deflate");
    if (!name || PyDict_SetItemString(InflaterType.tp_dict, "name", name) < 0) {
        Py_XDECREF(name);
        return NULL;
    }
    Py_DECREF(name);
    /* zlib inflates straight into dst: no staging copy for the codec to count */
    if (PyDict_SetItemString(InflaterType.tp_dict, "staged", Py_False) < 0 ||
        PyDict_SetItemString(InflaterType.tp_dict, "copies_overlapping_src", Py_True) < 0)
        return NULL;
    PyType_Modified(&InflaterType);
    PyObject *m = PyModule_Create(&native_module);
    if (!m)
        return NULL;
    Py_INCREF(&InflaterType);
    if (PyModule_AddObject(m, "DeflateDecompressor", (PyObject *)&InflaterType) < 0 ||
        PyModule_AddIntConstant(m, "ABI", NATIVE_ABI) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
