"""psclient.torch: train a PyTorch model through the ps servers.

    import psclient.torch as pst
    pst.init()                          # join the job (MPI through libpsclient)
    pst.plan(steps_per_epoch, total)    # optional, before register: schedules
    pst.register(model, groups=[{"params": ["fc.bias"], "weight_decay": 0.0}])
    for x, y in batches:
        loss = F.cross_entropy(model(x), y)   # the MEAN loss of the batch
        loss.backward()
        pst.step(model, samples=len(y))       # push, pull the new weights
    pst.save("worker.safetensors")
    pst.finalize()

launched as `mpirun -np S ps-server [flags] : -np W python3 train.py`.
The servers own the optimizer (their flags: --lr, --momentum, --nesterov,
--weight-decay, schedules ...): there is no torch optimizer on the workers.

Memory.  A parameter that is a contiguous float32 CPU tensor is bound to
the library without a copy: pulls write its .data in place and pushes read
its .grad in place.  register() gives every such parameter a .grad of
zeros up front so that autograd accumulates into that same storage; step()
zeroes it once the push is sent (do not call zero_grad with set_to_none,
or replace .data or .grad: a parameter whose .grad is not the bound
storage at step() is copied into it, which still works).  Other
parameters (non-contiguous, or not on the CPU) go through the library's
own arrays with a copy each step.  A parameter that is not float32 is
refused by name.

Overlap.  With overlap=True (the default) a hook on each parameter pushes
it as soon as its gradient is final in backward (the last layers first),
so communication overlaps the rest of backward; register_post_accumulate_
grad_hook where torch has it, else a hook on the parameter's
AccumulateGrad node, which runs just after .grad is written.  A push needs
the step's sample count before backward ends: the hooks use the count
given to samples(n) for this step, else the previous step's count (the
first step and steps after a different count push everything at step()).
Gradient accumulation over several backward calls per step needs
overlap=False.

Unused parameters.  A parameter whose gradient is None at step() (it took
no part in the loss) counts as a zero gradient: the servers still apply
momentum and weight decay to it, as torch.optim.SGD would with a zero
gradient (torch itself skips a parameter whose .grad is None).

Frozen parameters.  A parameter with requires_grad=False at register()
(and in no group) gets lr_scale 0: the servers keep it exactly as it is.

Errors raise psclient.PSError with the library's message; failures in
register() fail on every worker alike (the library's start-up agreement).
"""
import psclient as _ps
import torch

__all__ = ["init", "register", "rank", "size", "plan", "samples", "step", "save",
           "finalize", "client", "PSError"]

PSError = _ps.PSError

_client = None
_plan = None
_model = None  # the registered state, see register()


class _Param:
    __slots__ = ("name", "p", "grad", "bound", "lib_w", "lib_g", "hook", "pushed")

    def __init__(self, name, p):
        self.name, self.p = name, p
        self.grad = None  # the .grad storage bound to the library (zero-copy) or None
        self.bound = False
        self.lib_w = self.lib_g = None  # NumPy views of the library's arrays (copy path)
        self.hook = None
        self.pushed = False


class _Model:
    def __init__(self, module, params, overlap):
        self.module = module
        self.params = params
        self.by_name = {q.name: q for q in params}
        self.overlap = overlap
        self.samples = None  # the count the hooks push with, None: they do not push
        self.hook_samples = None  # the count hooks used in this step
        self.hooks = []


def client():
    """The psclient.Client under this module (after init)."""
    if _client is None:
        raise PSError("psclient.torch: call init() first", -11)
    return _client


def init(**options):
    """Join the job (collective over every rank, servers included).
    Options are psclient.Client's (name, timeout_s, quiet, compress,
    streams, io_threads, transport, signals)."""
    global _client
    if _client is not None:
        raise PSError("psclient.torch.init: already initialised", -11)
    options.setdefault("name", "psclient.torch")
    _client = _ps.Client(**options)


def rank():
    """This worker among the workers, 0 .. size()-1."""
    return client().rank


def size():
    """The number of workers."""
    return client().size


def plan(steps_per_epoch, total_steps):
    """The training plan for the servers' learning-rate schedule; call it
    before register() (every worker alike).  Without it the servers see 1
    step per epoch and 2**40 steps: fine for a constant learning rate."""
    if _model is not None:
        raise PSError("psclient.torch.plan: call it before register()", -11)
    client().plan(steps_per_epoch, total_steps)
    global _plan
    _plan = (steps_per_epoch, total_steps)


def _group_opts(named, groups):
    """{name: (weight_decay or None, lr_scale or None)}; a group's params are
    names (as in state_dict) or the parameters themselves."""
    name_of = {id(p): n for n, p in named}
    opts = {}
    for gi, g in enumerate(groups or []):
        if not isinstance(g, dict) or "params" not in g:
            raise PSError("register: group %d is not a dict with 'params'" % gi, -1)
        unknown = set(g) - {"params", "weight_decay", "lr_scale"}
        if unknown:
            raise PSError("register: group %d has unknown keys %s (weight_decay and lr_scale "
                          "are supported)" % (gi, sorted(unknown)), -1)
        params = g["params"]
        if isinstance(params, (str, torch.Tensor)):
            params = [params]
        for x in params:
            n = x if isinstance(x, str) else name_of.get(id(x))
            if n is None or n not in dict(named):
                raise PSError("register: group %d names %r, which is not a parameter of the "
                              "model" % (gi, x if isinstance(x, str) else "a tensor"), -8)
            if n in opts:
                raise PSError("register: parameter '%s' is in two groups" % n, -1)
            opts[n] = (g.get("weight_decay"), g.get("lr_scale"))
    return opts


def _bindable(p):
    return p.device.type == "cpu" and p.is_contiguous() and not p.is_sparse


def _problem(named):
    """The first parameter the servers cannot hold, as a message, or None."""
    for n, p in named:
        if p.dtype != torch.float32:
            return "parameter '%s' is %s: only float32 parameters can be trained (convert " \
                   "the model with .float())" % (n, str(p.dtype).replace("torch.", ""))
        if p.dim() < 1 or p.dim() > 4:
            return "parameter '%s' has %d dimensions (1 to 4 supported)" % (n, p.dim())
    return None


def register(model, groups=None, overlap=True):
    """Declare model.named_parameters() in order (named as in state_dict),
    with the groups' weight decay and lr_scale, and start (collective over
    the job): worker 0's values start the servers; on return every
    worker's parameters hold the servers' values."""
    global _model
    c = client()
    if _model is not None:
        raise PSError("psclient.torch.register: a model is registered already", -11)
    named = list(model.named_parameters())
    if not named:
        c.fail("register: the model has no parameters")
    why = _problem(named)
    try:
        opts = _group_opts(named, groups)
    except PSError as e:
        why, opts = why or str(e), {}
    for n, p in named:
        if not p.requires_grad and n not in opts:
            opts[n] = (None, 0.0)  # frozen: lr 0 leaves it exactly as it is
    params = [_Param(n, p) for n, p in named]
    if why:
        c.fail(why)  # every worker's start fails with it
    for q in params:
        p = q.p
        with torch.no_grad():
            # Worker 0's values go to the servers.
            init_vals = p.detach().to("cpu", torch.float32).contiguous().numpy()
        if p.dim() < 1 or p.dim() > 4:
            continue  # refused above; declaring it would hide that message
        try:
            c.declare(q.name, tuple(p.shape), init=init_vals)
            if q.name in opts:
                c.set_tensor_opts(q.name, *opts[q.name])
        except PSError:
            continue  # remembered by the library: start fails on every worker
        if why is None and p.dtype == torch.float32 and _bindable(p):
            _bind(c, q)
    if _plan is None:
        c.plan(1, 1 << 40)
    c.start()
    _model = _Model(model, params, overlap)
    for q in params:
        if not q.bound:
            q.lib_w, q.lib_g = c.tensor(q.name)
            with torch.no_grad():
                q.p.copy_(torch.from_numpy(q.lib_w).to(q.p.device))
    if overlap:
        with torch.enable_grad():
            _install_hooks(_model)
    return model


def _bind(c, q):
    p = q.p
    if p.grad is None or p.grad.shape != p.shape or p.grad.dtype != torch.float32 or \
            not _bindable(p.grad):
        p.grad = torch.zeros_like(p, memory_format=torch.contiguous_format)
    else:
        with torch.no_grad():
            p.grad.zero_()
    q.grad = p.grad
    # ps_bind writes the declared values into the weights: the same bytes.
    c.bind_raw(q.name, p.data_ptr(), q.grad.data_ptr(), keep=(p, q.grad))
    q.bound = True


def _install_hooks(m):
    for q in m.params:
        if not q.p.requires_grad:
            continue

        def hook(*_args, q=q):
            _hook_push(q)
        if hasattr(q.p, "register_post_accumulate_grad_hook"):
            m.hooks.append(q.p.register_post_accumulate_grad_hook(hook))
        else:
            # torch < 2.1: the AccumulateGrad node's hook runs right after it
            # writes .grad (Horovod's way); keep the node alive.
            acc = q.p.expand_as(q.p).grad_fn.next_functions[0][0]
            m.hooks.append(acc.register_hook(hook))
            q.hook = acc


def _hook_push(q):
    m = _model
    if m is None or m.samples is None or q.pushed:
        return
    # Only a gradient that sits in the bound storage (or a copy path's) can
    # go now; anything else waits for step().
    if q.bound and q.p.grad is not q.grad:
        return
    _push_one(q, m.samples)
    m.hook_samples = m.samples


def _stage(q):
    """Make q's gradient what the library will read: the bound storage, or
    the library's array; a None gradient is zeros."""
    g = q.p.grad
    if q.bound:
        if g is None:
            q.grad.zero_()
        elif g is not q.grad:
            with torch.no_grad():
                q.grad.copy_(g)
        q.p.grad = q.grad
    elif g is None:
        q.lib_g[...] = 0
    else:
        q.lib_g[...] = g.detach().to("cpu", torch.float32).reshape(q.lib_g.shape).numpy()


def _push_one(q, n):
    _stage(q)
    client().push_tensor(q.name, n)
    q.pushed = True


def samples(n):
    """This step's sample count, before backward: the hooks push with it
    (without it they use the previous step's count)."""
    if _model is None:
        raise PSError("psclient.torch.samples: call register() first", -11)
    _model.samples = int(n)


def step(model=None, samples=None):
    """Push the mean gradients of `samples` samples (weighted by it against
    the other workers) and pull the updated weights into the parameters;
    then the gradients are zeroed for the next backward."""
    m = _model
    if m is None:
        raise PSError("psclient.torch.step: call register() first", -11)
    if model is not None and model is not m.module:
        raise PSError("psclient.torch.step: not the registered model", -1)
    if samples is None or int(samples) < 0:
        raise PSError("psclient.torch.step: samples=n (the batch's sample count) is required",
                      -1)
    n = int(samples)
    c = client()
    if m.hook_samples is not None and m.hook_samples != n:
        pushed = [q.name for q in m.params if q.pushed]
        raise PSError("psclient.torch.step: the gradient hooks pushed %s with %d samples (the "
                      "previous step's count), this step has %d: call psclient.torch.samples(%d)"
                      " before backward when the count changes" %
                      (", ".join(pushed[:3]), m.hook_samples, n, n), -1)
    rest = [q for q in m.params if not q.pushed]
    for q in rest:
        _stage(q)
    if rest:  # the hooks may have pushed every parameter already
        c.push(n)
    c.pull()
    with torch.no_grad():
        for q in m.params:
            if q.bound:
                q.grad.zero_()
            else:
                q.p.copy_(torch.from_numpy(q.lib_w).to(q.p.device).view_as(q.p))
                if q.p.grad is not None:
                    q.p.grad.zero_()
            q.pushed = False
    m.samples = n
    m.hook_samples = None


def save(path):
    """This worker's current weights as a safetensors file (metadata "step")."""
    client().save(path)


def finalize():
    """Leave the job (collective): waits for the servers' --save."""
    global _client, _model, _plan
    if _model is not None:
        for h in _model.hooks:
            h.remove()
    c, _client, _model, _plan = _client, None, None, None
    if c is not None:
        c.finalize()
