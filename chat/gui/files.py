"""File sharing in the GUI (SPEC.md section 11a): its Tk face.

The work is chat.client_files.FileSession's, the same as the CLI's; this module
adds what a window offers: a "Send file..." button beside the input line
(and files dropped on the window offered the same way, where Tk has tkdnd:
chat/gui/drop.py), a dialog when somebody offers a file (accept into a
folder of your choice, or decline), and a Transfers window with a progress bar, rate and time left per
transfer. The /send, /accept, /reject, /cancel and /transfers commands work in
the input line too. Main thread only, like the rest of chat/gui.

Received files go to the chosen folder under their sanitised name, never
replacing a file there (`name (2).ext` instead); nothing received is opened.
"""

from __future__ import annotations

import tkinter as tk
from collections.abc import Callable
from pathlib import Path
from tkinter import filedialog, messagebox, simpledialog, ttk

from chat import client
from chat import client_core as core
from chat.client_files import FileSession, Progress, Reply, Transfer, format_size
from chat.gui.connection import ServerAddress
from chat.gui.drop import enable_drops, local_files


def data_opener(address: ServerAddress) -> Callable[[], object]:
    """Opens a data connection ([FILE-15]) the way the chat's connection was opened."""
    tls = address.tls or address.cafile is not None
    return lambda: client.open_data_socket(address.host, address.port, tls, address.cafile)


class Dialogs:
    """The questions asked, as functions, so that tests can answer them."""

    def __init__(self, root: tk.Misc) -> None:
        self.root = root

    def file_to_send(self) -> str:
        return filedialog.askopenfilename(parent=self.root, title="Send a file")

    def recipient(self, names: list[str]) -> str | None:
        return simpledialog.askstring("Send a file", "To whom? " + ", ".join(names), parent=self.root)

    def accept(self, transfer: Transfer) -> bool:
        return messagebox.askyesno(
            "A file for you",
            f"{transfer.sender} offers you {transfer.shown_name} ({format_size(transfer.size)}).\n"
            "Accept it? It will not be opened.", parent=self.root)

    def folder(self, initial: Path) -> str:
        return filedialog.askdirectory(parent=self.root, title="Save it in", initialdir=str(initial))


class GuiFiles:
    """File sharing for one ChatApp: the FileSession, the button, the dialogs, the bars."""

    def __init__(self, app, opener: Callable[[], object], downloads: Path | None = None,
                 dialogs: Dialogs | None = None) -> None:
        self.app = app
        self.session = FileSession(opener, app.link.post, downloads)
        self.dialogs = dialogs or Dialogs(app.root)
        self.button = ttk.Button(app.window.entry.master, text="Send file\N{HORIZONTAL ELLIPSIS}",
                                 command=self.choose_and_send)
        self.button.pack(side="right", padx=(6, 0))
        #: Whether files dropped on the window are offered (tkdnd is there).
        self.drops = enable_drops(app.root, self.dropped)
        #: The Transfers window, while a transfer is shown in it.
        self.transfers: tk.Toplevel | None = None
        #: A row per transfer: its label and progress bar, by reference (sender/tid).
        self.rows: dict[str, tuple[ttk.Label, ttk.Progressbar]] = {}

    # -- from the app -------------------------------------------------------------------

    def effect(self, effect: core.FileCommand | core.FileLine) -> None:
        self._sync()
        if isinstance(effect, core.FileCommand):
            self.carry_out(self.session.command(effect.text))
        else:
            self.carry_out(self.session.server_line(effect.line))

    def posted(self, event) -> None:
        self.carry_out(self.session.posted(event))

    def connection_lost(self) -> None:
        self.carry_out(self.session.connection_lost())

    def close(self) -> None:
        self.session.close()
        if self.transfers is not None:
            self.transfers.destroy()
            self.transfers = None

    def _sync(self) -> None:
        self.session.me = self.app.core.name or ""
        self.session.file_max = self.app.core.features.get("file-max", 0)

    def carry_out(self, reply: Reply | None) -> None:
        if reply is None:
            return
        for line in reply.lines:
            self.app.apply(self.app.core.send_file_command(line, self.app._clock()))
        for notice in reply.notices:
            self.app._note(self.app.window.room, notice)
        for transfer, progress in reply.progress:
            self._show_progress(transfer, progress)
        for transfer in reply.ended:
            self._remove_row(transfer)
        for transfer in reply.offers:
            self._ask(transfer)

    # -- the user's side ---------------------------------------------------------------

    def choose_and_send(self) -> None:
        """The button: to the private conversation shown, else to whom the user says."""
        peer = self._recipient()
        if not peer:
            return
        path = self.dialogs.file_to_send()
        if path:
            self._send(peer, [path])

    def dropped(self, items: list[str]) -> None:
        """Files dropped on the window (chat/gui/drop.py): each offered as the
        button offers one, to the same recipient, asked once.

        Several files are offered each, up to the server's file-per-user (a
        folder's worth of photos is a common drop, and each still needs the
        recipient's consent); more than that is refused whole with a note, as
        the server would refuse the rest one by one ([FILE-1])."""
        if self.app.status is not None:
            return  # dropped as the window was closing
        paths, refused = local_files(items)
        for note in refused:
            self.app._note(self.app.window.room, note)
        if not paths:
            return
        at_once = self.app.core.features.get("file-per-user", 0)
        if at_once and len(paths) > at_once:
            self.app._note(self.app.window.room,
                           f"not dropped: {len(paths)} files; this server takes at most {at_once} "
                           "at once from one user: drop fewer")
            return
        peer = self._recipient()
        if peer:
            self._send(peer, paths)

    def _recipient(self) -> str | None:
        """The private conversation shown, else whom the user names."""
        self._sync()
        peer = self.app.window.current.peer
        if peer is None:
            others = [name for name in self.app.core.members if name != self.app.core.name]
            peer = self.dialogs.recipient(others)
        return peer.strip() if peer else None

    def _send(self, peer: str, paths: list[str]) -> None:
        for path in paths:
            self.carry_out(self.session.command(f"/send {peer} {path}"))

    def _ask(self, transfer: Transfer) -> None:
        """The accept dialog: yes, then which folder; no (or no folder) declines."""
        self._sync()
        folder = self.dialogs.folder(self.session.downloads) if self.dialogs.accept(transfer) else ""
        if folder:
            self.carry_out(self.session.command(f"/accept {transfer.ref} {folder}"))
        else:
            self.carry_out(self.session.command(f"/reject {transfer.ref}"))

    # -- the Transfers window ----------------------------------------------------------------

    def _show_progress(self, transfer: Transfer, progress: Progress) -> None:
        if self.transfers is None:
            self.transfers = tk.Toplevel(self.app.root)
            self.transfers.title("Transfers")
            self.transfers.protocol("WM_DELETE_WINDOW", self._hide)
        row = self.rows.get(transfer.ref)
        if row is None:
            frame = ttk.Frame(self.transfers, padding=(8, 4))
            label = ttk.Label(frame, width=60)
            bar = ttk.Progressbar(frame, length=360, maximum=max(1, transfer.size))
            ttk.Button(frame, text="Cancel",
                       command=lambda: self.carry_out(self.session.command(f"/cancel {transfer.ref}"))
                       ).pack(side="right")
            label.pack(side="top", anchor="w")
            bar.pack(side="left", fill="x", expand=True)
            frame.pack(side="top", fill="x")
            row = self.rows[transfer.ref] = (label, bar)
        label, bar = row
        direction = f"to {transfer.recipient}" if transfer.outgoing else f"from {transfer.sender}"
        label.configure(text=f"{transfer.shown_name} {direction}   {progress.bar(0).lstrip('[] ')}")
        bar.configure(value=progress.done)

    def _remove_row(self, transfer: Transfer) -> None:
        row = self.rows.pop(transfer.ref, None)
        if row is not None:
            row[0].master.destroy()
        if not self.rows and self.transfers is not None:
            self._hide()

    def _hide(self) -> None:
        if self.transfers is not None:
            self.transfers.destroy()
            self.transfers = None
            self.rows.clear()
