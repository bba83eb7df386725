/* The receiver's payload walk in C: gateway.fastframe's generated decoders, compiled.
 *
 * A ``Decoder`` is made once per kind from a compact spec that gateway/fastframe.py
 * derives from the kinds table (protocol/kinds.py):
 *
 *     Decoder(name, kind_id, fields)
 *     fields: ((field name, lowest, highest, nullable, optional, series_min, series_max), ...)
 *             series_min = -1 for a single integer
 *
 * and is called as ``decode(p, device_id, fcnt, tag_len)``, exactly as the generated
 * Python decoder: it returns ``protocol.frame.decoded``'s dict for the payload ``p``,
 * or None for anything outside the subset it takes (the caller then asks
 * ``protocol.frame``, which accepts or rejects it with its reason). What it takes:
 * a CBOR array (head 0x80 + count) of the kind's fields, trailing optional ones
 * possibly absent; each field a shortest-form CBOR integer (major type 0 or 1,
 * RFC 8949 section 4.2.1) inside the field's range, or null (0xf6) where the field
 * is nullable; a series an array of min..max such integers (its length in the head
 * up to 23, in one following byte from 24 on); nothing after the last field.
 *
 * Safety (the payload is attacker-controlled up to the tag check, and a holder of
 * a key can send any payload): every read is checked against the payload's length
 * before it is made, there is no recursion (a payload is at most two levels deep,
 * and the walk is a loop over the spec), counts are bounded by the spec (a series
 * at most 255 elements, a kind at most 23 fields), and every reference taken is
 * released on every exit path. tests/gateway/test_fastframe_fuzz.py feeds it
 * random and mutated bytes; tests/gateway/test_fastframe.py pins it to
 * protocol.frame with hypothesis, as it does the Python decoders.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stddef.h>
#include <stdint.h>

#define MAX_FIELDS 23      /* one array head (0x80..0x97) holds the field count */
#define MAX_SERIES 255     /* a series' count in one byte after 0x98 */
#define CBOR_NULL 0xF6

typedef struct {
    PyObject *name;        /* interned str: the key in the values dict */
    int64_t lo, hi;        /* inclusive range of the value (per element of a series) */
    int nullable;
    int optional;
    int series_min;        /* -1: a single integer; else the series' shortest length */
    int series_max;
} Field;

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *kind_name;   /* str: the 'kind' value */
    PyObject *kind_id;     /* int: the 'kind_id' value */
    PyObject *k_kind, *k_kind_id, *k_device_id, *k_fcnt, *k_tag_len, *k_values;
    Py_ssize_t required;   /* fields before the first optional one */
    Py_ssize_t nfields;
    Field fields[MAX_FIELDS];
} Decoder;

/* Reads one shortest-form integer in [lo, hi] at p[*i] (n bytes in all).
 * Returns 1 and sets *out to a new reference and advances *i; 0 when the bytes are
 * outside the subset (nothing set); -1 with an exception set (out of memory). */
static int
read_integer(const unsigned char *p, Py_ssize_t n, Py_ssize_t *i, int64_t lo, int64_t hi,
             int nullable, PyObject **out)
{
    Py_ssize_t at = *i;
    if (at >= n) {
        return 0;
    }
    unsigned int head = p[at];
    if (head == CBOR_NULL) {
        if (!nullable) {
            return 0;
        }
        *i = at + 1;
        Py_INCREF(Py_None);
        *out = Py_None;
        return 1;
    }
    unsigned int major = head >> 5;
    unsigned int info = head & 0x1F;
    if (major > 1) {
        return 0;
    }
    uint64_t arg;
    Py_ssize_t width;
    if (info < 24) {
        arg = info;
        width = 0;
    }
    else if (info <= 27) {
        width = (Py_ssize_t)1 << (info - 24);          /* 1, 2, 4, 8 bytes */
        if (n - at - 1 < width) {
            return 0;
        }
        arg = 0;
        for (Py_ssize_t k = 1; k <= width; k++) {
            arg = (arg << 8) | p[at + k];
        }
        /* shortest form: a value a narrower head could carry is outside the subset */
        static const uint64_t least[4] = {24, 0x100, 0x10000, 0x100000000ULL};
        if (arg < least[info - 24]) {
            return 0;
        }
    }
    else {
        return 0;      /* reserved, or indefinite length: not an integer of the subset */
    }
    PyObject *value;
    if (major == 0) {
        /* value = arg, need lo <= arg <= hi */
        if (hi < 0 || arg > (uint64_t)hi || (lo > 0 && arg < (uint64_t)lo)) {
            return 0;
        }
        value = PyLong_FromUnsignedLongLong(arg);
    }
    else {
        /* value = -1 - arg, need lo <= value <= hi; lo >= INT64_MIN, so -1 - lo >= 0 */
        if (lo >= 0 || arg > (uint64_t)(-1 - lo) || (hi < -1 && arg < (uint64_t)(-1 - hi))) {
            return 0;
        }
        value = PyLong_FromLongLong(-1 - (int64_t)arg);
    }
    if (value == NULL) {
        return -1;
    }
    *i = at + 1 + width;
    *out = value;
    return 1;
}

/* Reads a series (an array of integers in the field's range) at p[*i]; as read_integer. */
static int
read_series(const unsigned char *p, Py_ssize_t n, Py_ssize_t *i, const Field *f,
            PyObject **out)
{
    Py_ssize_t at = *i;
    if (at >= n) {
        return 0;
    }
    unsigned int head = p[at];
    Py_ssize_t count;
    if (head >= 0x80 && head <= 0x97) {
        count = head - 0x80;
        at += 1;
    }
    else if (head == 0x98) {
        if (at + 1 >= n) {
            return 0;
        }
        count = p[at + 1];
        if (count < 24) {
            return 0;      /* not the shortest form */
        }
        at += 2;
    }
    else {
        return 0;
    }
    if (count < f->series_min || count > f->series_max) {
        return 0;
    }
    if (n - at < count) {      /* each element takes at least one byte */
        return 0;
    }
    PyObject *list = PyList_New(count);
    if (list == NULL) {
        return -1;
    }
    for (Py_ssize_t j = 0; j < count; j++) {
        PyObject *item;
        int got = read_integer(p, n, &at, f->lo, f->hi, 0, &item);
        if (got <= 0) {
            Py_DECREF(list);   /* releases the items already stored */
            return got;
        }
        PyList_SET_ITEM(list, j, item);
    }
    *i = at;
    *out = list;
    return 1;
}

static PyObject *
new_dict(Py_ssize_t size)
{
#if PY_VERSION_HEX < 0x030D0000
    return _PyDict_NewPresized(size);     /* one allocation, no resize while filling */
#else
    (void)size;
    return PyDict_New();
#endif
}

/* The walk over one payload; NULL with an exception only when out of memory. */
static PyObject *
decode_payload(Decoder *self, const unsigned char *p, Py_ssize_t n, PyObject *device_id,
               PyObject *fcnt, PyObject *tag_len)
{
    if (n < 1 || p[0] < 0x80 || p[0] > 0x97) {
        Py_RETURN_NONE;
    }
    Py_ssize_t count = p[0] - 0x80;
    if (count < self->required || count > self->nfields) {
        Py_RETURN_NONE;
    }
    PyObject *items[MAX_FIELDS];
    Py_ssize_t i = 1;
    Py_ssize_t done = 0;
    PyObject *result = NULL;
    for (; done < count; done++) {
        const Field *f = &self->fields[done];
        int got = f->series_min < 0
            ? read_integer(p, n, &i, f->lo, f->hi, f->nullable, &items[done])
            : read_series(p, n, &i, f, &items[done]);
        if (got < 0) {
            goto error;
        }
        if (got == 0) {
            goto outside;
        }
    }
    if (i != n) {
        goto outside;
    }
    PyObject *values = new_dict(count);
    if (values == NULL) {
        goto error;
    }
    for (Py_ssize_t k = 0; k < count; k++) {
        if (PyDict_SetItem(values, self->fields[k].name, items[k]) < 0) {
            Py_DECREF(values);
            goto error;
        }
    }
    result = new_dict(6);
    if (result == NULL
        || PyDict_SetItem(result, self->k_kind, self->kind_name) < 0
        || PyDict_SetItem(result, self->k_kind_id, self->kind_id) < 0
        || PyDict_SetItem(result, self->k_device_id, device_id) < 0
        || PyDict_SetItem(result, self->k_fcnt, fcnt) < 0
        || PyDict_SetItem(result, self->k_tag_len, tag_len) < 0
        || PyDict_SetItem(result, self->k_values, values) < 0) {
        Py_XDECREF(result);
        result = NULL;
    }
    Py_DECREF(values);
    for (Py_ssize_t k = 0; k < done; k++) {
        Py_DECREF(items[k]);
    }
    return result;
outside:
    for (Py_ssize_t k = 0; k < done; k++) {
        Py_DECREF(items[k]);
    }
    Py_RETURN_NONE;
error:
    for (Py_ssize_t k = 0; k < done; k++) {
        Py_DECREF(items[k]);
    }
    return NULL;
}

static PyObject *
Decoder_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Decoder *self = (Decoder *)callable;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs != 4 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0)) {
        PyErr_SetString(PyExc_TypeError,
                        "decode(p, device_id, fcnt, tag_len) takes 4 positional arguments");
        return NULL;
    }
    PyObject *p = args[0];
    if (PyBytes_CheckExact(p)) {
        return decode_payload(self, (const unsigned char *)PyBytes_AS_STRING(p),
                              PyBytes_GET_SIZE(p), args[1], args[2], args[3]);
    }
    Py_buffer view;
    if (PyObject_GetBuffer(p, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    PyObject *result = decode_payload(self, (const unsigned char *)view.buf, view.len,
                                      args[1], args[2], args[3]);
    PyBuffer_Release(&view);
    return result;
}

static void
Decoder_dealloc(Decoder *self)
{
    Py_CLEAR(self->kind_name);
    Py_CLEAR(self->kind_id);
    Py_CLEAR(self->k_kind);
    Py_CLEAR(self->k_kind_id);
    Py_CLEAR(self->k_device_id);
    Py_CLEAR(self->k_fcnt);
    Py_CLEAR(self->k_tag_len);
    Py_CLEAR(self->k_values);
    for (Py_ssize_t k = 0; k < self->nfields; k++) {
        Py_CLEAR(self->fields[k].name);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* A str key made once and interned, so its hash is computed once. */
static PyObject *
interned(const char *text)
{
    return PyUnicode_InternFromString(text);
}

/* One field of the spec: (name, lo, hi, nullable, optional, series_min, series_max). */
static int
parse_field(PyObject *spec, Field *f)
{
    PyObject *name;
    long long lo, hi;
    int nullable, optional, series_min, series_max;
    if (!PyTuple_Check(spec)) {
        PyErr_SetString(PyExc_TypeError, "a field spec is a tuple");
        return -1;
    }
    if (!PyArg_ParseTuple(spec, "ULLppii", &name, &lo, &hi, &nullable, &optional,
                          &series_min, &series_max)) {
        return -1;
    }
    if (lo > hi) {
        PyErr_SetString(PyExc_ValueError, "a field's lowest value is above its highest");
        return -1;
    }
    if (series_min >= 0 && (series_min > series_max || series_max > MAX_SERIES)) {
        PyErr_SetString(PyExc_ValueError, "a series' lengths are outside 0..255");
        return -1;
    }
    Py_INCREF(name);
    PyUnicode_InternInPlace(&name);
    f->name = name;
    f->lo = lo;
    f->hi = hi;
    f->nullable = nullable && series_min < 0;   /* a series element is never null */
    f->optional = optional;
    f->series_min = series_min < 0 ? -1 : series_min;
    f->series_max = series_max;
    return 0;
}

static PyObject *
Decoder_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"name", "kind_id", "fields", NULL};
    PyObject *name, *kind_id, *fields;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "UO!O!:Decoder", keywords, &name,
                                     &PyLong_Type, &kind_id, &PyTuple_Type, &fields)) {
        return NULL;
    }
    Py_ssize_t nfields = PyTuple_GET_SIZE(fields);
    if (nfields > MAX_FIELDS) {
        PyErr_SetString(PyExc_ValueError, "more fields than one array head holds");
        return NULL;
    }
    Decoder *self = (Decoder *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->vectorcall = Decoder_vectorcall;
    Py_INCREF(name);
    self->kind_name = name;
    Py_INCREF(kind_id);
    self->kind_id = kind_id;
    self->k_kind = interned("kind");
    self->k_kind_id = interned("kind_id");
    self->k_device_id = interned("device_id");
    self->k_fcnt = interned("fcnt");
    self->k_tag_len = interned("tag_len");
    self->k_values = interned("values");
    if (!self->k_kind || !self->k_kind_id || !self->k_device_id || !self->k_fcnt
        || !self->k_tag_len || !self->k_values) {
        Py_DECREF(self);
        return NULL;
    }
    self->required = -1;
    for (Py_ssize_t k = 0; k < nfields; k++) {
        if (parse_field(PyTuple_GET_ITEM(fields, k), &self->fields[k]) < 0) {
            Py_DECREF(self);
            return NULL;
        }
        self->nfields = k + 1;
        if (self->fields[k].optional) {
            if (self->required < 0) {
                self->required = k;
            }
        }
        else if (self->required >= 0) {
            Py_DECREF(self);
            PyErr_SetString(PyExc_ValueError, "a required field after an optional one");
            return NULL;
        }
    }
    if (self->required < 0) {
        self->required = nfields;
    }
    return (PyObject *)self;
}

static PyObject *
Decoder_repr(Decoder *self)
{
    return PyUnicode_FromFormat("<_fastframe.Decoder kind %R>", self->kind_name);
}

static PyMemberDef Decoder_members[] = {
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(Decoder, vectorcall), READONLY, NULL},
    {"kind", T_OBJECT, offsetof(Decoder, kind_name), READONLY, "the kind's name"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject DecoderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "knute.gateway._fastframe.Decoder",
    .tp_doc = PyDoc_STR("Decoder(name, kind_id, fields): one kind's payload walk; "
                        "call as decode(p, device_id, fcnt, tag_len) -> dict | None"),
    .tp_basicsize = sizeof(Decoder),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = Decoder_new,
    .tp_dealloc = (destructor)Decoder_dealloc,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Decoder, vectorcall),
    .tp_repr = (reprfunc)Decoder_repr,
    .tp_members = Decoder_members,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "knute.gateway._fastframe",
    .m_doc = PyDoc_STR("The payload walk of gateway.fastframe in C (optional)."),
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__fastframe(void)
{
    if (PyType_Ready(&DecoderType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    Py_INCREF(&DecoderType);
    if (PyModule_AddObject(m, "Decoder", (PyObject *)&DecoderType) < 0) {
        Py_DECREF(&DecoderType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
