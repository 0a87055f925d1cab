/* cashmarkets.core._native: the hot paths of the engine and of spot, in C.
 *
 * What is here, and what is not:
 *   Applier   Engine.apply: seq/time checks, the dedup table, per-command buffers, dispatch,
 *             Accepted/Rejected. The rare branches (eviction, rejects, handler errors) call
 *             back into the Python Engine, so there is one definition of each.
 *   SpotFast  spot's common commands: LIMIT GTC/IOC and LIMIT_MAKER orders (matching
 *             included: fills, fees, self-trade prevention, rest or expire, minute candles),
 *             amends by order id, cancels by id or client id. It works on the very Python
 *             objects the Python product uses (Order, Level, BookSide, Book, the ledger's
 *             Account and Hold), through their slot offsets, and journals every change with the
 *             same entries as the Python code, so queries and snapshots need no change. Anything
 *             else (FOK and MARKET orders, amends by client order id, cancel-all, halted
 *             markets, any reject, a missing account) is handed, untouched, to the Python
 *             handler.
 *   Dedup     the engine's dedup table (see dedup.py).
 *
 * The rule that keeps the two in step: the C path validates everything first and mutates
 * after, in the same order and with the same journal entries as product.py; the differential
 * tests run every spot scenario through both and compare snapshots, results and events.
 * The core's purity holds: no clock, no randomness, no I/O.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#define NATIVE_API 2
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
typedef struct { Py_ssize_t asks, bids, trading, update_id, next_trade_id, minutes, symbol; } BookOff;
typedef struct {
    Py_ssize_t base, quote, lot, unit, config, escrow_base, escrow_quote, fees_base, fees_quote, maker_bps, taker_bps;
} MarketOff;
typedef struct { Py_ssize_t max_price, min_qty, max_qty, min_notional; } ConfigOff;
typedef struct { Py_ssize_t accounts, by_key, holds, next_transfer_id, journal, events; } LedgerOff;
typedef struct { Py_ssize_t id, asset, flags, dp, cp, dpend, cpend; } AccountOff;
typedef struct { Py_ssize_t id, debit, credit, amount, code, status, posted; } HoldOff;
typedef struct {
    Py_ssize_t seq, ts_ns, owner, market, side, order_type, tif, price, qty, quote_qty, stp, coid;
} PlaceOff;
typedef struct { Py_ssize_t seq, ts_ns, owner, market, order_id, coid; } CancelOff;
typedef struct { Py_ssize_t seq, ts_ns, owner, market, order_id, price, qty; } AmendOff;

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
static PyTypeObject *OrderType, *LevelType, *BookType, *MarketType, *LedgerType, *AccountType, *CommandType;
static Py_ssize_t CMD_seq, CMD_ts_ns, CMD_command_id; /* every command inherits these fields */
static PyObject *PlaceType, *CancelType, *AmendType;
static PyObject *OrderViewType, *OrderUpdatedType, *OrderPlacedType, *TransferType, *HoldType;
static PyObject *AcceptedType, *RejectType, *TradeType;
static PyObject *S_BUY, *S_SELL, *S_LIMIT, *S_LIMIT_MAKER, *S_GTC, *S_NEW, *S_CANCELED, *S_AMENDED,
    *S_HOLD, *S_STP_TAKER, *S_STP_MAKER, *S_STP_BOTH, *S_IOC, *S_PARTIAL, *S_FILLED, *S_EXPIRED,
    *S_EXPIRED_IN_MATCH, *S_TRADE, *S_TRADE_CODE, *S_FEE, *S_INSUFFICIENT, *S_EXCEEDS_DEBITS, *S_OVERFLOW,
    *NAME_append, *NAME_popleft;
static PyObject *I_ZERO, *I_ONE, *I_TWO, *I_THREE;
static long long OWNER_MAX, TOTAL_MAX_LL;
static long long J_LINK, J_UNLINK, J_OPEN, J_CLOSE, J_FIELDS, J_BOOK, J_NEXT_ID, J_FILL, J_MINUTE, J_MINUTE_PRUNE;
static long long U_PENDING, U_PART, U_MORE, U_SINGLE;
static long long K_PENDING, K_VOID_PART, K_HOLD_MORE, K_SINGLE, K_POST_PART;
static long long MINUTE_MS, DAY_MS, BPS;
static PyObject *NAME_seq, *NAME_ts_ns, *NAME_command_id, *NAME_next_order_id,
    *NAME_rejected, *NAME_internal_error, *NAME_unknown;

#define NO_OVERDRAFT 1
#define NO_CREDIT_EXCESS 2
#define HOLD_PENDING 0
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

/* A constant the C has compiled in must have the same value in Python. */
#define EXPECT_LL(value, name)                                                                     \
    do {                                                                                           \
        long long _x;                                                                              \
        KEEP_LL(_x, name);                                                                         \
        if (_x != (long long)(value)) {                                                            \
            PyErr_Format(PyExc_AssertionError, "%s is %lld in Python but %lld in _native.c", name, \
                         _x, (long long)(value));                                                  \
            return NULL;                                                                           \
        }                                                                                          \
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
    OFF(BO.minutes, t, "minutes"); OFF(BO.symbol, t, "symbol");
    KEEP(t, "Market");
    MarketType = (PyTypeObject *)t;
    OFF(MO.base, t, "base"); OFF(MO.quote, t, "quote"); OFF(MO.lot, t, "lot"); OFF(MO.unit, t, "unit");
    OFF(MO.config, t, "config"); OFF(MO.escrow_base, t, "escrow_base"); OFF(MO.escrow_quote, t, "escrow_quote");
    OFF(MO.fees_base, t, "fees_base"); OFF(MO.fees_quote, t, "fees_quote");
    OFF(MO.maker_bps, t, "maker_bps"); OFF(MO.taker_bps, t, "taker_bps");
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
    KEEP(t, "Command");
    CommandType = (PyTypeObject *)t;
    OFF(CMD_seq, t, "seq"); OFF(CMD_ts_ns, t, "ts_ns"); OFF(CMD_command_id, t, "command_id");
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
    OFF(MDO.order_id, t, "order_id"); OFF(MDO.price, t, "price_ticks");
    OFF(MDO.qty, t, "qty_lots");
    KEEP(OrderViewType, "OrderView");
    KEEP(OrderUpdatedType, "SpotOrderUpdated");
    KEEP(OrderPlacedType, "OrderPlaced");
    KEEP(TransferType, "Transfer");
    KEEP(AcceptedType, "Accepted");
    KEEP(RejectType, "Reject");
    KEEP(TradeType, "SpotTrade");
    KEEP(S_INSUFFICIENT, "INSUFFICIENT_FUNDS");
    KEEP(S_EXCEEDS_DEBITS, "EXCEEDS_DEBITS");
    KEEP(S_OVERFLOW, "OVERFLOW");
    KEEP_LL(J_FILL, "_J_FILL"); KEEP_LL(J_MINUTE, "_J_MINUTE"); KEEP_LL(J_MINUTE_PRUNE, "_J_MINUTE_PRUNE");
    KEEP_LL(U_SINGLE, "_U_SINGLE"); KEEP_LL(K_SINGLE, "SINGLE"); KEEP_LL(K_POST_PART, "POST_PART");
    KEEP_LL(MINUTE_MS, "MINUTE_MS"); KEEP_LL(DAY_MS, "DAY_MS"); KEEP_LL(BPS, "BPS");
    KEEP_LL(OWNER_MAX, "OWNER_LENGTH_MAX");
    KEEP_LL(TOTAL_MAX_LL, "TOTAL_MAX");
    KEEP_LL(J_LINK, "_J_LINK"); KEEP_LL(J_UNLINK, "_J_UNLINK"); KEEP_LL(J_OPEN, "_J_OPEN");
    KEEP_LL(J_CLOSE, "_J_CLOSE"); KEEP_LL(J_FIELDS, "_J_FIELDS"); KEEP_LL(J_BOOK, "_J_BOOK");
    KEEP_LL(J_NEXT_ID, "_J_NEXT_ID");
    KEEP_LL(U_PENDING, "_U_PENDING"); KEEP_LL(U_PART, "_U_PART"); KEEP_LL(U_MORE, "_U_MORE");
    KEEP_LL(K_PENDING, "PENDING"); KEEP_LL(K_VOID_PART, "VOID_PART"); KEEP_LL(K_HOLD_MORE, "HOLD_MORE");
    EXPECT_LL(NO_OVERDRAFT, "NO_OVERDRAFT"); EXPECT_LL(NO_CREDIT_EXCESS, "NO_CREDIT_EXCESS");
    EXPECT_LL(HOLD_PENDING, "HOLD_PENDING"); EXPECT_LL(1, "HOLD_POSTED"); EXPECT_LL(2, "HOLD_VOIDED");
    EXPECT_LL(BUY, "BUY"); EXPECT_LL(1, "STP_EXPIRE_TAKER"); EXPECT_LL(2, "STP_EXPIRE_MAKER");
    EXPECT_LL(3, "STP_EXPIRE_BOTH");
#define INTERN(var, s) if (!((var) = PyUnicode_InternFromString(s))) return NULL
    INTERN(S_BUY, "BUY"); INTERN(S_SELL, "SELL"); INTERN(S_LIMIT, "LIMIT"); INTERN(S_LIMIT_MAKER, "LIMIT_MAKER");
    INTERN(S_GTC, "GTC"); INTERN(S_NEW, "NEW"); INTERN(S_CANCELED, "CANCELED"); INTERN(S_AMENDED, "AMENDED");
    INTERN(S_HOLD, "hold"); INTERN(S_STP_TAKER, "EXPIRE_TAKER"); INTERN(S_STP_MAKER, "EXPIRE_MAKER");
    INTERN(S_STP_BOTH, "EXPIRE_BOTH"); INTERN(S_IOC, "IOC"); INTERN(S_PARTIAL, "PARTIALLY_FILLED");
    INTERN(S_FILLED, "FILLED"); INTERN(S_EXPIRED, "EXPIRED"); INTERN(S_EXPIRED_IN_MATCH, "EXPIRED_IN_MATCH");
    INTERN(S_TRADE, "TRADE"); INTERN(S_TRADE_CODE, "trade"); INTERN(S_FEE, "fee");
    INTERN(NAME_append, "append"); INTERN(NAME_popleft, "popleft");
    INTERN(NAME_seq, "seq"); INTERN(NAME_ts_ns, "ts_ns"); INTERN(NAME_command_id, "command_id");
    INTERN(NAME_next_order_id, "next_order_id");
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

/* The level at the order's price on `side`, created (and its key inserted) when missing; borrowed. */
static PyObject *level_for(PyObject *side, PyObject *order) {
    int bad = 0;
    long long key = get_ll(side, SO.sign, &bad) * get_ll(order, OO.price, &bad);
    PyObject *levels = SLOT(side, SO.levels), *keys = SLOT(side, SO.keys), *key_obj, *level;
    if (bad) {
        PyErr_SetString(PyExc_AssertionError, "book side or order holds a bad int");
        return NULL;
    }
    /* bids are keyed by the price itself: no new int */
    key_obj = key == get_ll(order, OO.price, &bad) ? ref(SLOT(order, OO.price)) : ll(key);
    if (key_obj == NULL) return NULL;
    level = PyDict_GetItemWithError(levels, key_obj);
    if (level == NULL && !PyErr_Occurred()) {
        Py_ssize_t n = PyList_GET_SIZE(keys);
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
    return level;
fail:
    Py_DECREF(key_obj);
    return NULL;
}

/* The order joins `level` after `prev` (None: first); level totals and the order's link follow. */
static int link_after(PyObject *level, PyObject *order, PyObject *prev) {
    int bad = 0;
    PyObject *nxt = prev == Py_None ? SLOT(level, LO.head) : SLOT(prev, OO.next);
    Py_INCREF(nxt);
    set_slot_ref(order, OO.prev, prev);
    set_slot(order, OO.next, nxt); /* steals */
    if (prev == Py_None) set_slot_ref(level, LO.head, order);
    else set_slot_ref(prev, OO.next, order);
    if (nxt == Py_None) set_slot_ref(level, LO.tail, order);
    else set_slot_ref(nxt, OO.prev, order);
    if (set_ll(level, LO.qty, get_ll(level, LO.qty, &bad) + get_ll(order, OO.remaining, &bad)) < 0) return -1;
    if (set_ll(level, LO.count, get_ll(level, LO.count, &bad) + 1) < 0) return -1;
    set_slot_ref(order, OO.level, level);
    return bad ? (PyErr_SetString(PyExc_AssertionError, "bad level totals"), -1) : 0;
}

/* BookSide.append: queue the order last at its price. */
static int side_append(PyObject *side, PyObject *order) {
    PyObject *level = level_for(side, order);
    return level == NULL ? -1 : link_after(level, order, SLOT(level, LO.tail));
}

/* BookSide.insert_after: put the order back right after `prev` (None: first), undoing an unlink. */
static int side_insert_after(PyObject *side, PyObject *order, PyObject *prev) {
    PyObject *level = level_for(side, order);
    return level == NULL ? -1 : link_after(level, order, prev);
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

/* They run for SpotFast and journal into its C journal (see jledger): a command run in C leaves
 * the ledger's own undo list empty and is undone, ledger and book together, by SpotFast.undo. */
typedef struct SpotFast SpotFast;
static int jledger(SpotFast *self, long long kind, PyObject *a, PyObject *b, long long amount, long long tid,
                   int flags);
static PyObject *current_seq(SpotFast *self);
#define LEDGER_KIND 100 /* journal kinds at and above this are the ledger's `_U_*` + 100 */
#define F_POST 1
#define F_FORGOTTEN 2

static PyObject *transfer(PyObject *seq_obj, long long tid, long long kind, PyObject *dr, PyObject *cr,
                          long long amount, PyObject *code, PyObject *pending_id) {
    PyObject *args[9], *out;
    args[0] = ref(seq_obj); args[1] = ll(tid); args[2] = ll(kind); args[3] = SLOT(dr, AO.id);
    args[4] = SLOT(cr, AO.id); args[5] = SLOT(dr, AO.asset); args[6] = ll(amount); args[7] = code;
    args[8] = pending_id;
    if (args[0] == NULL || args[1] == NULL || args[2] == NULL || args[6] == NULL) out = NULL;
    else out = PyObject_Vectorcall(TransferType, args, 9, NULL);
    Py_XDECREF(args[0]); Py_XDECREF(args[1]); Py_XDECREF(args[2]); Py_XDECREF(args[6]);
    return out;
}

/* Append a transfer event (stolen) to the command's events; `bad` reports a total beyond 64 bits. */
static int ledger_emit(PyObject *ledger, PyObject *ev, int bad) {
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

static long long next_transfer_id(PyObject *ledger, int *bad) {
    long long tid = get_ll(ledger, GO.next_transfer_id, bad);
    if (set_ll(ledger, GO.next_transfer_id, tid + 1) < 0) *bad = 1;
    return tid;
}

/* Post (or release) `amount` of a pending hold, keeping the rest (resolve_part(..., forget=True)).
 * The caller has checked: the hold is pending and 0 < amount <= hold.amount. */
static int resolve_part(SpotFast *self, PyObject *hold, long long amount, int post);

static int resolve_part_in(SpotFast *self, PyObject *ledger, PyObject *hold, long long amount, int post,
                           PyObject *dr, PyObject *cr) {
    int bad = 0;
    PyObject *accounts = SLOT(ledger, GO.accounts), *hold_id = SLOT(hold, HO.id), *ev;
    long long left, tid;
    int done;
    if (dr == NULL) { /* the caller did not look them up */
        dr = PyDict_GetItemWithError(accounts, SLOT(hold, HO.debit));
        cr = PyDict_GetItemWithError(accounts, SLOT(hold, HO.credit));
        if (dr == NULL || cr == NULL) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_AssertionError, "a hold's account is missing");
            return -1;
        }
    }
    Py_INCREF(hold);
    if (set_ll(dr, AO.dpend, get_ll(dr, AO.dpend, &bad) - amount) < 0) goto fail;
    if (set_ll(cr, AO.cpend, get_ll(cr, AO.cpend, &bad) - amount) < 0) goto fail;
    left = get_ll(hold, HO.amount, &bad) - amount;
    if (set_ll(hold, HO.amount, left) < 0) goto fail;
    if (post) {
        if (set_ll(dr, AO.dp, get_ll(dr, AO.dp, &bad) + amount) < 0) goto fail;
        if (set_ll(cr, AO.cp, get_ll(cr, AO.cp, &bad) + amount) < 0) goto fail;
        if (set_ll(hold, HO.posted, get_ll(hold, HO.posted, &bad) + amount) < 0) goto fail;
    }
    done = left == 0;
    if (done) {
        int posted = PyObject_IsTrue(SLOT(hold, HO.posted));
        set_slot_ref(hold, HO.status, posted ? I_ONE : I_TWO);
        if (PyDict_DelItem(SLOT(ledger, GO.holds), hold_id) < 0) goto fail;
    }
    tid = next_transfer_id(ledger, &bad);
    if (jledger(self, U_PART, hold, NULL, amount, tid, (post ? F_POST : 0) | (done ? F_FORGOTTEN : 0)) < 0)
        goto fail;
    ev = transfer(current_seq(self), tid, post ? K_POST_PART : K_VOID_PART, dr, cr, amount, SLOT(hold, HO.code), hold_id);
    if (ledger_emit(ledger, ev, bad) < 0) goto fail;
    Py_DECREF(hold);
    return 0;
fail:
    Py_DECREF(hold);
    return -1;
}

/* Why `amount` more may not leave dr for cr (ledger._limits): 0 when it may, else 1
 * (insufficient_funds), 2 (exceeds_debits) or 3 (overflow, or a total beyond 64 bits). */
static int limits_refuse(PyObject *dr, PyObject *cr, long long amount) {
    int bad = 0;
    long long dflags = get_ll(dr, AO.flags, &bad), cflags = get_ll(cr, AO.flags, &bad);
    __int128 ddp = get_ll(dr, AO.dp, &bad), ddpend = get_ll(dr, AO.dpend, &bad), dcp = get_ll(dr, AO.cp, &bad);
    __int128 ccp = get_ll(cr, AO.cp, &bad), ccpend = get_ll(cr, AO.cpend, &bad), cdp = get_ll(cr, AO.dp, &bad);
    if (bad) return 3;
    if ((dflags & NO_OVERDRAFT) && ddp + ddpend + amount > dcp) return 1;
    if ((cflags & NO_CREDIT_EXCESS) && ccp + ccpend + amount > cdp) return 2;
    if (ddp + ddpend + amount > TOTAL_MAX_LL || ccp + ccpend + amount > TOTAL_MAX_LL) return 3;
    return 0;
}

/* move(dr, cr, amount, code, seq) posted at once; a refusal raises AssertionError(code), as the
 * Python product's `assert not isinstance(out, str), out` does. */
static int move_posted(SpotFast *self, PyObject *ledger, PyObject *dr, PyObject *cr, long long amount,
                       PyObject *code) {
    int bad = 0, refused = limits_refuse(dr, cr, amount);
    PyObject *ev;
    long long tid;
    if (refused) {
        PyErr_SetObject(PyExc_AssertionError,
                        refused == 1 ? S_INSUFFICIENT : refused == 2 ? S_EXCEEDS_DEBITS : S_OVERFLOW);
        return -1;
    }
    tid = next_transfer_id(ledger, &bad);
    if (set_ll(dr, AO.dp, get_ll(dr, AO.dp, &bad) + amount) < 0) return -1;
    if (set_ll(cr, AO.cp, get_ll(cr, AO.cp, &bad) + amount) < 0) return -1;
    if (jledger(self, U_SINGLE, dr, cr, amount, tid, 0) < 0) return -1;
    ev = transfer(current_seq(self), tid, K_SINGLE, dr, cr, amount, code, I_ZERO);
    return ledger_emit(ledger, ev, bad);
}

/* hold_more(): the caller has checked limits_refuse() == 0 and the hold is pending. */
static int hold_more(SpotFast *self, PyObject *ledger, PyObject *hold, PyObject *dr, PyObject *cr,
                     long long amount) {
    int bad = 0;
    PyObject *ev;
    long long tid;
    if (set_ll(dr, AO.dpend, get_ll(dr, AO.dpend, &bad) + amount) < 0) return -1;
    if (set_ll(cr, AO.cpend, get_ll(cr, AO.cpend, &bad) + amount) < 0) return -1;
    if (set_ll(hold, HO.amount, get_ll(hold, HO.amount, &bad) + amount) < 0) return -1;
    tid = next_transfer_id(ledger, &bad);
    if (jledger(self, U_MORE, hold, NULL, amount, tid, 0) < 0) return -1;
    ev = transfer(current_seq(self), tid, K_HOLD_MORE, dr, cr, amount, SLOT(hold, HO.code), SLOT(hold, HO.id));
    return ledger_emit(ledger, ev, bad);
}

/* move(dr, cr, amount, "hold", seq, pending=True): returns the new hold id, or -1. */
static long long hold_new(SpotFast *self, PyObject *ledger, PyObject *dr, PyObject *cr, long long amount) {
    int bad = 0;
    PyObject *ev, *hold, *args[5];
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
    Py_DECREF(args[0]);
    Py_DECREF(args[3]);
    if (jledger(self, U_PENDING, dr, cr, amount, tid, 0) < 0) return -1;
    ev = transfer(current_seq(self), tid, K_PENDING, dr, cr, amount, S_HOLD, I_ZERO);
    return ledger_emit(ledger, ev, bad) < 0 ? -1 : tid;
}

/* ---- SpotFast: the spot product's fast handlers ---------------------------------------------- */

/* The product's undo journal for the commands run in C: the same entries as product.py's
 * (`_J_*`), kept in a reused array rather than as tuples (no allocation per entry). */
#define JOBJ_MAX 12
typedef struct {
    int kind;
    int n;
    PyObject *o[JOBJ_MAX]; /* o[0] is the order (or book, or id); the rest, what the kind saves */
    long long amount, tid; /* ledger kinds: the transfer's amount and id */
    int flags;             /* ledger kinds: F_POST, F_FORGOTTEN */
} JEntry;

struct SpotFast {
    PyObject_HEAD
    PyObject *product;
    PyObject *ledger;
    PyObject *markets, *books, *orders, *by_owner, *by_client_id, *undo, *undo_cb;
    /* symbol -> [market, book, accounts checked]: one lookup for both, and a market's escrow and
     * fee accounts checked once (they are never closed; a restore rebinds) */
    PyObject *by_symbol;
    JEntry *jbuf;
    Py_ssize_t jlen, jcap;
    PyObject *place_slow, *cancel_slow, *amend_slow;
    long long per_owner_max, orders_max, coid_max;
    int emit;
    PyObject *seq_obj; /* the running command's seq (borrowed from the command, for its events) */
};

/* The ledger's hold of an order (borrowed), NULL when it has none (an error set only on failure). */
static inline PyObject *hold_of(SpotFast *self, PyObject *order) {
    return PyDict_GetItemWithError(SLOT(self->ledger, GO.holds), SLOT(order, OO.hold_id));
}

static void jclear(SpotFast *self) {
    while (self->jlen > 0) {
        JEntry *e = &self->jbuf[--self->jlen];
        int i;
        for (i = 0; i < e->n; i++) Py_CLEAR(e->o[i]);
    }
}

/* Record a journal entry: items[0] is the kind (a PyLong), the rest are stolen. */
static int jadd(SpotFast *self, Py_ssize_t n, PyObject **items) {
    Py_ssize_t i;
    long kind = items[0] ? PyLong_AsLong(items[0]) : -1;
    JEntry *e;
    int bad = kind < 0 || n - 1 > JOBJ_MAX;
    for (i = 1; i < n; i++) bad |= items[i] == NULL;
    if (!bad && self->jlen == self->jcap) {
        Py_ssize_t cap = self->jcap ? self->jcap * 2 : 64;
        JEntry *grown = PyMem_Realloc(self->jbuf, cap * sizeof(JEntry));
        if (grown == NULL) {
            PyErr_NoMemory();
            bad = 1;
        } else {
            self->jbuf = grown;
            self->jcap = cap;
        }
    }
    if (bad) {
        for (i = 0; i < n; i++) Py_XDECREF(items[i]);
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_AssertionError, "a bad journal entry");
        return -1;
    }
    Py_DECREF(items[0]);
    e = &self->jbuf[self->jlen++];
    e->kind = (int)kind;
    e->n = (int)(n - 1);
    for (i = 1; i < n; i++) e->o[i - 1] = items[i];
    return 0;
}

/* (_J_FIELDS, order, product._fields(order)) with the eleven values kept inline. */
static int jfields(SpotFast *self, PyObject *o) {
    PyObject *item[13];
    item[0] = ll(J_FIELDS); item[1] = ref(o);
    item[2] = ref(SLOT(o, OO.price)); item[3] = ref(SLOT(o, OO.qty)); item[4] = ref(SLOT(o, OO.remaining));
    item[5] = ref(SLOT(o, OO.executed)); item[6] = ref(SLOT(o, OO.executed_quote));
    item[7] = ref(SLOT(o, OO.hold_id)); item[8] = ref(SLOT(o, OO.status)); item[9] = ref(SLOT(o, OO.created_seq));
    item[10] = ref(SLOT(o, OO.created_ts)); item[11] = ref(SLOT(o, OO.updated_seq));
    item[12] = ref(SLOT(o, OO.updated_ts));
    return jadd(self, 13, item);
}

/* A ledger undo entry (the ledger's (_U_*, a, b, amount, transfer_id) without the tuple). */
static int jledger(SpotFast *self, long long kind, PyObject *a, PyObject *b, long long amount, long long tid,
                   int flags) {
    PyObject *item[3];
    Py_ssize_t n = b == NULL ? 2 : 3;
    item[0] = ll(LEDGER_KIND + kind); item[1] = ref(a);
    if (b != NULL) item[2] = ref(b);
    if (jadd(self, n, item) < 0) return -1;
    self->jbuf[self->jlen - 1].amount = amount;
    self->jbuf[self->jlen - 1].tid = tid;
    self->jbuf[self->jlen - 1].flags = flags;
    return 0;
}

static int resolve_part(SpotFast *self, PyObject *hold, long long amount, int post) {
    return resolve_part_in(self, self->ledger, hold, amount, post, NULL, NULL);
}

static PyObject *current_seq(SpotFast *self) { return self->seq_obj; }

static int fast_traverse(SpotFast *self, visitproc visit, void *arg) {
    Py_ssize_t j;
    int i;
    for (j = 0; j < self->jlen; j++)
        for (i = 0; i < self->jbuf[j].n; i++) Py_VISIT(self->jbuf[j].o[i]);
    Py_VISIT(self->product); Py_VISIT(self->ledger); Py_VISIT(self->markets); Py_VISIT(self->books);
    Py_VISIT(self->orders); Py_VISIT(self->by_owner); Py_VISIT(self->by_client_id); Py_VISIT(self->by_symbol);
    Py_VISIT(self->undo); Py_VISIT(self->undo_cb); Py_VISIT(self->place_slow); Py_VISIT(self->cancel_slow);
    Py_VISIT(self->amend_slow);
    return 0;
}

static int fast_clear(SpotFast *self) {
    jclear(self);
    Py_CLEAR(self->product); Py_CLEAR(self->ledger); Py_CLEAR(self->markets); Py_CLEAR(self->books);
    Py_CLEAR(self->orders); Py_CLEAR(self->by_owner); Py_CLEAR(self->by_client_id); Py_CLEAR(self->by_symbol);
    Py_CLEAR(self->undo); Py_CLEAR(self->undo_cb); Py_CLEAR(self->place_slow); Py_CLEAR(self->cancel_slow);
    Py_CLEAR(self->amend_slow);
    return 0;
}

static void fast_dealloc(SpotFast *self) {
    PyObject_GC_UnTrack(self);
    fast_clear(self);
    PyMem_Free(self->jbuf);
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
        attr_into(&self->undo_cb, (PyObject *)self, "undo", 0, 0) < 0 ||
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
        PyObject *k, *v, *table = PyDict_New();
        if (table == NULL) goto done;
        Py_XSETREF(self->by_symbol, table);
        while (PyDict_Next(self->markets, &pos, &k, &v)) {
            PyObject *book = PyDict_GetItemWithError(self->books, k), *entry;
            int rc;
            if (!Py_IS_TYPE(v, MarketType) || book == NULL || !Py_IS_TYPE(book, BookType)) {
                if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "a market is not a _Market with a Book");
                goto done;
            }
            entry = PyList_New(3);
            if (entry == NULL) goto done;
            PyList_SET_ITEM(entry, 0, ref(v));
            PyList_SET_ITEM(entry, 1, ref(book));
            PyList_SET_ITEM(entry, 2, ref(Py_False));
            rc = PyDict_SetItem(table, k, entry);
            Py_DECREF(entry);
            if (rc < 0) goto done;
        }
    }
    jclear(self);
    rc = 0;
done:
    Py_XDECREF(engine);
    Py_XDECREF(config);
    if (rc < 0) return NULL;
    Py_RETURN_NONE;
}

/* The start of both constructors: setup() done, one positional argument, a fresh object. */
static PyObject *alloc_bound(PyTypeObject *type, PyObject *args, PyObject **arg) {
    if (!ready) {
        PyErr_SetString(PyExc_RuntimeError, "call setup() first");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O", arg)) return NULL;
    return type->tp_alloc(type, 0);
}

static PyObject *fast_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PyObject *product;
    SpotFast *self = (SpotFast *)alloc_bound(type, args, &product);
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

/* Mark the start of a mutating command: the journal restarts and the engine learns how to undo
 * it (engine.on_rollback(self.undo)). */
static int begin(SpotFast *self, PyObject *seq_obj) {
    jclear(self);
    self->seq_obj = seq_obj;
    return PyList_Append(self->undo, self->undo_cb);
}

/* journal (_J_BOOK, book, next_trade_id, update_id) and stamp the book, once per command. */
static int touch_book(SpotFast *self, PyObject *book, PyObject *seq_obj, long long seq) {
    int bad = 0;
    PyObject *item[4];
    if (get_ll(book, BO.update_id, &bad) == seq && !bad) return 0;
    item[0] = ll(J_BOOK); item[1] = ref(book); item[2] = ref(SLOT(book, BO.next_trade_id));
    item[3] = ref(SLOT(book, BO.update_id));
    if (jadd(self, 4, item) < 0) return -1;
    set_slot_ref(book, BO.update_id, seq_obj);
    return 0;
}

static int add2(SpotFast *self, long long kind, PyObject *o) {
    PyObject *item[2];
    item[0] = ll(kind); item[1] = ref(o);
    return jadd(self, 2, item);
}

static int add3(SpotFast *self, long long kind, PyObject *o, PyObject *third /* stolen */) {
    PyObject *item[3];
    item[0] = ll(kind); item[1] = ref(o); item[2] = third;
    return jadd(self, 3, item);
}

/* Emit an execution report; returns OrderPlaced(view, []) or the bare view. */
static PyObject *report(SpotFast *self, PyObject *order, PyObject *seq_obj, PyObject *exec_type, int placed,
                        PyObject *trades) {
    PyObject *view = order_view(order), *args[3], *ev, *out;
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
    args[0] = view; args[1] = trades;
    out = PyObject_Vectorcall(OrderPlacedType, args, 2, NULL);
    Py_DECREF(view);
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

/* A known market whose book is trading: 1, with both borrowed; 0 when not (the Python handler
 * says why); -1 on error. */
static int trading_market(SpotFast *self, PyObject *symbol, PyObject **market, PyObject **book) {
    PyObject *entry = PyDict_GetItemWithError(self->by_symbol, symbol);
    if (entry == NULL) return PyErr_Occurred() ? -1 : 0;
    *market = PyList_GET_ITEM(entry, 0);
    *book = PyList_GET_ITEM(entry, 1);
    return SLOT(*book, BO.trading) == Py_True;
}

/* Have this market's escrow and fee accounts been seen open? (then they stay open) */
static int market_accounts_open(SpotFast *self, PyObject *symbol, PyObject *market) {
    PyObject *entry = PyDict_GetItemWithError(self->by_symbol, symbol), *by_key = SLOT(self->ledger, GO.by_key);
    if (entry == NULL) return PyErr_Occurred() ? -1 : 0;
    if (PyList_GET_ITEM(entry, 2) == Py_True) return 1;
    if (!PyDict_GetItemWithError(by_key, SLOT(market, MO.escrow_base)) ||
        !PyDict_GetItemWithError(by_key, SLOT(market, MO.escrow_quote)) ||
        !PyDict_GetItemWithError(by_key, SLOT(market, MO.fees_base)) ||
        !PyDict_GetItemWithError(by_key, SLOT(market, MO.fees_quote)))
        return PyErr_Occurred() ? -1 : 0;
    Py_INCREF(Py_True);
    PyList_SetItem(entry, 2, Py_True);
    return 1;
}

static int rest(SpotFast *self, PyObject *book, PyObject *order, PyObject *seq_obj, long long seq);
static int match(SpotFast *self, PyObject *book, PyObject *market, PyObject *taker, long long threshold,
                 PyObject *seq_obj, PyObject *ts_obj, long long seq, long long ts, PyObject *trades);
static int finish(SpotFast *self, PyObject *book, PyObject *market, PyObject *order, int stp_stop, PyObject *seq_obj,
                  PyObject *ts_obj, long long seq);

/* A PlaceOrder the C path takes, between its stages (borrowed references). */
typedef struct {
    PyObject *market_str, *market, *book, *owner, *type_str, *tif, *stp_obj, *coid, *pay, *escrow_acc;
    long long side, price, qty, hold_amount;
    int gtc, maker_only, cross;
} Placing;

/* The stages below answer 1: the C path goes on; 0: the Python handler takes the command (it
 * rejects or handles what is unusual); -1: an error is set. */

/* A client order id the C path accepts: empty, or valid and not in use by the owner. */
static int coid_free(SpotFast *self, PyObject *owner, PyObject *coid) {
    Py_ssize_t i, n;
    PyObject *key;
    int dup;
    if (!PyUnicode_CheckExact(coid)) return 0;
    n = PyUnicode_GET_LENGTH(coid);
    if (n == 0) return 1;
    if (n > self->coid_max) return 0;
    for (i = 0; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ_CHAR(coid, i);
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == ':' ||
              c == '/' || c == '_' || c == '-'))
            return 0;
    }
    key = pair(owner, coid);
    if (key == NULL) return -1;
    dup = PyDict_Contains(self->by_client_id, key);
    Py_DECREF(key);
    return dup < 0 ? -1 : !dup;
}

/* Validate, 1: market, owner, side, type and time in force, self-trade mode, client order id. */
static int place_fields(SpotFast *self, PyObject *cmd, Placing *p) {
    PyObject *side_str, *stp_str;
    Py_ssize_t olen;
    if (Py_TYPE(cmd) != (PyTypeObject *)PlaceType) return 0;
    p->market_str = SLOT(cmd, PO.market);
    switch (trading_market(self, p->market_str, &p->market, &p->book)) {
    case -1: return -1;
    case 0: return 0;
    }
    p->owner = SLOT(cmd, PO.owner);
    if (!PyUnicode_CheckExact(p->owner)) return 0;
    olen = PyUnicode_GET_LENGTH(p->owner);
    if (olen == 0 || olen > OWNER_MAX || PyUnicode_READ_CHAR(p->owner, 0) == '@') return 0;
    side_str = SLOT(cmd, PO.side);
    if (str_eq(side_str, S_BUY)) p->side = 0;
    else if (str_eq(side_str, S_SELL)) p->side = 1;
    else return 0;
    p->type_str = SLOT(cmd, PO.order_type);
    p->gtc = p->maker_only = 0;
    if (str_eq(p->type_str, S_LIMIT)) {
        p->tif = SLOT(cmd, PO.tif);
        if (str_eq(p->tif, S_GTC)) p->gtc = 1;
        else if (!str_eq(p->tif, S_IOC)) return 0;
    } else if (str_eq(p->type_str, S_LIMIT_MAKER)) {
        p->tif = S_GTC;
        p->gtc = 1;
        p->maker_only = 1;
    } else {
        return 0;
    }
    stp_str = SLOT(cmd, PO.stp);
    if (str_eq(stp_str, S_STP_MAKER)) p->stp_obj = I_TWO;
    else if (str_eq(stp_str, S_STP_TAKER)) p->stp_obj = I_ONE;
    else if (str_eq(stp_str, S_STP_BOTH)) p->stp_obj = I_THREE;
    else return 0;
    p->coid = SLOT(cmd, PO.coid);
    return coid_free(self, p->owner, p->coid);
}

/* Validate, 2: price and quantity within the market's limits, post-only, room to rest. */
static int place_size(SpotFast *self, PyObject *cmd, Placing *p) {
    PyObject *cfg = SLOT(p->market, MO.config), *key, *owned;
    long long unit;
    int bad = 0;
    __int128 notional;
    p->price = get_ll(cmd, PO.price, &bad);
    p->qty = get_ll(cmd, PO.qty, &bad);
    unit = get_ll(p->market, MO.unit, &bad);
    if (bad || get_ll(cmd, PO.quote_qty, &bad) != 0 || p->price <= 0 || p->price > get_ll(cfg, CO.max_price, &bad) ||
        p->qty < get_ll(cfg, CO.min_qty, &bad) || p->qty > get_ll(cfg, CO.max_qty, &bad) || bad)
        return 0;
    notional = (__int128)p->qty * p->price * unit;
    if (notional < get_ll(cfg, CO.min_notional, &bad) || bad || notional > TOTAL_MAX_LL) return 0;
    p->cross = crosses(p->book, p->side, p->price);
    if (p->cross && p->maker_only) return 0; /* would_take */
    if (p->gtc) { /* it may rest: the per-owner and engine-wide limits */
        key = pair(p->owner, p->market_str);
        if (key == NULL) return -1;
        owned = PyDict_GetItemWithError(self->by_owner, key);
        Py_DECREF(key);
        if (owned == NULL && PyErr_Occurred()) return -1;
        if ((owned != NULL && PyDict_GET_SIZE(owned) >= self->per_owner_max) ||
            PyDict_GET_SIZE(self->orders) >= self->orders_max)
            return 0;
    }
    p->hold_amount = p->side == BUY ? (long long)notional : p->qty * get_ll(p->market, MO.lot, &bad);
    return !bad;
}

/* Validate, 3: the funds to hold, and every account a fill could need already open. */
static int place_funds(SpotFast *self, Placing *p) {
    PyObject *ledger = self->ledger, *by_key = SLOT(ledger, GO.by_key);
    PyObject *pay_asset = SLOT(p->market, p->side == BUY ? MO.quote : MO.base);
    PyObject *receive_asset = SLOT(p->market, p->side == BUY ? MO.base : MO.quote), *escrow_key;
    int bad = 0;
    p->pay = account_of(ledger, p->owner, pay_asset);
    if (p->pay == NULL || p->hold_amount <= 0 || available(p->pay, &bad) < p->hold_amount || bad)
        return PyErr_Occurred() ? -1 : 0; /* insufficient funds (or no account) is the Python handler's reject */
    /* else the Python handler opens them */
    if (account_of(ledger, p->owner, receive_asset) == NULL ||
        market_accounts_open(self, p->market_str, p->market) != 1)
        return PyErr_Occurred() ? -1 : 0;
    escrow_key = SLOT(p->market, p->side == BUY ? MO.escrow_quote : MO.escrow_base);
    p->escrow_acc = PyDict_GetItemWithError(by_key, escrow_key);
    if (p->escrow_acc == NULL || limits_refuse(p->pay, p->escrow_acc, p->hold_amount))
        return PyErr_Occurred() ? -1 : 0;
    return 1;
}

/* The new Order (a new reference), as the Python handler makes it. */
static PyObject *new_order(PyObject *cmd, Placing *p, PyObject *id_obj, PyObject *seq_obj, PyObject *ts_obj) {
    PyObject *order = OrderType->tp_alloc(OrderType, 0);
    if (order == NULL) return NULL;
    SLOT(order, OO.id) = ref(id_obj); SLOT(order, OO.market) = ref(p->market_str);
    SLOT(order, OO.owner) = ref(p->owner);
    SLOT(order, OO.coid) = ref(p->coid); SLOT(order, OO.side) = ref(p->side == BUY ? I_ZERO : I_ONE);
    SLOT(order, OO.order_type) = ref(p->type_str); SLOT(order, OO.tif) = ref(p->tif);
    SLOT(order, OO.stp) = ref(p->stp_obj); SLOT(order, OO.price) = ref(SLOT(cmd, PO.price));
    SLOT(order, OO.qty) = ref(SLOT(cmd, PO.qty)); SLOT(order, OO.quote_qty) = ref(SLOT(cmd, PO.quote_qty));
    SLOT(order, OO.remaining) = ref(SLOT(cmd, PO.qty)); SLOT(order, OO.executed) = ref(I_ZERO);
    SLOT(order, OO.executed_quote) = ref(I_ZERO); SLOT(order, OO.hold_id) = ref(I_ZERO);
    SLOT(order, OO.status) = ref(S_NEW); SLOT(order, OO.created_seq) = ref(seq_obj);
    SLOT(order, OO.created_ts) = ref(ts_obj); SLOT(order, OO.updated_seq) = ref(seq_obj);
    SLOT(order, OO.updated_ts) = ref(ts_obj); SLOT(order, OO.prev) = ref(Py_None);
    SLOT(order, OO.next) = ref(Py_None); SLOT(order, OO.level) = ref(Py_None);
    return order;
}

/* place(): LIMIT GTC or IOC, and LIMIT_MAKER that does not cross (FOK and MARKET orders, which
 * walk the book first, go to Python). In stages: validate -> hold -> match -> report. */
static PyObject *fast_place(SpotFast *self, PyObject *cmd) {
    Placing p;
    PyObject *order, *seq_obj, *ts_obj, *id_obj, *item[2], *out, *trades, *next_obj;
    long long seq, tid;
    int bad = 0, rc;

    rc = place_fields(self, cmd, &p);
    if (rc > 0) rc = place_size(self, cmd, &p);
    if (rc > 0) rc = place_funds(self, &p);
    if (rc < 0) return NULL;
    if (rc == 0) FALLBACK(place_slow);

    /* ---- validated: from here on, state changes (and is journaled) ---- */
    seq_obj = SLOT(cmd, PO.seq);
    ts_obj = SLOT(cmd, PO.ts_ns);
    seq = get_ll(cmd, PO.seq, &bad);
    id_obj = PyObject_GetAttr(self->product, NAME_next_order_id);
    if (id_obj == NULL || begin(self, seq_obj) < 0) goto fail_id;
    item[0] = ll(J_NEXT_ID); item[1] = ref(id_obj);
    if (jadd(self, 2, item) < 0) goto fail_id;
    if ((order = new_order(cmd, &p, id_obj, seq_obj, ts_obj)) == NULL) goto fail_id;
    next_obj = ll(PyLong_AsLongLong(id_obj) + 1);
    rc = next_obj ? PyObject_SetAttr(self->product, NAME_next_order_id, next_obj) : -1;
    Py_XDECREF(next_obj);
    if (rc < 0) goto fail_order;
    tid = hold_new(self, self->ledger, p.pay, p.escrow_acc, p.hold_amount);
    if (tid < 0 || set_ll(order, OO.hold_id, tid) < 0) goto fail_order;
    if ((trades = PyList_New(0)) == NULL) goto fail_order;
    if (p.gtc && !p.cross) {
        /* nothing to match (the common new order): straight onto the book, its hold exact */
        if (rest(self, p.book, order, seq_obj, seq) < 0) goto fail_trades;
    } else {
        int stop = match(self, p.book, p.market, order, p.side == BUY ? -p.price : p.price, seq_obj, ts_obj, seq,
                         get_ll(cmd, PO.ts_ns, &bad), trades);
        if (stop < 0 || finish(self, p.book, p.market, order, stop, seq_obj, ts_obj, seq) < 0) goto fail_trades;
    }
    Py_DECREF(id_obj);
    out = report(self, order, seq_obj, PyList_GET_SIZE(trades) ? S_TRADE : S_NEW, 1, trades);
    Py_DECREF(trades);
    Py_DECREF(order);
    return out;
fail_trades:
    Py_DECREF(trades);
fail_order:
    Py_DECREF(order);
fail_id:
    Py_XDECREF(id_obj);
    return NULL;
}

/* Drop an order from the open-order indexes (orders, by_owner, by_client_id). */
static int unindex(SpotFast *self, PyObject *order) {
    PyObject *key, *owned, *coid = SLOT(order, OO.coid);
    if (PyDict_DelItem(self->orders, SLOT(order, OO.id)) < 0) return -1;
    key = pair(SLOT(order, OO.owner), SLOT(order, OO.market));
    if (key == NULL) return -1;
    owned = PyDict_GetItemWithError(self->by_owner, key);
    if (owned == NULL || PyDict_DelItem(owned, SLOT(order, OO.id)) < 0 ||
        (PyDict_GET_SIZE(owned) == 0 && PyDict_DelItem(self->by_owner, key) < 0)) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_AssertionError, "open order missing from by_owner");
        Py_DECREF(key);
        return -1;
    }
    Py_DECREF(key);
    if (PyUnicode_GET_LENGTH(coid)) {
        int rc;
        key = pair(SLOT(order, OO.owner), coid);
        rc = key ? PyDict_DelItem(self->by_client_id, key) : -1;
        Py_XDECREF(key);
        if (rc < 0) return -1;
    }
    return 0;
}

/* product._forget(): drop a closed order from the open-order indexes (journaled _J_CLOSE). */
static int forget(SpotFast *self, PyObject *order) {
    return unindex(self, order) < 0 ? -1 : add2(self, J_CLOSE, order);
}

/* Enter an order in the open-order indexes. */
static int index_order(SpotFast *self, PyObject *order) {
    PyObject *key, *owned, *coid = SLOT(order, OO.coid), *id_obj = SLOT(order, OO.id);
    if (PyDict_SetItem(self->orders, id_obj, order) < 0) return -1;
    key = pair(SLOT(order, OO.owner), SLOT(order, OO.market));
    if (key == NULL) return -1;
    owned = PyDict_GetItemWithError(self->by_owner, key);
    if (owned == NULL) {
        if (PyErr_Occurred() || (owned = PyDict_New()) == NULL) {
            Py_DECREF(key);
            return -1;
        }
        if (PyDict_SetItem(self->by_owner, key, owned) < 0) {
            Py_DECREF(owned);
            Py_DECREF(key);
            return -1;
        }
        Py_DECREF(owned); /* by_owner holds it */
    }
    Py_DECREF(key);
    if (PyDict_SetItem(owned, id_obj, order) < 0) return -1;
    if (PyUnicode_GET_LENGTH(coid)) {
        int rc;
        key = pair(SLOT(order, OO.owner), coid);
        rc = key ? PyDict_SetItem(self->by_client_id, key, order) : -1;
        Py_XDECREF(key);
        if (rc < 0) return -1;
    }
    return 0;
}

/* product._close_resting(): cancel or expire a resting order: off the book, hold released,
 * report emitted; returns the view (new ref). The command has begun. */
static PyObject *close_resting(SpotFast *self, PyObject *book, PyObject *side, PyObject *order, PyObject *status,
                               PyObject *exec_type, PyObject *seq_obj, PyObject *ts_obj, long long seq) {
    PyObject *prev, *hold;
    long long amount = 0;
    int bad = 0;
    Py_INCREF(order);
    if (jfields(self, order) < 0) goto fail;
    if (touch_book(self, book, seq_obj, seq) < 0) goto fail;
    prev = side_unlink(side, order);
    if (prev == NULL || add3(self, J_UNLINK, order, prev) < 0) goto fail;
    if (forget(self, order) < 0) goto fail;
    hold = hold_of(self, order);
    if (hold == NULL && PyErr_Occurred()) goto fail;
    if (hold != NULL) amount = get_ll(hold, HO.amount, &bad);
    if (hold != NULL && amount) {
        if (bad || get_ll(hold, HO.status, &bad) != HOLD_PENDING) {
            PyErr_SetString(PyExc_AssertionError, "a resting order's hold is not pending");
            goto fail;
        }
        if (resolve_part(self, hold, amount, 0) < 0) goto fail;
    }
    set_slot_ref(order, OO.remaining, I_ZERO);
    set_slot_ref(order, OO.status, status);
    set_slot_ref(order, OO.updated_seq, seq_obj);
    set_slot_ref(order, OO.updated_ts, ts_obj);
    {
        PyObject *out = report(self, order, seq_obj, exec_type, 0, NULL);
        Py_DECREF(order);
        return out;
    }
fail:
    Py_DECREF(order);
    return NULL;
}

/* product._rest(): onto the book, and into the open-order indexes when new there. */
static int rest(SpotFast *self, PyObject *book, PyObject *order, PyObject *seq_obj, long long seq) {
    PyObject *id_obj = SLOT(order, OO.id);
    int bad = 0, known;
    if (touch_book(self, book, seq_obj, seq) < 0) return -1;
    if (side_append(SLOT(book, get_ll(order, OO.side, &bad) == BUY ? BO.bids : BO.asks), order) < 0) return -1;
    if (add2(self, J_LINK, order) < 0) return -1;
    known = PyDict_Contains(self->orders, id_obj);
    if (known < 0) return -1;
    if (known) return 0;
    return index_order(self, order) < 0 ? -1 : add2(self, J_OPEN, order);
}

/* A trade into the open minute `last` (journaled first): high, low, close, volumes, count and
 * last trade id. 0, or -1. */
static int merge_minute(SpotFast *self, PyObject *book, PyObject *last, long long price, long long lots,
                        long long quote, long long trade_id) {
    long long high = PyLong_AsLongLong(PyList_GET_ITEM(last, 2));
    long long low = PyLong_AsLongLong(PyList_GET_ITEM(last, 3));
    PyObject *vals[6], *item[3];
    int i;
    item[0] = ll(J_MINUTE); item[1] = ref(book); item[2] = PyList_GetSlice(last, 0, 10);
    if (jadd(self, 3, item) < 0) return -1;
    vals[0] = price > high ? ll(price) : NULL;
    vals[1] = price < low ? ll(price) : NULL;
    vals[2] = ll(price);
    vals[3] = ll(PyLong_AsLongLong(PyList_GET_ITEM(last, 5)) + lots);
    vals[4] = ll(PyLong_AsLongLong(PyList_GET_ITEM(last, 6)) + quote);
    vals[5] = ll(PyLong_AsLongLong(PyList_GET_ITEM(last, 7)) + 1);
    if (vals[0]) PyList_SetItem(last, 2, vals[0]);
    if (vals[1]) PyList_SetItem(last, 3, vals[1]);
    for (i = 2; i < 6; i++) {
        if (vals[i] == NULL) {
            for (; i < 6; i++) Py_XDECREF(vals[i]);
            return -1;
        }
        PyList_SetItem(last, i + 2, vals[i]); /* close, volume, quote volume, trades */
    }
    if ((vals[0] = ll(trade_id)) == NULL) return -1;
    PyList_SetItem(last, 9, vals[0]);
    return PyErr_Occurred() ? -1 : 0;
}

/* A new minute holding one trade, appended (and journaled). 0, or -1. */
static int open_minute(SpotFast *self, PyObject *book, PyObject *minutes, long long minute, long long price,
                       long long lots, long long quote, long long trade_id) {
    PyObject *m = PyList_New(10), *r, *item[3];
    long long vals[10];
    int i;
    vals[0] = minute; vals[1] = vals[2] = vals[3] = vals[4] = price; vals[5] = lots; vals[6] = quote;
    vals[7] = 1; vals[8] = vals[9] = trade_id;
    if (m == NULL) return -1;
    for (i = 0; i < 10; i++) {
        PyObject *v = ll(vals[i]);
        if (v == NULL) {
            Py_DECREF(m);
            return -1;
        }
        PyList_SET_ITEM(m, i, v);
    }
    r = PyObject_CallMethodOneArg(minutes, NAME_append, m);
    Py_DECREF(m);
    if (r == NULL) return -1;
    Py_DECREF(r);
    item[0] = ll(J_MINUTE); item[1] = ref(book); item[2] = ref(Py_None);
    return jadd(self, 3, item) < 0 ? -1 : 0;
}

/* Drop (journaled) the minutes at or before `cutoff`, oldest first. 0, or -1. */
static int prune_minutes(SpotFast *self, PyObject *book, PyObject *minutes, long long cutoff) {
    PyObject *item[3], *r;
    for (;;) {
        PyObject *first = PySequence_GetItem(minutes, 0);
        long long t0;
        if (first == NULL) return -1;
        t0 = PyLong_AsLongLong(PyList_GET_ITEM(first, 0));
        Py_DECREF(first);
        if (t0 > cutoff) return 0;
        r = PyObject_CallMethodNoArgs(minutes, NAME_popleft);
        if (r == NULL) return -1;
        item[0] = ll(J_MINUTE_PRUNE); item[1] = ref(book); item[2] = r;
        if (jadd(self, 3, item) < 0) return -1;
    }
}

/* product._record(): add a trade to its minute of engine time, keep 24 h of minutes. */
static int record(SpotFast *self, PyObject *book, long long ts_ns, long long price, long long lots, long long quote,
                  long long trade_id) {
    PyObject *minutes = SLOT(book, BO.minutes), *last;
    long long ms = ts_ns / 1000000, minute = ms - ms % MINUTE_MS;
    Py_ssize_t n = PyObject_Length(minutes);
    int rc;
    if (n < 0) return -1;
    if (n) {
        last = PySequence_GetItem(minutes, n - 1);
        if (last == NULL) return -1;
        if (!PyList_CheckExact(last) || PyList_GET_SIZE(last) != 10) {
            Py_DECREF(last);
            PyErr_SetString(PyExc_AssertionError, "a minute is not a list of 10");
            return -1;
        }
        if (PyLong_AsLongLong(PyList_GET_ITEM(last, 0)) == minute) {
            rc = merge_minute(self, book, last, price, lots, quote, trade_id);
            Py_DECREF(last);
            return rc;
        }
        Py_DECREF(last);
    }
    if (open_minute(self, book, minutes, minute, price, lots, quote, trade_id) < 0) return -1;
    return prune_minutes(self, book, minutes, minute - DAY_MS);
}

static int journal_fill(SpotFast *self, PyObject *o, PyObject *lots, PyObject *quote) {
    PyObject *item[7];
    item[0] = ll(J_FILL); item[1] = ref(o); item[2] = ref(lots); item[3] = ref(quote);
    item[4] = ref(SLOT(o, OO.status)); item[5] = ref(SLOT(o, OO.updated_seq)); item[6] = ref(SLOT(o, OO.updated_ts));
    return jadd(self, 7, item);
}

static int add_to(PyObject *o, Py_ssize_t off, long long delta) {
    int bad = 0;
    long long v = get_ll(o, off, &bad);
    if (bad) {
        PyErr_SetString(PyExc_AssertionError, "an order field beyond 64 bits");
        return -1;
    }
    return set_ll(o, off, v + delta);
}

static PyObject *account_key(PyObject *ledger, PyObject *key) {
    PyObject *acc = PyDict_GetItemWithError(SLOT(ledger, GO.by_key), key);
    if (acc == NULL && !PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, key);
    if (acc != NULL && !Py_IS_TYPE(acc, AccountType)) {
        PyErr_SetString(PyExc_TypeError, "not an Account");
        return NULL;
    }
    return acc;
}

/* The money of one trade (product._settle()): both holds post their part into the escrow, which
 * pays each side what it receives less its fee (taker or maker rate, floored). 0, or -1. */
static int settle(SpotFast *self, PyObject *market, int taker_buys, PyObject *buyer, PyObject *seller, long long base,
                  long long quote, long long *buyer_fee, long long *seller_fee) {
    PyObject *ledger = self->ledger, *hold, *acc, *key, *escrow_base, *escrow_quote;
    int bad = 0;
    long long buyer_bps = get_ll(market, taker_buys ? MO.taker_bps : MO.maker_bps, &bad);
    long long seller_bps = get_ll(market, taker_buys ? MO.maker_bps : MO.taker_bps, &bad);
    *buyer_fee = (long long)((__int128)base * buyer_bps / BPS);
    *seller_fee = (long long)((__int128)quote * seller_bps / BPS);
    hold = hold_of(self, seller);
    if (hold == NULL || get_ll(hold, HO.status, &bad) != HOLD_PENDING || get_ll(hold, HO.amount, &bad) < base || bad) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_AssertionError, "the seller's hold cannot pay the fill");
        return -1;
    }
    if (resolve_part(self, hold, base, 1) < 0) return -1;
    hold = hold_of(self, buyer);
    if (hold == NULL || get_ll(hold, HO.status, &bad) != HOLD_PENDING || get_ll(hold, HO.amount, &bad) < quote || bad) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_AssertionError, "the buyer's hold cannot pay the fill");
        return -1;
    }
    if (resolve_part(self, hold, quote, 1) < 0) return -1;
    escrow_base = account_key(ledger, SLOT(market, MO.escrow_base));
    escrow_quote = account_key(ledger, SLOT(market, MO.escrow_quote));
    if (escrow_base == NULL || escrow_quote == NULL) return -1;
    if (base > *buyer_fee) {
        key = pair(SLOT(buyer, OO.owner), SLOT(market, MO.base));
        acc = key ? account_key(ledger, key) : NULL;
        Py_XDECREF(key);
        if (acc == NULL || move_posted(self, ledger, escrow_base, acc, base - *buyer_fee, S_TRADE_CODE) < 0) return -1;
    }
    if (*buyer_fee) {
        acc = account_key(ledger, SLOT(market, MO.fees_base));
        if (acc == NULL || move_posted(self, ledger, escrow_base, acc, *buyer_fee, S_FEE) < 0) return -1;
    }
    if (quote > *seller_fee) {
        key = pair(SLOT(seller, OO.owner), SLOT(market, MO.quote));
        acc = key ? account_key(ledger, key) : NULL;
        Py_XDECREF(key);
        if (acc == NULL || move_posted(self, ledger, escrow_quote, acc, quote - *seller_fee, S_TRADE_CODE) < 0)
            return -1;
    }
    if (*seller_fee) {
        acc = account_key(ledger, SLOT(market, MO.fees_quote));
        if (acc == NULL || move_posted(self, ledger, escrow_quote, acc, *seller_fee, S_FEE) < 0) return -1;
    }
    return 0;
}

/* The SpotTrade of a fill: into `trades` and, when events are on, the engine's events. */
static int report_trade(SpotFast *self, PyObject *book, PyObject *taker, PyObject *maker, int taker_buys,
                        long long trade_id, PyObject *lots_obj, PyObject *quote_obj, PyObject *seq_obj,
                        PyObject *ts_obj, long long buyer_fee, long long seller_fee, PyObject *trades) {
    PyObject *trade, *args[16];
    int rc;
    args[0] = seq_obj; args[1] = ts_obj; args[2] = SLOT(book, BO.symbol); args[3] = ll(trade_id);
    args[4] = SLOT(maker, OO.price); args[5] = lots_obj; args[6] = quote_obj; args[7] = taker_buys ? S_BUY : S_SELL;
    args[8] = SLOT(taker, OO.id); args[9] = SLOT(taker, OO.owner); args[10] = SLOT(maker, OO.id);
    args[11] = SLOT(maker, OO.owner); args[12] = SLOT(maker, OO.remaining); args[13] = SLOT(maker, OO.status);
    args[14] = ll(buyer_fee); args[15] = ll(seller_fee);
    trade = (args[3] && args[14] && args[15]) ? PyObject_Vectorcall(TradeType, args, 16, NULL) : NULL;
    Py_XDECREF(args[3]); Py_XDECREF(args[14]); Py_XDECREF(args[15]);
    rc = (trade == NULL || PyList_Append(trades, trade) < 0 ||
          (self->emit && PyList_Append(SLOT(self->ledger, GO.events), trade) < 0)) ? -1 : 0;
    Py_XDECREF(trade);
    return rc;
}

/* product._fill(): one trade between the taker and a resting maker, at the maker's price: paid
 * (settle), booked, reported. */
static int fill(SpotFast *self, PyObject *book, PyObject *opp, PyObject *market, PyObject *taker, PyObject *maker,
                long long lots, PyObject *seq_obj, PyObject *ts_obj, long long seq, long long ts, PyObject *trades) {
    PyObject *lots_obj = NULL, *quote_obj = NULL;
    int bad = 0, taker_buys = get_ll(taker, OO.side, &bad) == BUY;
    long long price = get_ll(maker, OO.price, &bad), unit = get_ll(market, MO.unit, &bad);
    long long lot = get_ll(market, MO.lot, &bad), trade_id, base, quote, buyer_fee, seller_fee;
    __int128 q = (__int128)lots * price * unit, b = (__int128)lots * lot;
    if (bad || q > TOTAL_MAX_LL || b > TOTAL_MAX_LL) {
        PyErr_SetString(PyExc_AssertionError, "a fill beyond 64 bits");
        return -1;
    }
    quote = (long long)q;
    base = (long long)b;
    if (settle(self, market, taker_buys, taker_buys ? taker : maker, taker_buys ? maker : taker, base, quote,
               &buyer_fee, &seller_fee) < 0)
        return -1;
    if ((lots_obj = ll(lots)) == NULL || (quote_obj = ll(quote)) == NULL) goto fail;
    if (journal_fill(self, taker, lots_obj, quote_obj) < 0 || journal_fill(self, maker, lots_obj, quote_obj) < 0)
        goto fail;
    if (add_to(taker, OO.remaining, -lots) < 0 || add_to(taker, OO.executed, lots) < 0 ||
        add_to(taker, OO.executed_quote, quote) < 0 || add_to(maker, OO.remaining, -lots) < 0 ||
        add_to(maker, OO.executed, lots) < 0 || add_to(maker, OO.executed_quote, quote) < 0 ||
        add_to(SLOT(maker, OO.level), LO.qty, -lots) < 0)
        goto fail;
    set_slot_ref(maker, OO.updated_seq, seq_obj);
    set_slot_ref(maker, OO.updated_ts, ts_obj);
    if (touch_book(self, book, seq_obj, seq) < 0) goto fail;
    trade_id = get_ll(book, BO.next_trade_id, &bad);
    if (bad || set_ll(book, BO.next_trade_id, trade_id + 1) < 0) goto fail;
    if (record(self, book, ts, price, lots, quote, trade_id) < 0) goto fail;
    if (get_ll(maker, OO.remaining, &bad)) {
        set_slot_ref(maker, OO.status, S_PARTIAL);
    } else {
        PyObject *prev;
        set_slot_ref(maker, OO.status, S_FILLED);
        prev = side_unlink(opp, maker);
        if (prev == NULL || add3(self, J_UNLINK, maker, prev) < 0) goto fail;
        if (forget(self, maker) < 0) goto fail;
    }
    if (report_trade(self, book, taker, maker, taker_buys, trade_id, lots_obj, quote_obj, seq_obj, ts_obj, buyer_fee,
                     seller_fee, trades) < 0)
        goto fail;
    Py_DECREF(lots_obj);
    Py_DECREF(quote_obj);
    return bad ? (PyErr_SetString(PyExc_AssertionError, "an order field beyond 64 bits"), -1) : 0;
fail:
    Py_XDECREF(lots_obj);
    Py_XDECREF(quote_obj);
    return -1;
}

/* product._match() without a quote budget: returns 1 when self-trade prevention expired the
 * taker, 0 when done, -1 on error. */
static int match(SpotFast *self, PyObject *book, PyObject *market, PyObject *taker, long long threshold,
                 PyObject *seq_obj, PyObject *ts_obj, long long seq, long long ts, PyObject *trades) {
    int bad = 0, taker_buys = get_ll(taker, OO.side, &bad) == BUY;
    PyObject *opp = SLOT(book, taker_buys ? BO.asks : BO.bids), *keys = SLOT(opp, SO.keys);
    PyObject *levels = SLOT(opp, SO.levels), *owner = SLOT(taker, OO.owner);
    long long stp = get_ll(taker, OO.stp, &bad);
    while (get_ll(taker, OO.remaining, &bad) && PyList_GET_SIZE(keys)) {
        PyObject *key = PyList_GET_ITEM(keys, PyList_GET_SIZE(keys) - 1), *level, *maker;
        if (PyLong_AsLongLong(key) < threshold) break;
        level = PyDict_GetItemWithError(levels, key);
        if (level == NULL) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_AssertionError, "a key without a level");
            return -1;
        }
        Py_INCREF(level);
        maker = ref(SLOT(level, LO.head));
        while (maker != Py_None && get_ll(taker, OO.remaining, &bad)) {
            PyObject *nxt = ref(SLOT(maker, OO.next));
            long long t_rem = get_ll(taker, OO.remaining, &bad), m_rem = get_ll(maker, OO.remaining, &bad);
            long long lots = t_rem < m_rem ? t_rem : m_rem;
            int rc = 0;
            if (str_eq(SLOT(maker, OO.owner), owner)) {
                if (stp != 1) { /* not EXPIRE_TAKER: the maker goes */
                    PyObject *view = close_resting(self, book, opp, maker, S_EXPIRED_IN_MATCH, S_EXPIRED, seq_obj,
                                                   ts_obj, seq);
                    if (view == NULL) rc = -1;
                    Py_XDECREF(view);
                }
                if (rc == 0 && stp != 2) rc = 1; /* not EXPIRE_MAKER: the taker goes */
            } else {
                rc = fill(self, book, opp, market, taker, maker, lots, seq_obj, ts_obj, seq, ts, trades);
            }
            Py_DECREF(maker);
            maker = nxt;
            if (rc) {
                Py_DECREF(maker);
                Py_DECREF(level);
                return rc;
            }
        }
        Py_DECREF(maker);
        Py_DECREF(level);
        if (bad) break;
    }
    if (bad) {
        PyErr_SetString(PyExc_AssertionError, "an order field beyond 64 bits");
        return -1;
    }
    return 0;
}

/* product._finish(): rest the order (its buy hold trimmed to what the rest needs) or close it. */
static int finish(SpotFast *self, PyObject *book, PyObject *market, PyObject *order, int stp_stop, PyObject *seq_obj,
                  PyObject *ts_obj, long long seq) {
    int bad = 0;
    long long remaining = get_ll(order, OO.remaining, &bad);
    PyObject *hold;
    set_slot_ref(order, OO.updated_seq, seq_obj);
    set_slot_ref(order, OO.updated_ts, ts_obj);
    if (remaining == 0) {
        set_slot_ref(order, OO.status, S_FILLED);
    } else if (stp_stop) {
        set_slot_ref(order, OO.status, S_EXPIRED_IN_MATCH);
    } else if (!str_eq(SLOT(order, OO.tif), S_GTC)) {
        set_slot_ref(order, OO.status, S_EXPIRED);
    } else {
        set_slot_ref(order, OO.status, get_ll(order, OO.executed, &bad) ? S_PARTIAL : S_NEW);
        if (get_ll(order, OO.side, &bad) == BUY) {
            long long surplus;
            hold = hold_of(self, order);
            if (hold == NULL) {
                if (!PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, SLOT(order, OO.hold_id));
                return -1;
            }
            surplus = get_ll(hold, HO.amount, &bad) -
                      remaining * get_ll(order, OO.price, &bad) * get_ll(market, MO.unit, &bad);
            if (surplus && resolve_part(self, hold, surplus, 0) < 0) return -1;
        }
        return bad ? (PyErr_SetString(PyExc_AssertionError, "beyond 64 bits"), -1) : rest(self, book, order, seq_obj, seq);
    }
    set_slot_ref(order, OO.remaining, I_ZERO);
    hold = hold_of(self, order);
    if (hold == NULL && PyErr_Occurred()) return -1;
    if (hold != NULL) {
        long long amount = get_ll(hold, HO.amount, &bad);
        if (amount && resolve_part(self, hold, amount, 0) < 0) return -1;
    }
    return bad ? (PyErr_SetString(PyExc_AssertionError, "beyond 64 bits"), -1) : 0;
}

static PyObject *fast_cancel(SpotFast *self, PyObject *cmd) {
    PyObject *market_str, *order, *book, *owner, *hold, *side;
    int bad = 0;
    long long seq, amount = 0;
    if (Py_TYPE(cmd) != (PyTypeObject *)CancelType) FALLBACK(cancel_slow);
    market_str = SLOT(cmd, XO.market);
    owner = SLOT(cmd, XO.owner);
    {
        PyObject *entry = PyDict_GetItemWithError(self->by_symbol, market_str); /* [market, book, ...] */
        if (entry == NULL) {
            if (PyErr_Occurred()) return NULL;
            FALLBACK(cancel_slow); /* unknown market */
        }
        book = PyList_GET_ITEM(entry, 1);
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
    hold = hold_of(self, order);
    if (hold == NULL && PyErr_Occurred()) return NULL;
    if (hold != NULL) {
        amount = get_ll(hold, HO.amount, &bad);
        if (amount && get_ll(hold, HO.status, &bad) != HOLD_PENDING) bad = 1;
    }
    if (bad) FALLBACK(cancel_slow); /* cannot happen on a consistent book: Python asserts */
    side = SLOT(book, get_ll(order, OO.side, &bad) == BUY ? BO.bids : BO.asks);
    if (begin(self, SLOT(cmd, XO.seq)) < 0) return NULL;
    return close_resting(self, book, side, order, S_CANCELED, S_CANCELED, SLOT(cmd, XO.seq), SLOT(cmd, XO.ts_ns), seq);
}

/* An AmendOrder the C path takes, between its stages (borrowed references). */
typedef struct {
    PyObject *market_str, *market, *book, *order, *hold, *pay, *cr, *seq_obj, *ts_obj;
    long long price, qty, oqty, side, remaining, need, held, seq;
    int cross;
} Amending;

/* Validate, 1 (answers as the place stages do): the order by id, the new price and quantity,
 * post-only, and what its hold must become. */
static int amend_check(SpotFast *self, PyObject *cmd, Amending *a) {
    PyObject *cfg;
    long long unit, executed;
    int bad = 0;
    __int128 notional;
    if (Py_TYPE(cmd) != (PyTypeObject *)AmendType) return 0;
    a->market_str = SLOT(cmd, MDO.market);
    switch (trading_market(self, a->market_str, &a->market, &a->book)) {
    case -1: return -1;
    case 0: return 0;
    }
    if (get_ll(cmd, MDO.order_id, &bad) == 0 || bad) return 0; /* by client id: Python */
    a->order = PyDict_GetItemWithError(self->orders, SLOT(cmd, MDO.order_id));
    if (a->order == NULL || !str_eq(SLOT(a->order, OO.owner), SLOT(cmd, MDO.owner)) ||
        !str_eq(SLOT(a->order, OO.market), a->market_str))
        return PyErr_Occurred() ? -1 : 0;
    cfg = SLOT(a->market, MO.config);
    a->price = get_ll(cmd, MDO.price, &bad);
    if (a->price == 0) a->price = get_ll(a->order, OO.price, &bad);
    a->qty = get_ll(cmd, MDO.qty, &bad);
    a->oqty = get_ll(a->order, OO.qty, &bad);
    if (a->qty == 0) a->qty = a->oqty;
    executed = get_ll(a->order, OO.executed, &bad);
    unit = get_ll(a->market, MO.unit, &bad);
    if (bad || a->price <= 0 || a->price > get_ll(cfg, CO.max_price, &bad) || a->qty < get_ll(cfg, CO.min_qty, &bad) ||
        a->qty > get_ll(cfg, CO.max_qty, &bad) || a->qty <= executed || bad)
        return 0;
    notional = (__int128)a->qty * a->price * unit;
    if (notional < get_ll(cfg, CO.min_notional, &bad) || bad) return 0;
    a->side = get_ll(a->order, OO.side, &bad);
    a->cross = crosses(a->book, a->side, a->price);
    if (a->cross && str_eq(SLOT(a->order, OO.order_type), S_LIMIT_MAKER)) return 0; /* would_take */
    a->remaining = a->qty - executed;
    if (a->side == BUY) {
        __int128 n = (__int128)a->remaining * a->price * unit;
        if (n > TOTAL_MAX_LL) return 0;
        a->need = (long long)n;
    } else {
        a->need = a->remaining * get_ll(a->market, MO.lot, &bad);
    }
    return !bad;
}

/* Validate, 2: the order's pending hold, and the funds for a larger one. */
static int amend_funds(SpotFast *self, PyObject *cmd, Amending *a) {
    PyObject *accounts = SLOT(self->ledger, GO.accounts);
    int bad = 0;
    a->hold = hold_of(self, a->order);
    if (a->hold == NULL || get_ll(a->hold, HO.status, &bad) != HOLD_PENDING || bad) return PyErr_Occurred() ? -1 : 0;
    a->held = get_ll(a->hold, HO.amount, &bad);
    a->pay = a->cr = NULL;
    if (a->need != a->held) { /* the hold changes: its accounts are needed */
        a->pay = PyDict_GetItemWithError(accounts, SLOT(a->hold, HO.debit));
        a->cr = PyDict_GetItemWithError(accounts, SLOT(a->hold, HO.credit));
        if (a->pay == NULL || a->cr == NULL) return PyErr_Occurred() ? -1 : 0;
    }
    if (bad) return 0;
    if (a->need > a->held && (available(a->pay, &bad) < a->need - a->held ||
                              limits_refuse(a->pay, a->cr, a->need - a->held) || bad))
        return 0;
    a->seq_obj = SLOT(cmd, MDO.seq);
    a->ts_obj = SLOT(cmd, MDO.ts_ns);
    a->seq = get_ll(cmd, MDO.seq, &bad);
    return !bad;
}

/* Smaller (or equal) at the same price: keeps its place in the queue. 0, or -1 on error. */
static int amend_in_place(SpotFast *self, Amending *a, int *bad) {
    PyObject *order = a->order, *level = SLOT(order, OO.level);
    long long delta = a->oqty - a->qty;
    if (delta == 0) return 0;
    if (jfields(self, order) < 0 || touch_book(self, a->book, a->seq_obj, a->seq) < 0) return -1;
    if (set_ll(order, OO.qty, a->qty) < 0) return -1;
    if (set_ll(order, OO.remaining, get_ll(order, OO.remaining, bad) - delta) < 0) return -1;
    if (set_ll(level, LO.qty, get_ll(level, LO.qty, bad) - delta) < 0) return -1;
    set_slot_ref(order, OO.updated_seq, a->seq_obj);
    set_slot_ref(order, OO.updated_ts, a->ts_obj);
    return resolve_part_in(self, self->ledger, a->hold, a->held - a->need, 0, a->pay, a->cr) < 0 ? -1 : 0;
}

/* A new price or a larger quantity: off its queue, hold resized, then to the back of its (new)
 * level, or matched first when it crosses (`*trades` made, `*exec_type` TRADE if it traded). */
static int amend_requeue(SpotFast *self, PyObject *cmd, Amending *a, PyObject **trades, PyObject **exec_type,
                         int *bad) {
    PyObject *order = a->order, *book_side, *prev;
    int stop;
    if (touch_book(self, a->book, a->seq_obj, a->seq) < 0) return -1;
    book_side = SLOT(a->book, a->side == BUY ? BO.bids : BO.asks);
    prev = side_unlink(book_side, order);
    if (prev == NULL || add3(self, J_UNLINK, order, prev) < 0) return -1;
    if (jfields(self, order) < 0) return -1;
    if (a->need < a->held) {
        if (resolve_part_in(self, self->ledger, a->hold, a->held - a->need, 0, a->pay, a->cr) < 0) return -1;
    } else if (a->need > a->held) {
        if (hold_more(self, self->ledger, a->hold, a->pay, a->cr, a->need - a->held) < 0) return -1;
    }
    if (set_ll(order, OO.price, a->price) < 0 || set_ll(order, OO.qty, a->qty) < 0 ||
        set_ll(order, OO.remaining, a->remaining) < 0)
        return -1;
    set_slot_ref(order, OO.created_seq, a->seq_obj);
    set_slot_ref(order, OO.created_ts, a->ts_obj);
    if (!a->cross) {
        /* the common move: to the back of its new level (status, open quantity, hold right) */
        set_slot_ref(order, OO.updated_seq, a->seq_obj);
        set_slot_ref(order, OO.updated_ts, a->ts_obj);
        return (side_append(book_side, order) < 0 || add2(self, J_LINK, order) < 0) ? -1 : 0;
    }
    if ((*trades = PyList_New(0)) == NULL) return -1;
    stop = match(self, a->book, a->market, order, a->side == BUY ? -a->price : a->price, a->seq_obj, a->ts_obj,
                 a->seq, get_ll(cmd, MDO.ts_ns, bad), *trades);
    if (stop < 0 || finish(self, a->book, a->market, order, stop, a->seq_obj, a->ts_obj, a->seq) < 0) return -1;
    if (get_ll(order, OO.remaining, bad) == 0 && forget(self, order) < 0) return -1;
    if (PyList_GET_SIZE(*trades)) *exec_type = S_TRADE;
    return 0;
}

/* amend(): a new price or quantity (a crossing one matches; post-only orders that would cross, and
 * amends by client order id, go to Python). In stages: validate -> re-hold -> (keep its place |
 * requeue, match) -> report. */
static PyObject *fast_amend(SpotFast *self, PyObject *cmd) {
    Amending a;
    PyObject *trades = NULL, *exec_type = S_AMENDED, *out = NULL;
    int bad = 0, rc;

    rc = amend_check(self, cmd, &a);
    if (rc > 0) rc = amend_funds(self, cmd, &a);
    if (rc < 0) return NULL;
    if (rc == 0) FALLBACK(amend_slow);

    /* ---- validated: from here on, state changes (and is journaled) ---- */
    Py_INCREF(a.order);
    Py_INCREF(a.hold);
    if (begin(self, a.seq_obj) < 0) goto done;
    if (a.price == get_ll(a.order, OO.price, &bad) && a.qty <= a.oqty) rc = amend_in_place(self, &a, &bad);
    else rc = amend_requeue(self, cmd, &a, &trades, &exec_type, &bad);
    if (rc < 0) goto done;
    if (bad) {
        PyErr_SetString(PyExc_AssertionError, "order fields beyond 64 bits");
        goto done;
    }
    if (trades == NULL && (trades = PyList_New(0)) == NULL) goto done;
    out = report(self, a.order, a.seq_obj, exec_type, 1, trades);
done:
    Py_XDECREF(trades);
    Py_DECREF(a.order);
    Py_DECREF(a.hold);
    return out;
}

/* The side an order belongs to: books[order.market].side(order.side) (borrowed). */
static PyObject *side_of(SpotFast *self, PyObject *o) {
    int bad = 0;
    PyObject *book = PyDict_GetItemWithError(self->books, SLOT(o, OO.market));
    if (book == NULL) {
        if (!PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, SLOT(o, OO.market));
        return NULL;
    }
    return SLOT(book, get_ll(o, OO.side, &bad) == BUY ? BO.bids : BO.asks);
}

/* A minute merged into (put its fields back) or opened (drop it). 0, or -1. */
static int undo_minute(JEntry *e) {
    PyObject *minutes = SLOT(e->o[0], BO.minutes), *r;
    if (e->o[1] == Py_None) {
        r = PyObject_CallMethod(minutes, "pop", NULL);
    } else {
        Py_ssize_t n = PyObject_Length(minutes);
        PyObject *last = n > 0 ? PySequence_GetItem(minutes, n - 1) : NULL;
        int rc = last ? PyList_SetSlice(last, 0, PyList_GET_SIZE(last), e->o[1]) : -1;
        Py_XDECREF(last);
        r = rc < 0 ? NULL : ref(Py_None);
    }
    if (r == NULL) return -1;
    Py_DECREF(r);
    return 0;
}

/* ledger._undo_to() for one of its entries kept in this journal. 0, or -1. */
static int undo_ledger_entry(SpotFast *self, JEntry *e, int *bad) {
    PyObject *o = e->o[0];
    long long k = e->kind - LEDGER_KIND, amount = e->amount;
    PyObject *ledger = self->ledger, *accounts = SLOT(ledger, GO.accounts), *dr = o, *cr = e->o[1];
    if (k == U_PART || k == U_MORE) {
        dr = PyDict_GetItemWithError(accounts, SLOT(o, HO.debit));
        cr = PyDict_GetItemWithError(accounts, SLOT(o, HO.credit));
        if (dr == NULL || cr == NULL) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_AssertionError, "a hold's account is missing");
            return -1;
        }
    }
    if (k == U_SINGLE) {
        if (set_ll(dr, AO.dp, get_ll(dr, AO.dp, bad) - amount) < 0 ||
            set_ll(cr, AO.cp, get_ll(cr, AO.cp, bad) - amount) < 0)
            return -1;
    } else if (k == U_PENDING) {
        PyObject *tid = ll(e->tid);
        int rc = tid ? PyDict_DelItem(SLOT(ledger, GO.holds), tid) : -1;
        Py_XDECREF(tid);
        if (rc < 0 || set_ll(dr, AO.dpend, get_ll(dr, AO.dpend, bad) - amount) < 0 ||
            set_ll(cr, AO.cpend, get_ll(cr, AO.cpend, bad) - amount) < 0)
            return -1;
    } else if (k == U_MORE) {
        if (set_ll(dr, AO.dpend, get_ll(dr, AO.dpend, bad) - amount) < 0 ||
            set_ll(cr, AO.cpend, get_ll(cr, AO.cpend, bad) - amount) < 0 ||
            set_ll(o, HO.amount, get_ll(o, HO.amount, bad) - amount) < 0)
            return -1;
    } else if (k == U_PART) {
        if (set_ll(dr, AO.dpend, get_ll(dr, AO.dpend, bad) + amount) < 0 ||
            set_ll(cr, AO.cpend, get_ll(cr, AO.cpend, bad) + amount) < 0 ||
            set_ll(o, HO.amount, get_ll(o, HO.amount, bad) + amount) < 0)
            return -1;
        if (e->flags & F_POST) {
            if (set_ll(dr, AO.dp, get_ll(dr, AO.dp, bad) - amount) < 0 ||
                set_ll(cr, AO.cp, get_ll(cr, AO.cp, bad) - amount) < 0 ||
                set_ll(o, HO.posted, get_ll(o, HO.posted, bad) - amount) < 0)
                return -1;
        }
        set_slot_ref(o, HO.status, I_ZERO);
        if ((e->flags & F_FORGOTTEN) && PyDict_SetItem(SLOT(ledger, GO.holds), SLOT(o, HO.id), o) < 0) return -1;
    } else {
        PyErr_Format(PyExc_AssertionError, "unknown ledger journal entry %lld", k);
        return -1;
    }
    return set_ll(ledger, GO.next_transfer_id, e->tid) < 0 ? -1 : 0;
}

/* product._undo() for the journal kept here: replay it backwards. */
static int undo_entry(SpotFast *self, JEntry *e) {
    PyObject *o = e->o[0], *side, *level, *r;
    int bad = 0;
    if (e->kind == J_FILL) {
        long long lots = PyLong_AsLongLong(e->o[1]), quote = PyLong_AsLongLong(e->o[2]);
        if (set_ll(o, OO.remaining, get_ll(o, OO.remaining, &bad) + lots) < 0 ||
            set_ll(o, OO.executed, get_ll(o, OO.executed, &bad) - lots) < 0 ||
            set_ll(o, OO.executed_quote, get_ll(o, OO.executed_quote, &bad) - quote) < 0)
            return -1;
        set_slot_ref(o, OO.status, e->o[3]);
        set_slot_ref(o, OO.updated_seq, e->o[4]);
        set_slot_ref(o, OO.updated_ts, e->o[5]);
        level = SLOT(o, OO.level);
        if (level != Py_None && set_ll(level, LO.qty, get_ll(level, LO.qty, &bad) + lots) < 0) return -1;
    } else if (e->kind == J_LINK) {
        if ((side = side_of(self, o)) == NULL || (r = side_unlink(side, o)) == NULL) return -1;
        Py_DECREF(r);
    } else if (e->kind == J_UNLINK) {
        if ((side = side_of(self, o)) == NULL || side_insert_after(side, o, e->o[1]) < 0) return -1;
    } else if (e->kind == J_OPEN) {
        if (unindex(self, o) < 0) return -1;
    } else if (e->kind == J_CLOSE) {
        if (index_order(self, o) < 0) return -1;
    } else if (e->kind == J_FIELDS) {
        static const Py_ssize_t *offs[11] = {&OO.price, &OO.qty, &OO.remaining, &OO.executed, &OO.executed_quote,
                                             &OO.hold_id, &OO.status, &OO.created_seq, &OO.created_ts,
                                             &OO.updated_seq, &OO.updated_ts};
        int i;
        level = SLOT(o, OO.level);
        if (level != Py_None &&
            set_ll(level, LO.qty,
                   get_ll(level, LO.qty, &bad) + PyLong_AsLongLong(e->o[3]) - get_ll(o, OO.remaining, &bad)) < 0)
            return -1;
        for (i = 0; i < 11; i++) set_slot_ref(o, *offs[i], e->o[i + 1]);
    } else if (e->kind == J_MINUTE) {
        if (undo_minute(e) < 0) return -1;
    } else if (e->kind == J_MINUTE_PRUNE) {
        r = PyObject_CallMethod(SLOT(o, BO.minutes), "appendleft", "O", e->o[1]);
        if (r == NULL) return -1;
        Py_DECREF(r);
    } else if (e->kind == J_BOOK) {
        set_slot_ref(o, BO.next_trade_id, e->o[1]);
        set_slot_ref(o, BO.update_id, e->o[2]);
    } else if (e->kind == J_NEXT_ID) {
        if (PyObject_SetAttr(self->product, NAME_next_order_id, o) < 0) return -1;
    } else if (e->kind >= LEDGER_KIND) {
        if (undo_ledger_entry(self, e, &bad) < 0) return -1;
    } else {
        PyErr_Format(PyExc_AssertionError, "unknown journal entry %d", e->kind);
        return -1;
    }
    return bad ? (PyErr_SetString(PyExc_AssertionError, "beyond 64 bits in undo"), -1) : 0;
}

static PyObject *fast_undo(SpotFast *self, PyObject *unused) {
    while (self->jlen > 0) {
        JEntry *e = &self->jbuf[self->jlen - 1];
        int i, rc = undo_entry(self, e);
        self->jlen--;
        for (i = 0; i < e->n; i++) Py_CLEAR(e->o[i]);
        if (rc < 0) return NULL;
    }
    Py_RETURN_NONE;
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
    {"undo", (PyCFunction)fast_undo, METH_NOARGS, "Undo the last command run here (the engine's rollback)."},
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

/* ---- Dedup: the engine's dedup table (dedup.py's DedupTable, in C) -------------------------- */

/* Open addressing with linear probing; each slot keeps the key's hash, so a miss usually costs one
 * cache line. Arrival order is a ring of (ts, id). Keys are str (command ids). */
typedef struct {
    Py_hash_t hash;
    PyObject *key;   /* NULL: empty */
    PyObject *value;
} DSlot;

/* `reserve(n)` sizes for n entries, at most this many (2^24 slots of 24 B and a ring of 2^23, about
 * 530 MB of address space, touched only as entries arrive); a larger limit still works, by growing. */
#define DEDUP_RESERVE_MAX (1LL << 22)
/* A reserved table starts small like any other (an engine in a test holds a few entries, and a
 * GC pass or a restore walks every slot) and jumps to its reserved size when it first grows past
 * this many entries: one rehash of these, instead of one per doubling up to a million. */
#define DEDUP_JUMP_ENTRIES 32768

typedef struct {
    PyObject_HEAD
    DSlot *slots;
    size_t mask; /* capacity - 1 (a power of two), 0 before the first add */
    Py_ssize_t used;
    long long *ring_ts;
    PyObject **ring_ids; /* strong references */
    size_t ring_cap;     /* a power of two */
    size_t head;
    Py_ssize_t count;
    size_t reserved_slots, reserved_ring; /* the sizes `reserve` asked for (0: none) */
} Dedup;

static PyTypeObject DedupType;

/* The slot holding `key`, or the empty slot where it would go. */
static DSlot *dedup_find(Dedup *d, PyObject *key, Py_hash_t h) {
    size_t i = (size_t)h & d->mask;
    for (;;) {
        DSlot *slot = &d->slots[i];
        if (slot->key == NULL || (slot->hash == h && str_eq(slot->key, key))) return slot;
        i = (i + 1) & d->mask;
    }
}

static PyObject *dedup_get_c(Dedup *d, PyObject *key) {
    Py_hash_t h;
    DSlot *slot;
    if (d->used == 0) return NULL;
    if ((h = PyObject_Hash(key)) == -1) return NULL;
    slot = dedup_find(d, key, h);
    return slot->key ? slot->value : NULL; /* borrowed */
}

/* Rehash into `cap` slots (a power of two that holds every entry at the load limit). */
static int dedup_resize(Dedup *d, size_t cap) {
    size_t i;
    DSlot *old = d->slots, *slots = PyMem_Calloc(cap, sizeof(DSlot));
    size_t old_cap = d->mask ? d->mask + 1 : 0;
    if (slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    d->slots = slots;
    d->mask = cap - 1;
    for (i = 0; i < old_cap; i++)
        if (old[i].key != NULL) *dedup_find(d, old[i].key, old[i].hash) = old[i];
    PyMem_Free(old);
    return 0;
}

static int dedup_grow(Dedup *d) {
    size_t cap = d->mask ? (d->mask + 1) * 2 : 1024;
    if (d->used >= DEDUP_JUMP_ENTRIES && d->reserved_slots > cap) cap = d->reserved_slots;
    return dedup_resize(d, cap);
}

/* Reallocate the ring to `cap` entries (a power of two, at least count). */
static int ring_resize(Dedup *d, size_t cap) {
    size_t i;
    long long *ts = PyMem_Malloc(cap * sizeof(long long));
    PyObject **ids = PyMem_Malloc(cap * sizeof(PyObject *));
    if (ts == NULL || ids == NULL) {
        PyMem_Free(ts);
        PyMem_Free(ids);
        PyErr_NoMemory();
        return -1;
    }
    for (i = 0; i < (size_t)d->count; i++) {
        size_t j = (d->head + i) & (d->ring_cap - 1);
        ts[i] = d->ring_ts[j];
        ids[i] = d->ring_ids[j];
    }
    PyMem_Free(d->ring_ts);
    PyMem_Free(d->ring_ids);
    d->ring_ts = ts;
    d->ring_ids = ids;
    d->ring_cap = cap;
    d->head = 0;
    return 0;
}

static int ring_grow(Dedup *d) {
    size_t cap = d->ring_cap ? d->ring_cap * 2 : 1024;
    if (d->count >= DEDUP_JUMP_ENTRIES && d->reserved_ring > cap) cap = d->reserved_ring;
    return ring_resize(d, cap);
}

/* Size for `entries`: past DEDUP_JUMP_ENTRIES the table and ring grow straight to that size, and
 * then never grow (or rehash) again below it. */
static void dedup_reserve_c(Dedup *d, Py_ssize_t entries) {
    size_t slots = 1024, ring = 1024;
    while (slots < (size_t)entries * 2 + 2) slots *= 2; /* the load limit is one half */
    while (ring < (size_t)entries + 1) ring *= 2;       /* the engine evicts at entries + 1 */
    d->reserved_slots = slots;
    d->reserved_ring = ring;
}

/* Store a new entry (the key must not be there). */
static int dedup_add_c(Dedup *d, PyObject *key, long long ts_ns, PyObject *value) {
    Py_hash_t h;
    DSlot *slot;
    if (!PyUnicode_CheckExact(key)) {
        PyErr_SetString(PyExc_TypeError, "command ids are str");
        return -1;
    }
    if ((size_t)(d->used + 1) * 2 > (d->mask ? d->mask + 1 : 0) && dedup_grow(d) < 0) return -1;
    if ((size_t)d->count == d->ring_cap && ring_grow(d) < 0) return -1;
    if ((h = PyObject_Hash(key)) == -1) return -1;
    slot = dedup_find(d, key, h);
    if (slot->key != NULL) {
        PyErr_SetString(PyExc_AssertionError, "command id already in the dedup table");
        return -1;
    }
    slot->hash = h;
    slot->key = ref(key);
    slot->value = ref(value);
    d->used++;
    {
        size_t j = (d->head + (size_t)d->count) & (d->ring_cap - 1);
        d->ring_ts[j] = ts_ns;
        d->ring_ids[j] = ref(key);
        d->count++;
    }
    return 0;
}

/* Empty slot i and shift the run after it back (linear probing needs no tombstones). */
static void dedup_remove_slot(Dedup *d, size_t i) {
    size_t j = i;
    DSlot *slots = d->slots;
    Py_DECREF(slots[i].key);
    Py_DECREF(slots[i].value);
    for (;;) {
        size_t k;
        int stays;
        j = (j + 1) & d->mask;
        if (slots[j].key == NULL) break;
        k = (size_t)slots[j].hash & d->mask; /* where it wants to be */
        stays = i < j ? (i < k && k <= j) : (i < k || k <= j);
        if (!stays) {
            slots[i] = slots[j];
            i = j;
        }
    }
    slots[i].key = NULL;
    slots[i].value = NULL;
    d->used--;
}

/* Drop entries, oldest first, while older than oldest_ns or more than limit. */
static int dedup_evict_c(Dedup *d, long long oldest_ns, long long limit) {
    while (d->count > 0 && (d->count > limit || d->ring_ts[d->head] < oldest_ns)) {
        PyObject *key = d->ring_ids[d->head];
        Py_hash_t h = PyObject_Hash(key);
        DSlot *slot;
        if (h == -1) return -1;
        slot = dedup_find(d, key, h);
        if (slot->key == NULL) {
            PyErr_SetString(PyExc_AssertionError, "a dedup id missing from its table");
            return -1;
        }
        dedup_remove_slot(d, (size_t)(slot - d->slots));
        d->head = (d->head + 1) & (d->ring_cap - 1);
        d->count--;
        Py_DECREF(key);
    }
    return 0;
}

static void dedup_clear_all(Dedup *d) {
    size_t i;
    for (i = 0; d->slots != NULL && i <= d->mask; i++) {
        Py_CLEAR(d->slots[i].key);
        Py_CLEAR(d->slots[i].value);
    }
    for (i = 0; i < (size_t)d->count; i++) Py_CLEAR(d->ring_ids[(d->head + i) & (d->ring_cap - 1)]);
    d->used = 0;
    d->count = 0;
    d->head = 0;
}

static int dedup_traverse(Dedup *d, visitproc visit, void *arg) {
    size_t i;
    for (i = 0; d->slots != NULL && i <= d->mask; i++)
        if (d->slots[i].key != NULL) Py_VISIT(d->slots[i].value);
    return 0;
}

static int dedup_tp_clear(Dedup *d) {
    dedup_clear_all(d);
    return 0;
}

static void dedup_dealloc(Dedup *d) {
    PyObject_GC_UnTrack(d);
    dedup_clear_all(d);
    PyMem_Free(d->slots);
    PyMem_Free(d->ring_ts);
    PyMem_Free(d->ring_ids);
    Py_TYPE(d)->tp_free((PyObject *)d);
}

static PyObject *dedup_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    if (!PyArg_ParseTuple(args, "")) return NULL;
    return type->tp_alloc(type, 0); /* zeroed: empty, nothing allocated yet */
}

static Py_ssize_t dedup_len(Dedup *d) { return d->count; }

static PyObject *dedup_get(Dedup *d, PyObject *key) {
    PyObject *v;
    if (!PyUnicode_CheckExact(key)) Py_RETURN_NONE;
    v = dedup_get_c(d, key);
    if (v == NULL) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    return ref(v);
}

static PyObject *dedup_add(Dedup *d, PyObject *args) {
    PyObject *key, *value;
    long long ts;
    if (!PyArg_ParseTuple(args, "OLO", &key, &ts, &value) || dedup_add_c(d, key, ts, value) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *dedup_oldest(Dedup *d, PyObject *unused) {
    if (d->count == 0) Py_RETURN_NONE;
    return ll(d->ring_ts[d->head]);
}

static PyObject *dedup_evict(Dedup *d, PyObject *args) {
    long long oldest, limit;
    if (!PyArg_ParseTuple(args, "LL", &oldest, &limit) || dedup_evict_c(d, oldest, limit) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *dedup_reserve(Dedup *d, PyObject *arg) {
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    if (n < 0 || n > DEDUP_RESERVE_MAX) {
        PyErr_Format(PyExc_ValueError, "reserve between 0 and %lld entries", (long long)DEDUP_RESERVE_MAX);
        return NULL;
    }
    dedup_reserve_c(d, n);
    Py_RETURN_NONE;
}

static PyObject *dedup_entries(Dedup *d, PyObject *unused) {
    PyObject *out = PyList_New(d->count);
    Py_ssize_t i;
    if (out == NULL) return NULL;
    for (i = 0; i < d->count; i++) {
        size_t j = (d->head + (size_t)i) & (d->ring_cap - 1);
        PyObject *key = d->ring_ids[j], *value = dedup_get_c(d, key), *ts = ll(d->ring_ts[j]), *t;
        t = (value && ts) ? PyTuple_Pack(3, key, ts, value) : NULL;
        Py_XDECREF(ts);
        if (t == NULL) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_AssertionError, "a dedup id missing from its table");
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, t);
    }
    return out;
}

static PyObject *dedup_load(Dedup *d, PyObject *entries) {
    PyObject *it = PyObject_GetIter(entries), *item;
    if (it == NULL) return NULL;
    dedup_clear_all(d);
    while ((item = PyIter_Next(it)) != NULL) {
        PyObject *key, *value;
        long long ts;
        int ok = PyArg_ParseTuple(item, "OLO", &key, &ts, &value) && dedup_add_c(d, key, ts, value) == 0;
        Py_DECREF(item);
        if (!ok) {
            Py_DECREF(it);
            return NULL;
        }
    }
    Py_DECREF(it);
    if (PyErr_Occurred()) return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef dedup_methods[] = {
    {"get", (PyCFunction)dedup_get, METH_O, "The stored result, or None."},
    {"add", (PyCFunction)dedup_add, METH_VARARGS, "add(command_id, ts_ns, result): a new, newest entry."},
    {"oldest_ns", (PyCFunction)dedup_oldest, METH_NOARGS, "The oldest entry's timestamp (None when empty)."},
    {"evict", (PyCFunction)dedup_evict, METH_VARARGS, "evict(oldest_ns, limit): drop the old and the excess."},
    {"reserve", (PyCFunction)dedup_reserve, METH_O, "reserve(entries): past 32k entries, grow straight to that size."},
    {"entries", (PyCFunction)dedup_entries, METH_NOARGS, "[(command_id, ts_ns, result)], oldest first."},
    {"load", (PyCFunction)dedup_load, METH_O, "Replace the contents (entries oldest first)."},
    {NULL}};

static PySequenceMethods dedup_as_sequence = {.sq_length = (lenfunc)dedup_len};

static PyTypeObject DedupType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "cashmarkets.core._native.Dedup",
    .tp_basicsize = sizeof(Dedup),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = dedup_new,
    .tp_dealloc = (destructor)dedup_dealloc,
    .tp_traverse = (traverseproc)dedup_traverse,
    .tp_clear = (inquiry)dedup_tp_clear,
    .tp_methods = dedup_methods,
    .tp_as_sequence = &dedup_as_sequence,
    .tp_doc = "The engine's dedup table (see dedup.py).",
};

/* ---- Applier: Engine.apply ------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *engine, *ledger, *handlers, *undo;
    Dedup *dedup;
    PyObject *edict; /* the engine's __dict__: seq and ts_ns without the attribute protocol */
    long long window_ns, entries_max;
    /* engine.seq and engine.ts_ns, kept here and written through to the engine's __dict__; code
     * that sets them otherwise must build a new applier, as Engine.restore does */
    long long seq, ts_ns;
    vectorcallfunc vectorcall;
} Applier;

static PyObject *applier_call(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames);

static int applier_traverse(Applier *self, visitproc visit, void *arg) {
    Py_VISIT(self->engine); Py_VISIT(self->ledger); Py_VISIT(self->dedup); Py_VISIT(self->handlers);
    Py_VISIT(self->undo); Py_VISIT(self->edict);
    return 0;
}

static int applier_clear(Applier *self) {
    Py_CLEAR(self->engine); Py_CLEAR(self->ledger); Py_CLEAR(self->dedup); Py_CLEAR(self->handlers);
    Py_CLEAR(self->undo); Py_CLEAR(self->edict);
    return 0;
}

static void applier_dealloc(Applier *self) {
    PyObject_GC_UnTrack(self);
    applier_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *applier_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PyObject *engine;
    Applier *self = (Applier *)alloc_bound(type, args, &engine);
    if (self == NULL) return NULL;
    self->engine = ref(engine);
    self->vectorcall = applier_call;
    if (attr_into(&self->ledger, engine, "ledger", 0, 0) < 0 ||
        attr_into((PyObject **)&self->dedup, engine, "_dedup", 0, 0) < 0 || !Py_IS_TYPE(self->dedup, &DedupType) ||
        attr_into(&self->handlers, engine, "_handlers", 1, 0) < 0 || attr_into(&self->undo, engine, "_undo", 0, 1) < 0 ||
        attr_ll(&self->window_ns, engine, "_dedup_window_ns") < 0 ||
        attr_ll(&self->entries_max, engine, "_dedup_entries_max") < 0 || attr_ll(&self->seq, engine, "seq") < 0 ||
        attr_ll(&self->ts_ns, engine, "ts_ns") < 0 || !Py_IS_TYPE(self->ledger, LedgerType)) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "the engine's ledger or dedup table is not native");
        Py_DECREF(self);
        return NULL;
    }
    self->edict = PyObject_GenericGetDict(engine, NULL);
    if (self->edict == NULL || !PyDict_CheckExact(self->edict)) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "the engine has no plain __dict__");
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

/* A command's field: straight from its slot when it is a Command (a new reference). */
static PyObject *command_field(PyObject *cmd, Py_ssize_t off, PyObject *name) {
    if (PyObject_TypeCheck(cmd, CommandType)) {
        PyObject *v = SLOT(cmd, off);
        if (v != NULL) return ref(v);
    }
    return PyObject_GetAttr(cmd, name);
}

/* The command's seq must follow the engine's and its time must not go back: then they are the
 * engine's (and the events' dict's). 0, or -1. */
static int advance(Applier *self, PyObject *seq_obj, PyObject *ts_obj, long long *ts) {
    long long seq = PyLong_AsLongLong(seq_obj), eng_seq = self->seq;
    *ts = PyLong_AsLongLong(ts_obj);
    if (PyErr_Occurred()) return -1;
    if (seq != eng_seq + 1) {
        PyErr_Format(PyExc_AssertionError, "seq gap: engine at %lld, command %lld", eng_seq, seq);
        return -1;
    }
    if (*ts < self->ts_ns) {
        PyErr_SetString(PyExc_AssertionError, "time went backwards");
        return -1;
    }
    if (PyDict_SetItem(self->edict, NAME_seq, seq_obj) < 0 || PyDict_SetItem(self->edict, NAME_ts_ns, ts_obj) < 0)
        return -1;
    self->seq = seq;
    self->ts_ns = *ts;
    return 0;
}

/* Fresh per-command buffers: the ledger's undo journal and the event list (a repeat gets the
 * empty list back). The new event list, or NULL. */
static PyObject *fresh_buffers(Applier *self) {
    PyObject *ledger = self->ledger, *journal = SLOT(ledger, GO.journal), *events = PyList_New(0);
    Py_ssize_t n = PyList_GET_SIZE(journal);
    if (events == NULL) return NULL;
    if ((n && PyList_SetSlice(journal, 0, n, NULL) < 0)) goto fail;
    set_slot_ref(ledger, GO.events, events);
    n = PyList_GET_SIZE(self->undo);
    if (n && PyList_SetSlice(self->undo, 0, n, NULL) < 0) goto fail;
    return events;
fail:
    Py_DECREF(events);
    return NULL;
}

/* The command's result: its handler's answer as Accepted or Rejected, an internal error (the
 * engine rolls back and counts it), or unknown without a handler. A new reference, or NULL. */
static PyObject *run_handler(Applier *self, PyObject *handler, PyObject *cmd, PyObject *seq_obj, PyObject *cid) {
    PyObject *data, *result;
    if (handler == NULL) return PyObject_CallMethodObjArgs(self->engine, NAME_unknown, seq_obj, cid, NULL);
    data = PyObject_CallOneArg(handler, cmd);
    if (data == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_Exception)) return NULL; /* KeyboardInterrupt and kin */
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
    return result;
}

/* Engine.apply(command) -> (result, events): in order, deduplicated by command id. */
static PyObject *applier_call(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    Applier *self = (Applier *)callable;
    PyObject *cmd, *seq_obj = NULL, *ts_obj = NULL, *cid = NULL, *events = NULL, *result = NULL, *out = NULL;
    PyObject *handler;
    long long ts;

    if (PyVectorcall_NARGS(nargsf) != 1 || kwnames) {
        PyErr_SetString(PyExc_TypeError, "apply(command)");
        return NULL;
    }
    cmd = args[0];
    if ((seq_obj = command_field(cmd, CMD_seq, NAME_seq)) == NULL) return NULL;
    if ((ts_obj = command_field(cmd, CMD_ts_ns, NAME_ts_ns)) == NULL) goto done;
    if ((cid = command_field(cmd, CMD_command_id, NAME_command_id)) == NULL) goto done;
    if (!PyUnicode_CheckExact(cid)) {
        PyErr_SetString(PyExc_TypeError, "command_id must be a str");
        goto done;
    }
    /* The id's slot in a table of up to a million is likely a cache miss: ask for it now and do
     * the work that does not depend on it meanwhile. */
    if (self->dedup->mask) {
        Py_hash_t h = PyObject_Hash(cid);
        if (h == -1) goto done;
        __builtin_prefetch(&self->dedup->slots[(size_t)h & self->dedup->mask]);
    }
    if (advance(self, seq_obj, ts_obj, &ts) < 0 || (events = fresh_buffers(self)) == NULL) goto done;
    handler = PyDict_GetItemWithError(self->handlers, (PyObject *)Py_TYPE(cmd));
    if (handler == NULL && PyErr_Occurred()) goto done;
    /* Expire by age first: whether a repeat is answered depends only on its own timestamp. */
    if (self->dedup->count && self->dedup->ring_ts[self->dedup->head] < ts - self->window_ns &&
        dedup_evict_c(self->dedup, ts - self->window_ns, self->entries_max) < 0)
        goto done;
    result = dedup_get_c(self->dedup, cid);
    if (result != NULL) {
        out = PyTuple_Pack(2, result, events);
        result = NULL;
        goto done;
    }
    if (PyErr_Occurred()) goto done;
    if ((result = run_handler(self, handler, cmd, seq_obj, cid)) == NULL) goto done;
    if (dedup_add_c(self->dedup, cid, ts, result) < 0) goto done;
    if (self->dedup->count > self->entries_max &&
        dedup_evict_c(self->dedup, ts - self->window_ns, self->entries_max) < 0)
        goto done;
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
    if (PyType_Ready(&SpotFastType) < 0 || PyType_Ready(&ApplierType) < 0 || PyType_Ready(&DedupType) < 0)
        return NULL;
    m = PyModule_Create(&module_def);
    if (m == NULL) return NULL;
    if (PyModule_AddIntConstant(m, "API", NATIVE_API) < 0 ||
        PyModule_AddStringConstant(m, "SOURCE_SHA256", NATIVE_SOURCE_SHA256) < 0 ||
        PyModule_AddIntConstant(m, "DEDUP_RESERVE_MAX", (long)DEDUP_RESERVE_MAX) < 0 ||
        PyModule_AddObjectRef(m, "SpotFast", (PyObject *)&SpotFastType) < 0 ||
        PyModule_AddObjectRef(m, "Applier", (PyObject *)&ApplierType) < 0 ||
        PyModule_AddObjectRef(m, "Dedup", (PyObject *)&DedupType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
