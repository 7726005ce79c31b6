"""File transfers as bookkeeping: offers, consent, tokens, expiry (SPEC.md section 11a).

Pure, like chat/state.py: no sockets, threads or clock. The room (state.py)
asks this table whether a command about a transfer is allowed and what it
changes; the server's relay (server.py, FileRelay) moves the bytes and
reports how the relay ended. Parties are whatever the caller uses for a user
(the room passes its Session objects), compared by identity; a transfer is
named by its sender's name key and the tid the sender chose ([FILE-4]).

A transfer's life:

    OFFERED --ACCEPT--> ACCEPTED --both DATA--> RELAYING --relay ok--> RELAYED
       |                   |                       |                     |
       +--- REJECT, CANCEL, expiry, a party gone, a failed relay, RECEIVED ---> ended

Every failure is a TransferError carrying the ERR code it becomes.

RelayPacing, at the end, is the relays' budget: how many bytes they may move
now, given the time and how many chat lines the server has sent lately.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable, Hashable

from chat.protocol import ErrorCode, ProtocolError

OFFERED = "offered"
ACCEPTED = "accepted"
RELAYING = "relaying"
RELAYED = "relayed"

SENDER = "sender"
RECIPIENT = "recipient"


class TransferError(ProtocolError):
    """A command about a transfer that the rules refuse; becomes its ERR."""


@dataclasses.dataclass(eq=False)
class Transfer:
    """One file on its way from `sender` to `recipient`."""

    sender: Hashable
    recipient: Hashable
    #: (the sender's name key, tid): how commands name it.
    key: tuple[str, str]
    size: int
    sha256: str
    filename: str
    state: str = OFFERED
    #: When the current state expires ([FILE-12]), or None while relaying.
    deadline: float | None = None
    #: Data-connection token of each side, from ACCEPT on ([FILE-7]).
    tokens: dict[str, str] = dataclasses.field(default_factory=dict)
    #: Sides whose data connection presented its token.
    attached: set[str] = dataclasses.field(default_factory=set)
    #: Why it ended, once it has.
    reason: str | None = None

    def parties(self) -> list[Hashable]:
        """The sender, then the recipient unless they are one and the same."""
        return [self.sender] if self.sender is self.recipient else [self.sender, self.recipient]


def new_token() -> str:
    """[FILE-7]: 128 random bits as 32 hex digits."""
    return secrets.token_hex(16)


class TransferTable:
    """Every open transfer of one server, and the limits of [FILE-5] and [FILE-12]."""

    def __init__(self, file_max: int, per_user: int, per_server: int, expiry: int,
                 make_token: Callable[[], str] = new_token) -> None:
        self.file_max = file_max
        self.per_user = per_user
        self.per_server = per_server
        self.expiry = expiry
        self._make_token = make_token
        self._open: dict[tuple[str, str], Transfer] = {}
        self._by_token: dict[str, tuple[Transfer, str]] = {}
        #: Open transfers per sender, for [FILE-5].
        self._sent: dict[Hashable, int] = {}
        #: Transfers that expired, kept `expiry` seconds for [FILE-12]'s ERR:
        #: key -> (transfer, until). Bounded: at most `per_server` transfers
        #: are open at once, and each expired one is dropped after `expiry` s.
        self._expired: dict[tuple[str, str], tuple[Transfer, float]] = {}

    def __len__(self) -> int:
        return len(self._open)

    # -- the sender's side ---------------------------------------------------------

    def offer(self, sender: Hashable, recipient: Hashable, key: tuple[str, str], size: int,
              sha256: str, filename: str, now: float) -> Transfer:
        """[FILE-4], with the checks of [FILE-5] after NO_SUCH_USER (the room's)."""
        if size > self.file_max:
            raise TransferError(ErrorCode.FILE_TOO_LARGE, f"files are at most {self.file_max} bytes here")
        if key in self._open:
            raise TransferError(ErrorCode.TRANSFER_EXISTS, f"you have a transfer {key[1]} open already")
        if self._sent.get(sender, 0) >= self.per_user:
            raise TransferError(ErrorCode.TOO_MANY_TRANSFERS,
                                f"at most {self.per_user} transfers of yours at once")
        if len(self._open) >= self.per_server:
            raise TransferError(ErrorCode.TRANSFERS_FULL,
                                f"the server relays {self.per_server} transfers at once at most")
        transfer = Transfer(sender, recipient, key, size, sha256, filename, deadline=now + self.expiry)
        self._open[key] = transfer
        self._sent[sender] = self._sent.get(sender, 0) + 1
        self._expired.pop(key, None)
        return transfer

    # -- naming a transfer ([FILE-6], [FILE-12]) -------------------------------------

    def find(self, party: Hashable, key: tuple[str, str]) -> Transfer:
        """The open transfer `key` of which `party` is a party, or the ERR that says why not."""
        transfer = self._open.get(key)
        if transfer is not None and party in (transfer.sender, transfer.recipient):
            return transfer
        expired = self._expired.get(key)
        if expired is not None and party in (expired[0].sender, expired[0].recipient):
            raise TransferError(ErrorCode.OFFER_EXPIRED, "that offer expired")
        raise TransferError(ErrorCode.NO_SUCH_TRANSFER, "no such transfer of yours")

    # -- the recipient's side -----------------------------------------------------------

    def accept(self, party: Hashable, key: tuple[str, str], now: float,
               tokens: dict[str, str] | None = None) -> Transfer:
        """[FILE-7]: tokens for both sides (`tokens`, by side, if the caller made
        them: a cluster's servers take them from the log); the data connections
        have `expiry` seconds."""
        transfer = self._offered_to(party, key)
        transfer.state = ACCEPTED
        transfer.deadline = now + self.expiry
        for side in (SENDER, RECIPIENT):
            token = tokens[side] if tokens else self._make_token()
            transfer.tokens[side] = token
            self._by_token[token] = (transfer, side)
        return transfer

    def reject(self, party: Hashable, key: tuple[str, str]) -> Transfer:
        """[FILE-9]."""
        return self._end(self._offered_to(party, key), "rejected")

    def _offered_to(self, party: Hashable, key: tuple[str, str]) -> Transfer:
        transfer = self.find(party, key)
        if party is not transfer.recipient:
            raise TransferError(ErrorCode.WRONG_STATE, "only the recipient answers an offer")
        if transfer.state != OFFERED:
            raise TransferError(ErrorCode.WRONG_STATE, "that offer was answered already")
        return transfer

    def received(self, party: Hashable, key: tuple[str, str], ok: bool) -> Transfer:
        """[FILE-18]: the recipient's verdict once the relay has finished."""
        transfer = self.find(party, key)
        if party is not transfer.recipient or transfer.state != RELAYED:
            raise TransferError(ErrorCode.WRONG_STATE, "RECEIVED is the recipient's, after the relay")
        return self._end(transfer, "done" if ok else "corrupt")

    # -- either side ----------------------------------------------------------------------

    def cancel(self, party: Hashable, key: tuple[str, str]) -> Transfer:
        """[FILE-10]: any state, either party."""
        return self._end(self.find(party, key), "cancelled")

    def party_gone(self, party: Hashable) -> list[Transfer]:
        """[FILE-13]: end every open transfer `party` takes part in."""
        return [self._end(t, "gone") for t in list(self._open.values())
                if party in (t.sender, t.recipient)]

    # -- data connections -------------------------------------------------------------------

    def attach(self, token: str) -> tuple[Transfer, str]:
        """[FILE-15], [FILE-16]: a data connection presents `token`; returns (transfer, side).

        A token works once. When both sides are attached the transfer is
        relaying and has no deadline: the relay ends it, or a party does.
        """
        found = self._by_token.pop(token, None)
        if found is None:
            raise TransferError(ErrorCode.BAD_TOKEN, "that token opens nothing")
        transfer, side = found
        transfer.attached.add(side)
        if len(transfer.attached) == 2:
            transfer.state = RELAYING
            transfer.deadline = None
        return transfer, side

    def relay_finished(self, transfer: Transfer, outcome: str, now: float) -> Transfer | None:
        """The relay of `transfer` ended: "ok" (size bytes, then the sender's end),
        "aborted" or "oversize". Returns the transfer if this ended it; None if
        it had ended already (a CANCEL cuts the relay, which then reports)."""
        if self._open.get(transfer.key) is not transfer or transfer.state != RELAYING:
            return None
        if outcome == "ok":
            transfer.state = RELAYED
            transfer.deadline = now + self.expiry
            return None
        return self._end(transfer, outcome)

    # -- time -----------------------------------------------------------------------------------

    def expire(self, now: float) -> list[Transfer]:
        """[FILE-12]: end what waited `expiry` seconds; forget old expiries."""
        for key, (_, until) in list(self._expired.items()):
            if now >= until:
                del self._expired[key]
        ended = []
        for transfer in list(self._open.values()):
            if transfer.deadline is not None and now >= transfer.deadline:
                ended.append(self._end(transfer, "expired"))
                self._expired[transfer.key] = (transfer, now + self.expiry)
        return ended

    # -- the end --------------------------------------------------------------------------------

    def _end(self, transfer: Transfer, reason: str) -> Transfer:
        transfer.reason = reason
        del self._open[transfer.key]
        for token in transfer.tokens.values():
            self._by_token.pop(token, None)
        remaining = self._sent[transfer.sender] - 1
        if remaining:
            self._sent[transfer.sender] = remaining
        else:
            del self._sent[transfer.sender]
        return transfer


@dataclasses.dataclass(frozen=True)
class Grant:
    """RelayPacing's answer to a relay: move up to `count` bytes now, or ask again after
    `wait` seconds (count 0). `charged`: how many of them were drawn from the busy budget."""

    count: int
    wait: float = 0.0
    charged: int = 0


class RelayPacing:
    """How fast a server's relays may move bytes: flat out while chat is quiet, together at
    most `rate` bytes a second while it is busy (SPEC.md 11a.3, rationale; README, Sharing files).

    On a machine where the server shares its cores, two relays going as fast as loopback
    allows take the processor the chat lines need, however low their threads' priority:
    much of their work is the kernel's, which niceness does not reach. So the relays yield
    to chat. Chat is busy once `busy_lines` lines were sent within `window` seconds (or,
    between two looks further apart, on average at that rate), and stays busy for `hold`
    seconds after it was last seen so. While it is busy, every relay of the server draws
    on one budget, so the bound holds however many transfers run: a relay is granted at
    most `chunk` bytes at a time, drawn from the budget as they are granted (so that
    relays asking at once cannot spend the same bytes), and a grant is given only while
    the grants so far are no more than `chunk` bytes ahead of `rate`: a token bucket
    `chunk` bytes deep, which one grant may overdraw and the next then waits for. Over any
    stretch of busy time T the relays move at most rate * T + 2 * chunk bytes.

    Pure: the caller passes the time (`now`) and its running count of chat lines sent
    (`lines_sent`, which only grows), and serialises the calls of its relays. A relay asks
    `allowance()` before each move and reports `moved()` after it (0 bytes if its socket
    had none), which gives back what the grant left unused.
    """

    def __init__(self, rate: float, chunk: int, busy_lines: int, window: float, hold: float,
                 now: float = 0.0, lines_sent: int = 0) -> None:
        self.rate = rate
        self.chunk = chunk
        self.busy_lines = busy_lines
        self.window = window
        self.hold = hold
        #: Where the current look at the chat began: (time, lines sent by then).
        self._since = now
        self._lines_since = lines_sent
        #: Chat counts as busy until then.
        self._busy_until = float("-inf")
        #: When the bytes granted while busy would all have moved at `rate` (in the past,
        #: or at most `chunk` bytes' time ahead, when a grant may be given).
        self._paid_at = now

    def busy(self, now: float, lines_sent: int) -> bool:
        """Whether chat is busy now, given the lines sent so far."""
        lines = lines_sent - self._lines_since
        elapsed = now - self._since
        if lines * self.window >= self.busy_lines * max(elapsed, self.window):
            self._busy_until = now + self.hold
            self._since, self._lines_since = now, lines_sent
        elif elapsed >= self.window:
            self._since, self._lines_since = now, lines_sent
        return now < self._busy_until

    def allowance(self, now: float, lines_sent: int, wanted: int) -> Grant:
        """What a relay that wants to move `wanted` bytes may do now."""
        if not self.busy(now, lines_sent):
            return Grant(wanted)
        wait = (self._paid_at - self.chunk / self.rate) - now
        if wait > 0:
            return Grant(0, wait)
        count = min(wanted, self.chunk)
        self._paid_at = max(self._paid_at, now) + count / self.rate
        return Grant(count, charged=count)

    def moved(self, grant: Grant, count: int) -> None:
        """A relay moved `count` bytes of `grant`: the budget gets back what it left unused."""
        self._paid_at -= (grant.charged - min(count, grant.charged)) / self.rate
