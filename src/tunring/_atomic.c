/*
 * Sequentially consistent 32-bit loads and stores on shared memory.
 *
 * The ring's wake-up protocol is Dekker's pattern: the consumer stores
 * Alertable = 1 and then loads Tail; the producer stores Tail and then loads
 * Alertable.  Without a full barrier between each store and the following load
 * both sides may read the old value (x86-64's store buffer allows exactly this
 * reordering) and the consumer sleeps while a packet waits.  Pure Python has no
 * way to order memory, so every access to Head, Tail and Alertable goes through
 * these C11 seq_cst atomics: all seq_cst operations form one total order that
 * agrees with program order, so at least one side sees the other's store.
 * Seq_cst loads and stores also give the acquire/release ordering that makes a
 * slot's Size and data visible before the Tail that publishes it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdatomic.h>
#include <stdint.h>

static int
get_word(PyObject *obj, Py_ssize_t offset, Py_buffer *view, _Atomic uint32_t **word, int writable)
{
    if (PyObject_GetBuffer(obj, view, writable ? PyBUF_WRITABLE : PyBUF_SIMPLE) < 0)
        return -1;
    if (offset < 0 || offset % 4 || offset + 4 > view->len) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_IndexError, "32-bit word at offset %zd is outside the %zd-byte buffer or unaligned",
                     offset, view->len);
        return -1;
    }
    if (((uintptr_t)view->buf + offset) % 4) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_ValueError, "buffer is not 4-byte aligned");
        return -1;
    }
    *word = (_Atomic uint32_t *)((char *)view->buf + offset);
    return 0;
}

static PyObject *
py_load(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    _Atomic uint32_t *word;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "load(buffer, offset)");
        return NULL;
    }
    Py_ssize_t offset = PyLong_AsSsize_t(args[1]);
    if (offset == -1 && PyErr_Occurred())
        return NULL;
    if (get_word(args[0], offset, &view, &word, 0) < 0)
        return NULL;
    uint32_t value = atomic_load_explicit(word, memory_order_seq_cst);
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLong(value);
}

static PyObject *
py_store(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    _Atomic uint32_t *word;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "store(buffer, offset, value)");
        return NULL;
    }
    Py_ssize_t offset = PyLong_AsSsize_t(args[1]);
    if (offset == -1 && PyErr_Occurred())
        return NULL;
    unsigned long value = PyLong_AsUnsignedLong(args[2]);
    if (value == (unsigned long)-1 && PyErr_Occurred())
        return NULL;
    if (value > 0xFFFFFFFFUL) {
        PyErr_SetString(PyExc_OverflowError, "value does not fit in 32 bits");
        return NULL;
    }
    if (get_word(args[0], offset, &view, &word, 1) < 0)
        return NULL;
    atomic_store_explicit(word, (uint32_t)value, memory_order_seq_cst);
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

static PyObject *
py_fence(PyObject *self, PyObject *unused)
{
    atomic_thread_fence(memory_order_seq_cst);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"load", (PyCFunction)(void (*)(void))py_load, METH_FASTCALL,
     "load(buffer, offset) -> int: seq_cst load of the u32 at offset."},
    {"store", (PyCFunction)(void (*)(void))py_store, METH_FASTCALL,
     "store(buffer, offset, value): seq_cst store of a u32 at offset."},
    {"fence", py_fence, METH_NOARGS, "fence(): a full (seq_cst) memory barrier."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "tunring._atomic",
    "Sequentially consistent u32 loads/stores for the ring's shared indices.", -1, methods,
};

PyMODINIT_FUNC
PyInit__atomic(void)
{
    return PyModule_Create(&module);
}
