/* The compiled scanner of finished layout 2 checkpoint files (see _finished.py).
 *
 * It reads the "task" lines of a file, the bulk of it, without making a
 * Python object per line: each task becomes a row, each time an int64 in a
 * column, each repeated string (names, workflow ids, results, slots) a code
 * into one table of distinct raw JSON values that Python decodes once.
 * Lines of any other section come back as bytes, for the Python reader.
 *
 * It takes only the lines the engine's writer writes: a task line must be
 * {"section":"task","uid":"<uid>",...} with known keys and values of the
 * types the layout gives them. Anything else raises ValueError, and the
 * caller reads the whole file the Python way, which reports such lines.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define SCAN_VERSION 1
#ifndef SCAN_SOURCE /* the SHA-256 of this file, given by the build hook */
#define SCAN_SOURCE ""
#endif
#define ABSENT INT64_MIN
#define RECENT 4096

/* Integer fields: a column of int64 each (ABSENT when a task has none). */
enum {
    I_CREATED, I_RESOLVED, I_QUEUED, I_SUBMITTED, I_STARTED, I_ASSIGNED,
    I_ATTEMPT_ENDED, I_ENDED, I_ID, I_ASSIGNED_ID, I_CPUS, I_GPUS, N_INTS
};
/* Coded fields: a column of int32 codes into the table of values (-1: none). */
enum {
    C_BACKEND, C_WORKFLOW_ID, C_LEVEL, C_NAME, C_WORKFLOW_NAME, C_TYPE,
    C_RESULT, C_STATUS, C_ERROR_TYPE, C_DESCRIPTION, C_PARENT, C_SLOTS, N_CODES
};
/* Other fields, each its own way. */
enum { K_SPAN = 100, K_DEPENDS_ON, K_ATTRIBUTES, K_EXCEPTION, K_ATTEMPT };
/* How a coded field's value must look: a JSON string, or an array. */
enum { T_INT, T_STRING, T_ARRAY, T_OTHER };

typedef struct {
    const char *name;
    Py_ssize_t len;
    int field; /* an I_ or C_ index, or a K_ */
    int type;
} Key;

static const Key KEYS[] = {
    {"created", 7, I_CREATED, T_INT},
    {"resolved", 8, I_RESOLVED, T_INT},
    {"queued", 6, I_QUEUED, T_INT},
    {"submitted", 9, I_SUBMITTED, T_INT},
    {"started", 7, I_STARTED, T_INT},
    {"assigned", 8, I_ASSIGNED, T_INT},
    {"attempt_ended", 13, I_ATTEMPT_ENDED, T_INT},
    {"ended", 5, I_ENDED, T_INT},
    {"id", 2, I_ID, T_INT},
    {"assigned_id", 11, I_ASSIGNED_ID, T_INT},
    {"cpus", 4, I_CPUS, T_INT},
    {"gpus", 4, I_GPUS, T_INT},
    {"backend", 7, C_BACKEND, T_STRING},
    {"workflow_id", 11, C_WORKFLOW_ID, T_STRING},
    {"level", 5, C_LEVEL, T_STRING},
    {"name", 4, C_NAME, T_STRING},
    {"workflow_name", 13, C_WORKFLOW_NAME, T_STRING},
    {"type", 4, C_TYPE, T_STRING},
    {"result", 6, C_RESULT, T_STRING},
    {"status", 6, C_STATUS, T_STRING},
    {"error_type", 10, C_ERROR_TYPE, T_STRING},
    {"description", 11, C_DESCRIPTION, T_STRING},
    {"parent", 6, C_PARENT, T_STRING},
    {"slots", 5, C_SLOTS, T_ARRAY},
    {"span", 4, K_SPAN, T_STRING},
    {"depends_on", 10, K_DEPENDS_ON, T_ARRAY},
    {"attributes", 10, K_ATTRIBUTES, T_OTHER},
    {"exception", 9, K_EXCEPTION, T_OTHER},
    {"attempt", 7, K_ATTEMPT, T_OTHER},
};
#define N_KEYS ((int)(sizeof(KEYS) / sizeof(KEYS[0])))

static const char PREFIX[] = "{\"section\":\"task\",\"uid\":\"";
#define PREFIX_LEN ((Py_ssize_t)(sizeof(PREFIX) - 1))

/* A hash set of byte strings (kept in an arena), each with its number. */
typedef struct {
    int32_t number; /* -1: free */
    uint32_t hash;  /* the high half of its hash: most other strings differ there */
} Slot;

typedef struct {
    char *arena;
    Py_ssize_t used, cap;
    Py_ssize_t *offsets; /* per number: its bytes' start in the arena */
    Py_ssize_t *lengths;
    Py_ssize_t count, room; /* numbers given; room in offsets/lengths */
    Slot *slots;            /* open addressing */
    size_t mask;
} Table;

static uint64_t hash_bytes(const char *p, Py_ssize_t n) {
    /* Eight bytes a step, mixed by multiplication: uids and names are short. */
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ (uint64_t)n;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdULL;
        h ^= h >> 32;
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, p, (size_t)n);
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ULL;
    return h ^ (h >> 29);
}

static int table_init(Table *t) {
    memset(t, 0, sizeof(*t));
    t->mask = 1023;
    t->slots = PyMem_Malloc((t->mask + 1) * sizeof(Slot));
    if (t->slots == NULL) return -1;
    memset(t->slots, 0xff, (t->mask + 1) * sizeof(Slot));
    return 0;
}

static void table_free(Table *t) {
    PyMem_Free(t->arena);
    PyMem_Free(t->offsets);
    PyMem_Free(t->lengths);
    PyMem_Free(t->slots);
    memset(t, 0, sizeof(*t));
}

static int table_grow(Table *t) {
    size_t cap = (t->mask + 1) * 2;
    Slot *slots = PyMem_Malloc(cap * sizeof(Slot));
    if (slots == NULL) return -1;
    memset(slots, 0xff, cap * sizeof(Slot));
    for (Py_ssize_t i = 0; i < t->count; i++) {
        uint64_t h = hash_bytes(t->arena + t->offsets[i], t->lengths[i]);
        size_t at = h & (cap - 1);
        while (slots[at].number >= 0) at = (at + 1) & (cap - 1);
        slots[at].number = (int32_t)i;
        slots[at].hash = (uint32_t)(h >> 32);
    }
    PyMem_Free(t->slots);
    t->slots = slots;
    t->mask = cap - 1;
    return 0;
}

/* The number of ``p[0:n]`` (``h``: its hash_bytes). When new: -2, or with
 * ``add`` a new number (``*added`` set). -1: no memory. */
static Py_ssize_t table_find(Table *t, const char *p, Py_ssize_t n, uint64_t h, int add,
                             int *added) {
    size_t at = h & t->mask;
    uint32_t high = (uint32_t)(h >> 32);
    *added = 0;
    for (;;) {
        Slot slot = t->slots[at];
        if (slot.number < 0) break;
        if (slot.hash == high && t->lengths[slot.number] == n &&
            memcmp(t->arena + t->offsets[slot.number], p, n) == 0)
            return slot.number;
        at = (at + 1) & t->mask;
    }
    if (!add) return -2;
    if (t->count >= INT32_MAX - 1) return -1;
    if (t->used + n > t->cap) {
        Py_ssize_t cap = t->cap ? t->cap : 65536;
        while (cap < t->used + n) cap *= 2;
        char *arena = PyMem_Realloc(t->arena, cap);
        if (arena == NULL) return -1;
        t->arena = arena;
        t->cap = cap;
    }
    if (t->count >= t->room) {
        Py_ssize_t room = t->room ? t->room * 2 : 1024;
        Py_ssize_t *offsets = PyMem_Realloc(t->offsets, room * sizeof(Py_ssize_t));
        if (offsets == NULL) return -1;
        t->offsets = offsets;
        Py_ssize_t *lengths = PyMem_Realloc(t->lengths, room * sizeof(Py_ssize_t));
        if (lengths == NULL) return -1;
        t->lengths = lengths;
        t->room = room;
    }
    memcpy(t->arena + t->used, p, n);
    t->offsets[t->count] = t->used;
    t->lengths[t->count] = n;
    t->used += n;
    t->slots[at].number = (int32_t)t->count;
    t->slots[at].hash = high;
    *added = 1;
    t->count++;
    if ((size_t)t->count * 2 > t->mask + 1 && table_grow(t) < 0) return -1;
    return t->count - 1;
}

static Py_ssize_t table_get(Table *t, const char *p, Py_ssize_t n, int add, int *added) {
    return table_find(t, p, n, hash_bytes(p, n), add, added);
}

/* Whether the string numbered ``i`` of ``t`` is ``p[0:n]``. */
static int table_is(const Table *t, Py_ssize_t i, const char *p, Py_ssize_t n) {
    return t->lengths[i] == n && memcmp(t->arena + t->offsets[i], p, n) == 0;
}

/* A growable array of fixed-size items, in a bytearray: handed to Python
 * as it is (numpy reads it in place), not copied. */
typedef struct {
    PyObject *array;
    char *data;
    Py_ssize_t count, room, size;
} Vec;

static int vec_grow(Vec *v) {
    Py_ssize_t room = v->room ? v->room * 2 : 4096;
    if (v->array == NULL) {
        v->array = PyByteArray_FromStringAndSize(NULL, room * v->size);
        if (v->array == NULL) return -1;
    } else if (PyByteArray_Resize(v->array, room * v->size) < 0) {
        return -1;
    }
    v->data = PyByteArray_AS_STRING(v->array);
    v->room = room;
    return 0;
}

#define VEC_PUSH(v, type, value) \
    (((v)->count < (v)->room || vec_grow(v) == 0) ? (((type *)(v)->data)[(v)->count++] = (value), 0) : -1)

/* The items as a bytearray of their size (a new reference). */
static PyObject *vec_take(Vec *v) {
    if (v->array == NULL) return PyByteArray_FromStringAndSize(NULL, 0);
    if (PyByteArray_Resize(v->array, v->count * v->size) < 0) return NULL;
    Py_INCREF(v->array);
    return v->array;
}

typedef struct {
    PyObject_HEAD
    Table uids;           /* task uid -> row */
    Table values;         /* raw JSON value -> code */
    Table missing;        /* uids depended on before any line of theirs */
    Vec ints[N_INTS];     /* int64 per row */
    Vec codes[N_CODES];   /* int32 per row */
    int32_t last[N_CODES]; /* per coded field, the code of its last value (lines repeat them) */
    struct {
        uint64_t hash;
        int32_t row;
    } recent[RECENT]; /* uids by hash, direct-mapped: a task's lines come close together */
    Vec ended;            /* uint8 per row: its end line was read */
    Vec order;            /* int32: rows in the order they ended */
    Vec edge_rows;        /* int32: per dependency, the row that depends */
    Vec edge_uids;        /* int32: per dependency, the uid number depended on */
    PyObject *spans;      /* list: per row, its span id (str) or None */
    PyObject *depends_on; /* list: per row, its depends_on as raw bytes, or None */
    PyObject *attributes; /* dict: row -> raw bytes */
    PyObject *exceptions; /* dict: row -> raw bytes */
    PyObject *attempts;   /* list of (row, time_ns, raw bytes) */
    Py_ssize_t lines;     /* task lines taken */
    Py_ssize_t escaped;   /* span ids with escapes (left as raw JSON bytes) */
    Py_ssize_t line_no;   /* lines seen, for messages */
    int finished;         /* its columns were handed over: no more lines */
} Scanner;

static void scanner_dealloc(Scanner *self) {
    table_free(&self->uids);
    table_free(&self->values);
    table_free(&self->missing);
    for (int i = 0; i < N_INTS; i++) Py_XDECREF(self->ints[i].array);
    for (int i = 0; i < N_CODES; i++) Py_XDECREF(self->codes[i].array);
    Py_XDECREF(self->ended.array);
    Py_XDECREF(self->order.array);
    Py_XDECREF(self->edge_rows.array);
    Py_XDECREF(self->edge_uids.array);
    Py_XDECREF(self->spans);
    Py_XDECREF(self->depends_on);
    Py_XDECREF(self->attributes);
    Py_XDECREF(self->exceptions);
    Py_XDECREF(self->attempts);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int scanner_init(Scanner *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "", kwlist)) return -1;
    if (self->spans != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "a Scanner is initialised once");
        return -1;
    }
    if (table_init(&self->uids) < 0 || table_init(&self->values) < 0 ||
        table_init(&self->missing) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    for (int i = 0; i < N_INTS; i++) self->ints[i].size = sizeof(int64_t);
    for (int i = 0; i < N_CODES; i++) {
        self->codes[i].size = sizeof(int32_t);
        self->last[i] = -1;
    }
    for (int i = 0; i < RECENT; i++) self->recent[i].row = -1;
    self->ended.size = 1;
    self->order.size = sizeof(int32_t);
    self->edge_rows.size = sizeof(int32_t);
    self->edge_uids.size = sizeof(int32_t);
    self->spans = PyList_New(0);
    self->depends_on = PyList_New(0);
    self->attributes = PyDict_New();
    self->exceptions = PyDict_New();
    self->attempts = PyList_New(0);
    if (!self->spans || !self->depends_on || !self->attributes || !self->exceptions ||
        !self->attempts)
        return -1;
    return 0;
}

static PyObject *refuse(Scanner *self, const char *why) {
    PyErr_Format(PyExc_ValueError, "line %zd: %s", self->line_no, why);
    return NULL;
}

/* Bytes that end a run of plain string content: a quote, a backslash, a control. */
static unsigned char SPECIAL[256];

/* The end of the JSON string starting at ``p`` (after its closing quote), or
 * NULL. ``*plain``: it has no escape. Escapes are checked by Python later.
 * The line's newline (a control byte) stops it at the end of a line. */
static const char *skip_string(const char *p, const char *end, int *plain) {
    *plain = 1;
    p++;
    for (;;) {
        while (!SPECIAL[(unsigned char)*p]) p++;
        if (p >= end) return NULL;
        if (*p == '"') return p + 1;
        if (*p != '\\') return NULL; /* a control byte */
        *plain = 0;
        if (p + 1 >= end) return NULL;
        p += 2;
    }
}

/* Whether ``p[0:n]`` is ASCII. Uids must be: the Python reader decodes a line
 * with replacements, so two uids that differ only in bytes that are not
 * UTF-8 would be one task to it and two rows here. The engine's are ASCII. */
static int ascii(const char *p, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++)
        if ((unsigned char)p[i] >= 0x80) return 0;
    return 1;
}

/* Keys by a hash of their length and first and last bytes (open addressing). */
#define KEY_SLOTS 128
static signed char KEY_AT[KEY_SLOTS];

static unsigned key_hash(const char *k, Py_ssize_t n) {
    return ((unsigned)n * 31u + (unsigned char)k[0] * 7u + (unsigned char)k[n - 1]) & (KEY_SLOTS - 1);
}

static const Key *find_key(const char *k, Py_ssize_t n) {
    if (n < 1) return NULL;
    for (unsigned at = key_hash(k, n);; at = (at + 1) & (KEY_SLOTS - 1)) {
        int i = KEY_AT[at];
        if (i < 0) return NULL;
        if (KEYS[i].len == n && memcmp(KEYS[i].name, k, n) == 0) return &KEYS[i];
    }
}

static void init_tables(void) {
    memset(SPECIAL, 0, sizeof(SPECIAL));
    for (int c = 0; c < 0x20; c++) SPECIAL[c] = 1;
    SPECIAL['"'] = SPECIAL['\\'] = 1;
    memset(KEY_AT, -1, sizeof(KEY_AT));
    for (int i = 0; i < N_KEYS; i++) {
        unsigned at = key_hash(KEYS[i].name, KEYS[i].len);
        while (KEY_AT[at] >= 0) at = (at + 1) & (KEY_SLOTS - 1);
        KEY_AT[at] = (signed char)i;
    }
}

/* The end of the JSON array or object starting at ``p``, or NULL. Only the
 * nesting is checked here: Python decodes every such value it keeps. */
static const char *skip_nested(const char *p, const char *end) {
    int depth = 0, plain;
    while (p < end) {
        char c = *p;
        if (c == '"') {
            p = skip_string(p, end, &plain);
            if (p == NULL) return NULL;
            continue;
        }
        if (c == '{' || c == '[') {
            if (++depth > 200) return NULL;
        } else if (c == '}' || c == ']') {
            if (--depth == 0) return p + 1;
        } else if (c == '\n') {
            return NULL;
        }
        p++;
    }
    return NULL;
}

static int push_row(Scanner *self) {
    for (int i = 0; i < N_INTS; i++)
        if (VEC_PUSH(&self->ints[i], int64_t, ABSENT) < 0) return -1;
    for (int i = 0; i < N_CODES; i++)
        if (VEC_PUSH(&self->codes[i], int32_t, -1) < 0) return -1;
    if (VEC_PUSH(&self->ended, uint8_t, 0) < 0) return -1;
    if (PyList_Append(self->spans, Py_None) < 0) return -1;
    if (PyList_Append(self->depends_on, Py_None) < 0) return -1;
    return 0;
}

/* The rows of a depends_on array: plain strings only (else 0: refused). */
static int take_depends(Scanner *self, int32_t row, const char *p, const char *end) {
    /* p at '[', end just after the matching ']' */
    p++;
    if (*p == ']') return 1;
    for (;;) {
        if (*p != '"') return 0;
        int plain;
        const char *after = skip_string(p, end, &plain);
        if (after == NULL || !plain || after - p < 3 || !ascii(p + 1, after - p - 2)) return 0;
        int added;
        Py_ssize_t uid = table_get(&self->uids, p + 1, after - p - 2, 0, &added);
        if (uid == -2) {
            /* Not a task of this file (so far): no edge. Should it come later,
             * the Python reader, which would draw that edge, takes the file. */
            if (table_get(&self->missing, p + 1, after - p - 2, 1, &added) < 0) return -1;
            p = after;
            if (*p == ']') return 1;
            if (*p != ',') return 0;
            p++;
            continue;
        }
        int32_t uid32 = (int32_t)uid;
        if (VEC_PUSH(&self->edge_rows, int32_t, row) < 0 ||
            VEC_PUSH(&self->edge_uids, int32_t, uid32) < 0)
            return -1;
        p = after;
        if (*p == ']') return 1;
        if (*p != ',') return 0;
        p++;
    }
}

/* One task line, ``p`` after its prefix, ``end`` at its newline. */
static PyObject *take_line(Scanner *self, const char *p, const char *end) {
    int plain, added;
    const char *q = skip_string(p - 1, end, &plain);
    if (q == NULL || !plain || q - p < 2 || !ascii(p, q - p - 1))
        return refuse(self, "task uid is not a plain ASCII string");
    Py_ssize_t n = q - p - 1;
    uint64_t h = hash_bytes(p, n);
    int32_t row = self->recent[h & (RECENT - 1)].row;
    added = 0;
    if (row < 0 || self->recent[h & (RECENT - 1)].hash != h || !table_is(&self->uids, row, p, n)) {
        Py_ssize_t found = table_find(&self->uids, p, n, h, 1, &added);
        if (found < 0) return PyErr_NoMemory();
        row = (int32_t)found;
        self->recent[h & (RECENT - 1)].hash = h;
        self->recent[h & (RECENT - 1)].row = row;
    }
    if (added) {
        if (push_row(self) < 0) return NULL;
        if (self->missing.count &&
            table_get(&self->missing, p, q - p - 1, 0, &plain) != -2)
            return refuse(self, "a task depended on before its first line");
    }
    if (((uint8_t *)self->ended.data)[row])
        return refuse(self, "a line of a task after its end");
    p = q;
    int ends = 0, attempt_ended = 0;
    const char *attempt = NULL, *attempt_end = NULL;
    int64_t attempt_time = ABSENT;
    while (*p == ',') {
        p++;
        if (*p != '"') return refuse(self, "a key is not a string");
        const char *k = p + 1;
        q = skip_string(p, end, &plain);
        if (q == NULL || !plain || *q != ':') return refuse(self, "a key is not a plain string");
        Py_ssize_t klen = q - k - 1;
        const Key *key = find_key(k, klen);
        if (key == NULL) return refuse(self, "an unknown key on a task line");
        const char *v = q + 1;
        if (key->type == T_INT) {
            const char *d = v;
            int negative = (*d == '-');
            if (negative) d++;
            if (*d < '0' || *d > '9' || (*d == '0' && d[1] >= '0' && d[1] <= '9'))
                return refuse(self, "a task time or count is not an integer");
            uint64_t value = 0;
            const char *digits = d;
            while (*d >= '0' && *d <= '9') { /* 19 digits cannot overflow 64 bits */
                value = value * 10 + (uint64_t)(*d - '0');
                d++;
            }
            if (d - digits > 19) return refuse(self, "an integer too large");
            if (*d == '.' || *d == 'e' || *d == 'E')
                return refuse(self, "a task time or count is not an integer");
            if (value > (uint64_t)INT64_MAX) return refuse(self, "an integer too large");
            int64_t number = negative ? -(int64_t)value : (int64_t)value;
            if (key->field < I_ID && number <= 0)
                return refuse(self, "a task time that is not after the epoch");
            ((int64_t *)self->ints[key->field].data)[row] = number;
            if (key->field == I_ENDED) ends = 1;
            if (key->field == I_ATTEMPT_ENDED) {
                attempt_ended = 1;
                attempt_time = number;
            }
            p = d;
            continue;
        }
        if (key->type == T_STRING) {
            if (*v != '"') return refuse(self, "a task field is not a string");
            q = skip_string(v, end, &plain);
        } else if (key->type == T_ARRAY) {
            if (*v != '[') return refuse(self, "a task field is not an array");
            q = skip_nested(v, end);
        } else {
            if (*v != '{') return refuse(self, "a task field is not an object");
            q = skip_nested(v, end);
        }
        if (q == NULL) return refuse(self, "a task field is not valid JSON");
        if (key->field < N_CODES) {
            Table *t = &self->values;
            Py_ssize_t code = self->last[key->field];
            if (code < 0 || !table_is(t, code, v, q - v)) {
                code = table_get(t, v, q - v, 1, &added);
                if (code < 0) return PyErr_NoMemory();
                self->last[key->field] = (int32_t)code;
            }
            ((int32_t *)self->codes[key->field].data)[row] = (int32_t)code;
        } else if (key->field == K_SPAN) {
            /* Once a task (a value replaced unread would never be checked). */
            if (PyList_GET_ITEM(self->spans, row) != Py_None)
                return refuse(self, "a span id twice for one task");
            PyObject *span = PyUnicode_DecodeUTF8(v + 1, q - v - 2, "replace");
            if (span == NULL) return NULL;
            if (!plain) { /* escapes: Python decodes it as JSON */
                self->escaped++;
                Py_DECREF(span);
                span = PyBytes_FromStringAndSize(v, q - v);
                if (span == NULL) return NULL;
            }
            if (PyList_SetItem(self->spans, row, span) < 0) return NULL; /* steals */
        } else if (key->field == K_DEPENDS_ON) {
            if (PyList_GET_ITEM(self->depends_on, row) != Py_None)
                return refuse(self, "depends_on twice for one task");
            int took = take_depends(self, row, v, q);
            if (took < 0) return PyErr_NoMemory();
            if (took == 0) return refuse(self, "depends_on is not a list of plain uids");
            PyObject *raw = PyBytes_FromStringAndSize(v, q - v);
            if (raw == NULL) return NULL;
            if (PyList_SetItem(self->depends_on, row, raw) < 0) return NULL;
        } else if (key->field == K_ATTEMPT) {
            if (attempt != NULL) return refuse(self, "an attempt twice on one line");
            attempt = v;
            attempt_end = q;
        } else {
            PyObject *raw = PyBytes_FromStringAndSize(v, q - v);
            PyObject *at = PyLong_FromLong(row);
            PyObject *into = key->field == K_ATTRIBUTES ? self->attributes : self->exceptions;
            int seen = at != NULL ? PyDict_Contains(into, at) : -1;
            if (seen == 1) {
                Py_XDECREF(raw);
                Py_DECREF(at);
                return refuse(self, "attributes or an exception twice for one task");
            }
            int failed = seen < 0 || raw == NULL || at == NULL || PyDict_SetItem(into, at, raw) < 0;
            Py_XDECREF(raw);
            Py_XDECREF(at);
            if (failed) return NULL;
        }
        p = q;
    }
    if (*p != '}' || p + 1 != end) return refuse(self, "a task line that does not end after its object");
    if (ends && (attempt_ended || attempt != NULL))
        return refuse(self, "an attempt on a task's last line");
    if (attempt != NULL && !attempt_ended) return refuse(self, "an attempt without its end time");
    if (attempt_ended) {
        PyObject *raw = attempt != NULL ? PyBytes_FromStringAndSize(attempt, attempt_end - attempt)
                                        : PyBytes_FromStringAndSize("", 0);
        if (raw == NULL) return NULL;
        PyObject *item = Py_BuildValue("(iLN)", row, (long long)attempt_time, raw);
        if (item == NULL || PyList_Append(self->attempts, item) < 0) {
            Py_XDECREF(item);
            return NULL;
        }
        Py_DECREF(item);
    }
    if (ends) {
        ((uint8_t *)self->ended.data)[row] = 1;
        if (VEC_PUSH(&self->order, int32_t, row) < 0) return NULL;
    }
    self->lines++;
    Py_RETURN_NONE;
}

static PyObject *scanner_feed(Scanner *self, PyObject *arg) {
    if (self->spans == NULL || self->finished) {
        PyErr_SetString(PyExc_RuntimeError, "a Scanner takes lines after it was initialised, "
                                            "before it finished");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    const char *p = view.buf, *stop = p + view.len;
    PyObject *others = PyList_New(0);
    if (others == NULL) goto failed;
    while (p < stop) {
        const char *end = memchr(p, '\n', stop - p);
        if (end == NULL) {
            PyErr_SetString(PyExc_ValueError, "feed takes whole lines only");
            goto failed;
        }
        self->line_no++;
        if (end - p > PREFIX_LEN && memcmp(p, PREFIX, PREFIX_LEN) == 0) {
            PyObject *done = take_line(self, p + PREFIX_LEN, end);
            if (done == NULL) goto failed;
            Py_DECREF(done);
        } else if (end > p) {
            PyObject *line = PyBytes_FromStringAndSize(p, end - p);
            if (line == NULL || PyList_Append(others, line) < 0) {
                Py_XDECREF(line);
                goto failed;
            }
            Py_DECREF(line);
        }
        p = end + 1;
    }
    PyBuffer_Release(&view);
    return others;
failed:
    Py_XDECREF(others);
    PyBuffer_Release(&view);
    return NULL;
}

/* The strings of a table as str (``as_text``), else each raw JSON value as
 * str when it is a string without escapes (its text), else as bytes. */
static PyObject *table_list(const Table *t, int as_text) {
    PyObject *out = PyList_New(t->count);
    if (out == NULL) return NULL;
    for (Py_ssize_t i = 0; i < t->count; i++) {
        const char *p = t->arena + t->offsets[i];
        Py_ssize_t n = t->lengths[i];
        PyObject *item;
        if (as_text) {
            item = PyUnicode_DecodeUTF8(p, n, "replace");
        } else if (n >= 2 && p[0] == '"' && memchr(p + 1, '\\', n - 2) == NULL) {
            item = PyUnicode_DecodeUTF8(p + 1, n - 2, "replace");
        } else {
            item = PyBytes_FromStringAndSize(p, n);
        }
        if (item == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, item);
    }
    return out;
}

/* Everything read, as a dict of Python objects (columns as bytearrays). */
static PyObject *scanner_finish(Scanner *self, PyObject *Py_UNUSED(ignored)) {
    if (self->spans == NULL || self->finished) {
        PyErr_SetString(PyExc_RuntimeError, "a Scanner finishes once, after it was initialised");
        return NULL;
    }
    self->finished = 1;
    PyObject *ints = PyTuple_New(N_INTS), *codes = PyTuple_New(N_CODES);
    PyObject *out = NULL;
    if (ints == NULL || codes == NULL) goto done;
    for (int i = 0; i < N_INTS; i++) {
        PyObject *b = vec_take(&self->ints[i]);
        if (b == NULL) goto done;
        PyTuple_SET_ITEM(ints, i, b);
    }
    for (int i = 0; i < N_CODES; i++) {
        PyObject *b = vec_take(&self->codes[i]);
        if (b == NULL) goto done;
        PyTuple_SET_ITEM(codes, i, b);
    }
    out = Py_BuildValue(
        "{s:n,s:n,s:n,s:N,s:N,s:O,s:N,s:N,s:N,s:N,s:N,s:O,s:O,s:O,s:O}",
        "rows", self->ended.count,
        "escaped", self->escaped,
        "lines", self->lines,
        "uids", table_list(&self->uids, 1),
        "values", table_list(&self->values, 0),
        "spans", self->spans,
        "order", vec_take(&self->order),
        "edge_rows", vec_take(&self->edge_rows),
        "edge_uids", vec_take(&self->edge_uids),
        "ints", ints,
        "codes", codes,
        "depends_on", self->depends_on,
        "attributes", self->attributes,
        "exceptions", self->exceptions,
        "attempts", self->attempts);
    ints = codes = NULL; /* stolen by N */
done:
    Py_XDECREF(ints);
    Py_XDECREF(codes);
    return out;
}

static PyMethodDef scanner_methods[] = {
    {"feed", (PyCFunction)scanner_feed, METH_O,
     "Take whole lines (bytes ending in a newline); return the lines of other sections."},
    {"finish", (PyCFunction)scanner_finish, METH_NOARGS, "Everything read, as a dict."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ScannerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "asyncflow.dashboard._scan.Scanner",
    .tp_doc = "Reads the task lines of a layout 2 checkpoint file into columns.",
    .tp_basicsize = sizeof(Scanner),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)scanner_init,
    .tp_dealloc = (destructor)scanner_dealloc,
    .tp_methods = scanner_methods,
};

static struct PyModuleDef scan_module = {
    PyModuleDef_HEAD_INIT, "_scan", "The compiled reader of finished checkpoint files.", -1,
    NULL, NULL, NULL, NULL, NULL,
};

/* The names of the integer (or coded) fields, in column order. */
static PyObject *field_names(int coded) {
    int count = coded ? N_CODES : N_INTS;
    PyObject *names = PyTuple_New(count);
    if (names == NULL) return NULL;
    for (int f = 0; f < count; f++) {
        for (int i = 0; i < N_KEYS; i++) {
            if (KEYS[i].field == f && (KEYS[i].type == T_INT) != coded) {
                PyObject *name = PyUnicode_FromStringAndSize(KEYS[i].name, KEYS[i].len);
                if (name == NULL) {
                    Py_DECREF(names);
                    return NULL;
                }
                PyTuple_SET_ITEM(names, f, name);
                break;
            }
        }
    }
    return names;
}

PyMODINIT_FUNC PyInit__scan(void) {
    init_tables();
    if (PyType_Ready(&ScannerType) < 0) return NULL;
    PyObject *m = PyModule_Create(&scan_module);
    if (m == NULL) return NULL;
    Py_INCREF(&ScannerType);
    if (PyModule_AddObject(m, "Scanner", (PyObject *)&ScannerType) < 0 ||
        PyModule_AddObject(m, "INTS", field_names(0)) < 0 ||
        PyModule_AddObject(m, "CODES", field_names(1)) < 0 ||
        PyModule_AddIntConstant(m, "VERSION", SCAN_VERSION) < 0 ||
        PyModule_AddStringConstant(m, "SOURCE", SCAN_SOURCE) < 0) {
        Py_DECREF(&ScannerType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
