"""Watch config.yaml and call back (debounced, on the event loop) when it changes.

The parent directory is watched, not the file: editors save by writing a temp file and renaming it
over the original, which replaces the inode a file watch would be following. Events are filtered
by path (source and destination), and a burst of events becomes one callback.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from watchdog.events import FileSystemEvent, FileSystemEventHandler

if TYPE_CHECKING:
    # The observer (inotify, its thread) is imported when the watcher starts, after READY.
    from watchdog.observers import Observer

log = logging.getLogger(__name__)


class _Handler(FileSystemEventHandler):
    def __init__(self, names: frozenset[str], kick: Callable[[], None]):
        self.names = names
        self.kick = kick

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory or event.event_type in ("opened", "closed_no_write"):
            return
        paths = {os.fsdecode(event.src_path)}
        dest = getattr(event, "dest_path", "")
        if dest:
            paths.add(os.fsdecode(dest))
        if any(os.path.abspath(p) in self.names for p in paths):
            self.kick()


class ConfigWatcher:
    def __init__(self, path: Path, on_change: Callable[[], None], debounce_s: float = 0.25):
        self.path = path
        self.on_change = on_change
        self.debounce_s = debounce_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._observer: Observer | None = None  # type: ignore[valid-type]

    def start(self) -> None:
        from watchdog.observers import Observer

        self._loop = asyncio.get_running_loop()
        # Watch the path and, for a symlinked config (dotfiles), its target too.
        names = {os.path.abspath(self.path)}
        resolved = self.path.resolve()
        names.add(str(resolved))
        directories = {self.path.parent.absolute(), resolved.parent}
        observer = Observer()
        handler = _Handler(frozenset(names), self._kick_threadsafe)
        for directory in directories:
            if not directory.is_dir():
                try:
                    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
                except OSError as exc:
                    log.warning("not watching %s: %s (use `ccctl reload`)", directory, exc)
                    continue
            observer.schedule(handler, str(directory), recursive=False)
        observer.daemon = True
        observer.start()
        self._observer = observer

    def _kick_threadsafe(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._kick)

    def _kick(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        assert self._loop is not None
        self._timer = self._loop.call_later(self.debounce_s, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self.on_change()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(5)
            self._observer = None
