"""The GUI's small windows: the connect dialog, and one-question prompts.

None of them is modal in the code's sense (no wait_window(), no nested main
loop): each calls back when answered, so the main loop keeps draining the
socket's events while a dialog is open, and tests drive them like any widget.
Main thread only.
"""

from __future__ import annotations

import tkinter as tk
from collections.abc import Callable
from tkinter import filedialog, ttk

from chat.gui.connection import ServerAddress
from chat.protocol import is_valid_name


class ConnectDialog:
    """Host, port, name, TLS (and a CA file), password; Connect or Quit.

    `on_connect(address, name, password)` once the fields are valid (the
    dialog is then gone); `on_cancel()` for Quit or the window's close box.
    """

    def __init__(self, root: tk.Tk, *, address: ServerAddress, name: str | None,
                 password: str | None,
                 on_connect: Callable[[ServerAddress, str, str | None], None],
                 on_cancel: Callable[[], None]) -> None:
        self._on_connect = on_connect
        self._on_cancel = on_cancel
        self.window = tk.Toplevel(root)
        self.window.title("Connect to a chat/1 server")
        self.window.transient(root)
        self.window.resizable(False, False)
        self.window.protocol("WM_DELETE_WINDOW", self.cancel)

        self.host = tk.StringVar(self.window, address.host)
        self.port = tk.StringVar(self.window, str(address.port))
        self.name = tk.StringVar(self.window, name or "")
        self.password = tk.StringVar(self.window, password or "")
        self.tls = tk.BooleanVar(self.window, address.tls)
        self.cafile = tk.StringVar(self.window, address.cafile or "")
        self.problem = tk.StringVar(self.window, "")

        form = ttk.Frame(self.window, padding=16)
        form.pack(fill="both", expand=True)
        rows = (("Server", self.host), ("Port", self.port), ("Your name", self.name),
                ("Password", self.password))
        self.entries: dict[str, ttk.Entry] = {}
        for row, (label, variable) in enumerate(rows):
            ttk.Label(form, text=label).grid(row=row, column=0, sticky="w", padx=(0, 12), pady=3)
            entry = ttk.Entry(form, textvariable=variable, width=28,
                              show="\N{BULLET}" if variable is self.password else "")
            entry.grid(row=row, column=1, columnspan=2, sticky="ew", pady=3)
            entry.bind("<Return>", lambda event: self.submit())
            self.entries[label] = entry
        ttk.Label(form, text="(if the room has one)", foreground="#6b7280").grid(
            row=4, column=1, columnspan=2, sticky="w")
        self.tls_button = ttk.Checkbutton(form, text="TLS", variable=self.tls,
                                          command=self._tls_toggled)
        self.tls_button.grid(row=5, column=0, sticky="w", pady=(8, 3))
        self.cafile_entry = ttk.Entry(form, textvariable=self.cafile, width=22)
        self.cafile_entry.grid(row=5, column=1, sticky="ew", pady=(8, 3))
        self.browse_button = ttk.Button(form, text="CA file\N{HORIZONTAL ELLIPSIS}",
                                        command=self._browse)
        self.browse_button.grid(row=5, column=2, sticky="e", padx=(6, 0), pady=(8, 3))
        ttk.Label(form, textvariable=self.problem, foreground="#b91c1c", wraplength=320).grid(
            row=6, column=0, columnspan=3, sticky="w", pady=(6, 0))
        buttons = ttk.Frame(form)
        buttons.grid(row=7, column=0, columnspan=3, sticky="e", pady=(10, 0))
        self.quit_button = ttk.Button(buttons, text="Quit", command=self.cancel)
        self.connect_button = ttk.Button(buttons, text="Connect", command=self.submit,
                                         default="active")
        self.quit_button.pack(side="right")
        self.connect_button.pack(side="right", padx=(0, 6))
        form.columnconfigure(1, weight=1)
        self._tls_toggled()
        first_empty = next((entry for label, entry in self.entries.items()
                            if label != "Password" and not entry.get()), self.entries["Your name"])
        _show_over(root, self.window, first_empty)

    def _tls_toggled(self) -> None:
        state = "normal" if self.tls.get() else "disabled"
        self.cafile_entry.configure(state=state)
        self.browse_button.configure(state=state)

    def _browse(self) -> None:
        path = filedialog.askopenfilename(parent=self.window, title="CA certificate (PEM)")
        if path:
            self.cafile.set(path)

    def submit(self) -> None:
        """Connect, if the fields make sense; else say what is wrong."""
        host = self.host.get().strip()
        name = self.name.get().strip()
        try:
            port = int(self.port.get())
        except ValueError:
            port = 0
        if not host:
            self.problem.set("The server's address is needed.")
        elif not 0 < port < 65536:
            self.problem.set("The port is a number from 1 to 65535.")
        elif not is_valid_name(name):
            self.problem.set("A name is a letter, then up to 31 letters, digits, _ or -.")
        else:
            tls = self.tls.get()
            cafile = self.cafile.get().strip() if tls else ""
            self.window.destroy()
            self._on_connect(ServerAddress(host, port, tls, cafile or None), name,
                             self.password.get() or None)

    def cancel(self) -> None:
        self.window.destroy()
        self._on_cancel()


class Prompt:
    """One question in a small window: a text answer (an entry; `secret`
    hides what is typed), or, with `entry=False`, Yes or No.

    `on_answer(text)` with the text (or "yes"), `on_answer(None)` for Cancel/No.
    """

    def __init__(self, root: tk.Tk, *, title: str, message: str,
                 on_answer: Callable[[str | None], None], entry: bool = True,
                 secret: bool = False, initial: str = "") -> None:
        self._on_answer = on_answer
        self.window = tk.Toplevel(root)
        self.window.title(title)
        self.window.transient(root)
        self.window.resizable(False, False)
        self.window.protocol("WM_DELETE_WINDOW", lambda: self._answer(None))
        frame = ttk.Frame(self.window, padding=16)
        frame.pack(fill="both", expand=True)
        self.message = ttk.Label(frame, text=message, wraplength=360, justify="left")
        self.message.pack(anchor="w")
        self.answer = tk.StringVar(self.window, initial)
        self.entry: ttk.Entry | None = None
        if entry:
            self.entry = ttk.Entry(frame, textvariable=self.answer, width=32,
                                   show="\N{BULLET}" if secret else "")
            self.entry.pack(fill="x", pady=(8, 0))
            self.entry.bind("<Return>", lambda event: self.ok())
            self.entry.bind("<Escape>", lambda event: self._answer(None))
        buttons = ttk.Frame(frame)
        buttons.pack(anchor="e", pady=(12, 0))
        self.cancel_button = ttk.Button(buttons, text="Cancel" if entry else "No",
                                        command=lambda: self._answer(None))
        self.ok_button = ttk.Button(buttons, text="OK" if entry else "Yes", command=self.ok,
                                    default="active")
        self.cancel_button.pack(side="right")
        self.ok_button.pack(side="right", padx=(0, 6))
        _show_over(root, self.window, self.entry if entry else self.ok_button)

    def ok(self) -> None:
        self._answer(self.answer.get() if self.entry is not None else "yes")

    def _answer(self, answer: str | None) -> None:
        if self.window.winfo_exists():
            self.window.destroy()
            self._on_answer(answer)


def _show_over(root: tk.Tk, window: tk.Toplevel, focus: tk.Widget) -> None:
    """Place `window` in the middle of the main window (window managers that
    place it themselves move it anyway), and give `focus` the keyboard, so
    that typing goes to the dialog without a click."""
    root.update_idletasks()
    window.update_idletasks()  # Maps it: its size is known, and it can take the focus.
    x = root.winfo_rootx() + (root.winfo_width() - window.winfo_reqwidth()) // 2
    y = root.winfo_rooty() + (root.winfo_height() - window.winfo_reqheight()) // 3
    window.geometry(f"+{max(0, x)}+{max(0, y)}")
    focus.focus_force()
