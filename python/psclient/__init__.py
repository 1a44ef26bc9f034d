"""psclient: the ps parameter server's client library (libpsclient) for Python.

A ctypes binding of worker/ps.h (docs/api.md), no compiled extension: the
lower layer, for NumPy arrays and any framework.  psclient.torch is the
PyTorch layer built on it.

    import numpy as np, psclient
    ps = psclient.Client()                  # ps_init: join the job
    w = np.zeros((10, 784), np.float32)     # your arrays, C-contiguous float32
    g = np.zeros_like(w)
    ps.declare("fc.weight", w.shape, init=w)
    ps.bind("fc.weight", w, g)              # zero-copy: the library uses them
    ps.plan(steps_per_epoch=100, total_steps=1000)
    ps.start()                              # w now holds the servers' weights
    for step in range(1000):
        g[...] = mean_gradient(w, batch)    # write the gradient in place
        ps.step(samples=len(batch))         # push, then pull into w
    ps.finalize()

Every failed call raises PSError, whose message is the library's
(ps_last_error()) and whose .code is the negative PS_E* code.

The library is found, in this order: $PSCLIENT_LIB; the one `make install`
recorded next to this package; the source tree's build/libpsclient.so.0
(PYTHONPATH=python after `make`); the system's libpsclient.so.0.
"""
import ctypes
import os

__all__ = ["Client", "PSError", "library", "version", "API_VERSION", "TENSOR_DEFAULT",
           "COMPRESS", "TRANSPORT"]

API_VERSION = 6  # the ps.h this module was written for (PS_API_VERSION)
TENSOR_DEFAULT = -1.0  # PS_TENSOR_DEFAULT: keep the servers' setting

COMPRESS = {None: 0, "none": 0, "fp16": 1, "bf16": 2}
TRANSPORT = {None: 0, "auto": 0, "ipc": 1, "tcp": 2}

_CODES = {
    -1: "PS_EINVAL", -2: "PS_ENOMEM", -3: "PS_EIO", -4: "PS_EFORMAT", -5: "PS_EPROTO",
    -6: "PS_ERANGE", -7: "PS_ETIMEDOUT", -8: "PS_ENOENT", -9: "PS_EMPI", -10: "PS_EZMQ",
    -11: "PS_ESTATE", -12: "PS_EAGAIN", -13: "PS_EINTR",
}


class PSError(RuntimeError):
    """A failed libpsclient call: str(e) is the library's message
    (ps_last_error), e.code the PS_E* code (negative int), e.name its name."""

    def __init__(self, message, code=-1):
        super().__init__(message)
        self.code = code
        self.name = _CODES.get(code, "PS_E%d" % code)


class _Options(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("name", ctypes.c_char_p),
                ("timeout_s", ctypes.c_int), ("io_threads", ctypes.c_int),
                ("quiet", ctypes.c_int), ("compress", ctypes.c_int),
                ("streams", ctypes.c_int), ("signals", ctypes.c_int),
                ("transport", ctypes.c_int)]


class _Info(ctypes.Structure):
    _fields_ = [("rank", ctypes.c_int), ("nworkers", ctypes.c_int),
                ("nservers", ctypes.c_int), ("mode", ctypes.c_char_p),
                ("staleness", ctypes.c_uint64), ("lr", ctypes.c_double),
                ("step", ctypes.c_uint64), ("world_rank", ctypes.c_int),
                ("world_size", ctypes.c_int)]


class _Stats(ctypes.Structure):
    _fields_ = [("staleness_max", ctypes.c_uint64), ("staleness_sum", ctypes.c_uint64),
                ("applied", ctypes.c_uint64), ("rejected", ctypes.c_uint64),
                ("version", ctypes.c_uint64), ("apply_s", ctypes.c_double)]


class _Initializer(ctypes.Structure):
    _fields_ = [("kind", ctypes.c_int), ("bound", ctypes.c_float),
                ("seed", ctypes.c_uint64), ("fan_in", ctypes.c_int64),
                ("values", ctypes.c_void_p)]


_INIT_ZEROS, _INIT_VALUES = 0, 3

_P = ctypes.c_void_p
_S = ctypes.c_char_p
_I = ctypes.c_int
# name: (restype, argtypes); every int-returning call is checked.
_SIGNATURES = {
    "ps_last_error": (_S, []),
    "ps_version": (_S, []),
    "ps_strerror": (_S, [_I]),
    "ps_init": (_I, [ctypes.POINTER(_P), _P, _P, ctypes.POINTER(_Options)]),
    "ps_info": (_I, [_P, ctypes.POINTER(_Info)]),
    "ps_declare": (_I, [_P, _S, _I, ctypes.POINTER(ctypes.c_int64),
                        ctypes.POINTER(_Initializer)]),
    "ps_bind": (_I, [_P, _S, _P, _P]),
    "ps_plan": (_I, [_P, ctypes.c_uint64, ctypes.c_uint64]),
    "ps_require_same": (_I, [_P, ctypes.POINTER(ctypes.c_uint64), _I, _S]),
    "ps_fail": (_I, [_P, _S, _S]),
    "ps_start": (_I, [_P]),
    "ps_tensor": (_I, [_P, _S, ctypes.POINTER(_P), ctypes.POINTER(_P),
                       ctypes.POINTER(ctypes.c_size_t)]),
    "ps_push_tensor": (_I, [_P, _S, ctypes.c_uint32, ctypes.POINTER(_P)]),
    "ps_push": (_I, [_P, ctypes.c_uint32, ctypes.POINTER(_P)]),
    "ps_push_from": (_I, [_P, _S, ctypes.c_uint32]),
    "ps_wait_sent": (_I, [_P]),
    "ps_pull_tensor": (_I, [_P, _S, ctypes.POINTER(_P)]),
    "ps_wait_pulled": (_I, [_P]),
    "ps_pull": (_I, [_P]),
    "ps_step": (_I, [_P, ctypes.c_uint32]),
    "ps_reduce_sum": (_I, [_P, _P, _I]),
    "ps_lr": (_I, [_P, ctypes.c_uint64, ctypes.POINTER(ctypes.c_double)]),
    "ps_stats": (_I, [_P, ctypes.POINTER(_Stats)]),
    "ps_save": (_I, [_P, _S]),
    "ps_done": (_I, [_P]),
    "ps_finalize": (_I, [ctypes.POINTER(_P)]),
    "ps_set_tensor_opts": (_I, [_P, _S, ctypes.c_double, ctypes.c_double]),
}

_lib = None


def _candidates():
    env = os.environ.get("PSCLIENT_LIB")
    if env:
        yield env
        return
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        from . import _install  # written by `make install`
        yield _install.LIBRARY
    except ImportError:
        pass
    build = os.environ.get("BUILD", "build")
    yield os.path.join(here, os.pardir, os.pardir, build, "libpsclient.so.0")
    yield "libpsclient.so.0"


def library():
    """The loaded libpsclient (ctypes.CDLL), loaded on first use.  RTLD_GLOBAL:
    Open MPI's plugins need libmpi's symbols in the global scope."""
    global _lib
    if _lib is not None:
        return _lib
    tried = []
    for path in _candidates():
        if os.sep in path and not os.path.exists(path):
            tried.append(path + " (absent)")
            continue
        try:
            lib = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            break
        except OSError as e:
            tried.append("%s (%s)" % (path, e))
    else:
        raise PSError("psclient: cannot load libpsclient: tried " + "; ".join(tried) +
                      " (run `make` in the source tree, or set PSCLIENT_LIB)", -8)
    for name, (res, args) in _SIGNATURES.items():
        try:
            f = getattr(lib, name)
        except AttributeError:
            raise PSError("psclient: %s has no %s: it is older than API %d (rebuild it)"
                          % (path, name, API_VERSION), -1)
        f.restype, f.argtypes = res, args
    _lib = lib
    return lib


def version():
    """The library's version string, e.g. "0.4.0"."""
    return library().ps_version().decode()


def _check(call, rv):
    if rv != 0:
        raise PSError(library().ps_last_error().decode(errors="replace") or
                      "%s failed (%d)" % (call, rv), rv)
    return rv


def _b(s):
    return s.encode() if isinstance(s, str) else s


def _float32_array(a, what, writable=True):
    """a, checked: a C-contiguous float32 NumPy array (never copied)."""
    import numpy as np
    if not isinstance(a, np.ndarray):
        raise PSError("%s: a NumPy array expected, got %s" % (what, type(a).__name__), -1)
    if a.dtype != np.float32:
        raise PSError("%s: float32 expected, got %s" % (what, a.dtype), -1)
    if not a.flags["C_CONTIGUOUS"]:
        raise PSError("%s: a C-contiguous array expected" % what, -1)
    if writable and not a.flags["WRITEABLE"]:
        raise PSError("%s: a writable array expected" % what, -1)
    return a


class Client:
    """One worker's handle (a ps_t).  Collective calls (the constructor,
    start, finalize) must be made by every worker, in that order; see
    docs/api.md for each call's contract.  Not thread-safe."""

    def __init__(self, name=None, timeout_s=0, io_threads=0, quiet=False, compress=None,
                 streams=0, signals=False, transport=None):
        lib = library()
        if compress not in COMPRESS:
            raise PSError("compress: one of none, fp16, bf16 (got %r)" % (compress,), -1)
        if transport not in TRANSPORT:
            raise PSError("transport: one of auto, ipc, tcp (got %r)" % (transport,), -1)
        self._name = _b(name) if name else None  # kept alive during ps_init
        opt = _Options(ctypes.sizeof(_Options), self._name, int(timeout_s), int(io_threads),
                       int(bool(quiet)), COMPRESS[compress], int(streams), int(bool(signals)),
                       TRANSPORT[transport])
        h = _P()
        _check("ps_init", lib.ps_init(ctypes.byref(h), None, None, ctypes.byref(opt)))
        self._h = h
        self._lib = lib
        self._keep = {}  # name -> the arrays bound to it (the library holds their memory)
        self._shapes = {}

    # ---- handle -----------------------------------------------------------
    def _handle(self, call):
        if self._h is None or not self._h.value:
            raise PSError("%s: the client is finalized" % call, -11)
        return self._h

    def info(self):
        """A dict of ps_info: rank, nworkers, nservers, mode, staleness, lr,
        step, world_rank, world_size."""
        i = _Info()
        _check("ps_info", self._lib.ps_info(self._handle("info"), ctypes.byref(i)))
        d = {k: getattr(i, k) for k, _ in _Info._fields_}
        d["mode"] = d["mode"].decode() if d["mode"] else None
        return d

    @property
    def rank(self):
        return self.info()["rank"]

    @property
    def size(self):
        return self.info()["nworkers"]

    # ---- before start -----------------------------------------------------
    def declare(self, name, shape, init=None):
        """Declare the next tensor: name, shape (1 to 4 positive dims), and
        its initial values (a float32 array of that size; None: zeros).
        Only worker 0's values are used."""
        dims = (ctypes.c_int64 * len(shape))(*[int(d) for d in shape])
        ini = _Initializer(_INIT_ZEROS, 0.0, 0, 0, None)
        if init is not None:
            init = _float32_array(init, "declare('%s') init" % name, writable=False)
            n = 1
            for d in shape:
                n *= int(d)
            if init.size != n:
                raise PSError("declare('%s'): init has %d values, the shape %d"
                              % (name, init.size, n), -1)
            ini = _Initializer(_INIT_VALUES, 0.0, 0, 0, init.ctypes.data)
        _check("ps_declare", self._lib.ps_declare(self._handle("declare"), _b(name), len(shape),
                                                  dims, ctypes.byref(ini)))
        self._shapes[name] = tuple(int(d) for d in shape)

    def set_tensor_opts(self, name, weight_decay=None, lr_scale=None):
        """Tensor `name`'s own weight decay and learning-rate multiplier
        (None: the servers' setting); between declare and start."""
        wd = TENSOR_DEFAULT if weight_decay is None else float(weight_decay)
        ls = TENSOR_DEFAULT if lr_scale is None else float(lr_scale)
        if (weight_decay is not None and wd < 0) or (lr_scale is not None and ls < 0):
            raise PSError("set_tensor_opts('%s'): weight_decay %r and lr_scale %r must be >= 0"
                          % (name, weight_decay, lr_scale), -1)
        _check("ps_set_tensor_opts", self._lib.ps_set_tensor_opts(
            self._handle("set_tensor_opts"), _b(name), wd, ls))

    def bind(self, name, weights=None, grads=None):
        """Use your arrays (C-contiguous float32, the tensor's size, kept
        alive by this object until finalize) as the tensor's weights and
        gradient, without a copy per step.  Either may be None."""
        ptrs = []
        for a, what in ((weights, "weights"), (grads, "grads")):
            if a is None:
                ptrs.append(None)
                continue
            _float32_array(a, "bind('%s') %s" % (name, what))
            ptrs.append(a.ctypes.data)
        self.bind_raw(name, ptrs[0], ptrs[1], keep=(weights, grads))

    def bind_raw(self, name, weights_ptr, grads_ptr, keep=None):
        """bind() with raw addresses (e.g. torch's data_ptr()); `keep` is
        held until finalize so the memory stays valid."""
        _check("ps_bind", self._lib.ps_bind(self._handle("bind"), _b(name), weights_ptr,
                                            grads_ptr))
        self._keep[name] = keep

    def plan(self, steps_per_epoch, total_steps):
        """Steps per epoch and total steps (the servers' schedules)."""
        _check("ps_plan", self._lib.ps_plan(self._handle("plan"), int(steps_per_epoch),
                                            int(total_steps)))

    def require_same(self, values, msg=None):
        """Up to 8 integers every worker must give alike (checked by start)."""
        v = (ctypes.c_uint64 * len(values))(*[int(x) for x in values])
        _check("ps_require_same", self._lib.ps_require_same(
            self._handle("require_same"), v, len(values), _b(msg) if msg else None))

    def fail(self, msg):
        """Record a failure of your own: before start, start then fails on
        every worker with it; after, the handle is broken."""
        self._lib.ps_fail(self._handle("fail"), b"%s", _b(msg))

    def start(self):
        """Collective: agree, register the model (worker 0), pull it."""
        _check("ps_start", self._lib.ps_start(self._handle("start")))

    # ---- after start ------------------------------------------------------
    def tensor(self, name):
        """(weights, grads): NumPy views of the tensor's arrays (yours after
        bind, else the library's, valid until finalize)."""
        import numpy as np
        w, g, n = _P(), _P(), ctypes.c_size_t()
        _check("ps_tensor", self._lib.ps_tensor(self._handle("tensor"), _b(name),
                                                ctypes.byref(w), ctypes.byref(g),
                                                ctypes.byref(n)))
        shape = self._shapes.get(name, (n.value,))

        def view(p):
            buf = (ctypes.c_float * n.value).from_address(p.value)
            return np.frombuffer(buf, dtype=np.float32).reshape(shape)
        return view(w), view(g)

    def push_tensor(self, name, samples):
        """Push the tensor's mean gradient over `samples` samples."""
        _check("ps_push_tensor", self._lib.ps_push_tensor(self._handle("push_tensor"), _b(name),
                                                          int(samples), None))

    def push(self, samples):
        """Push every tensor not pushed in this step yet."""
        _check("ps_push", self._lib.ps_push(self._handle("push"), int(samples), None))

    def push_from(self, name, samples):
        _check("ps_push_from", self._lib.ps_push_from(self._handle("push_from"), _b(name),
                                                      int(samples)))

    def pull_tensor(self, name, wait=True):
        """Ask for the tensor's next weights (after its push); wait for them
        unless wait=False (then pull() or a later step completes it)."""
        h = _P()
        _check("ps_pull_tensor", self._lib.ps_pull_tensor(self._handle("pull_tensor"), _b(name),
                                                          ctypes.byref(h)))
        if wait:
            _check("ps_wait_pulled", self._lib.ps_wait_pulled(h))

    def pull(self):
        """Finish the step: the updated weights are in every weight array."""
        _check("ps_pull", self._lib.ps_pull(self._handle("pull")))

    def step(self, samples):
        """push(samples) + pull()."""
        _check("ps_step", self._lib.ps_step(self._handle("step"), int(samples)))

    def reduce_sum(self, values):
        """Element-wise sum over the workers (collective): a list of floats
        or a float64 array; returns a new float64 array."""
        import numpy as np
        v = np.ascontiguousarray(np.array(values, dtype=np.float64).reshape(-1))
        _check("ps_reduce_sum", self._lib.ps_reduce_sum(self._handle("reduce_sum"),
                                                        v.ctypes.data, v.size))
        return v

    def lr(self, step):
        out = ctypes.c_double()
        _check("ps_lr", self._lib.ps_lr(self._handle("lr"), int(step), ctypes.byref(out)))
        return out.value

    def stats(self):
        s = _Stats()
        _check("ps_stats", self._lib.ps_stats(self._handle("stats"), ctypes.byref(s)))
        return {k: getattr(s, k) for k, _ in _Stats._fields_}

    def save(self, path):
        """This worker's weights (as of its last pull), safetensors."""
        _check("ps_save", self._lib.ps_save(self._handle("save"), _b(os.fspath(path))))

    def done(self):
        _check("ps_done", self._lib.ps_done(self._handle("done")))

    def finalize(self):
        """Collective: leave the job (waits for the servers' --save).
        Safe twice."""
        if self._h is None:
            return
        h, self._h = self._h, None
        rv = self._lib.ps_finalize(ctypes.byref(h))
        self._keep.clear()
        _check("ps_finalize", rv)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.finalize()
        return False
