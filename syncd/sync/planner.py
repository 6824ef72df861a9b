"""Pure: which page to read next, and what a page proves about the list.

The API offers only ``skip``/``limit`` over a list whose order is not
documented and which shifts while we read it. The planner turns that into a
scan that cannot miss a record (docs/sync-algorithm.md explains it with a
diagram). Its rules:

* **Overlap and connect.** After a page, the last identified item is the
  *anchor*; the next request starts *at* the anchor (one item of overlap). The
  page connects when it contains the anchor, starts at offset 0, or - in a list
  of known order - starts with an item that sorts strictly before the anchor.
  Only a connected page moves the cursor. A page that does not connect means
  the list shifted up (deletions before the anchor): the planner searches back
  (bisection when the order is known, doubling steps otherwise) until a page
  connects. Every page read is stored; re-reads are absorbed by the upsert.
* **Order.** Consecutive ``createdAt`` values along a scan tell the order:
  ``newest_first``, ``oldest_first``, ``unordered`` (both seen) or ``unknown``
  (no evidence). A complete scan establishes it for later runs.
* **Incremental runs.** newest-first: read from offset 0 until the page
  holds the previous head by its id (or, should it be gone, an item created
  more than HEAD_SKEW before it: a head dated ahead of the artworks created
  after it must not end the run above them).
  oldest-first: start at the previous tail and read to the end; when the tail
  is not where it was (the oldest were deleted), bisect on ``skip`` for it.
  Unknown or unordered: a full scan every run.
* **A floor (``since``).** A run told to keep only artworks created at or
  after a moment starts a scan from offset 0 (or resumes the scan in
  progress, which keeps the floor it has, ``state.scan_since``; another
  floor starts over). In a list that a complete scan found newest-first, or
  whose order no scan has told yet and whose pages are newest-first, it ends
  at the first connected item created before the floor (all after it are
  older). In a list of any other order it reads on to the end: what is
  older is skipped by the writer, not by the plan. A scan with a floor is
  not a full sync (``last_full_sync_at`` stays) and judges no deletions.
* **The cursor moves with the rows.** ``state`` after each ``observe`` is what
  the engine commits in the same transaction as that page's rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from syncd.state import ListOrder, Mode, Phase, StreamState


@dataclass(frozen=True, slots=True)
class Item:
    """What the planner needs of one list position: its id and createdAt, if readable."""

    id: str | None
    created_at: datetime | None


@dataclass(frozen=True, slots=True)
class Request:
    skip: int
    limit: int


def observed_order(items: Sequence[Item]) -> ListOrder:
    """The order that consecutive createdAt values along ``items`` show."""
    order = ListOrder.UNKNOWN
    previous: datetime | None = None
    for item in items:
        if item.created_at is None:
            continue
        if previous is not None and item.created_at != previous:
            step = ListOrder.NEWEST_FIRST if item.created_at < previous else ListOrder.OLDEST_FIRST
            order = order.merge(step)
            if order == ListOrder.UNORDERED:
                return order
        previous = item.created_at
    return order


def _first_dated(items: Sequence[Item]) -> datetime | None:
    return next((i.created_at for i in items if i.created_at is not None), None)


def _last_dated(items: Sequence[Item]) -> datetime | None:
    return next((i.created_at for i in reversed(items) if i.created_at is not None), None)


def _sorts_before(order: ListOrder, a: datetime, b: datetime) -> bool:
    """True when ``a`` stands strictly before ``b`` in a list of this order."""
    return a > b if order == ListOrder.NEWEST_FIRST else a < b


# A list that keeps growing at its end while the scan reaches it (an
# oldest-first list with artworks created about as fast as requests go) shows
# more items past its end to every request. After this many pages in a row
# that found the list longer only by artworks created since the run began, the
# scan has read the list it set out to read: the end stands, and the next run
# reads on from it, as it does for artworks created after a scan. Older
# artworks past a short page mean a page that hid the rest of the list, and
# the scan goes on.
GROWTH_CLAIMS = 8
# Artworks created since a run began, by the server's clock: what may differ
# from syncd's is allowed for.
GROWTH_TOLERANCE = timedelta(minutes=1)
MAX_LIMIT = 500  # the API's largest page
# How far an incremental newest-first run reads past the previous head's
# createdAt when the head itself is not met: what a head dated ahead of the
# artworks created after it (an artwork dated in the future, clocks that
# differ) may be ahead by. syncd accepts createdAt up to a day ahead of its
# clock (syncd.records.FUTURE_TOLERANCE), so a day. Met, the head ends the run
# by its id, and this costs nothing.
HEAD_SKEW = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Reach:
    """How far a run has read in createdAt (progress): from the first artwork
    it read to the last one read in order, and where it is expected to end
    when the list's order tells (None: it cannot honestly say)."""

    start: datetime | None
    reached: datetime | None
    end: datetime | None

    def share(self) -> float | None:
        """The share of the createdAt span read so far, 0..1."""
        if self.start is None or self.reached is None or self.end is None or self.end == self.start:
            return None
        share = (self.reached - self.start) / (self.end - self.start)
        return min(1.0, max(0.0, share))


@dataclass(frozen=True, slots=True)
class _EndClaim:
    """What a short page claimed: the list's end (its offset), and how many
    items follow the page's last identified item (None: it had none)."""

    end: int
    past_anchor: int | None
    # The request that can confirm it: the next one, asked from near the
    # page's last identified item (see Planner._proof_request). Not one from
    # further back, such as a search's: ending at the anchor, a page that
    # hides its last items would show no more than the short page did.
    proof: Request


@dataclass(frozen=True, slots=True)
class _Anchor:
    position: int
    id: str
    created_at: datetime | None


class Planner:
    """Decides requests for one run of one stream; ``state`` is what to commit.

    Use: ``while (req := p.next_request()) is not None: p.observe(req, items)``.
    """

    def __init__(
        self,
        state: StreamState,
        page_size: int,
        *,
        full: bool,
        now: datetime,
        since: datetime | None = None,
    ) -> None:
        self.state = replace(state)
        self.since = since  # only artworks created at or after it are wanted
        self.reached_since = False  # the scan ended at the floor, not at the end of the list
        # One item of each page overlaps the previous one, so a page must hold
        # at least two for the scan to move (a page size of 1 reads 2).
        self.page_size = max(2, page_size)
        self.now = now
        self.scan_complete = False  # a scan covering the whole list finished
        self.provably_complete = True  # False once the list shifted past what we can prove
        self.done = False
        self._anchor: _Anchor | None = None
        self._next_skip = 0
        # While searching for the anchor's place: lo is a position known to stand
        # before it, hi one known to stand at or after it (None: not found yet).
        self._search: tuple[int, int | None] | None = None
        self._forward_step = max(page_size - 1, 1)
        self._probe: int | None = None  # an explicit next probe, ahead of bisection
        # Extra items of overlap before the anchor: widened when the list is seen
        # shifting (so steady small shifts connect without extra requests), and
        # narrowed again after clean pages.
        self._margin = 0
        self._clean_pages = 0
        self._step = max(page_size - 1, 1)  # contiguous step-back when order is unknown
        self._head_scan = False
        # A short page claims the list ends at its last position: the end this
        # claim names, until a later page that reaches it confirms it (or the
        # list goes on past it). Servers answer short pages mid-list (items
        # filtered after paging, a replica behind), so one claim is not proof.
        self._end_claim: _EndClaim | None = None
        self._next_limit: int | None = None  # another page size, for one request only
        self._growth = 0  # pages in a row that found the list longer by new artworks only (GROWTH_CLAIMS)
        self._first_page = True
        self._page_span: timedelta | None = None  # createdAt covered by the last page (newest-first)
        self._first_read: datetime | None = None  # createdAt of the first artwork read in order (Reach)
        # Where the last runs ended, in createdAt: a newest-first scan expects
        # to end near the oldest artwork of the last one, an incremental run at
        # the head it read last.
        self._known_oldest, self._known_head = state.tail_created_at, state.head_created_at
        self._new_head: Item | None = None  # first item of this run's offset-0 page
        self._order_guided = False  # a decision relied on the list's order
        self._plain_offsets = False  # gave up proving continuity for this scan
        # A list that reshuffles under us cannot be proven complete; after this
        # many pages that fail to connect, read on by plain offsets instead.
        known = max(state.listed_total or 0, state.cursor_skip)
        self._search_budget = 32 + 2 * (known // max(page_size, 1))

        st = self.state
        if st.phase == Phase.IDLE and (full or since is not None or not st.list_order.is_sorted):
            self._start_scan(Phase.FULL)
        elif st.phase in (Phase.BACKFILL, Phase.FULL):
            if st.scan_started_at is None:
                self._start_scan(st.phase)
            elif since is not None and st.scan_since is not None and since != st.scan_since:
                # Its pages so far skipped what is older than another floor: start over.
                self._start_scan(st.phase)
            else:  # resume a scan interrupted by a crash or a failure, with its floor
                self.since = since if since is not None else st.scan_since
                st.scan_since = self.since
                self._resume_cursor()
        elif st.list_order == ListOrder.NEWEST_FIRST:
            self._head_scan = True
        else:  # oldest-first: continue after the tail
            total = st.listed_total or 0
            if st.tail_id is None or total == 0:
                self._start_scan(Phase.FULL)
            else:
                self._anchor = _Anchor(total - 1, st.tail_id, st.tail_created_at)
                self._next_skip = total - 1
                # The last run proved the list ended there: a first page that
                # reaches that end and goes no further confirms nothing was added.
                self._end_claim = _EndClaim(total, 0, Request(total - 1, self.page_size))
        self.mode = {
            Phase.BACKFILL: Mode.BACKFILL,
            Phase.FULL: Mode.FULL,
            Phase.IDLE: Mode.INCREMENTAL,
        }[self.state.phase]

    # ------------------------------------------------------------ public

    def next_request(self) -> Request | None:
        if self.done:
            return None
        if self._probe is not None:
            return Request(self._probe, self.page_size)
        if self._search is not None:
            lo, hi = self._search
            if hi is None:  # galloping forward: the anchor was pushed down
                return Request(lo + self._forward_step, self.page_size)
            skip = lo if hi - lo <= self.page_size - 1 else (lo + hi) // 2
            return Request(skip, self.page_size)
        return Request(self._next_skip, self._next_limit or self.page_size)

    def lookahead(self, count: int) -> list[Request]:
        """Up to ``count`` requests likely to follow ``next_request()``: the pages
        after it, if each comes back full and connects. For fetching ahead in a
        scan; none while the next step depends on what a page says (a search,
        a probe) or in an incremental run (whose request budget is exact). A
        page fetched ahead is judged like any other when its turn comes."""
        if (
            count <= 0
            or self.done
            or self.state.phase == Phase.IDLE
            or self._search is not None
            or self._probe is not None
            or self._plain_offsets
            or self._end_claim is not None  # the next page likely confirms the end: none past it
        ):
            return []
        step = max(1, self.page_size - 1 - self._margin)
        count = min(count, self._pages_to_floor(count))
        return [Request(self._next_skip + step * n, self.page_size) for n in range(1, count + 1)]

    def observe(self, request: Request, items: Sequence[Item]) -> None:
        """Take in one page (every element, in list order) and plan the next."""
        self._next_limit = None
        if self._confirms_end(request, items):
            if items:
                self._advance(request, items)
            self._finish(request.skip + len(items))
            return
        if not self._plain_offsets and not self._connects(request, items):
            if self._search_budget > 0:
                self._search_budget -= 1
                self._search_back(request, items)
                return
            if self._lost_track():
                return
        self._search = None
        self._probe = None
        self._forward_step = max(self.page_size - 1, 1)
        start = self._anchor_index(items)
        self._adapt_margin(request, items)
        along = [Item(self._anchor.id, self._anchor.created_at)] if self._anchor and start > 0 else []
        if self._check_order(along + list(items[start:])):
            return  # the run was turned into a full scan
        if self._first_page and request.skip == 0:
            self._record_head(items)
        self._first_page = False

        if self._head_scan and self._reached_head(items):
            self._finish_head_scan()
            return
        if self._first_read is None:
            self._first_read = _first_dated(items[start:])
        if self._reaches_floor(request, items, start):
            return
        anchor_before = self._anchor.id if self._anchor is not None else None
        self._advance(request, items)
        self._growth = self._growth + 1 if self._grew(items, anchor_before) else 0
        if self._growth >= GROWTH_CLAIMS:
            self._finish(request.skip + len(items))
            return
        if len(items) == request.limit:
            # A full page: whatever end was claimed before, the list goes on.
            self._end_claim = None
            if anchor_before is not None and self._anchor is not None and self._anchor.id == anchor_before:
                # The whole page slid in before the anchor: the list grows at
                # least a page a request, faster than it can be read.
                if self._search_budget > 0:
                    self._search_budget -= 1
                else:
                    self._lost_track()
            return
        end = request.skip + len(items)
        if self._end_claim is not None and end <= self._end_claim.end:
            # A claimed end neither confirmed nor moved on (a list replaced as
            # fast as it is read): as a search that does not find its place.
            if self._search_budget <= 0:
                self.provably_complete = False  # the end stands, proving nothing
                self._finish(end)
                return
            self._search_budget -= 1
        proof = self._proof_request(request)
        self._next_skip = proof.skip
        self._next_limit = proof.limit if proof.limit != self.page_size else None
        self._end_claim = _EndClaim(end, self._items_past_anchor(items), proof)

    def _proof_request(self, short: Request) -> Request:
        """The request that can confirm the end a ``short`` page claimed.

        From a quarter page before the anchor (or the overlap kept, if wider):
        the last artworks of a list are where deletions happen (a newest-first
        list loses its oldest), and should the anchor be gone by then, the
        page still shows its place. A quarter page is also what a page that
        hides a few of its last items leaves to be seen past the anchor.
        Never the short request itself again: the same words prove nothing.
        """
        if self._anchor is None:  # no identified item: by offsets, right after the page
            skip = self._next_skip
        else:
            skip = max(0, self._anchor.position - max(self._margin, self.page_size // 4))
        limit = self.page_size
        if Request(skip, limit) == short:
            # One item more (one less at the API's largest page): another request.
            limit = limit + 1 if limit < MAX_LIMIT else limit - 1
        return Request(skip, limit)

    def _grew(self, items: Sequence[Item], anchor_before: str | None) -> bool:
        """Did this page find the list longer only by artworks created since
        the run began (the scan has reached the end the list had then, and
        reads what grows behind it; not a short page that hid the rest)?
        Never in a newest-first list, which grows at its head."""
        if anchor_before is None or self._order() == ListOrder.NEWEST_FIRST:
            return False
        index = next((i for i, item in enumerate(items) if item.id == anchor_before), None)
        if index is None or index == len(items) - 1:
            return False
        recent = self.now - GROWTH_TOLERANCE
        return all(item.created_at is not None and item.created_at >= recent for item in items[index + 1 :])

    def _lost_track(self) -> bool:
        """The search budget is spent: say this scan proves nothing; True to stop here."""
        self.provably_complete = False
        if self._order().is_sorted:
            # A sorted list that moves faster than we can find our place in
            # it: end this run without moving the cursor (the page read is
            # still stored); the next run resumes from the last proven place.
            self.done = True
            return True
        # No order to steer by and the anchor keeps moving (a list that
        # reshuffles): read on by plain offsets rather than stall. What is
        # seen is stored; nothing is marked deleted; later scans fill gaps.
        self._plain_offsets = True
        self._search = None
        self._anchor = None
        return False

    def reach(self) -> Reach:
        """How far this run has read in createdAt, and where it should end."""
        reached = self._anchor.created_at if self._anchor is not None else None
        order, end = self._order(), None
        if order == ListOrder.NEWEST_FIRST:
            end = self.since or (self._known_head if self.mode == Mode.INCREMENTAL else self._known_oldest)
        elif order == ListOrder.OLDEST_FIRST:
            end = self.now  # the newest artwork is about now
        return Reach(self._first_read, reached, end)

    def _reaches_floor(self, request: Request, items: Sequence[Item], start: int) -> bool:
        """In a newest-first list, does this (connected) page reach an artwork
        created before the floor? Then everything after it is older: the scan
        ends there, its cursor past the last artwork wanted. True when it ended."""
        if self.since is None or not self._newest_first_to_the_end():
            return False
        first_dated, last_dated = _first_dated(items), _last_dated(items)
        if first_dated is not None and last_dated is not None:
            self._page_span = first_dated - last_dated
        older = next(
            (
                index
                for index in range(start, len(items))
                if (created := items[index].created_at) is not None and created < self.since
            ),
            None,
        )
        if older is None:
            return False
        if older > start:  # artworks wanted past the anchor (not the anchor itself, a resumed scan's)
            self._advance(request, items[:older])
        self.reached_since = True
        self._finish_scan(request.skip + older, floor=True)
        return True

    def _newest_first_to_the_end(self) -> bool:
        """May the scan take the list as newest-first past what it has read, and
        stop at the floor? When a complete scan found it so, and when no scan
        ever told its order (a first backfill learns it from its pages); never
        when a complete scan found it unordered or oldest-first, however
        ordered its first pages look now."""
        known = self.state.list_order
        return (
            known in (ListOrder.NEWEST_FIRST, ListOrder.UNKNOWN) and self._order() == ListOrder.NEWEST_FIRST
        )

    def _pages_to_floor(self, count: int) -> int:
        """How many pages past the next one a newest-first scan likely reads
        before the floor, by the createdAt span of the last page; ``count`` when
        there is no floor or nothing to estimate by. Pages fetched ahead past
        the floor would be requests spent on nothing."""
        anchor, span = self._anchor, self._page_span
        if self.since is None or anchor is None or anchor.created_at is None or not span:
            return count
        if not self._newest_first_to_the_end():
            return count
        return max(0, math.ceil((anchor.created_at - self.since) / span) - 1)

    def _finish(self, end: int) -> None:
        """The end of the list is proven: ``end`` is its length as last read."""
        if self._head_scan:  # read the whole list without meeting the old head
            self._finish_head_scan()
        else:
            self._finish_scan(end)

    # ------------------------------------------------------------ scans

    def _start_scan(self, phase: Phase) -> None:
        st = self.state
        if st.phase == Phase.IDLE:  # the scan before completed: deletions compare with it
            st.previous_scan_started_at = st.scan_started_at
        st.phase = phase
        st.scan_started_at = self.now
        st.scan_since = self.since
        st.scan_order = ListOrder.UNKNOWN
        st.cursor_skip, st.cursor_id, st.cursor_created_at = 0, None, None
        self._anchor = None
        self._next_skip = 0
        self._head_scan = False
        self._end_claim, self._growth = None, 0

    def _resume_cursor(self) -> None:
        st = self.state
        if st.cursor_id is None or st.cursor_skip == 0:
            self._anchor, self._next_skip = None, st.cursor_skip
        else:
            position = st.cursor_skip - 1
            self._anchor = _Anchor(position, st.cursor_id, st.cursor_created_at)
            self._next_skip = position

    def _advance(self, request: Request, items: Sequence[Item]) -> None:
        last = next(
            ((offset, item) for offset, item in reversed(list(enumerate(items))) if item.id is not None),
            None,
        )
        if last is None:
            # Nothing identifiable to overlap on (a page of junk): trust offsets.
            self._anchor = None
            self._next_skip = request.skip + len(items)
        else:
            offset, item = last
            assert item.id is not None
            self._anchor = _Anchor(request.skip + offset, item.id, item.created_at)
            self._next_skip = max(0, request.skip + offset - self._margin)
        st = self.state
        if st.phase != Phase.IDLE:
            st.cursor_skip = self._anchor.position + 1 if self._anchor else self._next_skip
            st.cursor_id = self._anchor.id if self._anchor else None
            st.cursor_created_at = self._anchor.created_at if self._anchor else None
        elif not self._head_scan and self._anchor is not None:
            # oldest-first incremental: everything up to the anchor is stored
            st.tail_id, st.tail_created_at = self._anchor.id, self._anchor.created_at
            st.listed_total = self._anchor.position + 1

    def _confirms_end(self, request: Request, items: Sequence[Item]) -> bool:
        """Does this page prove that the list ends where a short page said?

        A short page only claims an end (``_EndClaim``): servers answer short
        pages mid-list. The request planned to confirm it (``proof``), asked
        from near the claim's last identified item and answered short too,
        confirms it when it holds nothing past that item's place that the
        claim had not shown: the place right after the list, asked for by two
        different requests, answered empty both times. Should the list have
        shifted meanwhile (artworks created before the anchor, or the anchor
        deleted), offsets moved but the anchor's place tells the same. Only a
        page that shows the anchor's place can: an empty page after it may be
        empty because the list moved up. Without an anchor to go by, the
        offsets must say it. An empty page at offset 0 needs no second word:
        there is no list before it to skip.
        """
        if not items and request.skip == 0:
            # No list before it to skip. (Should the answer be wrong, nothing is
            # lost: an empty scan marks nothing deleted, see the deletion
            # rules, and the next run reads the list again.)
            return True
        claim = self._end_claim
        if claim is None or request != claim.proof or len(items) >= request.limit:
            return False
        if self._anchor is None or claim.past_anchor is None:
            return request.skip + len(items) <= claim.end
        past = self._items_past_anchor(items)
        return past is not None and past <= claim.past_anchor

    def _items_past_anchor(self, items: Sequence[Item]) -> int | None:
        """How many items of a short page follow the anchor's place: after the
        anchor itself, or, when it is gone (deleted meanwhile) from a sorted
        list, after the last item that sorts at or before it (the page ends
        the list, so it reaches that place). None: the page cannot tell."""
        anchor = self._anchor
        if anchor is None:
            return None
        for index in range(len(items) - 1, -1, -1):
            if items[index].id == anchor.id:
                return len(items) - 1 - index
        order = self._order()
        if anchor.created_at is None or not order.is_sorted:
            return None
        for index in range(len(items) - 1, -1, -1):
            created_at = items[index].created_at
            if created_at is not None and not _sorts_before(order, anchor.created_at, created_at):
                return len(items) - 1 - index
        return None

    def _finish_scan(self, total: int, *, floor: bool = False) -> None:
        """The scan is done: at the end of the list (``total`` its length), or at
        the floor (``floor``: ``total`` is where the older artworks begin, not
        the list's length, which stays as last known)."""
        st = self.state
        self.done = True
        if st.phase == Phase.IDLE:  # oldest-first incremental reached the end
            st.listed_total = total if self._anchor is None else self._anchor.position + 1
            return
        self.scan_complete = True
        if self._order_guided and not st.scan_order.is_sorted:
            # We steered by an order the list turned out not to keep.
            self.provably_complete = False
        if st.scan_order != ListOrder.UNKNOWN or st.list_order == ListOrder.UNKNOWN:
            st.list_order = st.scan_order
        if self._anchor is not None:
            st.tail_id, st.tail_created_at = self._anchor.id, self._anchor.created_at
        if not floor:
            st.listed_total = total
        if st.scan_since is None:  # a scan with a floor saw none of the older artworks
            if st.phase == Phase.BACKFILL:
                st.backfill_completed_at = self.now
            st.last_full_sync_at = self.now
        st.scan_since = None
        st.phase = Phase.IDLE
        st.cursor_skip, st.cursor_id, st.cursor_created_at = 0, None, None

    def _record_head(self, items: Sequence[Item]) -> None:
        first = next((i for i in items if i.id is not None and i.created_at is not None), None)
        if first is not None:
            # An artwork dated ahead of syncd's clock is kept as read at this
            # run's start: what the next run compares with (_reached_head).
            assert first.created_at is not None
            self._new_head = Item(first.id, min(first.created_at, self.now))
            if self.state.phase != Phase.IDLE:
                self.state.head_id, self.state.head_created_at = self._new_head.id, self._new_head.created_at

    def _reached_head(self, items: Sequence[Item]) -> bool:
        """Has the incremental run read down to what the last run stored?

        When the page holds the previous head, by its id. Without it (the
        head was deleted, or lies further down), when the page holds an
        artwork created more than HEAD_SKEW before the head: every artwork
        created since the head was read is dated after that, even when the
        head's own createdAt is ahead of the rest (an artwork dated in the
        future, a server clock that jumped), by up to HEAD_SKEW. The head's
        createdAt alone does not do: the new artworks above a head dated
        ahead of them are all older than it.
        """
        st = self.state
        if st.head_id is None:
            return False
        if any(item.id == st.head_id for item in items):
            return True
        head_at = st.head_created_at
        if head_at is None:
            return False
        older = min(head_at, self.now) - HEAD_SKEW
        return any(i.created_at is not None and i.created_at < older for i in items)

    def _finish_head_scan(self) -> None:
        head = self._new_head
        if head is not None:
            self.state.head_id, self.state.head_created_at = head.id, head.created_at
        self.done = True

    # ------------------------------------------------------------ continuity

    def _order(self) -> ListOrder:
        """The order to reason with: established by a complete scan, or seen so far by this one."""
        st = self.state
        if st.list_order.is_sorted and st.scan_order in (st.list_order, ListOrder.UNKNOWN):
            return st.list_order
        if st.phase != Phase.IDLE and st.scan_order.is_sorted:
            return st.scan_order
        return ListOrder.UNKNOWN

    def _adapt_margin(self, request: Request, items: Sequence[Item]) -> None:
        anchor = self._anchor
        if anchor is None or not any(item.id == anchor.id for item in items):
            return
        found_at = request.skip + self._anchor_index(items)
        shift = anchor.position - found_at  # > 0: deletions before it moved it up
        if shift > 0:
            self._margin = min(max(1, self.page_size // 4), max(self._margin, 2 * shift))
            self._clean_pages = 0
        elif self._margin:
            self._clean_pages += 1
            if self._clean_pages >= 4:
                self._margin //= 2
                self._clean_pages = 0

    def _anchor_index(self, items: Sequence[Item]) -> int:
        if self._anchor is None:
            return 0
        for index, item in enumerate(items):
            if item.id == self._anchor.id:
                return index
        return 0

    def _connects(self, request: Request, items: Sequence[Item]) -> bool:
        """Does this page leave no gap after the anchor?"""
        anchor = self._anchor
        if anchor is None or request.skip == 0:
            return True
        if any(item.id == anchor.id for item in items):
            return True
        return self._place(request, items) == "straddles"

    def _place(self, request: Request, items: Sequence[Item]) -> str:
        """Where the page stands against the anchor's place in a sorted list.

        "before": a full page wholly before it; "straddles": starts before it and
        reaches it (or the end of the list); "after": empty, or starts at/after it,
        or nothing to compare with (which reads more, never less).
        """
        anchor = self._anchor
        order = self._order()
        first = _first_dated(items)
        if anchor is None or anchor.created_at is None or not order.is_sorted or first is None:
            return "after"
        if not _sorts_before(order, first, anchor.created_at):
            return "after"
        last = _last_dated(items)
        assert last is not None
        self._order_guided = True
        if len(items) == request.limit and _sorts_before(order, last, anchor.created_at):
            return "before"
        return "straddles"

    def _search_back(self, request: Request, items: Sequence[Item]) -> None:
        """The page did not connect: find the anchor's place again."""
        anchor = self._anchor
        assert anchor is not None
        if not self._order().is_sorted or anchor.created_at is None:
            self._search = None
            # No order to reason with: walk back page by page (each page
            # overlapping the previous one) until the anchor or offset 0.
            self._next_skip = max(0, request.skip - self._step)
            return
        first_miss = self._search is None
        self._probe = None
        lo, hi = self._search if self._search is not None else (0, None)
        if hi is not None and hi - lo <= self.page_size - 1 and request.skip == lo:
            # The page at lo should have spanned the anchor's place, and did not:
            # the list moved under the search. Start again from what this page says.
            lo, hi = 0, None
        if self._place(request, items) == "before":
            # Pushed down (artworks inserted before it): gallop forward, then bisect.
            if hi is None and self._search is not None:
                self._forward_step *= 2
            lo = max(lo, request.skip + len(items) - 1)
        else:
            hi = request.skip if hi is None else min(hi, request.skip)
            if first_miss and request.skip > 0:
                # Usually a few deletions moved it up a little: look one page
                # back first; bisection from offset 0 is for larger shifts.
                self._probe = max(0, request.skip - (self.page_size - 1))
        self._search = (lo, None if hi is None else max(lo, hi))

    def _check_order(self, items: Sequence[Item]) -> bool:
        """Fold the page into the order seen; True when the run became a full scan."""
        seen = observed_order(items)
        st = self.state
        st.scan_order = st.scan_order.merge(seen)
        if st.phase == Phase.IDLE and st.list_order.is_sorted and st.list_order.merge(seen) != st.list_order:
            # The list no longer keeps the order we relied on: read it all.
            st.list_order = ListOrder.UNORDERED
            self._start_scan(Phase.FULL)
            self.mode = Mode.FULL
            self._first_page = True
            return True
        return False
