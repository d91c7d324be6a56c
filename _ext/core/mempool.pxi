# The memory pool's native half.  mempool.c keeps the books (segments,
# blocks, the free indexes); this file ties them to a VeoProc (growing with
# veo_alloc_mem, giving segments back with veo_free_mem), to the handles
# users hold (PoolBlock) and to the contexts whose queues decide when a freed
# block may be reused (CtxMem).  The policy around it (how much to grow,
# limits, waiting for memory, statistics, warnings) is aioveo.memory's
# MemoryPool, a Python subclass of NativePool.
#
# Tickets: a request's ticket is its VEO request id + 1.  A context runs its
# queue in order, so once it has completed ticket t every earlier ticket is
# done too: its "frontier" (CtxMem.done) says which uses are over.  A block
# remembers its last use per context; freed, it is reusable at once when
# those are over, on its one context when only that context's use is left
# (fenced there until the frontier passes), or after every context's
# frontier has passed (pending).  Frees from finalizers only append to
# `deferred`; everything else runs on the event loop thread.
import heapq

cdef extern from "mempool.h" nogil:
    ctypedef struct mp_block:
        uint64_t addr
        uint64_t size
        uint64_t ticket
        uint64_t gen
        int state
        int slot
    ctypedef struct mp_stats:
        uint64_t reserved[3]
        uint64_t segments
        uint64_t used
        uint64_t used_blocks
        uint64_t free_ "free"
        uint64_t free_blocks
        uint64_t fenced
        uint64_t fenced_blocks
        uint64_t largest_free
        uint64_t peak
    ctypedef struct mp_pool:
        pass
    enum:
        MP_UNIT
        MP_SMALL
        MP_LARGE
        MP_ARENA
        MP_USED
        MP_FREE
        MP_FENCED
    ctypedef void (*mp_walk_fn)(void *arg, uint64_t seg_addr, uint64_t seg_size, int kind,
                                const mp_block *b)
    mp_pool *mp_new(uint64_t small_max, uint64_t max_split)
    void mp_destroy(mp_pool *p)
    void mp_set_max_split(mp_pool *p, uint64_t max_split)
    uint64_t mp_round(uint64_t size)
    int mp_kind_for(const mp_pool *p, uint64_t size)
    int mp_add_segment(mp_pool *p, uint64_t addr, uint64_t size, int kind)
    mp_block *mp_alloc(mp_pool *p, uint64_t size, int slot, uint64_t *fence)
    void mp_reset_peak(mp_pool *p)
    void mp_free(mp_pool *p, mp_block *b)
    int mp_fence(mp_pool *p, mp_block *b, int slot, uint64_t ticket)
    uint64_t mp_pass(mp_pool *p, int slot, uint64_t frontier)
    int mp_new_slot(mp_pool *p)
    void mp_drop_slot(mp_pool *p, int slot)
    size_t mp_release(mp_pool *p, unsigned kinds, uint64_t *addrs, uint64_t *sizes, size_t max)
    void mp_get_stats(const mp_pool *p, mp_stats *s)
    size_t mp_walk(const mp_pool *p, mp_walk_fn fn, void *arg)

cdef uint64_t NO_TICKET = 0xFFFFFFFFFFFFFFFFULL
SEGMENT_KINDS = ("small", "large", "arena")
MEMPOOL_UNIT = MP_UNIT
POISON_BYTE = 0xDB


@cython.final
cdef class _Pending:
    """A freed block waiting for uses on several contexts (or, for a raw
    block, on any context) to be over: one count per context."""
    cdef mp_block *b
    cdef uint64_t addr, nbytes
    cdef int count


@cython.final
cdef class CtxMem:
    """One context's record for its proc's pool: the completed frontier
    (``done``: tickets up to it are over) and what waits for it."""
    cdef readonly NativePool pool
    cdef readonly uint64_t done
    cdef uint64_t watch          # the lowest ticket something waits for
    cdef readonly int slot
    cdef list waits              # heap of (ticket, seq, _Pending or a future)
    cdef uint64_t seq
    cdef readonly Py_ssize_t live_blocks
    cdef readonly uint64_t live_bytes
    cdef readonly bint closed
    cdef readonly str name

    def __init__(self, NativePool pool not None, str name=""):
        self.pool = pool
        self.watch = NO_TICKET
        self.waits = []
        self.name = name
        self.slot = mp_new_slot(pool.p) if pool.p != NULL and not pool.raw else -1
        pool.mems.append(self)

    cpdef completed(self, _Request request):
        """The VE finished `request` on this context (and all before it)."""
        cdef uint64_t t = request._last_id() + 1
        if t > self.done:
            self.done = t
            if t >= self.watch:
                self._pass()

    cdef int _pass(self) except -1:
        cdef NativePool pool = self.pool
        cdef uint64_t low = NO_TICKET
        if pool.p != NULL and self.slot >= 0:
            low = mp_pass(pool.p, self.slot, self.done)
        while self.waits and (<tuple>self.waits[0])[0] <= self.done:
            obj = (<tuple>heapq.heappop(self.waits))[2]
            if type(obj) is _Pending:
                (<_Pending>obj).count -= 1
                if (<_Pending>obj).count == 0:
                    pool._release_pending(<_Pending>obj)
            elif not obj.done():
                obj.set_result(None)
        if self.waits and (<tuple>self.waits[0])[0] < low:
            low = (<tuple>self.waits[0])[0]
        self.watch = low
        if pool.oom_waiters:
            pool._wake()
        if pool.observers:
            pool._observe()
        return 0

    cdef int _wait(self, uint64_t ticket, object obj) except -1:
        self.seq += 1
        heapq.heappush(self.waits, (ticket, self.seq, obj))
        if ticket < self.watch:
            self.watch = ticket
        return 0

    def wait_for(self, uint64_t ticket, fut):
        """Resolve the asyncio future `fut` once ticket `ticket` is done."""
        if self.done >= ticket:
            fut.set_result(None)
        else:
            self._wait(ticket, fut)

    def close(self):
        """The context is closed: its queue is done, so every use on it is over."""
        if self.closed:
            return
        self.done = NO_TICKET
        self._pass()
        if self.pool.p != NULL and self.slot >= 0:
            mp_drop_slot(self.pool.p, self.slot)
        self.slot = -1
        self.closed = True

    def __repr__(self):
        return f"<CtxMem {self.name} done={self.done} slot={self.slot}>"


@cython.final
@cython.no_gc_clear
@cython.freelist(64)
cdef class PoolBlock:
    """A block of VE memory from a proc's pool, held by a VEArray or a
    VEMemPtr (``ptr.block``).  ``free()`` gives it back without waiting;
    dropped without it, it is freed the same way (on the event loop)."""
    cdef mp_block *b             # NULL for a raw block (its own veo_alloc_mem)
    cdef readonly uint64_t addr
    cdef readonly uint64_t size      # asked for
    cdef readonly uint64_t nbytes    # held (rounded)
    cdef readonly NativePool pool
    cdef bint freed_
    cdef CtxMem last_mem             # the last use: its context and ticket
    cdef uint64_t last_ticket
    cdef dict others                 # uses on other contexts: {CtxMem: ticket}
    cdef CtxMem fence_mem            # reused while a use of its previous life was
    cdef uint64_t fence_ticket       # still queued on that context (see _fences)
    cdef CtxMem owner                # the context it was allocated through, or None
    cdef int holds                   # proc-level copies running off the loop
    cdef bint retire_when_unheld     # freed while held: retired when the last ends
    cdef public object site          # where it was allocated (tracking), else None
    cdef object __weakref__

    cdef inline bint _dead(self) noexcept:
        return self.freed_ or self.pool is None or self.pool.closed

    @property
    def freed(self):
        return self._dead()

    @property
    def raw(self):
        """Its own VEO allocation (the pool does not cache: AIOVEO_MEMPOOL=0 or debug)."""
        return self.b == NULL

    def free(self):
        """Give the block back (never waits; see the module comment)."""
        if self.freed_:
            raise ClosedError(f"{self!r} was already freed")
        self.pool._free_block(self)

    def _hold(self):
        """A copy outside any context's queue (a proc-level transfer run by a
        worker thread) uses the block until ``_unhold()``."""
        self.holds += 1

    def _unhold(self):
        self.holds -= 1
        if self.holds == 0 and self.retire_when_unheld:
            self.retire_when_unheld = False
            if not self.pool.closed:
                self.pool._retire(self.b, self.addr, self.nbytes, self.last_mem,
                                  self.last_ticket, self.others)
            self.b = NULL

    def ptr(self):
        """A VEMemPtr of the block (bounded by its size, checked as freed with it)."""
        cdef VEMemPtr p = VEMemPtr.__new__(VEMemPtr)
        p.proc = self.pool.proc
        p.addr = self.addr
        p.size = self.size
        p.block = self
        return p

    def uses(self):
        """{context name: ticket} of the uses it remembers (for debugging)."""
        out = {}
        if self.last_mem is not None:
            out[self.last_mem.name] = self.last_ticket
        if self.others:
            for m, t in self.others.items():
                out.setdefault((<CtxMem>m).name, t)
        return out

    cdef inline void _use(self, CtxMem mem, uint64_t t):
        if self.last_mem is mem or self.last_mem is None:
            self.last_mem = mem
            self.last_ticket = t
            return
        if self.others is None:
            self.others = {}
        if self.last_ticket > self.others.get(self.last_mem, 0):
            self.others[self.last_mem] = self.last_ticket
        self.last_mem = mem
        self.last_ticket = t

    def __repr__(self):
        state = " freed" if self._dead() else ""
        return f"<PoolBlock 0x{self.addr:x} {self.size} bytes{state}>"

    def __dealloc__(self):
        # The last reference went: free it on the loop (never a VEO call here).
        if not self.freed_ and self.pool is not None and not self.pool.closed:
            try:
                self.pool.deferred.append((<uintptr_t>self.b, self.addr, self.nbytes, self.size,
                                           self.last_mem, self.last_ticket, self.others,
                                           self.owner))
            except BaseException:   # noqa: interpreter shutdown
                pass


cdef void _walk_cb(void *arg, uint64_t seg_addr, uint64_t seg_size, int kind,
                   const mp_block *b) noexcept nogil:
    with gil:
        try:
            (<list>arg).append((seg_addr, seg_size, kind, b.addr, b.size, b.state))
        except BaseException:
            pass


cdef class NativePool:
    """The native half of a proc's memory pool (see aioveo.memory.MemoryPool)."""
    cdef mp_pool *p
    cdef readonly VeoProc proc
    cdef readonly bint closed
    cdef readonly bint raw           # every block its own veo_alloc_mem
    cdef readonly bint poison        # raw blocks are filled with POISON_BYTE before veo_free_mem
    cdef public list deferred        # frees from finalizers, taken on the loop
    cdef public list observers       # aioveo.aio's observers (trace), or None
    cdef public list oom_waiters     # futures woken when memory comes back
    cdef public object tracked       # a WeakSet of live blocks (tracking), or None
    cdef public list mems            # the contexts' records (CtxMem)
    cdef public uint64_t hits, misses
    cdef readonly Py_ssize_t live_blocks     # held by users
    cdef readonly uint64_t live_bytes        # (asked-for bytes)
    cdef readonly Py_ssize_t pending_blocks  # freed, uses on several contexts not over
    cdef readonly uint64_t pending_bytes
    cdef readonly uint64_t raw_bytes, raw_peak   # raw blocks held (raw mode)
    cdef object __weakref__

    def __cinit__(self, *args, **kwargs):
        self.deferred = []
        self.oom_waiters = []
        self.mems = []

    def _setup(self, VeoProc proc not None, bint raw=False, bint poison=False,
               uint64_t small_max=1 << 20, uint64_t max_split=0):
        self.proc = proc
        self.raw = raw
        self.poison = poison
        self.p = mp_new(small_max, max_split)
        if self.p == NULL:
            raise MemoryError("cannot create the memory pool")

    def __dealloc__(self):
        mp_destroy(self.p)
        self.p = NULL

    # -- the hit path
    cpdef PoolBlock _hit(self, uint64_t size, CtxMem mem):
        """A cached block for `size` bytes (on `mem`'s context first), or None."""
        cdef uint64_t fence
        cdef mp_block *b
        if self.deferred:
            self._drain()
        if self.raw or self.closed:
            return None
        b = mp_alloc(self.p, size, mem.slot if mem is not None else -1, &fence)
        if b == NULL:
            return None
        self.hits += 1
        return self._handle(b, b.addr, size, b.size, mem, fence)

    def _after_growth(self, uint64_t size, CtxMem mem):
        """The block for `size` bytes once the pool grew (not counted as a hit)."""
        cdef uint64_t fence
        if self.closed:
            return None
        cdef mp_block *b = mp_alloc(self.p, size, mem.slot if mem is not None else -1, &fence)
        if b == NULL:
            return None
        return self._handle(b, b.addr, size, b.size, mem, fence)

    cdef PoolBlock _handle(self, mp_block *b, uint64_t addr, uint64_t size, uint64_t nbytes,
                           CtxMem mem, uint64_t fence):
        cdef PoolBlock blk = PoolBlock.__new__(PoolBlock)
        blk.b = b
        blk.addr = addr
        blk.size = size
        blk.nbytes = nbytes
        blk.pool = self
        if fence != NO_TICKET:
            blk.fence_mem = blk.last_mem = mem
            blk.fence_ticket = blk.last_ticket = fence
        if mem is not None:
            blk.owner = mem
            mem.live_blocks += 1
            mem.live_bytes += size
        self.live_blocks += 1
        self.live_bytes += size
        if self.tracked is not None:
            self._track(blk)
        if self.observers:
            self._observe()
        return blk

    def _track(self, blk):
        pass

    def _observe(self):
        pass

    # -- growing and shrinking
    def _kind_for(self, uint64_t size):
        return mp_kind_for(self.p, size)

    def _round(self, uint64_t size):
        return mp_round(size)

    def _upstream_alloc(self, uint64_t size):
        """veo_alloc_mem(size) without the GIL: the address, or 0 when the VE
        has no room (any thread: no bookkeeping is touched)."""
        cdef veo_proc_handle *h = self.proc._live_handle()
        cdef uint64_t addr = 0
        cdef int rc
        with nogil:
            rc = api.alloc_mem(h, &addr, size)
        if rc != 0 and self.proc._is_dead():
            _fail(f"cannot allocate {size} bytes of VE memory", "veo_alloc_mem", rc, self.proc)
        return addr if rc == 0 else 0

    def _add_segment(self, uint64_t addr, uint64_t size, int kind):
        if self.closed:
            raise ClosedError("the memory pool is closed")
        if mp_add_segment(self.p, addr, size, kind) != 0:
            raise MemoryError("cannot track a new segment")

    def _release_segments(self, unsigned kinds):
        """Give every segment that is all free (of the kinds in the bit mask
        `kinds`) back to the VE with veo_free_mem; returns the bytes released."""
        cdef uint64_t addrs[64]
        cdef uint64_t sizes[64]
        cdef size_t n, i
        cdef uint64_t total = 0
        if self.closed:
            return 0
        cdef veo_proc_handle *h = self.proc.handle_
        while True:
            n = mp_release(self.p, kinds, addrs, sizes, 64)
            for i in range(n):
                total += sizes[i]
                if h != NULL:
                    with nogil:
                        api.free_mem(h, addrs[i])
            if n < 64:
                return total

    def _raw_alloc(self, uint64_t size, CtxMem mem):
        """A raw block (its own veo_alloc_mem), or None when the VE is full."""
        if self.closed:
            return None
        addr = self._upstream_alloc(size)
        if addr == 0:
            return None
        return self._raw_wrap(addr, size, mem)

    def _raw_wrap(self, uint64_t addr, uint64_t size, CtxMem mem):
        """The handle of a raw block at `addr` (just allocated)."""
        self.raw_bytes += size
        if self.raw_bytes > self.raw_peak:
            self.raw_peak = self.raw_bytes
        return self._handle(NULL, addr, size, size, mem, NO_TICKET)

    # -- freeing
    cdef int _free_block(self, PoolBlock blk) except -1:
        blk.freed_ = True
        if self.closed:
            return 0
        self.live_blocks -= 1
        self.live_bytes -= blk.size
        if blk.owner is not None:
            blk.owner.live_blocks -= 1
            blk.owner.live_bytes -= blk.size
        if self.tracked is not None:
            self.tracked.discard(blk)
        if blk.holds:       # a worker thread still copies: retired when it is done
            blk.retire_when_unheld = True
        else:
            self._retire(blk.b, blk.addr, blk.nbytes, blk.last_mem, blk.last_ticket, blk.others)
            blk.b = NULL
        if self.observers:
            self._observe()
        return 0

    cdef int _retire(self, mp_block *b, uint64_t addr, uint64_t nbytes, CtxMem last,
                     uint64_t ticket, dict others) except -1:
        """A block the user let go of: back now, fenced on one context, or
        pending until every context it was used on is past its last use."""
        cdef list pending = None
        cdef CtxMem m
        cdef _Pending pend
        if last is not None and last.done < ticket:
            pending = [(last, ticket)]
        if others:
            for mo, t in others.items():
                m = <CtxMem>mo
                if m is not last and m.done < <uint64_t>t:
                    if pending is None:
                        pending = []
                    pending.append((m, t))
        if pending is None:
            self._release(b, addr, nbytes)
            return 0
        if len(pending) == 1 and b != NULL:
            m = <CtxMem>(<tuple>pending[0])[0]
            t = (<tuple>pending[0])[1]
            if m.slot >= 0 and mp_fence(self.p, b, m.slot, t) == 0:
                if <uint64_t>t < m.watch:
                    m.watch = t
                return 0
        pend = _Pending.__new__(_Pending)
        pend.b = b
        pend.addr = addr
        pend.nbytes = nbytes
        pend.count = len(pending)
        self.pending_blocks += 1
        self.pending_bytes += nbytes
        for mo, t in pending:
            (<CtxMem>mo)._wait(t, pend)
        return 0

    cdef int _release_pending(self, _Pending pend) except -1:
        if self.closed:
            return 0
        self.pending_blocks -= 1
        self.pending_bytes -= pend.nbytes
        self._release(pend.b, pend.addr, pend.nbytes)
        pend.b = NULL
        return 0

    cdef int _release(self, mp_block *b, uint64_t addr, uint64_t nbytes) except -1:
        cdef veo_proc_handle *h
        if b != NULL:
            mp_free(self.p, b)
        else:
            h = self.proc.handle_
            if h != NULL and not self.proc._is_dead():
                if self.poison:
                    _poison(h, addr, nbytes)
                with nogil:
                    api.free_mem(h, addr)
            self.raw_bytes -= nbytes
        if self.oom_waiters:
            self._wake()
        return 0

    def _drain(self):
        """Free what finalizers dropped (on the loop thread)."""
        cdef CtxMem owner
        while self.deferred:
            bp, addr, nbytes, size, last, ticket, others, owner = self.deferred.pop()
            if self.closed:
                continue
            self.live_blocks -= 1
            self.live_bytes -= size
            if owner is not None:
                owner.live_blocks -= 1
                owner.live_bytes -= size
            self._retire(<mp_block *><uintptr_t>bp, addr, nbytes, last, ticket, others)

    def _wake(self):
        waiters, self.oom_waiters = self.oom_waiters, []
        for f in waiters:
            if not f.done():
                f.set_result(None)

    # -- state
    def _native_stats(self):
        cdef mp_stats s
        if self.p == NULL or self.closed:
            return None
        mp_get_stats(self.p, &s)
        return dict(reserved_small=s.reserved[0], reserved_large=s.reserved[1],
                    reserved_arena=s.reserved[2], segments=s.segments, used=s.used,
                    used_blocks=s.used_blocks, free=s.free_, free_blocks=s.free_blocks,
                    fenced=s.fenced, fenced_blocks=s.fenced_blocks,
                    largest_free=s.largest_free, peak=s.peak)

    def _reset_peak(self):
        if self.p != NULL and not self.closed:
            mp_reset_peak(self.p)
        self.raw_peak = self.raw_bytes

    def _set_max_split(self, uint64_t max_split):
        if self.p != NULL:
            mp_set_max_split(self.p, max_split)

    def _walk(self):
        """[(segment addr, segment size, kind, block addr, block size, state)]."""
        cdef list out = []
        if self.p != NULL and not self.closed:
            mp_walk(self.p, _walk_cb, <void *>out)
        return out

    def _invalidate(self):
        """The proc is gone (destroyed or dead): every block is freed with it,
        without a VEO call."""
        if self.closed:
            return
        self.closed = True
        self.deferred.clear()
        mp_destroy(self.p)
        self.p = NULL
        self.pending_blocks = 0
        self.pending_bytes = 0
        self.live_blocks = 0
        self.live_bytes = 0
        self.raw_bytes = 0
        cdef CtxMem m
        for o in self.mems:
            m = <CtxMem>o
            m.live_blocks = 0
            m.live_bytes = 0
            m.waits = []
            m.watch = NO_TICKET
            m.slot = -1
        self._wake()


cdef int _poison(veo_proc_handle *h, uint64_t addr, uint64_t nbytes) except -1:
    """Fill freed raw memory, so a kernel reading it after its free sees garbage."""
    cdef bytes chunk = bytes([POISON_BYTE]) * <Py_ssize_t>min(nbytes, 1 << 20)
    cdef const char *src = chunk
    cdef uint64_t off = 0, n
    while off < nbytes:
        n = min(nbytes - off, <uint64_t>len(chunk))
        if api.write_mem(h, addr + off, src, n) != 0:
            return 0
        off += n
    return 0


# ---- use tracking for the asyncio layer -------------------------------------------
cdef inline object _block_of(object x):
    t = type(x)
    if t is VEArray:
        return (<VEArray>x).ptr.block
    if t is VEMemPtr:
        return (<VEMemPtr>x).block
    return None


def _pool_blocks(tuple args):
    """The pool blocks among request arguments (VEArrays, pool VEMemPtrs), or None."""
    cdef list out = None
    for x in args:
        t = type(x)
        if t is VEArray or t is VEMemPtr:
            b = _block_of(x)
            if b is not None:
                if out is None:
                    out = [b]
                else:
                    out.append(b)
    return out


def _pool_blocks_batch(list arg_tuples):
    """_pool_blocks over many calls' arguments."""
    cdef list out = None
    for args in arg_tuples:
        for x in args:
            t = type(x)
            if t is VEArray or t is VEMemPtr:
                b = _block_of(x)
                if b is not None:
                    if out is None:
                        out = [b]
                    else:
                        out.append(b)
    return out


def _record_uses(list blocks, CtxMem mem not None, _Request request not None):
    """`request` (just submitted on mem's context) uses `blocks`."""
    cdef uint64_t t = request._last_id() + 1
    for b in blocks:
        (<PoolBlock>b)._use(mem, t)


def _fences(list blocks, CtxMem mem):
    """What must be over before `blocks` are used on mem's context (None:
    the proc's own calls): [(CtxMem, ticket)] of blocks reused while a use
    of their previous life is still queued on another context, or None."""
    cdef list out = None
    cdef PoolBlock b
    for o in blocks:
        b = <PoolBlock>o
        if b.fence_mem is None:
            continue
        if b.fence_mem.done >= b.fence_ticket:
            b.fence_mem = None
        elif b.fence_mem is not mem:
            if out is None:
                out = []
            out.append((b.fence_mem, b.fence_ticket))
    return out


def _array_from_block(ctx, PoolBlock blk not None, tuple shape, dtype):
    """A VEArray over the pool block `blk` (shape and dtype already checked)."""
    cdef VEMemPtr p = VEMemPtr.__new__(VEMemPtr)
    p.proc = blk.pool.proc
    p.addr = blk.addr
    p.size = blk.size
    p.block = blk
    return VEArray._make(ctx, p, shape, dtype, None)
