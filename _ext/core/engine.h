/*
 * engine.h -- the completion engine of aioveo's asyncio layer.
 *
 * The event loop hands the engine (context, request id, token) triples; an
 * engine thread detects their completion without the GIL and queues
 * (token, status, retval) records; the loop is woken through an eventfd only
 * when it is not already due to drain ("armed"), and drains every queued
 * record in one callback.
 *
 * Two ways to detect completion, chosen at creation:
 *   ENGINE_POLL: one thread peeks the oldest request of every context
 *                (contexts complete in FIFO order) with an adaptive back-off:
 *                spin, then yield, then sleep 50 us doubling up to a cap;
 *   ENGINE_WAIT: one thread per context blocks in veo_call_wait_result on
 *                its oldest request.
 */
#ifndef AIOVEO_ENGINE_H
#define AIOVEO_ENGINE_H

#include <stdint.h>

/* veo_call_peek_result or veo_call_wait_result, taken from the core's table. */
typedef int (*engine_peek_fn)(void *ctx, uint64_t id, uint64_t *ret);

enum engine_mode { ENGINE_POLL = 0, ENGINE_WAIT = 1 };

/* The status of a completion pushed by engine_forget: not a VEO status, the
 * request was not finished by the VE. */
enum { ENGINE_FORGOTTEN = -1 };

struct engine_completion {
  uint64_t token;
  uint64_t retval;
  int status;
};

struct engine;

/* NULL on failure (errno set).  spin_us: busy-poll window after activity;
 * max_sleep_us: cap of the sleeping back-off. */
struct engine *engine_new(int mode, engine_peek_fn peek, engine_peek_fn wait, unsigned spin_us,
                          unsigned max_sleep_us);
/* Stops and joins the threads and forgets every context (its requests are
 * queued as ENGINE_FORGOTTEN completions, for a last engine_drain).  Returns
 * nonzero if an ENGINE_WAIT thread blocked on a kernel that never returns had
 * to be detached after timeout_ms: the engine must then not be freed. */
int engine_stop(struct engine *e, unsigned timeout_ms);
/* Frees a stopped engine. */
void engine_free(struct engine *e);

int engine_fd(struct engine *e); /* readable when completions are queued */
/* Watch request `id` of `ctx`; `token` comes back with its completion.  In
 * ENGINE_POLL mode, wake=0 leaves a sleeping poll thread asleep until
 * engine_wake (a burst of watches then costs one wake, not one each). */
int engine_watch(struct engine *e, void *ctx, uint64_t id, uint64_t token, int wake);
void engine_wake(struct engine *e);
/* Pop up to max completions; returns how many.  Clears the armed flag first,
 * so a completion racing the drain re-arms and wakes the loop again. */
int engine_drain(struct engine *e, struct engine_completion *out, int max);
/* Drop a context before it is closed or its proc destroyed: its watched
 * requests complete with `status` so nobody waits forever.  Waits (at most
 * timeout_ms) until no engine thread is inside peek/wait on it.  Returns the
 * number of requests dropped, or -1 if a waiter thread had to be detached. */
int engine_forget(struct engine *e, void *ctx, int status, unsigned timeout_ms);

/* The tokens of the requests of `ctx` being watched, oldest first (at most
 * max written); returns how many there are. */
int engine_tokens(struct engine *e, void *ctx, uint64_t *out, int max);
#endif
