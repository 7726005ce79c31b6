"""File sharing for clients (SPEC.md section 11a): what the CLI and the GUI share.

Two halves, kept apart:

- Pure (no sockets, threads or clock): `safe_filename` and `free_path` (the
  receiver's safety rules of [FILE-17]), `FileTransfers` (the client's book
  of offers: commands to lines, server lines to events), `Progress` (rate,
  time left, a text bar). A front end calls FileTransfers from the thread
  that owns the chat connection, like the client core.
- I/O at the edge: `hash_file`, `IncomingFile` (a temporary file beside the
  final one, renamed only after `ENDED ... done`, removed otherwise), and
  `send_file` / `receive_file`, which run one data connection each ([FILE-15])
  in a thread of the front end's, and report progress through a callback.

Nothing here opens or runs a received file ([FILE-17]).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import socket
import ssl
import tempfile
import threading
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path

from chat import protocol

#: Bytes read from a file or a data connection at a time.
CHUNK = 256 * 1024
#: Longest filename kept, in characters (most file systems allow 255 bytes).
NAME_MAX = 120
#: What a name that sanitises to nothing becomes.
FALLBACK_NAME = "file"
#: [FRAME-8]'s characters, and every other control or format character
#: (Unicode categories Cc and Cf: zero-width and bidirectional marks too).
_UNSAFE_CATEGORIES = ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")
#: Characters Windows refuses in names, plus both separators.
_RESERVED = re.compile(r'[/\\:*?"<>|]')
#: Seconds a data connection waits for the server (HELLO, READY) before giving up.
DATA_TIMEOUT = 30.0


# -- the safety rules of [FILE-17] ---------------------------------------------------------


def safe_filename(offered: str) -> str:
    """The offered name, made safe to use as a file's name in the downloads folder.

    Path separators, `..`, leading dots and spaces, control and
    bidirectional characters, and the characters Windows refuses are removed
    or replaced; what is left is at most NAME_MAX characters, never empty.
    The result is what the user is shown ([FILE-17]: "shown as sanitised").
    """
    text = unicodedata.normalize("NFC", offered)
    text = "".join("_" if unicodedata.category(c) in _UNSAFE_CATEGORIES else c for c in text)
    text = _RESERVED.sub("_", text)
    text = text.replace("..", "_")
    text = text.strip(" ").lstrip(".").strip(" ")
    if len(text) > NAME_MAX:
        stem, dot, suffix = text.rpartition(".")
        keep = suffix if dot and len(suffix) <= 16 else ""
        text = text[:NAME_MAX - len(keep) - (1 if keep else 0)] + ("." + keep if keep else "")
    if text.upper().split(".")[0] in {"CON", "PRN", "AUX", "NUL", *(f"COM{n}" for n in range(1, 10)),
                                      *(f"LPT{n}" for n in range(1, 10))}:
        text = "_" + text  # Windows' reserved device names
    return text or FALLBACK_NAME


def free_path(directory: Path, name: str, exists: Callable[[Path], bool] = os.path.lexists) -> Path:
    """`directory/name`, or `name (2)`, `name (3)` ... if taken: never an existing file."""
    candidate = directory / name
    stem, dot, suffix = name.rpartition(".")
    if not dot or not stem:
        stem, suffix = name, ""
    number = 2
    while exists(candidate):
        candidate = directory / (f"{stem} ({number})" + (f".{suffix}" if suffix else ""))
        number += 1
    return candidate


def default_downloads() -> Path:
    """~/Downloads if it exists, else the home folder."""
    home = Path.home()
    downloads = home / "Downloads"
    return downloads if downloads.is_dir() else home


# -- the book of transfers (pure) --------------------------------------------------------------


@dataclasses.dataclass
class Transfer:
    """One transfer as this client sees it."""

    sender: str
    recipient: str
    tid: str
    size: int
    sha256: str
    #: The offered name: as sent (ours) or as received (theirs), unsanitised.
    filename: str
    #: True if we send it.
    outgoing: bool
    #: "offered", "accepted", "relaying", then the ENDED reason.
    state: str = "offered"
    #: Our data-connection token, once ACCEPTED.
    token: str | None = None
    #: Ours: the file to send. Theirs: where it will be saved, once accepted.
    path: Path | None = None
    #: Bytes moved so far (the front end's data thread updates it).
    done: int = 0

    @property
    def ref(self) -> str:
        """How the user names it in /accept, /reject, /cancel: `sender/tid`."""
        return f"{self.sender}/{self.tid}"

    @property
    def shown_name(self) -> str:
        return safe_filename(self.filename)


@dataclasses.dataclass(frozen=True)
class OfferReceived:
    """Someone offers us a file: ask the user (accept dialog, or a notice for /accept)."""

    transfer: Transfer


@dataclasses.dataclass(frozen=True)
class OfferSent:
    """The server passed our offer on ([FILE-4]); now the recipient decides."""

    transfer: Transfer


@dataclasses.dataclass(frozen=True)
class StartData:
    """Both sides agreed ([FILE-7]): open our data connection with `transfer.token`."""

    transfer: Transfer


@dataclasses.dataclass(frozen=True)
class TransferEnded:
    """ENDED: `reason` as SPEC.md 11a's table says; `transfer.state` holds it too."""

    transfer: Transfer
    reason: str


FileEvent = OfferReceived | OfferSent | StartData | TransferEnded

#: What each ENDED reason means, for people.
END_REASONS = {
    "done": "complete, size and SHA-256 checked",
    "rejected": "declined by the recipient",
    "cancelled": "cancelled",
    "expired": "expired: not answered in time",
    "gone": "the other side left",
    "aborted": "broken off before the end",
    "oversize": "the sender sent more than it offered",
    "corrupt": "arrived damaged (size or SHA-256 did not match)",
}


class FileTransfers:
    """The client's transfers: commands in, lines out; server lines in, events out.

    `me` is our name (set it after registering, and after a rename).
    """

    def __init__(self, me: str = "") -> None:
        self.me = me
        self._transfers: dict[tuple[str, str], Transfer] = {}
        self._next_tid = 1
        #: Our offers not yet echoed: tid -> the file's path.
        self._pending_paths: dict[str, Path] = {}

    def __iter__(self):
        return iter(list(self._transfers.values()))

    # -- commands -> lines ----------------------------------------------------------------

    def offer(self, recipient: str, path: Path, size: int, sha256: str) -> str:
        """`/send NAME PATH`: the OFFER line. The transfer is booked when the echo comes."""
        tid = str(self._next_tid)
        self._next_tid += 1
        name = protocol.replace_control_characters(path.name, "_").strip(" ") or FALLBACK_NAME
        self._pending_paths[tid] = path
        return f"OFFER {recipient} {tid} {size} {sha256} {name}"

    def find(self, ref: str | None, *, incoming: bool | None = None, state: str | None = None) -> Transfer:
        """The transfer `ref` names (`sender/tid`, or a tid alone when only one has it);
        with no ref, the only one that fits. LookupError with a message for the user otherwise."""
        matches = [t for t in self._transfers.values()
                   if (incoming is None or t.outgoing != incoming) and (state is None or t.state == state)]
        if ref:
            sender, slash, tid = ref.rpartition("/")
            matches = [t for t in matches if t.tid == tid
                       and (not slash or protocol.name_key(t.sender) == protocol.name_key(sender))]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise LookupError("no such transfer" + (f": {ref}" if ref else ""))
        raise LookupError("which one? " + ", ".join(t.ref for t in matches))

    def accept(self, transfer: Transfer, path: Path) -> str:
        """`/accept`: save to `path` (chosen by the user or free_path), the ACCEPT line."""
        transfer.path = path
        return f"ACCEPT {transfer.sender} {transfer.tid}"

    @staticmethod
    def reject(transfer: Transfer) -> str:
        return f"REJECT {transfer.sender} {transfer.tid}"

    @staticmethod
    def cancel(transfer: Transfer) -> str:
        return f"CANCEL {transfer.sender} {transfer.tid}"

    @staticmethod
    def verdict(transfer: Transfer, ok: bool) -> str:
        """[FILE-17]: after the data connection ended, our check's result."""
        return f"RECEIVED {transfer.sender} {transfer.tid} {'ok' if ok else 'corrupt'}"

    # -- server lines -> events ---------------------------------------------------------

    def server_line(self, line: str) -> list[FileEvent] | None:
        """One server line; None if it is not about file sharing (pass it on)."""
        reply = protocol.parse_reply(line)
        fields = reply.fields
        if reply.verb == "OFFER" and len(fields) == 6 and fields[3].isdigit():
            sender, recipient, tid, size, sha, filename = fields
            outgoing = protocol.name_key(sender) == protocol.name_key(self.me)
            transfer = Transfer(sender, recipient, tid, int(size), sha, filename, outgoing)
            if outgoing:
                transfer.path = self._pending_paths.pop(tid, None)
            self._transfers[(protocol.name_key(sender), tid)] = transfer
            return [OfferSent(transfer) if outgoing else OfferReceived(transfer)]
        if reply.verb == "ACCEPTED" and len(fields) == 3:
            transfer = self._transfers.get((protocol.name_key(fields[0]), fields[1]))
            if transfer is None:
                return []
            transfer.state, transfer.token = "accepted", fields[2]
            return [StartData(transfer)]
        if reply.verb == "ENDED" and len(fields) == 3:
            transfer = self._transfers.pop((protocol.name_key(fields[0]), fields[1]), None)
            if transfer is None:
                return []
            transfer.state = fields[2]
            return [TransferEnded(transfer, fields[2])]
        return None

    def forget_all(self, reason: str = "gone") -> list[FileEvent]:
        """The chat connection is lost: every transfer is over ([FILE-13])."""
        ended = []
        for key, transfer in list(self._transfers.items()):
            del self._transfers[key]
            transfer.state = reason
            ended.append(TransferEnded(transfer, reason))
        return ended


def describe(transfer: Transfer) -> str:
    """One line for /transfers."""
    direction = f"to {transfer.recipient}" if transfer.outgoing else f"from {transfer.sender}"
    return (f"{transfer.ref}  {transfer.shown_name}  {format_size(transfer.size)}  {direction}  "
            f"{transfer.state}" + (f"  {transfer.done * 100 // max(1, transfer.size)}%"
                                   if transfer.state == "relaying" else ""))


# -- progress (pure) ------------------------------------------------------------------------------


def format_size(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


def format_duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}:{seconds % 60:02d}"


class Progress:
    """Rate and time left of one transfer, from (bytes done, time) samples.

    The rate is over the last WINDOW seconds, so it follows a changing link.
    """

    WINDOW = 3.0

    def __init__(self, total: int, now: float) -> None:
        self.total = total
        self.started = now
        self._samples: list[tuple[float, int]] = [(now, 0)]

    def update(self, done: int, now: float) -> None:
        self._samples.append((now, done))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.WINDOW:
            self._samples.pop(0)

    @property
    def done(self) -> int:
        return self._samples[-1][1]

    def rate(self) -> float:
        (t0, d0), (t1, d1) = self._samples[0], self._samples[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 else 0.0

    def time_left(self) -> float | None:
        rate = self.rate()
        return (self.total - self.done) / rate if rate > 0 else None

    def bar(self, width: int = 20) -> str:
        """`[#########-----------]  45%  12.3 MB/s  0:04 left`"""
        fraction = self.done / self.total if self.total else 1.0
        filled = int(fraction * width)
        left = self.time_left()
        return (f"[{'#' * filled}{'-' * (width - filled)}] {fraction * 100:3.0f}%  "
                f"{format_size(self.rate())}/s  " + (f"{format_duration(left)} left" if left is not None
                                                     else "--:-- left"))


# -- files (I/O) -------------------------------------------------------------------------------------


def hash_file(path: Path) -> tuple[int, str]:
    """(size, SHA-256) of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


class IncomingFile:
    """[FILE-17]: a received file, written under a temporary name in the target's folder,
    hashed as it comes, given its final name only by `commit()`, and removed by
    `discard()`. The final name is never an existing file's: commit() refuses
    rather than replace (os.link, which fails if the name exists)."""

    def __init__(self, final: Path) -> None:
        self.final = final
        handle, temporary = tempfile.mkstemp(prefix=".chat-", suffix=".part", dir=final.parent)
        self.temporary = Path(temporary)
        self._file = os.fdopen(handle, "wb")
        self._digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self._digest.update(data)
        self.size += len(data)

    def matches(self, size: int, sha256: str) -> bool:
        """Both checks of [FILE-17]."""
        return self.size == size and self._digest.hexdigest() == sha256

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def commit(self) -> Path:
        """The final name, given only now (after `ENDED ... done`). FileExistsError if
        something took the name meanwhile: the file stays under its temporary name."""
        self.close()
        os.link(self.temporary, self.final)
        self.temporary.unlink()
        return self.final

    def discard(self) -> None:
        self.close()
        try:
            self.temporary.unlink()
        except FileNotFoundError:
            pass


# -- data connections (I/O) ------------------------------------------------------------------------


class DataConnectionError(Exception):
    """The data connection failed (the server said why on the chat connection, usually)."""


def open_data_connection(address: tuple[str, int], token: str, *, tls: ssl.SSLContext | None = None,
                         server_hostname: str | None = None, timeout: float = DATA_TIMEOUT) -> tuple[
                             socket.socket, bytes]:
    """Connect (inside TLS if `tls`), then present_token()."""
    sock = socket.create_connection(address, timeout=timeout)
    try:
        if tls is not None:
            # suppress_ragged_eofs=False: only close_notify is an orderly end ([FILE-15]).
            sock = tls.wrap_socket(sock, server_hostname=server_hostname or address[0],
                                   suppress_ragged_eofs=False)
    except BaseException:
        sock.close()
        raise
    return present_token(sock, token)


def present_token(sock: socket.socket, token: str) -> tuple[socket.socket, bytes]:
    """On a new connection: read HELLO, send `DATA <token>`, wait for READY ([FILE-15]).

    Returns the socket and any file bytes that came with READY; closes it on failure."""
    try:
        sock.sendall(f"DATA {token}\n".encode())
        buffer = b""
        lines = 0
        while True:
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                lines += 1
                text = line.decode("utf-8", "replace")
                if text.startswith("READY "):
                    return sock, buffer
                if text.startswith("ERR ") or (lines == 1 and not text.startswith("HELLO ")):
                    raise DataConnectionError(protocol.replace_control_characters(text))
            data = sock.recv(65536)
            if not data:
                raise DataConnectionError("the server closed the data connection")
            buffer += data
    except BaseException:
        sock.close()
        raise


def send_file(sock: socket.socket, path: Path, size: int,
              on_progress: Callable[[int], None] = lambda done: None) -> None:
    """The sender's side: `size` bytes of `path`, then the end of stream."""
    done = 0
    with open(path, "rb") as file:
        while done < size:
            chunk = file.read(min(CHUNK, size - done))
            if not chunk:
                raise DataConnectionError(f"{path} became shorter while it was being sent")
            sock.sendall(chunk)
            done += len(chunk)
            on_progress(done)
    try:
        if isinstance(sock, ssl.SSLSocket):
            sock = sock.unwrap()  # close_notify, our end of stream; returns on the server's
        else:
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(DATA_TIMEOUT)
            while sock.recv(65536):  # until the server closes: the relay is done with us
                pass
    except (OSError, ssl.SSLError):
        pass  # The outcome comes as ENDED on the chat connection.
    finally:
        sock.close()


def receive_file(sock: socket.socket, first: bytes, incoming: IncomingFile, size: int,
                 on_progress: Callable[[int], None] = lambda done: None) -> bool:
    """The recipient's side: read to the end. True if the server ended the connection in
    order after exactly `size` bytes ([FILE-15]); the hash is checked by the caller."""
    if first:
        incoming.write(first[:size + 1])
        on_progress(incoming.size)
    orderly = False
    try:
        while incoming.size <= size:
            data = sock.recv(CHUNK)
            if not data:
                orderly = True
                break
            incoming.write(data)
            on_progress(incoming.size)
    except (OSError, ssl.SSLError):
        orderly = False
    finally:
        incoming.close()
        sock.close()
    return orderly and incoming.size == size



# -- one front end's file sharing: commands, notices, data threads ----------------------------------


@dataclasses.dataclass(frozen=True)
class Hashed:
    """Posted by the hashing thread of /send."""

    recipient: str
    path: Path
    size: int
    sha256: str
    error: str | None = None


@dataclasses.dataclass(frozen=True)
class DataProgress:
    """Posted by a data thread: `done` bytes moved so far."""

    key: tuple[str, str]
    done: int


@dataclasses.dataclass(frozen=True)
class DataFinished:
    """Posted by a data thread at its end. For the recipient, `complete` says whether
    the server ended the connection in order after exactly `size` bytes."""

    key: tuple[str, str]
    complete: bool
    error: str | None = None


PostedEvent = Hashed | DataProgress | DataFinished


@dataclasses.dataclass
class Reply:
    """What a FileSession call asks of its front end: lines to send on the chat
    connection (through the client core, so that their replies are accounted
    for), and notices to show."""

    lines: list[str] = dataclasses.field(default_factory=list)
    notices: list[str] = dataclasses.field(default_factory=list)
    #: For a graphical front end: offers to ask about (an accept dialog), transfers
    #: whose progress changed (a bar each), and transfers that ended (bar removed).
    offers: list[Transfer] = dataclasses.field(default_factory=list)
    progress: list[tuple[Transfer, Progress]] = dataclasses.field(default_factory=list)
    ended: list[Transfer] = dataclasses.field(default_factory=list)

    def __iadd__(self, other: Reply) -> Reply:
        self.lines += other.lines
        self.notices += other.notices
        self.offers += other.offers
        self.progress += other.progress
        self.ended += other.ended
        return self


USAGE = """\
/send NAME PATH       offer a file to NAME
/accept [ID] [PATH]   accept an offer (into the downloads folder, or PATH)
/reject [ID]          decline an offer
/cancel [ID]          stop a transfer, yours or theirs, at any point
/transfers            list the transfers, with progress"""


def _key(transfer: Transfer) -> tuple[str, str]:
    return (protocol.name_key(transfer.sender), transfer.tid)


class FileSession:
    """File sharing for one front end (the CLI, the GUI): the commands of SPEC.md 11a's
    client, the notices to show, and a thread per data connection and per hash.

    Call it from the front end's main thread only. Threads hand their results back
    through `post(event)`, which the front end must make thread-safe (a queue and a
    wake-up); it then calls `posted(event)` from its main thread. `opener()` returns
    a new connected socket to the server, inside TLS when the chat is ([FILE-15]).
    `me` and `file_max` come from the client core (our name; HELLO's file-max).
    """

    COMMANDS = ("/send", "/accept", "/reject", "/cancel", "/transfers")
    #: Seconds between two progress notices of one transfer.
    PROGRESS_EVERY = 2.0

    def __init__(self, opener: Callable[[], socket.socket], post: Callable[[PostedEvent], None],
                 downloads: Path | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.opener = opener
        self.post = post
        self.downloads = downloads or default_downloads()
        self.clock = clock
        self.book = FileTransfers()
        self.file_max = 0
        self._incoming: dict[tuple[str, str], IncomingFile] = {}
        self._progress: dict[tuple[str, str], Progress] = {}
        self._shown_at: dict[tuple[str, str], float] = {}
        self._sockets: dict[tuple[str, str], socket.socket] = {}
        self._threads: list[threading.Thread] = []

    @property
    def me(self) -> str:
        return self.book.me

    @me.setter
    def me(self, name: str) -> None:
        self.book.me = name

    def handles(self, text: str) -> bool:
        return text.split(" ", 1)[0].lower() in self.COMMANDS

    def busy(self) -> bool:
        """Whether any transfer is still open (a script waits for them before it leaves)."""
        return any(True for _ in self.book)

    # -- the user's commands ----------------------------------------------------------------

    def command(self, text: str) -> Reply:
        word, _, rest = text.strip().partition(" ")
        word, rest = word.lower(), rest.strip()
        if word == "/transfers":
            return self._list()
        if not self.file_max:
            return Reply(notices=["this server does not relay files (its HELLO has no file-max)"])  # [FILE-3]
        try:
            if word == "/send":
                return self._send(rest)
            if word == "/accept":
                return self._accept(rest)
            ref = rest or None
            if word == "/reject":
                return Reply([self.book.reject(self.book.find(ref, incoming=True, state="offered"))])
            return Reply([self.book.cancel(self.book.find(ref))])
        except LookupError as error:
            return Reply(notices=[str(error)])

    def _send(self, rest: str) -> Reply:
        recipient, _, path_text = rest.partition(" ")
        if not recipient or not path_text:
            return Reply(notices=["usage: /send NAME PATH"])
        path = Path(path_text).expanduser()
        if not path.is_file():
            return Reply(notices=[f"no such file: {path}"])
        size = path.stat().st_size
        if size > self.file_max:
            return Reply(notices=[f"{path.name} is {format_size(size)}; this server relays at most "
                                  f"{format_size(self.file_max)}"])
        self._start(self._hash, recipient, path)
        return Reply(notices=[f"* checking {path.name} ({format_size(size)}) before offering it "
                              f"to {recipient}"])

    def _hash(self, recipient: str, path: Path) -> None:
        try:
            size, digest = hash_file(path)
            self.post(Hashed(recipient, path, size, digest))
        except OSError as error:
            self.post(Hashed(recipient, path, 0, "", error=str(error.strerror or error)))

    def _accept(self, rest: str) -> Reply:
        first, _, second = rest.partition(" ")
        try:
            transfer = self.book.find(first or None, incoming=True, state="offered")
            path_text = second
        except LookupError:
            if not first:
                raise
            transfer = self.book.find(None, incoming=True, state="offered")  # the only one
            path_text = rest
        if path_text:
            target = Path(path_text).expanduser()
            if target.is_dir():
                target = free_path(target, transfer.shown_name)
            elif os.path.lexists(target):
                return Reply(notices=[f"{target} exists and is never replaced: give another name"])
            elif not target.parent.is_dir():
                return Reply(notices=[f"no such folder: {target.parent}"])
        else:
            target = free_path(self.downloads, transfer.shown_name)
        return Reply([self.book.accept(transfer, target)],
                     [f"* accepted {transfer.shown_name}; it will be saved as {target}"])

    def _list(self) -> Reply:
        transfers = list(self.book)
        if not transfers:
            return Reply(notices=["no transfers"])
        notices = []
        for transfer in transfers:
            notice = describe(transfer)
            progress = self._progress.get(_key(transfer))
            if progress is not None:
                notice += "  " + progress.bar()
            notices.append(notice)
        return Reply(notices=notices)

    # -- the server's lines -------------------------------------------------------------------

    def server_line(self, line: str) -> Reply | None:
        """A server line; None if it is not about file sharing."""
        events = self.book.server_line(line)
        if events is None:
            return None
        reply = Reply()
        for event in events:
            transfer = event.transfer
            if isinstance(event, OfferReceived):
                reply.offers.append(transfer)
                reply.notices.append(
                    f"* {transfer.sender} offers you {transfer.shown_name} ({format_size(transfer.size)}): "
                    f"/accept {transfer.ref} [PATH] or /reject {transfer.ref}")
            elif isinstance(event, OfferSent):
                reply.notices.append(f"* offered {transfer.shown_name} to {transfer.recipient}; waiting for "
                                     f"an answer (/cancel {transfer.ref})")
            elif isinstance(event, StartData):
                reply += self._start_data(transfer)
            else:
                reply += self._ended(transfer, event.reason)
        return reply

    def _start_data(self, transfer: Transfer) -> Reply:
        key = _key(transfer)
        progress = self._progress[key] = Progress(transfer.size, self.clock())
        if transfer.outgoing:
            self._start(self._run_sender, transfer)
            return Reply(notices=[f"* {transfer.recipient} accepted {transfer.shown_name}: sending"],
                         progress=[(transfer, progress)])
        try:
            self._incoming[key] = IncomingFile(transfer.path)
        except OSError as error:
            return Reply([self.book.cancel(transfer)], [f"cannot write to {transfer.path.parent}: {error}"])
        self._start(self._run_recipient, transfer, self._incoming[key])
        return Reply(notices=[f"* receiving {transfer.shown_name}"], progress=[(transfer, progress)])

    def _ended(self, transfer: Transfer, reason: str) -> Reply:
        key = _key(transfer)
        self._cut(key)
        self._progress.pop(key, None)
        self._shown_at.pop(key, None)
        incoming = self._incoming.pop(key, None)
        meaning = END_REASONS.get(reason, reason)
        if incoming is not None and reason == "done":
            try:
                notice = f"* {transfer.shown_name}: {meaning}; saved as {incoming.commit()}"
            except OSError as error:
                notice = (f"* {transfer.shown_name}: {meaning}, but {incoming.final} could not be made "
                          f"({error}); it is in {incoming.temporary}")
            return Reply(notices=[notice], ended=[transfer])
        if incoming is not None:
            incoming.discard()  # [FILE-17]: nothing partial or corrupt stays
        return Reply(notices=[f"* {transfer.shown_name} ({transfer.ref}): {meaning}"], ended=[transfer])

    # -- what the threads posted ---------------------------------------------------------------

    def posted(self, event: PostedEvent) -> Reply:
        """An event a thread posted, handled in the front end's main thread."""
        if isinstance(event, Hashed):
            if event.error:
                return Reply(notices=[f"cannot read {event.path}: {event.error}"])
            return Reply([self.book.offer(event.recipient, event.path, event.size, event.sha256)])
        transfer = next((t for t in self.book if _key(t) == event.key), None)
        if transfer is None:
            return Reply()  # ended meanwhile
        if isinstance(event, DataProgress):
            transfer.done = event.done
            transfer.state = "relaying"
            progress = self._progress[event.key]
            now = self.clock()
            progress.update(event.done, now)
            if now - self._shown_at.get(event.key, -1e9) < self.PROGRESS_EVERY:
                return Reply(progress=[(transfer, progress)])
            self._shown_at[event.key] = now
            return Reply(notices=[f"  {transfer.ref} {transfer.shown_name} {progress.bar()}"],
                         progress=[(transfer, progress)])
        if event.error:
            return Reply(notices=[f"* {transfer.shown_name}: data connection failed: {event.error}"])
        if transfer.outgoing:
            return Reply(notices=[f"* {transfer.shown_name} sent; waiting for {transfer.recipient}'s check"])
        incoming = self._incoming.get(event.key)
        ok = event.complete and incoming is not None and incoming.matches(transfer.size, transfer.sha256)
        notice = "size and SHA-256 match" if ok else "it did not arrive whole and unchanged"
        return Reply([self.book.verdict(transfer, ok)], [f"* {transfer.shown_name}: {notice}"])  # [FILE-17]

    # -- threads --------------------------------------------------------------------------------

    def _start(self, target, *args) -> None:
        self._threads = [thread for thread in self._threads if thread.is_alive()]
        thread = threading.Thread(target=target, args=args, daemon=True, name="chat-file")
        self._threads.append(thread)
        thread.start()

    def _connect(self, transfer: Transfer) -> tuple[socket.socket, bytes]:
        sock = self.opener()
        self._sockets[_key(transfer)] = sock
        return present_token(sock, transfer.token)

    def _run_sender(self, transfer: Transfer) -> None:
        key = _key(transfer)
        try:
            sock, _ = self._connect(transfer)
            send_file(sock, transfer.path, transfer.size, lambda done: self.post(DataProgress(key, done)))
        except (OSError, DataConnectionError) as error:
            self.post(DataFinished(key, False, str(error)))
            return
        self.post(DataFinished(key, True))

    def _run_recipient(self, transfer: Transfer, incoming: IncomingFile) -> None:
        key = _key(transfer)
        try:
            sock, first = self._connect(transfer)
            complete = receive_file(sock, first, incoming, transfer.size,
                                    lambda done: self.post(DataProgress(key, done)))
        except (OSError, DataConnectionError) as error:
            incoming.close()
            self.post(DataFinished(key, False, str(error)))
            return
        self.post(DataFinished(key, complete))

    def _cut(self, key: tuple[str, str]) -> None:
        sock = self._sockets.pop(key, None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # its thread ends at once
            except OSError:
                pass

    def connection_lost(self) -> Reply:
        """The chat connection is gone: so are its transfers ([FILE-13])."""
        reply = Reply()
        for event in self.book.forget_all("gone"):
            reply += self._ended(event.transfer, "gone")
        return reply

    def close(self, timeout: float = 2.0) -> None:
        """Cut every data connection, wait for the threads, remove partial files."""
        self.connection_lost()
        for thread in self._threads:
            thread.join(timeout)
