"""Telegram's flood limits, kept on our side: per-chat and global token buckets with priorities.

Telegram allows about one message a second per chat (20 a minute in groups) and 30 a second in all.
Every message-producing call takes a token from its chat's bucket and from the global one:

- `acquire` (final messages, command answers) blocks until its turn; waiters go first come, first
  served, and a waiter never waits behind a preview.
- `try_preview` (live previews) never blocks: it takes a token only when no blocked `acquire` could
  use it. A chat that shows nothing yet ("first" preview) goes before refreshes of chats that already
  show text: a refresh is refused while a first preview is waiting.
- While more answers are being streamed than the budget can finish at once, previews leave a reserve in
  the global bucket for the final messages those answers will soon need (`stream_active`/`_closed`).

The global bucket refills at Telegram's full 30/s; it holds one token less than Telegram's, which
absorbs up to 1/30 s of network jitter between our clock and Telegram's (the 429 handling in the
sender is the safety net).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

# A first preview that failed is "waiting" this long unless it tries again (streams send pieces often);
# then refreshes may go again even if that chat never retries (e.g. its stream ended).
FIRST_WAIT_TTL = 1.0
STREAM_TTL = 30.0  # a stream not heard of for this long has ended (or its turn died)
PRUNE_AT = 4096  # chat buckets kept before full (idle) ones are dropped


@dataclass
class _Bucket:
    tokens: float
    stamp: float
    blocked_until: float = 0.0

    def level(self, rate: float, capacity: float, now: float) -> float:
        """Tokens at `now` (without changing the bucket)."""
        return min(capacity, self.tokens + (now - self.stamp) * rate)

    def refill(self, rate: float, capacity: float, now: float) -> None:
        self.tokens, self.stamp = self.level(rate, capacity, now), now


@dataclass
class _Waiter:
    chat_id: int
    seq: int


class RateLimiter:
    """Token buckets per chat plus one global bucket, with blocking calls ahead of previews."""

    def __init__(self, private_rate: float = 0.9, group_rate: float = 18 / 60, burst: float = 3,
                 global_rate: float = 30.0, global_burst: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        # Per chat a little under Telegram's limits: a chat's calls are few, and a 429 costs a second.
        self.private_rate, self.group_rate, self.burst = private_rate, group_rate, burst
        self.global_rate = global_rate
        self.global_burst = global_rate - 1 if global_burst is None else global_burst
        self._clock = clock
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._chats: dict[int, _Bucket] = {}
        self._global = _Bucket(self.global_burst, clock())
        self._waiters: dict[int, _Waiter] = {}  # blocked acquire calls, in arrival order
        self._seq = itertools.count()
        self._first_waiting: dict[int, float] = {}  # chat -> when its first preview was last refused
        self._prune_at = PRUNE_AT
        self._streams: dict[Hashable, float] = {}  # answers being streamed -> when last said so
        self._next_expiry = 0.0

    # -- blocking: final messages and everything that is not a preview -----------------------------

    def acquire(self, chat_id: int, deadline: float | None = None) -> bool:
        """Block until a call to this chat may go; False if that would be after `deadline`."""
        with self._cond:
            me = _Waiter(chat_id, next(self._seq))
            self._waiters[me.seq] = me
            took = False
            try:
                while True:
                    now = self._clock()
                    wait = self._turn(me, now)
                    if wait <= 0:
                        self._take(chat_id, now)
                        took = True
                        return True
                    if deadline is not None and now + wait > deadline:
                        return False
                    # Each waiter sleeps until its own turn, so a token wakes one thread, not all.
                    self._cond.wait(min(wait, 1.0))
            finally:
                del self._waiters[me.seq]
                if not took:
                    self._cond.notify_all()  # gave up its place: those behind may go sooner

    @property
    def waiting(self) -> int:
        """Blocked `acquire` calls right now."""
        with self._lock:
            return len(self._waiters)

    def _turn(self, me: _Waiter, now: float) -> float:
        """Seconds until `me` may go: its chat's own wait, or its place in the global queue."""
        chat_wait = self._chat_wait(me.chat_id, now)
        if chat_wait > 0:
            return chat_wait
        ahead = sum(1 for w in self._waiters.values()
                    if w.seq < me.seq and self._chat_wait(w.chat_id, now) <= 0)
        tokens = self._global.level(self.global_rate, self.global_burst, now)
        return max(0.0, (ahead + 1 - tokens) / self.global_rate)

    # -- non-blocking: previews ---------------------------------------------------------------------

    def try_preview(self, chat_id: int, first: bool) -> bool:
        """Take a token for a preview if one is free for it now; never waits."""
        with self._lock:
            now = self._clock()
            self._expire(now)
            if self._chat_wait(chat_id, now) > 0:
                return False
            if not first and any(chat != chat_id for chat in self._first_waiting):
                return False  # a chat that shows nothing yet goes first
            ready = sum(1 for w in self._waiters.values() if self._chat_wait(w.chat_id, now) <= 0)
            tokens = self._global.level(self.global_rate, self.global_burst, now)
            if tokens - ready - self.reserve() < 1:
                if first:
                    self._first_waiting[chat_id] = now
                return False
            self._first_waiting.pop(chat_id, None)
            self._take(chat_id, now)
            return True

    def forget_preview(self, chat_id: int) -> None:
        """The chat no longer waits for a first preview (its answer was sent, or it was cancelled)."""
        with self._lock:
            self._first_waiting.pop(chat_id, None)

    def reserve(self) -> float:
        """Global tokens previews must leave for the final messages of the answers being streamed.

        Each open stream owes one final message. The bucket and one second of refill carry twice the
        bucket's size at once; for every stream beyond that, previews leave one token, up to 80% of
        the bucket. With few streams there is no reserve: previews may use the whole budget.
        """
        owed = len(self._streams) - 2 * self.global_burst
        return min(max(owed, 0.0), 0.8 * self.global_burst)

    def stream_active(self, key: Hashable) -> None:
        """An answer is being streamed (say so at least every STREAM_TTL/2 seconds while it is)."""
        with self._lock:
            self._streams[key] = self._clock()

    def stream_closed(self, key: Hashable, chat_id: int) -> None:
        with self._lock:
            self._streams.pop(key, None)
            self._first_waiting.pop(chat_id, None)

    def _expire(self, now: float) -> None:
        """Drop marks nobody renewed: a chat that stopped trying, a stream that ended without saying so."""
        for chat, since in list(self._first_waiting.items()):
            if now - since > FIRST_WAIT_TTL:
                del self._first_waiting[chat]
        if now >= self._next_expiry:
            self._streams = {k: t for k, t in self._streams.items() if now - t <= STREAM_TTL}
            self._next_expiry = now + 1.0

    # -- 429 ----------------------------------------------------------------------------------------

    def penalize(self, chat_id: int, seconds: float) -> None:
        """Telegram said 429: nothing more to this chat for `seconds`."""
        with self._cond:
            now = self._clock()
            bucket = self._chats.setdefault(chat_id, _Bucket(0, now))
            bucket.blocked_until = max(bucket.blocked_until, now + seconds)
            bucket.tokens = min(bucket.tokens, 0)
            self._cond.notify_all()  # waiters behind this chat may go first now

    # -- buckets ------------------------------------------------------------------------------------

    def _rate(self, chat_id: int) -> float:
        return self.private_rate if chat_id > 0 else self.group_rate

    def _chat_wait(self, chat_id: int, now: float) -> float:
        bucket = self._chats.get(chat_id)
        if bucket is None:
            return 0.0
        rate = self._rate(chat_id)
        return max(bucket.blocked_until - now, (1 - bucket.level(rate, self.burst, now)) / rate, 0.0)

    def _take(self, chat_id: int, now: float) -> None:
        bucket = self._chats.get(chat_id)
        if bucket is None:
            if len(self._chats) >= self._prune_at:
                self._prune(now)
            bucket = self._chats[chat_id] = _Bucket(self.burst, now)
        bucket.refill(self._rate(chat_id), self.burst, now)
        self._global.refill(self.global_rate, self.global_burst, now)
        bucket.tokens -= 1
        self._global.tokens -= 1

    def _prune(self, now: float) -> None:
        """Forget chats whose buckets are full again: a new bucket would be the same."""
        self._chats = {chat: b for chat, b in self._chats.items()
                       if b.blocked_until > now or b.level(self._rate(chat), self.burst, now) < self.burst}
        self._prune_at = max(PRUNE_AT, 2 * len(self._chats))
