/* cashmarkets.core._native: the hot paths of the engine and of spot, in C.
 *
 * What is here, and what is not:
 *   Applier   Engine.apply: seq/time checks, the dedup table, per-command buffers, dispatch,
 *             Accepted/Rejected. The rare branches (eviction, rejects, handler errors) call
 *             back into the Python Engine, so there is one definition of each.
 *   SpotFast  spot's three common commands when nothing unusual happens: a GTC limit (or
 *             post-only) order that does not cross, an amend that does not cross, a cancel. It
 *             works on the very Python objects the Python product uses (Order, Level, BookSide,
 *             Book, the ledger's Account and Hold), through their slot offsets, and journals
 *             every change with the same tuples as the Python code, so the Python rollback,
 *             queries and snapshots need no change. Anything else (crossing orders, market and
 *             FOK/IOC orders, client-id lookups for amend, any reject, a missing account) is
 *             handed, untouched, to the Python handler.
 *
 * The rule that keeps the two in step: the C path validates everything first and mutates
 * after, in the same order and with the same journal entries as product.py; the differential
 * tests run every spot scenario through both and compare snapshots, results and events.
 * The core's purity holds: no clock, no randomness, no I/O.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#define NATIVE_API 1
#ifndef NATIVE_SOURCE_SHA256
#define NATIVE_SOURCE_SHA256 "unknown"
#endif

/* ---- slot access ---------------------------------------------------------------------------- */

#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))

/* Replace a slot's value; steals `value`. */
static inline void set_slot(PyObject *obj, Py_ssize_t off, PyObject *value) {
    PyObject *old = SLOT(obj, off);
    SLOT(obj, off) = value;
    Py_XDECREF(old);
}

static inline void set_slot_ref(PyObject *obj, Py_ssize_t off, PyObject *value) {
    Py_INCREF(value);
    set_slot(obj, off, value);
}

/* Set an int slot; -1 on MemoryError. */
static inline int set_ll(PyObject *obj, Py_ssize_t off, long long v) {
    PyObject *n = PyLong_FromLongLong(v);
    if (n == NULL) return -1;
    set_slot(obj, off, n);
    return 0;
}

/* Read an int slot; sets *bad when it is missing, not an int, or beyond 64 bits. */
static inline long long get_ll(PyObject *obj, Py_ssize_t off, int *bad) {
    PyObject *v = SLOT(obj, off);
    int overflow = 0;
    long long out;
    if (v == NULL || !PyLong_CheckExact(v)) {
        *bad = 1;
        return 0;
    }
    out = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow) *bad = 1;
    return out;
}

static inline int str_eq(PyObject *a, PyObject *b) {
    if (a == b) return 1;
    if (!PyUnicode_CheckExact(a) || !PyUnicode_CheckExact(b)) return 0;
    if (PyUnicode_GET_LENGTH(a) != PyUnicode_GET_LENGTH(b)) return 0;
    return PyUnicode_Compare(a, b) == 0;
}

static Py_ssize_t slot_offset(PyObject *type, const char *name) {
    PyObject *d = PyObject_GetAttrString(type, name);
    Py_ssize_t off;
    if (d == NULL) return -1;
    if (!Py_IS_TYPE(d, &PyMemberDescr_Type) ||
        ((PyMemberDescrObject *)d)->d_member->type != T_OBJECT_EX) {
        PyErr_Format(PyExc_TypeError, "%R.%s is not an object slot", type, name);
        Py_DECREF(d);
        return -1;
    }
    off = ((PyMemberDescrObject *)d)->d_member->offset;
    Py_DECREF(d);
    return off;
}

/* ---- what setup() is given ------------------------------------------------------------------- */

typedef struct {
    Py_ssize_t id, market, owner, coid, side, order_type, tif, stp, price, qty, quote_qty, remaining,
        executed, executed_quote, hold_id, status, created_seq, created_ts, updated_seq, updated_ts, prev,
        next, level;
} OrderOff;
typedef struct { Py_ssize_t price, key, head, tail, qty, count; } LevelOff;
typedef struct { Py_ssize_t keys, levels, sign; } SideOff;
typedef struct { Py_ssize_t asks, bids, trading, update_id, next_trade_id; } BookOff;
typedef struct {
    Py_ssize_t base, quote, lot, unit, config, escrow_base, escrow_quote, fees_base, fees_quote;
} MarketOff;
typedef struct { Py_ssize_t max_price, min_qty, max_qty, min_notional; } ConfigOff;
typedef struct { Py_ssize_t accounts, by_key, holds, next_transfer_id, journal, events; } LedgerOff;
typedef struct { Py_ssize_t id, asset, flags, dp, cp, dpend, cpend; } AccountOff;
typedef struct { Py_ssize_t id, debit, credit, amount, code, status, posted; } HoldOff;
typedef struct {
    Py_ssize_t seq, ts_ns, owner, market, side, order_type, tif, price, qty, quote_qty, stp, coid;
} PlaceOff;
typedef struct { Py_ssize_t seq, ts_ns, owner, market, order_id, coid; } CancelOff;
typedef struct { Py_ssize_t seq, ts_ns, owner, market, order_id, coid, price, qty; } AmendOff;

static int ready = 0;
static OrderOff OO;
static LevelOff LO;
static SideOff SO;
static BookOff BO;
static MarketOff MO;
static ConfigOff CO;
static LedgerOff GO;
static AccountOff AO;
static HoldOff HO;
static PlaceOff PO;
static CancelOff XO;
static AmendOff MDO;

/* Types and constants (strong references, for the life of the process). */
static PyTypeObject *OrderType, *LevelType, *BookType, *MarketType, *LedgerType, *AccountType;
static PyObject *PlaceType, *CancelType, *AmendType;
static PyObject *OrderViewType, *OrderUpdatedType, *OrderPlacedType, *TransferType, *HoldType;
static PyObject *AcceptedType, *RejectType;
static PyObject *S_BUY, *S_SELL, *S_LIMIT, *S_LIMIT_MAKER, *S_GTC, *S_NEW, *S_CANCELED, *S_AMENDED,
    *S_HOLD, *S_STP_TAKER, *S_STP_MAKER, *S_STP_BOTH, *S_ESCROW;
static PyObject *I_ZERO, *I_ONE, *I_TWO, *I_THREE;
static long long OWNER_MAX, TOTAL_MAX_LL;
static long long J_LINK, J_UNLINK, J_OPEN, J_CLOSE, J_FIELDS, J_BOOK, J_NEXT_ID;
static long long U_PENDING, U_PART, U_MORE;
static long long K_PENDING, K_VOID_PART, K_HOLD_MORE;
static PyObject *NAME_seq, *NAME_ts_ns, *NAME_command_id, *NAME_events, *NAME_next_order_id,
    *NAME_evict, *NAME_rejected, *NAME_internal_error, *NAME_unknown;

#define NO_OVERDRAFT 1
#define NO_CREDIT_EXCESS 2
#define HOLD_PENDING 0
#define HOLD_POSTED 1
#define HOLD_VOIDED 2
#define BUY 0

static PyObject *get_item(PyObject *dict, const char *name) {
    PyObject *v = PyDict_GetItemString(dict, name);
    if (v == NULL && !PyErr_Occurred()) PyErr_Format(PyExc_KeyError, "setup() needs %s", name);
    return v;
}

#define OFF(dst, type, name)                                 \
    do {                                                     \
        if (((dst) = slot_offset((type), (name))) < 0) return NULL; \
    } while (0)

#define KEEP(dst, name)                                           \
    do {                                                          \
        PyObject *_v = get_item(spec, (name));                    \
        if (_v == NULL) return NULL;                              \
        Py_INCREF(_v);                                            \
        (dst) = _v;                                               \
    } while (0)

#define KEEP_LL(dst, name)                                        \
    do {                                                          \
        PyObject *_v = get_item(spec, (name));                    \
        if (_v == NULL) return NULL;                              \
        (dst) = PyLong_AsLongLong(_v);                            \
        if ((dst) == -1 && PyErr_Occurred()) return NULL;         \
    } while (0)

static PyObject *setup(PyObject *self, PyObject *spec) {
    PyObject *t;
    if (!PyDict_Check(spec)) {
        PyErr_SetString(PyExc_TypeError, "setup() takes a dict");
        return NULL;
    }
    if (ready) Py_RETURN_NONE; /* once per process: the classes never change */
    KEEP(t, "Order");
    OrderType = (PyTypeObject *)t;
    OFF(OO.id, t, "id"); OFF(OO.market, t, "market"); OFF(OO.owner, t, "owner");
    OFF(OO.coid, t, "client_order_id"); OFF(OO.side, t, "side"); OFF(OO.order_type, t, "order_type");
    OFF(OO.tif, t, "tif"); OFF(OO.stp, t, "stp"); OFF(OO.price, t, "price"); OFF(OO.qty, t, "qty");
    OFF(OO.quote_qty, t, "quote_qty"); OFF(OO.remaining, t, "remaining"); OFF(OO.executed, t, "executed");
    OFF(OO.executed_quote, t, "executed_quote"); OFF(OO.hold_id, t, "hold_id"); OFF(OO.status, t, "status");
    OFF(OO.created_seq, t, "created_seq"); OFF(OO.created_ts, t, "created_ts_ns");
    OFF(OO.updated_seq, t, "updated_seq"); OFF(OO.updated_ts, t, "updated_ts_ns");
    OFF(OO.prev, t, "prev"); OFF(OO.next, t, "next"); OFF(OO.level, t, "level");
    KEEP(t, "Level");
    LevelType = (PyTypeObject *)t;
    OFF(LO.price, t, "price"); OFF(LO.key, t, "key"); OFF(LO.head, t, "head"); OFF(LO.tail, t, "tail");
    OFF(LO.qty, t, "qty"); OFF(LO.count, t, "count");
    if (!(t = get_item(spec, "BookSide"))) return NULL;
    OFF(SO.keys, t, "keys"); OFF(SO.levels, t, "levels"); OFF(SO.sign, t, "sign");
    KEEP(t, "Book");
    BookType = (PyTypeObject *)t;
    OFF(BO.asks, t, "asks"); OFF(BO.bids, t, "bids"); OFF(BO.trading, t, "trading");
    OFF(BO.update_id, t, "update_id"); OFF(BO.next_trade_id, t, "next_trade_id");
    KEEP(t, "Market");
    MarketType = (PyTypeObject *)t;
    OFF(MO.base, t, "base"); OFF(MO.quote, t, "quote"); OFF(MO.lot, t, "lot"); OFF(MO.unit, t, "unit");
    OFF(MO.config, t, "config"); OFF(MO.escrow_base, t, "escrow_base"); OFF(MO.escrow_quote, t, "escrow_quote");
    OFF(MO.fees_base, t, "fees_base"); OFF(MO.fees_quote, t, "fees_quote");
    if (!(t = get_item(spec, "SpotMarket"))) return NULL;
    OFF(CO.max_price, t, "max_price_ticks"); OFF(CO.min_qty, t, "min_qty_lots");
    OFF(CO.max_qty, t, "max_qty_lots"); OFF(CO.min_notional, t, "min_notional");
    KEEP(t, "Ledger");
    LedgerType = (PyTypeObject *)t;
    OFF(GO.accounts, t, "accounts"); OFF(GO.by_key, t, "by_key"); OFF(GO.holds, t, "holds");
    OFF(GO.next_transfer_id, t, "next_transfer_id"); OFF(GO.journal, t, "_journal"); OFF(GO.events, t, "events");
    KEEP(t, "Account");
    AccountType = (PyTypeObject *)t;
    OFF(AO.id, t, "id"); OFF(AO.asset, t, "asset"); OFF(AO.flags, t, "flags"); OFF(AO.dp, t, "debits_posted");
    OFF(AO.cp, t, "credits_posted"); OFF(AO.dpend, t, "debits_pending"); OFF(AO.cpend, t, "credits_pending");
    KEEP(HoldType, "Hold");
    t = HoldType;
    OFF(HO.id, t, "id"); OFF(HO.debit, t, "debit_account_id"); OFF(HO.credit, t, "credit_account_id");
    OFF(HO.amount, t, "amount"); OFF(HO.code, t, "code"); OFF(HO.status, t, "status");
    OFF(HO.posted, t, "posted_amount");
    KEEP(PlaceType, "PlaceOrder");
    t = PlaceType;
    OFF(PO.seq, t, "seq"); OFF(PO.ts_ns, t, "ts_ns"); OFF(PO.owner, t, "owner"); OFF(PO.market, t, "market");
    OFF(PO.side, t, "side"); OFF(PO.order_type, t, "order_type"); OFF(PO.tif, t, "tif");
    OFF(PO.price, t, "price_ticks"); OFF(PO.qty, t, "qty_lots"); OFF(PO.quote_qty, t, "quote_qty");
    OFF(PO.stp, t, "stp"); OFF(PO.coid, t, "client_order_id");
    KEEP(CancelType, "CancelOrder");
    t = CancelType;
    OFF(XO.seq, t, "seq"); OFF(XO.ts_ns, t, "ts_ns"); OFF(XO.owner, t, "owner"); OFF(XO.market, t, "market");
    OFF(XO.order_id, t, "order_id"); OFF(XO.coid, t, "client_order_id");
    KEEP(AmendType, "AmendOrder");
    t = AmendType;
    OFF(MDO.seq, t, "seq"); OFF(MDO.ts_ns, t, "ts_ns"); OFF(MDO.owner, t, "owner"); OFF(MDO.market, t, "market");
    OFF(MDO.order_id, t, "order_id"); OFF(MDO.coid, t, "client_order_id"); OFF(MDO.price, t, "price_ticks");
    OFF(MDO.qty, t, "qty_lots");
    KEEP(OrderViewType, "OrderView");
    KEEP(OrderUpdatedType, "SpotOrderUpdated");
    KEEP(OrderPlacedType, "OrderPlaced");
    KEEP(TransferType, "Transfer");
    KEEP(AcceptedType, "Accepted");
    KEEP(RejectType, "Reject");
    KEEP(S_ESCROW, "ESCROW");
    KEEP_LL(OWNER_MAX, "OWNER_LENGTH_MAX");
    KEEP_LL(TOTAL_MAX_LL, "TOTAL_MAX");
    KEEP_LL(J_LINK, "_J_LINK"); KEEP_LL(J_UNLINK, "_J_UNLINK"); KEEP_LL(J_OPEN, "_J_OPEN");
    KEEP_LL(J_CLOSE, "_J_CLOSE"); KEEP_LL(J_FIELDS, "_J_FIELDS"); KEEP_LL(J_BOOK, "_J_BOOK");
    KEEP_LL(J_NEXT_ID, "_J_NEXT_ID");
    KEEP_LL(U_PENDING, "_U_PENDING"); KEEP_LL(U_PART, "_U_PART"); KEEP_LL(U_MORE, "_U_MORE");
    KEEP_LL(K_PENDING, "PENDING"); KEEP_LL(K_VOID_PART, "VOID_PART"); KEEP_LL(K_HOLD_MORE, "HOLD_MORE");
#define INTERN(var, s) if (!((var) = PyUnicode_InternFromString(s))) return NULL
    INTERN(S_BUY, "BUY"); INTERN(S_SELL, "SELL"); INTERN(S_LIMIT, "LIMIT"); INTERN(S_LIMIT_MAKER, "LIMIT_MAKER");
    INTERN(S_GTC, "GTC"); INTERN(S_NEW, "NEW"); INTERN(S_CANCELED, "CANCELED"); INTERN(S_AMENDED, "AMENDED");
    INTERN(S_HOLD, "hold"); INTERN(S_STP_TAKER, "EXPIRE_TAKER"); INTERN(S_STP_MAKER, "EXPIRE_MAKER");
    INTERN(S_STP_BOTH, "EXPIRE_BOTH");
    INTERN(NAME_seq, "seq"); INTERN(NAME_ts_ns, "ts_ns"); INTERN(NAME_command_id, "command_id");
    INTERN(NAME_events, "_events"); INTERN(NAME_next_order_id, "next_order_id"); INTERN(NAME_evict, "_evict");
    INTERN(NAME_rejected, "_rejected"); INTERN(NAME_internal_error, "_internal_error");
    INTERN(NAME_unknown, "_unknown_command");
#undef INTERN
    I_ZERO = PyLong_FromLong(0); I_ONE = PyLong_FromLong(1); I_TWO = PyLong_FromLong(2);
    I_THREE = PyLong_FromLong(3);
    ready = 1;
    Py_RETURN_NONE;
}

/* ---- small builders -------------------------------------------------------------------------- */

static PyObject *pair(PyObject *a, PyObject *b) { return PyTuple_Pack(2, a, b); }

/* Append a new tuple to `list`; steals every item given (NULL items fail cleanly). */
static int journal_add(PyObject *list, Py_ssize_t n, PyObject **items) {
    PyObject *t = PyTuple_New(n);
    Py_ssize_t i;
    int bad = 0, rc;
    if (t == NULL) bad = 1;
    for (i = 0; i < n; i++) {
        if (items[i] == NULL) bad = 1;
        if (t != NULL && items[i] != NULL) PyTuple_SET_ITEM(t, i, items[i]);
        else Py_XDECREF(items[i]);
    }
    if (bad) {
        Py_XDECREF(t);
        return -1;
    }
    rc = PyList_Append(list, t);
    Py_DECREF(t);
    return rc;
}

static inline PyObject *ref(PyObject *o) {
    Py_INCREF(o);
    return o;
}

static inline PyObject *ll(long long v) { return PyLong_FromLongLong(v); }

/* OrderView(...) of an order, positionally (the field order of messages.OrderView). */
static PyObject *order_view(PyObject *o) {
    PyObject *args[19];
    long stp = PyLong_AsLong(SLOT(o, OO.stp));
    PyObject *stp_name = stp == 1 ? S_STP_TAKER : stp == 2 ? S_STP_MAKER : S_STP_BOTH;
    args[0] = SLOT(o, OO.id); args[1] = SLOT(o, OO.market); args[2] = SLOT(o, OO.owner);
    args[3] = SLOT(o, OO.coid); args[4] = PyLong_AsLong(SLOT(o, OO.side)) == BUY ? S_BUY : S_SELL;
    args[5] = SLOT(o, OO.order_type); args[6] = SLOT(o, OO.tif); args[7] = stp_name;
    args[8] = SLOT(o, OO.price); args[9] = SLOT(o, OO.qty); args[10] = SLOT(o, OO.quote_qty);
    args[11] = SLOT(o, OO.executed); args[12] = SLOT(o, OO.executed_quote); args[13] = SLOT(o, OO.remaining);
    args[14] = SLOT(o, OO.status); args[15] = SLOT(o, OO.created_seq); args[16] = SLOT(o, OO.created_ts);
    args[17] = SLOT(o, OO.updated_seq); args[18] = SLOT(o, OO.updated_ts);
    return PyObject_Vectorcall(OrderViewType, args, 19, NULL);
}

/* The saved fields of an order (product._fields). */
static PyObject *order_fields(PyObject *o) {
    return PyTuple_Pack(11, SLOT(o, OO.price), SLOT(o, OO.qty), SLOT(o, OO.remaining), SLOT(o, OO.executed),
                        SLOT(o, OO.executed_quote), SLOT(o, OO.hold_id), SLOT(o, OO.status),
                        SLOT(o, OO.created_seq), SLOT(o, OO.created_ts), SLOT(o, OO.updated_seq),
                        SLOT(o, OO.updated_ts));
}

/* ---- the book: BookSide.append and BookSide.unlink ------------------------------------------ */

/* Index of the first key >= `key` in an ascending list of ints. */
static Py_ssize_t bisect_keys(PyObject *keys, long long key) {
    Py_ssize_t lo = 0, hi = PyList_GET_SIZE(keys);
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (PyLong_AsLongLong(PyList_GET_ITEM(keys, mid)) < key) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

static int side_append(PyObject *side, PyObject *order) {
    int bad = 0;
    long long sign = get_ll(side, SO.sign, &bad), price = get_ll(order, OO.price, &bad), key = sign * price;
    PyObject *levels = SLOT(side, SO.levels), *keys = SLOT(side, SO.keys), *key_obj, *level, *tail;
    long long lqty, rem;
    if (bad) {
        PyErr_SetString(PyExc_AssertionError, "book side or order holds a bad int");
        return -1;
    }
    key_obj = ll(key);
    if (key_obj == NULL) return -1;
    level = PyDict_GetItemWithError(levels, key_obj);
    if (level == NULL) {
        Py_ssize_t n = PyList_GET_SIZE(keys);
        if (PyErr_Occurred()) goto fail;
        level = LevelType->tp_alloc(LevelType, 0);
        if (level == NULL) goto fail;
        SLOT(level, LO.price) = ref(SLOT(order, OO.price));
        SLOT(level, LO.key) = ref(key_obj);
        SLOT(level, LO.head) = ref(Py_None);
        SLOT(level, LO.tail) = ref(Py_None);
        SLOT(level, LO.qty) = ref(I_ZERO);
        SLOT(level, LO.count) = ref(I_ZERO);
        if (PyDict_SetItem(levels, key_obj, level) < 0) {
            Py_DECREF(level);
            goto fail;
        }
        Py_DECREF(level); /* the dict holds it */
        if (n == 0 || key > PyLong_AsLongLong(PyList_GET_ITEM(keys, n - 1))) {
            if (PyList_Append(keys, key_obj) < 0) goto fail;
        } else if (PyList_Insert(keys, bisect_keys(keys, key), key_obj) < 0) {
            goto fail;
        }
    }
    Py_DECREF(key_obj);
    tail = SLOT(level, LO.tail);
    set_slot_ref(order, OO.prev, tail);
    set_slot_ref(order, OO.next, Py_None);
    if (tail == Py_None) set_slot_ref(level, LO.head, order);
    else set_slot_ref(tail, OO.next, order);
    set_slot_ref(level, LO.tail, order);
    lqty = get_ll(level, LO.qty, &bad);
    rem = get_ll(order, OO.remaining, &bad);
    if (set_ll(level, LO.qty, lqty + rem) < 0) return -1;
    if (set_ll(level, LO.count, get_ll(level, LO.count, &bad) + 1) < 0) return -1;
    set_slot_ref(order, OO.level, level);
    return bad ? (PyErr_SetString(PyExc_AssertionError, "bad level totals"), -1) : 0;
fail:
    Py_DECREF(key_obj);
    return -1;
}

/* Take an order off its level (dropping an empty level); returns its predecessor (new ref). */
static PyObject *side_unlink(PyObject *side, PyObject *order) {
    PyObject *level = SLOT(order, OO.level), *prev, *nxt;
    int bad = 0;
    long long count;
    if (level == NULL || level == Py_None) {
        PyErr_SetString(PyExc_AssertionError, "unlink of an order that is not on the book");
        return NULL;
    }
    Py_INCREF(level);
    prev = ref(SLOT(order, OO.prev));
    nxt = ref(SLOT(order, OO.next));
    if (prev == Py_None) set_slot_ref(level, LO.head, nxt);
    else set_slot_ref(prev, OO.next, nxt);
    if (nxt == Py_None) set_slot_ref(level, LO.tail, prev);
    else set_slot_ref(nxt, OO.prev, prev);
    Py_DECREF(nxt);
    if (set_ll(level, LO.qty, get_ll(level, LO.qty, &bad) - get_ll(order, OO.remaining, &bad)) < 0) goto fail;
    count = get_ll(level, LO.count, &bad) - 1;
    if (set_ll(level, LO.count, count) < 0) goto fail;
    set_slot_ref(order, OO.prev, Py_None);
    set_slot_ref(order, OO.next, Py_None);
    set_slot_ref(order, OO.level, Py_None);
    if (count == 0) {
        PyObject *key_obj = SLOT(level, LO.key), *keys = SLOT(side, SO.keys);
        long long key = get_ll(level, LO.key, &bad);
        Py_ssize_t n = PyList_GET_SIZE(keys);
        if (PyDict_DelItem(SLOT(side, SO.levels), key_obj) < 0) goto fail;
        if (n && PyLong_AsLongLong(PyList_GET_ITEM(keys, n - 1)) == key) {
            if (PyList_SetSlice(keys, n - 1, n, NULL) < 0) goto fail;
        } else {
            Py_ssize_t i = bisect_keys(keys, key);
            if (PyList_SetSlice(keys, i, i + 1, NULL) < 0) goto fail;
        }
    }
    Py_DECREF(level);
    if (bad) {
        Py_DECREF(prev);
        PyErr_SetString(PyExc_AssertionError, "bad level totals");
        return NULL;
    }
    return prev;
fail:
    Py_DECREF(level);
    Py_DECREF(prev);
    return NULL;
}

/* ---- the ledger's hold operations (ledger.resolve_part / hold_more / move pending) ----------- */

static PyObject *transfer(long long seq, long long tid, long long kind, PyObject *dr, PyObject *cr,
                          long long amount, PyObject *code, PyObject *pending_id) {
    PyObject *args[9], *out;
    args[0] = ll(seq); args[1] = ll(tid); args[2] = ll(kind); args[3] = SLOT(dr, AO.id);
    args[4] = SLOT(cr, AO.id); args[5] = SLOT(dr, AO.asset); args[6] = ll(amount); args[7] = code;
    args[8] = pending_id;
    if (args[0] == NULL || args[1] == NULL || args[2] == NULL || args[6] == NULL) out = NULL;
    else out = PyObject_Vectorcall(TransferType, args, 9, NULL);
    Py_XDECREF(args[0]); Py_XDECREF(args[1]); Py_XDECREF(args[2]); Py_XDECREF(args[6]);
    return out;
}

static long long next_transfer_id(PyObject *ledger, int *bad) {
    long long tid = get_ll(ledger, GO.next_transfer_id, bad);
    if (set_ll(ledger, GO.next_transfer_id, tid + 1) < 0) *bad = 1;
    return tid;
}

/* Release `amount` of a pending hold, keeping the rest (resolve_part(post=False, forget=True)).
 * The caller has checked: the hold is pending and 0 < amount <= hold.amount. */
static int release_part(PyObject *ledger, PyObject *hold, long long amount, long long seq) {
    int bad = 0;
    PyObject *accounts = SLOT(ledger, GO.accounts), *dr, *cr, *hold_id = SLOT(hold, HO.id), *item[5], *flags, *ev;
    long long left, tid;
    int done;
    dr = PyDict_GetItemWithError(accounts, SLOT(hold, HO.debit));
    cr = PyDict_GetItemWithError(accounts, SLOT(hold, HO.credit));
    if (dr == NULL || cr == NULL) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_AssertionError, "a hold's account is missing");
        return -1;
    }
    Py_INCREF(hold);
    if (set_ll(dr, AO.dpend, get_ll(dr, AO.dpend, &bad) - amount) < 0) goto fail;
    if (set_ll(cr, AO.cpend, get_ll(cr, AO.cpend, &bad) - amount) < 0) goto fail;
    left = get_ll(hold, HO.amount, &bad) - amount;
    if (set_ll(hold, HO.amount, left) < 0) goto fail;
    done = left == 0;
    if (done) {
        int posted = PyObject_IsTrue(SLOT(hold, HO.posted));
        set_slot_ref(hold, HO.status, posted ? I_ONE : I_TWO);
        if (PyDict_DelItem(SLOT(ledger, GO.holds), hold_id) < 0) goto fail;
    }
    tid = next_transfer_id(ledger, &bad);
    flags = pair(Py_False, done ? Py_True : Py_False);
    item[0] = ll(U_PART); item[1] = ref(hold); item[2] = flags; item[3] = ll(amount); item[4] = ll(tid);
    if (journal_add(SLOT(ledger, GO.journal), 5, item) < 0) goto fail;
    ev = transfer(seq, tid, K_VOID_PART, dr, cr, amount, SLOT(hold, HO.code), hold_id);
    if (ev == NULL || PyList_Append(SLOT(ledger, GO.events), ev) < 0) {
        Py_XDECREF(ev);
        goto fail;
    }
    Py_DECREF(ev);
    Py_DECREF(hold);
    if (bad) {
        PyErr_SetString(PyExc_AssertionError, "ledger totals beyond 64 bits");
        return -1;
    }
    return 0;
fail:
    Py_DECREF(hold);
    return -1;
}

/* Why `amount` more may not leave dr for cr (ledger._limits): 0 when it may. */
static int limits_refuse(PyObject *dr, PyObject *cr, long long amount) {
    int bad = 0;
    long long dflags = get_ll(dr, AO.flags, &bad), cflags = get_ll(cr, AO.flags, &bad);
    __int128 ddp = get_ll(dr, AO.dp, &bad), ddpend = get_ll(dr, AO.dpend, &bad), dcp = get_ll(dr, AO.cp, &bad);
    __int128 ccp = get_ll(cr, AO.cp, &bad), ccpend = get_ll(cr, AO.cpend, &bad), cdp = get_ll(cr, AO.dp, &bad);
    if (bad) return 1;
    if ((dflags & NO_OVERDRAFT) && ddp + ddpend + amount > dcp) return 1;
    if ((cflags & NO_CREDIT_EXCESS) && ccp + ccpend + amount > cdp) return 1;
    if (ddp + ddpend + amount > TOTAL_MAX_LL || ccp + ccpend + amount > TOTAL_MAX_LL) return 1;
    return 0;
}

/* hold_more(): the caller has checked limits_refuse() == 0 and the hold is pending. */
static int hold_more(PyObject *ledger, PyObject *hold, PyObject *dr, PyObject *cr, long long amount,
                     long long seq) {
    int bad = 0;
    PyObject *item[5], *ev;
    long long tid;
    if (set_ll(dr, AO.dpend, get_ll(dr, AO.dpend, &bad) + amount) < 0) return -1;
    if (set_ll(cr, AO.cpend, get_ll(cr, AO.cpend, &bad) + amount) < 0) return -1;
    if (set_ll(hold, HO.amount, get_ll(hold, HO.amount, &bad) + amount) < 0) return -1;
    tid = next_transfer_id(ledger, &bad);
    item[0] = ll(U_MORE); item[1] = ref(hold); item[2] = ref(Py_None); item[3] = ll(amount); item[4] = ll(tid);
    if (journal_add(SLOT(ledger, GO.journal), 5, item) < 0) return -1;
    ev = transfer(seq, tid, K_HOLD_MORE, dr, cr, amount, SLOT(hold, HO.code), SLOT(hold, HO.id));
    if (ev == NULL || PyList_Append(SLOT(ledger, GO.events), ev) < 0) {
        Py_XDECREF(ev);
        return -1;
    }
    Py_DECREF(ev);
    if (bad) {
        PyErr_SetString(PyExc_AssertionError, "ledger totals beyond 64 bits");
        return -1;
    }
    return 0;
}

/* move(dr, cr, amount, "hold", seq, pending=True): returns the new hold id, or -1. */
static long long hold_new(PyObject *ledger, PyObject *dr, PyObject *cr, long long amount, long long seq) {
    int bad = 0;
    PyObject *item[5], *ev, *hold, *args[5];
    long long tid = next_transfer_id(ledger, &bad);
    if (set_ll(dr, AO.dpend, get_ll(dr, AO.dpend, &bad) + amount) < 0) return -1;
    if (set_ll(cr, AO.cpend, get_ll(cr, AO.cpend, &bad) + amount) < 0) return -1;
    args[0] = ll(tid); args[1] = SLOT(dr, AO.id); args[2] = SLOT(cr, AO.id); args[3] = ll(amount);
    args[4] = S_HOLD;
    hold = (args[0] && args[3]) ? PyObject_Vectorcall(HoldType, args, 5, NULL) : NULL;
    if (hold == NULL || PyDict_SetItem(SLOT(ledger, GO.holds), args[0], hold) < 0) {
        Py_XDECREF(args[0]); Py_XDECREF(args[3]); Py_XDECREF(hold);
        return -1;
    }
    Py_DECREF(hold);
    item[0] = ll(U_PENDING); item[1] = ref(dr); item[2] = ref(cr); item[3] = args[3]; item[4] = args[0];
    if (journal_add(SLOT(ledger, GO.journal), 5, item) < 0) return -1;
    ev = transfer(seq, tid, K_PENDING, dr, cr, amount, S_HOLD, I_ZERO);
    if (ev == NULL || PyList_Append(SLOT(ledger, GO.events), ev) < 0) {
        Py_XDECREF(ev);
        return -1;
    }
    Py_DECREF(ev);
    if (bad) {
        PyErr_SetString(PyExc_AssertionError, "ledger totals beyond 64 bits");
        return -1;
    }
    return tid;
}

/* ---- SpotFast: the spot product's fast handlers ---------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *product;
    PyObject *ledger;
    PyObject *markets, *books, *orders, *by_owner, *by_client_id, *journal, *undo, *undo_cb;
    PyObject *place_slow, *cancel_slow, *amend_slow;
    long long per_owner_max, orders_max, coid_max;
    int emit;
} SpotFast;

static int fast_traverse(SpotFast *self, visitproc visit, void *arg) {
    Py_VISIT(self->product); Py_VISIT(self->ledger); Py_VISIT(self->markets); Py_VISIT(self->books);
    Py_VISIT(self->orders); Py_VISIT(self->by_owner); Py_VISIT(self->by_client_id); Py_VISIT(self->journal);
    Py_VISIT(self->undo); Py_VISIT(self->undo_cb); Py_VISIT(self->place_slow); Py_VISIT(self->cancel_slow);
    Py_VISIT(self->amend_slow);
    return 0;
}

static int fast_clear(SpotFast *self) {
    Py_CLEAR(self->product); Py_CLEAR(self->ledger); Py_CLEAR(self->markets); Py_CLEAR(self->books);
    Py_CLEAR(self->orders); Py_CLEAR(self->by_owner); Py_CLEAR(self->by_client_id); Py_CLEAR(self->journal);
    Py_CLEAR(self->undo); Py_CLEAR(self->undo_cb); Py_CLEAR(self->place_slow); Py_CLEAR(self->cancel_slow);
    Py_CLEAR(self->amend_slow);
    return 0;
}

static void fast_dealloc(SpotFast *self) {
    PyObject_GC_UnTrack(self);
    fast_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int attr_into(PyObject **dst, PyObject *obj, const char *name, int need_dict, int need_list) {
    PyObject *v = PyObject_GetAttrString(obj, name);
    if (v == NULL) return -1;
    if ((need_dict && !PyDict_CheckExact(v)) || (need_list && !PyList_CheckExact(v))) {
        PyErr_Format(PyExc_TypeError, "%s has the wrong type", name);
        Py_DECREF(v);
        return -1;
    }
    Py_XSETREF(*dst, v);
    return 0;
}

static int attr_ll(long long *dst, PyObject *obj, const char *name) {
    PyObject *v = PyObject_GetAttrString(obj, name);
    if (v == NULL) return -1;
    *dst = PyLong_AsLongLong(v);
    Py_DECREF(v);
    return (*dst == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* rebind(): read the product's containers again (after a restore replaced them). */
static PyObject *fast_rebind(SpotFast *self, PyObject *unused) {
    PyObject *p = self->product, *engine = NULL, *config = NULL;
    int rc = -1;
    if (attr_into(&self->ledger, p, "ledger", 0, 0) < 0 || attr_into(&self->markets, p, "markets", 1, 0) < 0 ||
        attr_into(&self->books, p, "books", 1, 0) < 0 || attr_into(&self->orders, p, "orders", 1, 0) < 0 ||
        attr_into(&self->by_owner, p, "by_owner", 1, 0) < 0 ||
        attr_into(&self->by_client_id, p, "by_client_id", 1, 0) < 0 ||
        attr_into(&self->journal, p, "_journal", 0, 1) < 0 || attr_into(&self->undo_cb, p, "_undo_callback", 0, 0) < 0 ||
        attr_into(&self->place_slow, p, "place", 0, 0) < 0 || attr_into(&self->cancel_slow, p, "cancel", 0, 0) < 0 ||
        attr_into(&self->amend_slow, p, "amend", 0, 0) < 0 || attr_ll(&self->per_owner_max, p, "_orders_per_owner_max") < 0 ||
        attr_ll(&self->orders_max, p, "_orders_max") < 0)
        goto done;
    if ((engine = PyObject_GetAttrString(p, "engine")) == NULL) goto done;
    if (attr_into(&self->undo, engine, "_undo", 0, 1) < 0) goto done;
    if ((config = PyObject_GetAttrString(p, "config")) == NULL) goto done;
    if (attr_ll(&self->coid_max, config, "client_order_id_length_max") < 0) goto done;
    /* Slot offsets are only ever applied to the classes they were taken from. */
    if (!Py_IS_TYPE(self->ledger, LedgerType)) {
        PyErr_SetString(PyExc_TypeError, "the product's ledger is not a Ledger");
        goto done;
    }
    {
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        while (PyDict_Next(self->books, &pos, &k, &v))
            if (!Py_IS_TYPE(v, BookType)) {
                PyErr_SetString(PyExc_TypeError, "a book is not a Book");
                goto done;
            }
        pos = 0;
        while (PyDict_Next(self->markets, &pos, &k, &v))
            if (!Py_IS_TYPE(v, MarketType) || !PyDict_Contains(self->books, k)) {
                PyErr_SetString(PyExc_TypeError, "a market is not a _Market with a book");
                goto done;
            }
    }
    rc = 0;
done:
    Py_XDECREF(engine);
    Py_XDECREF(config);
    if (rc < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *fast_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PyObject *product;
    SpotFast *self;
    if (!ready) {
        PyErr_SetString(PyExc_RuntimeError, "call setup() first");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O", &product)) return NULL;
    self = (SpotFast *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->product = ref(product);
    self->emit = 1;
    {
        PyObject *r = fast_rebind(self, NULL);
        if (r == NULL) {
            Py_DECREF(self);
            return NULL;
        }
        Py_DECREF(r);
    }
    return (PyObject *)self;
}

/* Mark the start of a mutating command: the product journal restarts and the engine learns how
 * to undo it (product.engine.on_rollback(product._undo_callback)). */
static int begin(SpotFast *self) {
    Py_ssize_t n = PyList_GET_SIZE(self->journal);
    if (n && PyList_SetSlice(self->journal, 0, n, NULL) < 0) return -1;
    return PyList_Append(self->undo, self->undo_cb);
}

/* journal (_J_BOOK, book, next_trade_id, update_id) and stamp the book, once per command. */
static int touch_book(SpotFast *self, PyObject *book, PyObject *seq_obj, long long seq) {
    int bad = 0;
    PyObject *item[4];
    if (get_ll(book, BO.update_id, &bad) == seq && !bad) return 0;
    item[0] = ll(J_BOOK); item[1] = ref(book); item[2] = ref(SLOT(book, BO.next_trade_id));
    item[3] = ref(SLOT(book, BO.update_id));
    if (journal_add(self->journal, 4, item) < 0) return -1;
    set_slot_ref(book, BO.update_id, seq_obj);
    return 0;
}

static int add2(PyObject *journal, long long kind, PyObject *o) {
    PyObject *item[2];
    item[0] = ll(kind); item[1] = ref(o);
    return journal_add(journal, 2, item);
}

static int add3(PyObject *journal, long long kind, PyObject *o, PyObject *third /* stolen */) {
    PyObject *item[3];
    item[0] = ll(kind); item[1] = ref(o); item[2] = third;
    return journal_add(journal, 3, item);
}

/* Emit an execution report; returns OrderPlaced(view, []) or the bare view. */
static PyObject *report(SpotFast *self, PyObject *order, PyObject *seq_obj, PyObject *exec_type, int placed) {
    PyObject *view = order_view(order), *args[3], *ev, *out, *trades;
    if (view == NULL) return NULL;
    if (self->emit) {
        args[0] = seq_obj; args[1] = exec_type; args[2] = view;
        ev = PyObject_Vectorcall(OrderUpdatedType, args, 3, NULL);
        if (ev == NULL || PyList_Append(SLOT(self->ledger, GO.events), ev) < 0) {
            Py_XDECREF(ev);
            Py_DECREF(view);
            return NULL;
        }
        Py_DECREF(ev);
    }
    if (!placed) return view;
    trades = PyList_New(0);
    if (trades == NULL) {
        Py_DECREF(view);
        return NULL;
    }
    args[0] = view; args[1] = trades;
    out = PyObject_Vectorcall(OrderPlacedType, args, 2, NULL);
    Py_DECREF(view);
    Py_DECREF(trades);
    return out;
}

static int crosses(PyObject *book, long long side, long long price) {
    PyObject *keys = SLOT(SLOT(book, side == BUY ? BO.asks : BO.bids), SO.keys);
    Py_ssize_t n = PyList_GET_SIZE(keys);
    long long best;
    if (n == 0) return 0;
    best = PyLong_AsLongLong(PyList_GET_ITEM(keys, n - 1));
    return side == BUY ? -best <= price : best >= price;
}

/* The account (owner, asset) or NULL (borrowed; no error set when missing). */
static PyObject *account_of(PyObject *ledger, PyObject *owner, PyObject *asset) {
    PyObject *key = pair(owner, asset), *acc;
    if (key == NULL) return NULL;
    acc = PyDict_GetItemWithError(SLOT(ledger, GO.by_key), key);
    Py_DECREF(key);
    return (acc == NULL || Py_IS_TYPE(acc, AccountType)) ? acc : NULL;
}

static inline long long available(PyObject *acc, int *bad) {
    return get_ll(acc, AO.cp, bad) - get_ll(acc, AO.dp, bad) - get_ll(acc, AO.dpend, bad);
}

#define FALLBACK(slow) return PyObject_CallOneArg(self->slow, cmd)

/* place(): a LIMIT GTC or LIMIT_MAKER order that does not cross goes straight onto the book. */
static PyObject *fast_place(SpotFast *self, PyObject *cmd) {
    PyObject *market_str, *market, *book, *owner, *side_str, *type_str, *stp_str, *coid, *cfg, *ledger = self->ledger;
    PyObject *pay, *escrow_acc, *key, *owned, *order, *seq_obj, *ts_obj, *id_obj, *tif, *side_obj, *stp_obj, *item[2];
    PyObject *receive_asset, *pay_asset, *by_key = SLOT(ledger, GO.by_key), *book_side, *out;
    long long side, price, qty, unit, seq, hold_amount, next_id, tid;
    int bad = 0;
    __int128 notional;
    Py_ssize_t olen;

    if (Py_TYPE(cmd) != (PyTypeObject *)PlaceType) FALLBACK(place_slow);
    market_str = SLOT(cmd, PO.market);
    market = PyDict_GetItemWithError(self->markets, market_str);
    if (market == NULL) {
        if (PyErr_Occurred()) return NULL;
        FALLBACK(place_slow);
    }
    book = PyDict_GetItemWithError(self->books, market_str);
    if (book == NULL || SLOT(book, BO.trading) != Py_True) {
        if (PyErr_Occurred()) return NULL;
        FALLBACK(place_slow);
    }
    owner = SLOT(cmd, PO.owner);
    if (!PyUnicode_CheckExact(owner)) FALLBACK(place_slow);
    olen = PyUnicode_GET_LENGTH(owner);
    if (olen == 0 || olen > OWNER_MAX || PyUnicode_READ_CHAR(owner, 0) == '@') FALLBACK(place_slow);
    side_str = SLOT(cmd, PO.side);
    if (str_eq(side_str, S_BUY)) side = 0;
    else if (str_eq(side_str, S_SELL)) side = 1;
    else FALLBACK(place_slow);
    type_str = SLOT(cmd, PO.order_type);
    if (str_eq(type_str, S_LIMIT)) {
        if (!str_eq(SLOT(cmd, PO.tif), S_GTC)) FALLBACK(place_slow);
        tif = SLOT(cmd, PO.tif);
    } else if (str_eq(type_str, S_LIMIT_MAKER)) {
        tif = S_GTC;
    } else {
        FALLBACK(place_slow);
    }
    stp_str = SLOT(cmd, PO.stp);
    if (str_eq(stp_str, S_STP_MAKER)) stp_obj = I_TWO;
    else if (str_eq(stp_str, S_STP_TAKER)) stp_obj = I_ONE;
    else if (str_eq(stp_str, S_STP_BOTH)) stp_obj = I_THREE;
    else FALLBACK(place_slow);
    coid = SLOT(cmd, PO.coid);
    if (!PyUnicode_CheckExact(coid)) FALLBACK(place_slow);
    if (PyUnicode_GET_LENGTH(coid)) {
        Py_ssize_t i, n = PyUnicode_GET_LENGTH(coid);
        int dup;
        if (n > self->coid_max) FALLBACK(place_slow);
        for (i = 0; i < n; i++) {
            Py_UCS4 c = PyUnicode_READ_CHAR(coid, i);
            if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
                  c == ':' || c == '/' || c == '_' || c == '-'))
                FALLBACK(place_slow);
        }
        key = pair(owner, coid);
        if (key == NULL) return NULL;
        dup = PyDict_Contains(self->by_client_id, key);
        Py_DECREF(key);
        if (dup < 0) return NULL;
        if (dup) FALLBACK(place_slow);
    }
    cfg = SLOT(market, MO.config);
    price = get_ll(cmd, PO.price, &bad);
    qty = get_ll(cmd, PO.qty, &bad);
    unit = get_ll(market, MO.unit, &bad);
    if (bad || get_ll(cmd, PO.quote_qty, &bad) != 0 || price <= 0 || price > get_ll(cfg, CO.max_price, &bad) ||
        qty < get_ll(cfg, CO.min_qty, &bad) || qty > get_ll(cfg, CO.max_qty, &bad) || bad)
        FALLBACK(place_slow);
    notional = (__int128)qty * price * unit;
    if (notional < get_ll(cfg, CO.min_notional, &bad) || bad || notional > TOTAL_MAX_LL) FALLBACK(place_slow);
    if (crosses(book, side, price)) FALLBACK(place_slow);
    /* it rests: the per-owner and engine-wide limits */
    key = pair(owner, market_str);
    if (key == NULL) return NULL;
    owned = PyDict_GetItemWithError(self->by_owner, key);
    if ((owned == NULL && PyErr_Occurred()) ||
        (owned != NULL && PyDict_GET_SIZE(owned) >= self->per_owner_max) ||
        PyDict_GET_SIZE(self->orders) >= self->orders_max) {
        Py_DECREF(key);
        if (PyErr_Occurred()) return NULL;
        FALLBACK(place_slow);
    }
    hold_amount = side == BUY ? (long long)notional : qty * get_ll(market, MO.lot, &bad);
    pay_asset = SLOT(market, side == BUY ? MO.quote : MO.base);
    receive_asset = SLOT(market, side == BUY ? MO.base : MO.quote);
    pay = account_of(ledger, owner, pay_asset);
    if (pay == NULL || hold_amount <= 0 || bad || available(pay, &bad) < hold_amount || bad) {
        Py_DECREF(key);
        if (PyErr_Occurred()) return NULL;
        FALLBACK(place_slow); /* insufficient funds (or no account) is the Python handler's reject */
    }
    /* every account a fill could need must exist already; else the Python handler opens them */
    {
        PyObject *recv = account_of(ledger, owner, receive_asset);
        if (recv == NULL || !PyDict_GetItemWithError(by_key, SLOT(market, MO.escrow_base)) ||
            !PyDict_GetItemWithError(by_key, SLOT(market, MO.escrow_quote)) ||
            !PyDict_GetItemWithError(by_key, SLOT(market, MO.fees_base)) ||
            !PyDict_GetItemWithError(by_key, SLOT(market, MO.fees_quote))) {
            Py_DECREF(key);
            if (PyErr_Occurred()) return NULL;
            FALLBACK(place_slow);
        }
    }
    escrow_acc = PyDict_GetItemWithError(by_key, SLOT(market, side == BUY ? MO.escrow_quote : MO.escrow_base));
    if (escrow_acc == NULL || limits_refuse(pay, escrow_acc, hold_amount)) {
        Py_DECREF(key);
        if (PyErr_Occurred()) return NULL;
        FALLBACK(place_slow);
    }

    /* ---- validated: from here on, state changes (and is journaled) ---- */
    seq_obj = SLOT(cmd, PO.seq);
    ts_obj = SLOT(cmd, PO.ts_ns);
    seq = get_ll(cmd, PO.seq, &bad);
    id_obj = PyObject_GetAttr(self->product, NAME_next_order_id);
    if (id_obj == NULL || begin(self) < 0) goto fail_key;
    next_id = PyLong_AsLongLong(id_obj);
    item[0] = ll(J_NEXT_ID); item[1] = ref(id_obj);
    if (journal_add(self->journal, 2, item) < 0) goto fail_key;
    order = OrderType->tp_alloc(OrderType, 0);
    if (order == NULL) goto fail_key;
    side_obj = side == BUY ? I_ZERO : I_ONE;
    SLOT(order, OO.id) = ref(id_obj); SLOT(order, OO.market) = ref(market_str); SLOT(order, OO.owner) = ref(owner);
    SLOT(order, OO.coid) = ref(coid); SLOT(order, OO.side) = ref(side_obj); SLOT(order, OO.order_type) = ref(type_str);
    SLOT(order, OO.tif) = ref(tif); SLOT(order, OO.stp) = ref(stp_obj); SLOT(order, OO.price) = ref(SLOT(cmd, PO.price));
    SLOT(order, OO.qty) = ref(SLOT(cmd, PO.qty)); SLOT(order, OO.quote_qty) = ref(SLOT(cmd, PO.quote_qty));
    SLOT(order, OO.remaining) = ref(SLOT(cmd, PO.qty)); SLOT(order, OO.executed) = ref(I_ZERO);
    SLOT(order, OO.executed_quote) = ref(I_ZERO); SLOT(order, OO.hold_id) = ref(I_ZERO);
    SLOT(order, OO.status) = ref(S_NEW); SLOT(order, OO.created_seq) = ref(seq_obj);
    SLOT(order, OO.created_ts) = ref(ts_obj); SLOT(order, OO.updated_seq) = ref(seq_obj);
    SLOT(order, OO.updated_ts) = ref(ts_obj); SLOT(order, OO.prev) = ref(Py_None);
    SLOT(order, OO.next) = ref(Py_None); SLOT(order, OO.level) = ref(Py_None);
    {
        PyObject *next_obj = ll(next_id + 1);
        int rc = next_obj ? PyObject_SetAttr(self->product, NAME_next_order_id, next_obj) : -1;
        Py_XDECREF(next_obj);
        if (rc < 0) goto fail_order;
    }
    tid = hold_new(ledger, pay, escrow_acc, hold_amount, seq);
    if (tid < 0 || set_ll(order, OO.hold_id, tid) < 0) goto fail_order;
    /* _rest() */
    if (touch_book(self, book, seq_obj, seq) < 0) goto fail_order;
    book_side = SLOT(book, side == BUY ? BO.bids : BO.asks);
    if (side_append(book_side, order) < 0 || add2(self->journal, J_LINK, order) < 0) goto fail_order;
    if (PyDict_SetItem(self->orders, id_obj, order) < 0) goto fail_order;
    if (owned == NULL) {
        owned = PyDict_New();
        if (owned == NULL || PyDict_SetItem(self->by_owner, key, owned) < 0) {
            Py_XDECREF(owned);
            goto fail_order;
        }
        Py_DECREF(owned);
    }
    if (PyDict_SetItem(owned, id_obj, order) < 0) goto fail_order;
    if (PyUnicode_GET_LENGTH(coid)) {
        PyObject *ckey = pair(owner, coid);
        int rc = ckey ? PyDict_SetItem(self->by_client_id, ckey, order) : -1;
        Py_XDECREF(ckey);
        if (rc < 0) goto fail_order;
    }
    if (add2(self->journal, J_OPEN, order) < 0) goto fail_order;
    Py_DECREF(key);
    Py_DECREF(id_obj);
    out = report(self, order, seq_obj, S_NEW, 1);
    Py_DECREF(order);
    return out;
fail_order:
    Py_DECREF(order);
fail_key:
    Py_DECREF(key);
    Py_XDECREF(id_obj);
    return NULL;
}

/* Cancel (or expire) a resting order (product._close_resting with CANCELED). */
static PyObject *close_resting(SpotFast *self, PyObject *book, PyObject *side, PyObject *order, PyObject *hold,
                               long long amount, PyObject *seq_obj, PyObject *ts_obj, long long seq) {
    PyObject *prev, *key, *owned, *coid = SLOT(order, OO.coid);
    Py_INCREF(order);
    if (begin(self) < 0) goto fail;
    if (add3(self->journal, J_FIELDS, order, order_fields(order)) < 0) goto fail;
    if (touch_book(self, book, seq_obj, seq) < 0) goto fail;
    prev = side_unlink(side, order);
    if (prev == NULL || add3(self->journal, J_UNLINK, order, prev) < 0) goto fail;
    /* _forget() */
    if (PyDict_DelItem(self->orders, SLOT(order, OO.id)) < 0) goto fail;
    key = pair(SLOT(order, OO.owner), SLOT(order, OO.market));
    if (key == NULL) goto fail;
    owned = PyDict_GetItemWithError(self->by_owner, key);
    if (owned == NULL || PyDict_DelItem(owned, SLOT(order, OO.id)) < 0 ||
        (PyDict_GET_SIZE(owned) == 0 && PyDict_DelItem(self->by_owner, key) < 0)) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_AssertionError, "open order missing from by_owner");
        Py_DECREF(key);
        goto fail;
    }
    Py_DECREF(key);
    if (PyUnicode_GET_LENGTH(coid)) {
        key = pair(SLOT(order, OO.owner), coid);
        if (key == NULL || PyDict_DelItem(self->by_client_id, key) < 0) {
            Py_XDECREF(key);
            goto fail;
        }
        Py_DECREF(key);
    }
    if (add2(self->journal, J_CLOSE, order) < 0) goto fail;
    if (hold != NULL && amount && release_part(self->ledger, hold, amount, seq) < 0) goto fail;
    set_slot_ref(order, OO.remaining, I_ZERO);
    set_slot_ref(order, OO.status, S_CANCELED);
    set_slot_ref(order, OO.updated_seq, seq_obj);
    set_slot_ref(order, OO.updated_ts, ts_obj);
    {
        PyObject *out = report(self, order, seq_obj, S_CANCELED, 0);
        Py_DECREF(order);
        return out;
    }
fail:
    Py_DECREF(order);
    return NULL;
}

static PyObject *fast_cancel(SpotFast *self, PyObject *cmd) {
    PyObject *market_str, *order, *book, *owner, *hold, *side;
    int bad = 0;
    long long seq, amount = 0;
    if (Py_TYPE(cmd) != (PyTypeObject *)CancelType) FALLBACK(cancel_slow);
    market_str = SLOT(cmd, XO.market);
    owner = SLOT(cmd, XO.owner);
    book = PyDict_GetItemWithError(self->books, market_str);
    if (book == NULL || !PyDict_GetItemWithError(self->markets, market_str)) {
        if (PyErr_Occurred()) return NULL;
        FALLBACK(cancel_slow);
    }
    if (get_ll(cmd, XO.order_id, &bad)) {
        order = PyDict_GetItemWithError(self->orders, SLOT(cmd, XO.order_id));
    } else {
        PyObject *key;
        if (!PyUnicode_CheckExact(SLOT(cmd, XO.coid)) || PyUnicode_GET_LENGTH(SLOT(cmd, XO.coid)) == 0)
            FALLBACK(cancel_slow);
        key = pair(owner, SLOT(cmd, XO.coid));
        if (key == NULL) return NULL;
        order = PyDict_GetItemWithError(self->by_client_id, key);
        Py_DECREF(key);
    }
    if (order == NULL || bad || !str_eq(SLOT(order, OO.owner), owner) || !str_eq(SLOT(order, OO.market), market_str)) {
        if (PyErr_Occurred()) return NULL;
        FALLBACK(cancel_slow); /* order_not_found */
    }
    seq = get_ll(cmd, XO.seq, &bad);
    hold = PyDict_GetItemWithError(SLOT(self->ledger, GO.holds), SLOT(order, OO.hold_id));
    if (hold == NULL && PyErr_Occurred()) return NULL;
    if (hold != NULL) {
        amount = get_ll(hold, HO.amount, &bad);
        if (amount && get_ll(hold, HO.status, &bad) != HOLD_PENDING) bad = 1;
    }
    if (bad) FALLBACK(cancel_slow); /* cannot happen on a consistent book: Python asserts */
    side = SLOT(book, get_ll(order, OO.side, &bad) == BUY ? BO.bids : BO.asks);
    return close_resting(self, book, side, order, hold, amount, SLOT(cmd, XO.seq), SLOT(cmd, XO.ts_ns), seq);
}

/* amend(): a new price or quantity that does not cross. */
static PyObject *fast_amend(SpotFast *self, PyObject *cmd) {
    PyObject *market_str, *market, *book, *order, *cfg, *hold, *pay, *cr, *ledger = self->ledger, *seq_obj, *ts_obj;
    PyObject *book_side, *prev;
    long long price, qty, unit, executed, side, remaining, need, held, seq, oqty;
    int bad = 0;
    __int128 notional;

    if (Py_TYPE(cmd) != (PyTypeObject *)AmendType) FALLBACK(amend_slow);
    market_str = SLOT(cmd, MDO.market);
    market = PyDict_GetItemWithError(self->markets, market_str);
    if (market == NULL) {
        if (PyErr_Occurred()) return NULL;
        FALLBACK(amend_slow);
    }
    book = PyDict_GetItemWithError(self->books, market_str);
    if (book == NULL || SLOT(book, BO.trading) != Py_True || get_ll(cmd, MDO.order_id, &bad) == 0 || bad) {
        if (PyErr_Occurred()) return NULL;
        FALLBACK(amend_slow);
    }
    order = PyDict_GetItemWithError(self->orders, SLOT(cmd, MDO.order_id));
    if (order == NULL || !str_eq(SLOT(order, OO.owner), SLOT(cmd, MDO.owner)) ||
        !str_eq(SLOT(order, OO.market), market_str)) {
        if (PyErr_Occurred()) return NULL;
        FALLBACK(amend_slow);
    }
    cfg = SLOT(market, MO.config);
    price = get_ll(cmd, MDO.price, &bad);
    if (price == 0) price = get_ll(order, OO.price, &bad);
    qty = get_ll(cmd, MDO.qty, &bad);
    oqty = get_ll(order, OO.qty, &bad);
    if (qty == 0) qty = oqty;
    executed = get_ll(order, OO.executed, &bad);
    unit = get_ll(market, MO.unit, &bad);
    if (bad || price <= 0 || price > get_ll(cfg, CO.max_price, &bad) || qty < get_ll(cfg, CO.min_qty, &bad) ||
        qty > get_ll(cfg, CO.max_qty, &bad) || qty <= executed || bad)
        FALLBACK(amend_slow);
    notional = (__int128)qty * price * unit;
    if (notional < get_ll(cfg, CO.min_notional, &bad) || bad) FALLBACK(amend_slow);
    side = get_ll(order, OO.side, &bad);
    if (crosses(book, side, price)) FALLBACK(amend_slow);
    remaining = qty - executed;
    if (side == BUY) {
        __int128 n = (__int128)remaining * price * unit;
        if (n > TOTAL_MAX_LL) FALLBACK(amend_slow);
        need = (long long)n;
    } else {
        need = remaining * get_ll(market, MO.lot, &bad);
    }
    hold = PyDict_GetItemWithError(SLOT(ledger, GO.holds), SLOT(order, OO.hold_id));
    if (hold == NULL || bad || get_ll(hold, HO.status, &bad) != HOLD_PENDING) {
        if (PyErr_Occurred()) return NULL;
        FALLBACK(amend_slow);
    }
    held = get_ll(hold, HO.amount, &bad);
    pay = PyDict_GetItemWithError(SLOT(ledger, GO.accounts), SLOT(hold, HO.debit));
    cr = PyDict_GetItemWithError(SLOT(ledger, GO.accounts), SLOT(hold, HO.credit));
    if (pay == NULL || cr == NULL || bad) {
        if (PyErr_Occurred()) return NULL;
        FALLBACK(amend_slow);
    }
    if (need > held && (available(pay, &bad) < need - held || limits_refuse(pay, cr, need - held) || bad))
        FALLBACK(amend_slow);
    seq_obj = SLOT(cmd, MDO.seq);
    ts_obj = SLOT(cmd, MDO.ts_ns);
    seq = get_ll(cmd, MDO.seq, &bad);
    if (bad) FALLBACK(amend_slow);

    /* ---- validated: from here on, state changes (and is journaled) ---- */
    Py_INCREF(order);
    Py_INCREF(hold);
    if (begin(self) < 0) goto fail;
    if (price == get_ll(order, OO.price, &bad) && qty <= oqty) {
        /* smaller (or equal) at the same price: keeps its place in the queue */
        if (qty < oqty) {
            long long delta = oqty - qty;
            PyObject *level = SLOT(order, OO.level);
            if (add3(self->journal, J_FIELDS, order, order_fields(order)) < 0) goto fail;
            if (touch_book(self, book, seq_obj, seq) < 0) goto fail;
            if (set_ll(order, OO.qty, qty) < 0) goto fail;
            if (set_ll(order, OO.remaining, get_ll(order, OO.remaining, &bad) - delta) < 0) goto fail;
            if (set_ll(level, LO.qty, get_ll(level, LO.qty, &bad) - delta) < 0) goto fail;
            set_slot_ref(order, OO.updated_seq, seq_obj);
            set_slot_ref(order, OO.updated_ts, ts_obj);
            if (release_part(ledger, hold, held - need, seq) < 0) goto fail;
        }
    } else {
        /* a new price or a larger quantity: to the back of its (new) level */
        if (touch_book(self, book, seq_obj, seq) < 0) goto fail;
        book_side = SLOT(book, side == BUY ? BO.bids : BO.asks);
        prev = side_unlink(book_side, order);
        if (prev == NULL || add3(self->journal, J_UNLINK, order, prev) < 0) goto fail;
        if (add3(self->journal, J_FIELDS, order, order_fields(order)) < 0) goto fail;
        if (need < held) {
            if (release_part(ledger, hold, held - need, seq) < 0) goto fail;
        } else if (need > held) {
            if (hold_more(ledger, hold, pay, cr, need - held, seq) < 0) goto fail;
        }
        if (set_ll(order, OO.price, price) < 0 || set_ll(order, OO.qty, qty) < 0 ||
            set_ll(order, OO.remaining, remaining) < 0)
            goto fail;
        set_slot_ref(order, OO.created_seq, seq_obj);
        set_slot_ref(order, OO.created_ts, ts_obj);
        set_slot_ref(order, OO.updated_seq, seq_obj);
        set_slot_ref(order, OO.updated_ts, ts_obj);
        if (side_append(book_side, order) < 0 || add2(self->journal, J_LINK, order) < 0) goto fail;
    }
    if (bad) {
        PyErr_SetString(PyExc_AssertionError, "order fields beyond 64 bits");
        goto fail;
    }
    {
        PyObject *out = report(self, order, seq_obj, S_AMENDED, 1);
        Py_DECREF(order);
        Py_DECREF(hold);
        return out;
    }
fail:
    Py_DECREF(order);
    Py_DECREF(hold);
    return NULL;
}

static PyObject *fast_get_emit(SpotFast *self, void *closure) { return PyBool_FromLong(self->emit); }

static int fast_set_emit(SpotFast *self, PyObject *value, void *closure) {
    int v = value ? PyObject_IsTrue(value) : -1;
    if (v < 0) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "emit cannot be deleted");
        return -1;
    }
    self->emit = v;
    return 0;
}

static PyMethodDef fast_methods[] = {
    {"place", (PyCFunction)fast_place, METH_O, "The PlaceOrder handler."},
    {"cancel", (PyCFunction)fast_cancel, METH_O, "The CancelOrder handler."},
    {"amend", (PyCFunction)fast_amend, METH_O, "The AmendOrder handler."},
    {"rebind", (PyCFunction)fast_rebind, METH_NOARGS, "Read the product's containers again."},
    {NULL}};

static PyGetSetDef fast_getset[] = {
    {"emit", (getter)fast_get_emit, (setter)fast_set_emit, "Emit spot events (the bench turns it off).", NULL},
    {NULL}};

static PyTypeObject SpotFastType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "cashmarkets.core._native.SpotFast",
    .tp_basicsize = sizeof(SpotFast),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = fast_new,
    .tp_dealloc = (destructor)fast_dealloc,
    .tp_traverse = (traverseproc)fast_traverse,
    .tp_clear = (inquiry)fast_clear,
    .tp_methods = fast_methods,
    .tp_getset = fast_getset,
    .tp_doc = "Spot's common commands in C; everything else goes to the Python handlers.",
};

/* ---- Applier: Engine.apply ------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *engine, *ledger, *dedup, *dedup_ts, *dedup_ids, *handlers, *undo;
    PyObject *ts_append, *ids_append;
    long long window_ns, entries_max;
    vectorcallfunc vectorcall;
} Applier;

static PyObject *applier_call(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames);

static int applier_traverse(Applier *self, visitproc visit, void *arg) {
    Py_VISIT(self->engine); Py_VISIT(self->ledger); Py_VISIT(self->dedup); Py_VISIT(self->dedup_ts);
    Py_VISIT(self->dedup_ids); Py_VISIT(self->handlers); Py_VISIT(self->undo); Py_VISIT(self->ts_append);
    Py_VISIT(self->ids_append);
    return 0;
}

static int applier_clear(Applier *self) {
    Py_CLEAR(self->engine); Py_CLEAR(self->ledger); Py_CLEAR(self->dedup); Py_CLEAR(self->dedup_ts);
    Py_CLEAR(self->dedup_ids); Py_CLEAR(self->handlers); Py_CLEAR(self->undo); Py_CLEAR(self->ts_append);
    Py_CLEAR(self->ids_append);
    return 0;
}

static void applier_dealloc(Applier *self) {
    PyObject_GC_UnTrack(self);
    applier_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *applier_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PyObject *engine;
    Applier *self;
    if (!ready) {
        PyErr_SetString(PyExc_RuntimeError, "call setup() first");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O", &engine)) return NULL;
    self = (Applier *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->engine = ref(engine);
    self->vectorcall = applier_call;
    if (attr_into(&self->ledger, engine, "ledger", 0, 0) < 0 || attr_into(&self->dedup, engine, "_dedup", 1, 0) < 0 ||
        attr_into(&self->dedup_ts, engine, "_dedup_ts", 0, 0) < 0 ||
        attr_into(&self->dedup_ids, engine, "_dedup_ids", 0, 0) < 0 ||
        attr_into(&self->handlers, engine, "_handlers", 1, 0) < 0 || attr_into(&self->undo, engine, "_undo", 0, 1) < 0 ||
        attr_ll(&self->window_ns, engine, "_dedup_window_ns") < 0 ||
        attr_ll(&self->entries_max, engine, "_dedup_entries_max") < 0 || !Py_IS_TYPE(self->ledger, LedgerType)) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "the engine's ledger is not a Ledger");
        Py_DECREF(self);
        return NULL;
    }
    self->ts_append = PyObject_GetAttrString(self->dedup_ts, "append");
    self->ids_append = PyObject_GetAttrString(self->dedup_ids, "append");
    if (self->ts_append == NULL || self->ids_append == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static long long attr_get_ll(PyObject *obj, PyObject *name, int *bad) {
    PyObject *v = PyObject_GetAttr(obj, name);
    long long out;
    if (v == NULL) {
        *bad = 1;
        return 0;
    }
    out = PyLong_AsLongLong(v);
    if (out == -1 && PyErr_Occurred()) *bad = 1;
    Py_DECREF(v);
    return out;
}

static PyObject *evict(Applier *self, PyObject *ts_obj) {
    PyObject *r = PyObject_CallMethodOneArg(self->engine, NAME_evict, ts_obj);
    return r;
}

static PyObject *applier_call(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    Applier *self = (Applier *)callable;
    PyObject *cmd, *seq_obj = NULL, *ts_obj = NULL, *cid = NULL, *events = NULL, *result = NULL, *out = NULL;
    PyObject *handler, *ledger = self->ledger, *journal, *r;
    long long seq, ts, eng_seq, eng_ts;
    int bad = 0;
    Py_ssize_t n;

    if (PyVectorcall_NARGS(nargsf) != 1 || kwnames) {
        PyErr_SetString(PyExc_TypeError, "apply(command)");
        return NULL;
    }
    cmd = args[0];
    if ((seq_obj = PyObject_GetAttr(cmd, NAME_seq)) == NULL) return NULL;
    if ((ts_obj = PyObject_GetAttr(cmd, NAME_ts_ns)) == NULL) goto done;
    if ((cid = PyObject_GetAttr(cmd, NAME_command_id)) == NULL) goto done;
    seq = PyLong_AsLongLong(seq_obj);
    ts = PyLong_AsLongLong(ts_obj);
    if (PyErr_Occurred()) goto done;
    eng_seq = attr_get_ll(self->engine, NAME_seq, &bad);
    eng_ts = attr_get_ll(self->engine, NAME_ts_ns, &bad);
    if (bad) goto done;
    if (seq != eng_seq + 1) {
        PyErr_Format(PyExc_AssertionError, "seq gap: engine at %lld, command %lld", eng_seq, seq);
        goto done;
    }
    if (ts < eng_ts) {
        PyErr_SetString(PyExc_AssertionError, "time went backwards");
        goto done;
    }
    if (PyObject_SetAttr(self->engine, NAME_seq, seq_obj) < 0 || PyObject_SetAttr(self->engine, NAME_ts_ns, ts_obj) < 0)
        goto done;
    /* Expire by age first: whether a repeat is answered depends only on its own timestamp. */
    if (PyObject_Length(self->dedup_ts) > 0) {
        PyObject *first = PySequence_GetItem(self->dedup_ts, 0);
        long long first_ts = first ? PyLong_AsLongLong(first) : -1;
        Py_XDECREF(first);
        if (PyErr_Occurred()) goto done;
        if (first_ts < ts - self->window_ns) {
            if ((r = evict(self, ts_obj)) == NULL) goto done;
            Py_DECREF(r);
        }
    }
    result = PyDict_GetItemWithError(self->dedup, cid);
    if (result != NULL) {
        PyObject *empty = PyList_New(0);
        out = empty ? PyTuple_Pack(2, result, empty) : NULL;
        Py_XDECREF(empty);
        result = NULL;
        goto done;
    }
    if (PyErr_Occurred()) goto done;
    /* fresh per-command buffers: the ledger's undo journal and the event list */
    if ((events = PyList_New(0)) == NULL) goto done;
    if (PyObject_SetAttr(self->engine, NAME_events, events) < 0) goto done;
    journal = SLOT(ledger, GO.journal);
    n = PyList_GET_SIZE(journal);
    if (n && PyList_SetSlice(journal, 0, n, NULL) < 0) goto done;
    set_slot_ref(ledger, GO.events, events);
    n = PyList_GET_SIZE(self->undo);
    if (n && PyList_SetSlice(self->undo, 0, n, NULL) < 0) goto done;
    handler = PyDict_GetItemWithError(self->handlers, (PyObject *)Py_TYPE(cmd));
    if (handler == NULL) {
        if (PyErr_Occurred()) goto done;
        result = PyObject_CallMethodObjArgs(self->engine, NAME_unknown, seq_obj, cid, NULL);
    } else {
        PyObject *data = PyObject_CallOneArg(handler, cmd);
        if (data == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_Exception)) goto done; /* KeyboardInterrupt and kin */
            PyObject *etype, *exc, *tb;
            PyErr_Fetch(&etype, &exc, &tb);
            PyErr_NormalizeException(&etype, &exc, &tb);
            if (tb != NULL) PyException_SetTraceback(exc, tb);
            result = PyObject_CallMethodObjArgs(self->engine, NAME_internal_error, seq_obj, cid, exc, NULL);
            Py_XDECREF(etype);
            Py_XDECREF(exc);
            Py_XDECREF(tb);
        } else if (Py_TYPE(data) == (PyTypeObject *)RejectType) {
            result = PyObject_CallMethodObjArgs(self->engine, NAME_rejected, seq_obj, cid, data, NULL);
            Py_DECREF(data);
        } else {
            PyObject *a[3] = {seq_obj, cid, data};
            result = PyObject_Vectorcall(AcceptedType, a, 3, NULL);
            Py_DECREF(data);
        }
    }
    if (result == NULL) goto done;
    if (PyDict_SetItem(self->dedup, cid, result) < 0) goto done;
    if ((r = PyObject_CallOneArg(self->ts_append, ts_obj)) == NULL) goto done;
    Py_DECREF(r);
    if ((r = PyObject_CallOneArg(self->ids_append, cid)) == NULL) goto done;
    Py_DECREF(r);
    if (PyObject_Length(self->dedup_ts) > self->entries_max) {
        if ((r = evict(self, ts_obj)) == NULL) goto done;
        Py_DECREF(r);
    }
    out = PyTuple_Pack(2, result, events);
done:
    Py_XDECREF(seq_obj);
    Py_XDECREF(ts_obj);
    Py_XDECREF(cid);
    Py_XDECREF(events);
    Py_XDECREF(result);
    return out;
}

static PyTypeObject ApplierType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "cashmarkets.core._native.Applier",
    .tp_basicsize = sizeof(Applier),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = applier_new,
    .tp_dealloc = (destructor)applier_dealloc,
    .tp_traverse = (traverseproc)applier_traverse,
    .tp_clear = (inquiry)applier_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Applier, vectorcall),
    .tp_doc = "Engine.apply in C (the engine's rare branches stay in Python).",
};

/* ---- module ---------------------------------------------------------------------------------- */

static PyMethodDef module_methods[] = {
    {"setup", setup, METH_O, "Give the module the classes and constants it works with (once)."},
    {NULL}};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "cashmarkets.core._native", "The engine's and spot's hot paths in C.", -1,
    module_methods};

PyMODINIT_FUNC PyInit__native(void) {
    PyObject *m;
    if (PyType_Ready(&SpotFastType) < 0 || PyType_Ready(&ApplierType) < 0) return NULL;
    m = PyModule_Create(&module_def);
    if (m == NULL) return NULL;
    if (PyModule_AddIntConstant(m, "API", NATIVE_API) < 0 ||
        PyModule_AddStringConstant(m, "SOURCE_SHA256", NATIVE_SOURCE_SHA256) < 0 ||
        PyModule_AddObjectRef(m, "SpotFast", (PyObject *)&SpotFastType) < 0 ||
        PyModule_AddObjectRef(m, "Applier", (PyObject *)&ApplierType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
