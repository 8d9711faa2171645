/* The compiled dependency graph: asyncflow.engine._graph.Graph, in C.
 *
 * The scheduler's pure core (see _graph.py, its reference and fallback)
 * costs the engine three calls a task: add, submitted and finish. In
 * Python they were about a fifth of the time of a no-op task. This is the
 * same algorithm on the same four dicts, so it behaves the same: the same
 * return values, the same errors with the same messages, and the same
 * validate mode, whose full check is _graph.check_graph reading the dicts.
 * The tests run the graph tests on both classes and compare them on random
 * operation sequences.
 *
 * setup() hands over the states, the instruction kinds, the transition
 * table, InvalidTransition and check_graph from _graph.py; a Graph made
 * before that raises RuntimeError.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#ifndef GRAPH_SOURCE /* the SHA-256 of this file, given by the build hook */
#define GRAPH_SOURCE ""
#endif

#define GRAPH_VERSION 1

/* Set by setup(): the canonical state strings, the instruction kinds, the
 * transition table (state -> frozenset of states), InvalidTransition and
 * the full check. */
static PyObject *WAITING, *READY, *SUBMITTED, *RUNNING, *DONE, *FAILED, *CANCELLED;
static PyObject *RELEASE, *FAIL, *CANCEL;
static PyObject *TRANSITIONS, *INVALID, *CHECK;
static PyObject *DISTINCT; /* the keyword "distinct", interned */

typedef struct {
    PyObject_HEAD
    PyObject *state;      /* key -> its state (one of the canonical strings) */
    PyObject *waiting;    /* key -> how many of its dependencies are unfinished */
    PyObject *dependents; /* key -> list of the nodes waiting on it */
    PyObject *doomed;     /* waiting key -> its first failed dependency */
    int validate;
    Py_ssize_t calls_unchecked;
} Graph;

static inline int terminal(PyObject *state) {
    return state == DONE || state == FAILED || state == CANCELLED;
}

/* A borrowed reference to the state of key; NULL with KeyError(key) if absent. */
static PyObject *state_of(Graph *self, PyObject *key) {
    PyObject *state = PyDict_GetItemWithError(self->state, key);
    if (state == NULL && !PyErr_Occurred()) {
        PyObject *args = PyTuple_Pack(1, key);
        if (args != NULL) {
            PyErr_SetObject(PyExc_KeyError, args);
            Py_DECREF(args);
        }
    }
    return state;
}

/* 1 if TRANSITIONS allows from -> to, 0 if not, -1 on error. */
static int allowed(PyObject *from, PyObject *to) {
    PyObject *targets = PyDict_GetItemWithError(TRANSITIONS, from);
    if (targets == NULL) {
        if (!PyErr_Occurred()) PyErr_Format(PyExc_KeyError, "unknown state %R", from);
        return -1;
    }
    return PySet_Contains(targets, to);
}

/* In validate mode: 0 if from -> to is allowed, else -1 with InvalidTransition. */
static int check_move(Graph *self, PyObject *key, PyObject *from, PyObject *to) {
    if (!self->validate) return 0;
    int ok = allowed(from, to);
    if (ok < 0) return -1;
    if (!ok) {
        PyErr_Format(INVALID, "%R: %U -> %U", key, from, to);
        return -1;
    }
    return 0;
}

/* key moves from -> to: checked in validate mode, then stored. 0, or -1 with an error. */
static int move(Graph *self, PyObject *key, PyObject *from, PyObject *to) {
    if (check_move(self, key, from, to) < 0) return -1;
    return PyDict_SetItem(self->state, key, to);
}

/* The full check, every len(graph) // 256 calls (as Graph._check). */
static int check(Graph *self) {
    if (!self->validate) return 0;
    self->calls_unchecked += 1;
    if (self->calls_unchecked <= (PyDict_GET_SIZE(self->state) >> 8)) return 0;
    self->calls_unchecked = 0;
    PyObject *res = PyObject_CallFunctionObjArgs(
        CHECK, self->state, self->waiting, self->dependents, self->doomed, NULL);
    if (res == NULL) return -1;
    Py_DECREF(res);
    return 0;
}

static int set_count(PyObject *dict, PyObject *key, Py_ssize_t count) {
    PyObject *value = PyLong_FromSsize_t(count);
    if (value == NULL) return -1;
    int r = PyDict_SetItem(dict, key, value);
    Py_DECREF(value);
    return r;
}

/* dependents[dep].append(key) */
static int add_edge(Graph *self, PyObject *dep, PyObject *key) {
    PyObject *edges = PyDict_GetItemWithError(self->dependents, dep);
    if (edges != NULL) return PyList_Append(edges, key);
    if (PyErr_Occurred()) return -1;
    edges = PyList_New(1);
    if (edges == NULL) return -1;
    Py_INCREF(key);
    PyList_SET_ITEM(edges, 0, key);
    int r = PyDict_SetItem(self->dependents, dep, edges);
    Py_DECREF(edges);
    return r;
}

/* dict.pop(key, None): a new reference, or NULL (error set if one occurred). */
static PyObject *pop(PyObject *dict, PyObject *key) {
    PyObject *value = PyDict_GetItemWithError(dict, key);
    if (value == NULL) return NULL;
    Py_INCREF(value);
    if (PyDict_DelItem(dict, key) < 0) {
        Py_DECREF(value);
        return NULL;
    }
    return value;
}

/* out.append((kind, key, cause)) */
static int emit(PyObject *out, PyObject *kind, PyObject *key, PyObject *cause) {
    PyObject *item = PyTuple_Pack(3, kind, key, cause);
    if (item == NULL) return -1;
    int r = PyList_Append(out, item);
    Py_DECREF(item);
    return r;
}

/* [(kind, key, cause)] */
static PyObject *one(PyObject *kind, PyObject *key, PyObject *cause) {
    PyObject *out = PyList_New(0);
    if (out == NULL) return NULL;
    if (emit(out, kind, key, cause) < 0) {
        Py_DECREF(out);
        return NULL;
    }
    return out;
}

/* ------------------------------------------------------------------ life */

static PyObject *graph_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    if (TRANSITIONS == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_cgraph.setup() was not called");
        return NULL;
    }
    Graph *self = (Graph *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->state = PyDict_New();
    self->waiting = PyDict_New();
    self->dependents = PyDict_New();
    self->doomed = PyDict_New();
    if (!self->state || !self->waiting || !self->dependents || !self->doomed) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int graph_init(Graph *self, PyObject *args, PyObject *kwds) {
    static char *keywords[] = {"validate", NULL};
    int validate = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|$p:Graph", keywords, &validate)) return -1;
    self->validate = validate;
    return 0;
}

static int graph_traverse(Graph *self, visitproc visit, void *arg) {
    Py_VISIT(self->state);
    Py_VISIT(self->waiting);
    Py_VISIT(self->dependents);
    Py_VISIT(self->doomed);
    return 0;
}

static int graph_clear(Graph *self) {
    Py_CLEAR(self->state);
    Py_CLEAR(self->waiting);
    Py_CLEAR(self->dependents);
    Py_CLEAR(self->doomed);
    return 0;
}

static void graph_dealloc(Graph *self) {
    PyObject_GC_UnTrack(self);
    graph_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* ------------------------------------------------------------------ queries */

static Py_ssize_t graph_len(Graph *self) { return PyDict_GET_SIZE(self->state); }

static int graph_contains(Graph *self, PyObject *key) { return PyDict_Contains(self->state, key); }

static PyObject *graph_state(Graph *self, PyObject *key) {
    PyObject *state = state_of(self, key);
    Py_XINCREF(state);
    return state;
}

static PyObject *graph_unfinished(Graph *self, PyObject *unused) {
    PyObject *out = PyList_New(0);
    if (out == NULL) return NULL;
    Py_ssize_t pos = 0;
    PyObject *key, *state;
    while (PyDict_Next(self->state, &pos, &key, &state)) {
        if (!terminal(state) && PyList_Append(out, key) < 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}

static PyObject *graph_counts(Graph *self, PyObject *unused) {
    PyObject *out = PyDict_New();
    if (out == NULL) return NULL;
    Py_ssize_t pos = 0;
    PyObject *key, *state;
    while (PyDict_Next(self->state, &pos, &key, &state)) {
        PyObject *count = PyDict_GetItemWithError(out, state);
        if (count == NULL && PyErr_Occurred()) goto error;
        if (set_count(out, state, count ? PyLong_AsSsize_t(count) + 1 : 1) < 0) goto error;
    }
    return out;
error:
    Py_DECREF(out);
    return NULL;
}

static PyObject *graph_dependents(Graph *self, PyObject *key) {
    PyObject *edges = PyDict_GetItemWithError(self->dependents, key);
    if (edges == NULL) return PyErr_Occurred() ? NULL : PyList_New(0);
    return PyList_GetSlice(edges, 0, PyList_GET_SIZE(edges));
}

static PyObject *graph_is_pushed_down(Graph *self, PyObject *key) {
    int waiting = PyDict_Contains(self->waiting, key);
    if (waiting < 0) return NULL;
    if (!waiting) Py_RETURN_FALSE;
    PyObject *state = state_of(self, key);
    if (state == NULL) return NULL;
    return PyBool_FromLong(state != WAITING);
}

static PyObject *graph_validating(Graph *self, void *closure) { return PyBool_FromLong(self->validate); }

/* ------------------------------------------------------------------ events */

static PyObject *graph_add_ready(Graph *self, PyObject *key) {
    int known = PyDict_Contains(self->state, key);
    if (known < 0) return NULL;
    if (known) return PyErr_Format(PyExc_ValueError, "node %R added twice", key);
    if (PyDict_SetItem(self->state, key, READY) < 0) return NULL;
    Py_RETURN_NONE;
}

/* The node waits on deps (a sequence of n keys, each unfinished and linked). */
static PyObject *wait_on(Graph *self, PyObject *key, PyObject *const *deps, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) {
        if (add_edge(self, deps[i], key) < 0) return NULL;
    }
    if (PyDict_SetItem(self->state, key, WAITING) < 0 || set_count(self->waiting, key, n) < 0) {
        return NULL;
    }
    if (check(self) < 0) return NULL;
    return PyList_New(0);
}

/* add() past its fast path: deps is a list or tuple of distinct keys. */
static PyObject *add_general(Graph *self, PyObject *key, PyObject *deps) {
    Py_ssize_t n = PySequence_Fast_GET_SIZE(deps);
    PyObject **items = PySequence_Fast_ITEMS(deps);
    PyObject *unfinished = PyList_New(0);
    if (unfinished == NULL) return NULL;
    PyObject *failed = NULL; /* borrowed from deps */
    PyObject *out = NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *dep = items[i];
        PyObject *state = PyDict_GetItemWithError(self->state, dep);
        if (state == NULL) {
            if (!PyErr_Occurred()) {
                PyErr_Format(PyExc_KeyError, "dependency %R of %R is not in the graph", dep, key);
            }
            goto done;
        }
        if (state == DONE) continue;
        if (state == FAILED) {
            if (failed == NULL) failed = dep;
            continue;
        }
        if (state == CANCELLED) {
            if (PyDict_SetItem(self->state, key, CANCELLED) < 0 || check(self) < 0) goto done;
            out = one(CANCEL, key, dep);
            goto done;
        }
        if (PyList_Append(unfinished, dep) < 0) goto done;
    }
    if (PyList_GET_SIZE(unfinished) == 0) {
        if (failed != NULL) {
            if (PyDict_SetItem(self->state, key, FAILED) < 0 || check(self) < 0) goto done;
            out = one(FAIL, key, failed);
        } else {
            if (PyDict_SetItem(self->state, key, READY) < 0 || check(self) < 0) goto done;
            out = one(RELEASE, key, Py_None);
        }
        goto done;
    }
    if (failed != NULL && PyDict_SetItem(self->doomed, key, failed) < 0) goto done;
    out = wait_on(self, key, PySequence_Fast_ITEMS(unfinished), PyList_GET_SIZE(unfinished));
done:
    Py_DECREF(unfinished);
    return out;
}

static PyObject *graph_add(Graph *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    PyObject *key, *deps = NULL;
    int distinct = 0;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs < 1 || nargs > 2) {
        return PyErr_Format(PyExc_TypeError, "add() takes 1 or 2 positional arguments (%zd given)", nargs);
    }
    key = args[0];
    if (nargs == 2) deps = args[1];
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, i);
        PyObject *value = args[nargs + i];
        if (name == DISTINCT || PyUnicode_Compare(name, DISTINCT) == 0) {
            distinct = PyObject_IsTrue(value);
            if (distinct < 0) return NULL;
        } else if (deps == NULL && PyUnicode_CompareWithASCIIString(name, "deps") == 0) {
            deps = value;
        } else {
            if (!PyErr_Occurred()) {
                PyErr_Format(PyExc_TypeError, "add() got an unexpected keyword argument %R", name);
            }
            return NULL;
        }
    }
    int known = PyDict_Contains(self->state, key);
    if (known < 0) return NULL;
    if (known) return PyErr_Format(PyExc_ValueError, "node %R added twice", key);
    if (deps == NULL) deps = PyTuple_New(0);
    else Py_INCREF(deps);
    if (deps == NULL) return NULL;
    PyObject *out = NULL, *seq = NULL;
    if (!distinct) {
        /* dict.fromkeys(deps): each dependency once, in order */
        PyObject *once = PyObject_CallMethod((PyObject *)&PyDict_Type, "fromkeys", "(O)", deps);
        if (once == NULL) goto done;
        seq = PyDict_Keys(once);
        Py_DECREF(once);
    } else if (PyTuple_CheckExact(deps) && PyTuple_GET_SIZE(deps) > 0) {
        /* Every dependency unfinished (a chain's link, a fan-out's branch, a
         * layer of a DAG): straight to WAITING, without the general bookkeeping. */
        Py_ssize_t n = PyTuple_GET_SIZE(deps);
        PyObject **items = &PyTuple_GET_ITEM(deps, 0);
        Py_ssize_t i;
        for (i = 0; i < n; i++) {
            PyObject *state = PyDict_GetItemWithError(self->state, items[i]);
            if (state == NULL && PyErr_Occurred()) goto done;
            if (state == NULL || terminal(state)) break; /* ended, or unknown: see below */
        }
        if (i == n) {
            out = wait_on(self, key, items, n);
            goto done;
        }
        seq = deps;
        Py_INCREF(seq);
    } else {
        seq = PySequence_Fast(deps, "add() needs an iterable of dependencies");
    }
    if (seq == NULL) goto done;
    /* First look, then link: a cancelled dependency leaves no edge behind. */
    out = add_general(self, key, seq);
done:
    Py_XDECREF(seq);
    Py_DECREF(deps);
    return out;
}

static PyObject *graph_submitted(Graph *self, PyObject *key) {
    PyObject *state = state_of(self, key);
    if (state == NULL) return NULL;
    /* a pushed-down node is submitted already */
    if (state != SUBMITTED && move(self, key, state, SUBMITTED) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *graph_push_down(Graph *self, PyObject *key) {
    PyObject *state = state_of(self, key);
    if (state == NULL) return NULL;
    if (state != WAITING) return PyErr_Format(INVALID, "%R: only a WAITING node is pushed down", key);
    if (PyDict_SetItem(self->state, key, SUBMITTED) < 0 || check(self) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *graph_started(Graph *self, PyObject *key) {
    PyObject *state = state_of(self, key);
    if (state == NULL) return NULL;
    if (terminal(state) || state == RUNNING) Py_RETURN_FALSE;
    if (move(self, key, state, RUNNING) < 0) return NULL;
    Py_RETURN_TRUE;
}

static PyObject *graph_retry(Graph *self, PyObject *key) {
    PyObject *state = state_of(self, key);
    if (state == NULL) return NULL;
    int waiting = PyDict_Contains(self->waiting, key);
    if (waiting < 0) return NULL;
    if ((state != SUBMITTED && state != RUNNING) || waiting) {
        return PyErr_Format(
            INVALID, "%R: retry from %U (only a submitted node runs again)", key, state);
    }
    if (move(self, key, state, READY) < 0) return NULL;
    Py_RETURN_NONE;
}

/* A FIFO of tuples: a list and the index of its next item. */
typedef struct {
    PyObject *items;
    Py_ssize_t next;
} Queue;

static int queue_extend(Queue *queue, PyObject *keys, PyObject *cause, PyObject *cause_state) {
    Py_ssize_t n = PyList_GET_SIZE(keys);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = cause_state ? PyTuple_Pack(3, PyList_GET_ITEM(keys, i), cause, cause_state)
                                     : PyTuple_Pack(2, PyList_GET_ITEM(keys, i), cause);
        if (item == NULL) return -1;
        int r = PyList_Append(queue->items, item);
        Py_DECREF(item);
        if (r < 0) return -1;
    }
    return 0;
}

/* The node key fails because of cause; its dependents count it as failed. */
static int fail_node(Graph *self, PyObject *key, PyObject *cause, PyObject *out, Queue *queue) {
    if (PyDict_SetItem(self->state, key, FAILED) < 0 || PyDict_DelItem(self->waiting, key) < 0) return -1;
    PyObject *gone = pop(self->doomed, key);
    if (gone == NULL && PyErr_Occurred()) return -1;
    Py_XDECREF(gone);
    if (emit(out, FAIL, key, cause) < 0) return -1;
    PyObject *more = pop(self->dependents, key);
    if (more == NULL) return PyErr_Occurred() ? -1 : 0;
    int r = queue_extend(queue, more, key, FAILED);
    Py_DECREF(more);
    return r;
}

/* key ended DONE or FAILED: one dependency less for each of below. */
static PyObject *count_down(Graph *self, PyObject *key, PyObject *state, PyObject *below) {
    PyObject *out = PyList_New(0);
    Queue queue = {PyList_New(0), 0};
    if (out == NULL || queue.items == NULL) goto error;
    if (queue_extend(&queue, below, key, state) < 0) goto error;
    while (queue.next < PyList_GET_SIZE(queue.items)) {
        PyObject *item = PyList_GET_ITEM(queue.items, queue.next);
        queue.next += 1;
        PyObject *dep = PyTuple_GET_ITEM(item, 0);
        PyObject *cause = PyTuple_GET_ITEM(item, 1);
        PyObject *cause_state = PyTuple_GET_ITEM(item, 2);
        PyObject *count = PyDict_GetItemWithError(self->waiting, dep);
        if (count == NULL) {
            if (PyErr_Occurred()) goto error;
            continue; /* it ended already */
        }
        Py_ssize_t left = PyLong_AsSsize_t(count);
        if (cause_state == FAILED) {
            PyObject *dep_state = state_of(self, dep);
            if (dep_state == NULL) goto error;
            if (dep_state != WAITING) { /* pushed down: on its backend already */
                if (fail_node(self, dep, cause, out, &queue) < 0) goto error;
                continue;
            }
            if (PyDict_SetDefault(self->doomed, dep, cause) == NULL) goto error;
        }
        left -= 1;
        if (left) {
            if (set_count(self->waiting, dep, left) < 0) goto error;
            continue;
        }
        PyObject *first_failed = pop(self->doomed, dep);
        if (first_failed != NULL) {
            int r = fail_node(self, dep, first_failed, out, &queue);
            Py_DECREF(first_failed);
            if (r < 0) goto error;
            continue;
        }
        if (PyErr_Occurred()) goto error;
        if (PyDict_DelItem(self->waiting, dep) < 0) goto error;
        PyObject *dep_state = state_of(self, dep);
        if (dep_state == NULL) goto error;
        if (dep_state == WAITING) { /* else pushed down: submitted already */
            if (PyDict_SetItem(self->state, dep, READY) < 0 || emit(out, RELEASE, dep, Py_None) < 0) {
                goto error;
            }
        }
    }
    Py_DECREF(queue.items);
    return out;
error:
    Py_XDECREF(out);
    Py_XDECREF(queue.items);
    return NULL;
}

/* key was cancelled: everything waiting on it, transitively, is too. */
static PyObject *cancel_below(Graph *self, PyObject *key, PyObject *below) {
    PyObject *out = PyList_New(0);
    Queue queue = {PyList_New(0), 0};
    if (out == NULL || queue.items == NULL) goto error;
    if (queue_extend(&queue, below, key, NULL) < 0) goto error;
    while (queue.next < PyList_GET_SIZE(queue.items)) {
        PyObject *item = PyList_GET_ITEM(queue.items, queue.next);
        queue.next += 1;
        PyObject *dep = PyTuple_GET_ITEM(item, 0);
        PyObject *cause = PyTuple_GET_ITEM(item, 1);
        int waiting = PyDict_Contains(self->waiting, dep);
        if (waiting < 0) goto error;
        if (!waiting) continue; /* it ended already */
        if (PyDict_SetItem(self->state, dep, CANCELLED) < 0 || PyDict_DelItem(self->waiting, dep) < 0) {
            goto error;
        }
        PyObject *gone = pop(self->doomed, dep);
        if (gone == NULL && PyErr_Occurred()) goto error;
        Py_XDECREF(gone);
        if (emit(out, CANCEL, dep, cause) < 0) goto error;
        PyObject *more = pop(self->dependents, dep);
        if (more == NULL) {
            if (PyErr_Occurred()) goto error;
            continue;
        }
        int r = queue_extend(&queue, more, dep, NULL);
        Py_DECREF(more);
        if (r < 0) goto error;
    }
    Py_DECREF(queue.items);
    return out;
error:
    Py_XDECREF(out);
    Py_XDECREF(queue.items);
    return NULL;
}

/* The canonical terminal state equal to state, or NULL with ValueError. */
static PyObject *terminal_state(PyObject *state) {
    if (terminal(state)) return state;
    if (PyUnicode_Check(state)) {
        if (PyUnicode_Compare(state, DONE) == 0) return DONE;
        if (PyUnicode_Compare(state, FAILED) == 0) return FAILED;
        if (PyUnicode_Compare(state, CANCELLED) == 0) return CANCELLED;
    } else if (PyObject_Hash(state) == -1) { /* unhashable: as `in frozenset` says */
        return NULL;
    }
    PyErr_Format(PyExc_ValueError, "finish() needs a terminal state, not %R", state);
    return NULL;
}

static PyObject *graph_finish(Graph *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        return PyErr_Format(PyExc_TypeError, "finish() takes 2 arguments (%zd given)", nargs);
    }
    PyObject *key = args[0];
    PyObject *state = terminal_state(args[1]);
    if (state == NULL) return NULL;
    PyObject *current = state_of(self, key);
    if (current == NULL) return NULL;
    if (terminal(current)) return PyList_New(0);
    if (move(self, key, current, state) < 0) return NULL;
    PyObject *count = pop(self->waiting, key);
    if (count != NULL) {
        Py_DECREF(count);
        PyObject *gone = pop(self->doomed, key);
        Py_XDECREF(gone);
    }
    if (PyErr_Occurred()) return NULL;
    PyObject *below = pop(self->dependents, key);
    if (below == NULL) return PyErr_Occurred() ? NULL : PyList_New(0);
    PyObject *out = NULL;
    if (PyList_GET_SIZE(below) == 0) {
        out = PyList_New(0);
        goto done;
    }
    if (state == DONE) { /* the common case, without the queue a failure needs */
        out = PyList_New(0);
        if (out == NULL) goto done;
        Py_ssize_t n = PyList_GET_SIZE(below);
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *dep = PyList_GET_ITEM(below, i);
            PyObject *left_obj = PyDict_GetItemWithError(self->waiting, dep);
            if (left_obj == NULL) {
                if (PyErr_Occurred()) goto error;
                continue; /* it ended already */
            }
            Py_ssize_t left = PyLong_AsSsize_t(left_obj);
            if (left > 1) {
                if (set_count(self->waiting, dep, left - 1) < 0) goto error;
                continue;
            }
            int doomed = PyDict_GET_SIZE(self->doomed) ? PyDict_Contains(self->doomed, dep) : 0;
            if (doomed < 0) goto error;
            if (doomed) { /* its last dependency: it fails now */
                PyObject *only = PyList_New(1);
                if (only == NULL) goto error;
                Py_INCREF(dep);
                PyList_SET_ITEM(only, 0, dep);
                PyObject *more = count_down(self, key, DONE, only);
                Py_DECREF(only);
                if (more == NULL) goto error;
                Py_ssize_t size = PyList_GET_SIZE(out);
                int r = PyList_SetSlice(out, size, size, more);
                Py_DECREF(more);
                if (r < 0) goto error;
                continue;
            }
            if (PyDict_DelItem(self->waiting, dep) < 0) goto error;
            PyObject *dep_state = state_of(self, dep);
            if (dep_state == NULL) goto error;
            if (dep_state == WAITING) { /* else pushed down: submitted already */
                if (PyDict_SetItem(self->state, dep, READY) < 0 || emit(out, RELEASE, dep, Py_None) < 0) {
                    goto error;
                }
            }
        }
    } else if (state == CANCELLED) {
        out = cancel_below(self, key, below);
    } else {
        out = count_down(self, key, state, below);
    }
    if (out != NULL && check(self) < 0) goto error;
done:
    Py_DECREF(below);
    return out;
error:
    Py_CLEAR(out);
    goto done;
}

/* ------------------------------------------------------------------ the type */

static PyMethodDef graph_methods[] = {
    {"state", (PyCFunction)graph_state, METH_O, "The state of key; KeyError if it was never added."},
    {"unfinished", (PyCFunction)graph_unfinished, METH_NOARGS,
     "Keys of nodes not yet in a terminal state, in insertion order."},
    {"counts", (PyCFunction)graph_counts, METH_NOARGS, "Number of nodes per state."},
    {"dependents", (PyCFunction)graph_dependents, METH_O, "Nodes still waiting on key (a copy)."},
    {"add_ready", (PyCFunction)graph_add_ready, METH_O, "Add a node without dependencies."},
    {"add", (PyCFunction)(void (*)(void))graph_add, METH_FASTCALL | METH_KEYWORDS,
     "Add a node that depends on deps (each already added); see _graph.Graph.add."},
    {"submitted", (PyCFunction)graph_submitted, METH_O, "The engine handed the node to a backend."},
    {"push_down", (PyCFunction)graph_push_down, METH_O,
     "Submit a WAITING node before its dependencies end."},
    {"is_pushed_down", (PyCFunction)graph_is_pushed_down, METH_O,
     "True for a submitted node whose dependencies have not all ended."},
    {"started", (PyCFunction)graph_started, METH_O,
     "The backend reports the node running. False if it already ended."},
    {"retry", (PyCFunction)graph_retry, METH_O, "The submitted node runs again: READY."},
    {"finish", (PyCFunction)(void (*)(void))graph_finish, METH_FASTCALL,
     "The node ended in state; the instructions for its dependents."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef graph_members[] = {
    {"_state", T_OBJECT, offsetof(Graph, state), READONLY, NULL},
    {"_waiting", T_OBJECT, offsetof(Graph, waiting), READONLY, NULL},
    {"_dependents", T_OBJECT, offsetof(Graph, dependents), READONLY, NULL},
    {"_doomed", T_OBJECT, offsetof(Graph, doomed), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef graph_getset[] = {
    {"validating", (getter)graph_validating, NULL, "True in validate mode.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods graph_as_sequence = {
    .sq_length = (lenfunc)graph_len,
    .sq_contains = (objobjproc)graph_contains,
};

static PyTypeObject GraphType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "asyncflow.engine._cgraph.Graph",
    .tp_doc = "Dependency bookkeeping for one engine (compiled; see asyncflow.engine._graph.Graph).",
    .tp_basicsize = sizeof(Graph),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = graph_new,
    .tp_init = (initproc)graph_init,
    .tp_dealloc = (destructor)graph_dealloc,
    .tp_traverse = (traverseproc)graph_traverse,
    .tp_clear = (inquiry)graph_clear,
    .tp_methods = graph_methods,
    .tp_members = graph_members,
    .tp_getset = graph_getset,
    .tp_as_sequence = &graph_as_sequence,
};

/* ------------------------------------------------------------------ the module */

static PyObject *setup(PyObject *module, PyObject *args) {
    PyObject *w, *r, *s, *ru, *d, *f, *c, *rel, *fa, *ca, *transitions, *invalid, *check_graph;
    if (!PyArg_ParseTuple(args, "UUUUUUUUUUO!OO:setup", &w, &r, &s, &ru, &d, &f, &c, &rel, &fa, &ca,
                          &PyDict_Type, &transitions, &invalid, &check_graph)) {
        return NULL;
    }
    PyObject **slots[] = {&WAITING, &READY,  &SUBMITTED,   &RUNNING, &DONE,
                          &FAILED,  &CANCELLED, &RELEASE, &FAIL,    &CANCEL,
                          &TRANSITIONS, &INVALID, &CHECK};
    PyObject *values[] = {w, r, s, ru, d, f, c, rel, fa, ca, transitions, invalid, check_graph};
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        Py_INCREF(values[i]);
        Py_XSETREF(*slots[i], values[i]);
    }
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"setup", setup, METH_VARARGS,
     "setup(WAITING, READY, SUBMITTED, RUNNING, DONE, FAILED, CANCELLED, RELEASE, FAIL, CANCEL, "
     "TRANSITIONS, InvalidTransition, check_graph): what _graph.py defines."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef cgraph_module = {
    PyModuleDef_HEAD_INIT, "_cgraph", "The compiled dependency graph of the engine.", -1,
    module_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__cgraph(void) {
    if (PyType_Ready(&GraphType) < 0) return NULL;
    DISTINCT = PyUnicode_InternFromString("distinct");
    if (DISTINCT == NULL) return NULL;
    PyObject *m = PyModule_Create(&cgraph_module);
    if (m == NULL) return NULL;
    Py_INCREF(&GraphType);
    if (PyModule_AddObject(m, "Graph", (PyObject *)&GraphType) < 0 ||
        PyModule_AddIntConstant(m, "VERSION", GRAPH_VERSION) < 0 ||
        PyModule_AddStringConstant(m, "SOURCE", GRAPH_SOURCE) < 0) {
        Py_DECREF(&GraphType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
