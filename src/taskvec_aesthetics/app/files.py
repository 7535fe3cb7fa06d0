"""The app's own temporary folder: every file written for a visitor lives in it, and it goes when the server stops.

Layout: ``<temp>/taskvec-aesthetics-app-XXXX/gradio`` (Gradio's uploads and the copies it serves, through
`GRADIO_TEMP_DIR`) and ``.../sessions/<one folder per visitor>`` (see `RatingSession`). Nothing else of the temp
folder is served: the app's `allowed_paths` name only the photo pool's folders. A visitor's folder is deleted when
their tab closes, the whole folder when the server stops (normal exit, Ctrl+C or SIGTERM).
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from types import FrameType

__all__ = ["AppFolder", "MAX_UPLOADS"]

logger = logging.getLogger(__name__)

#: Photos one visitor may add; each is kept at most `photos.MAX_SIDE` px, so a visitor's folder stays a few MB.
MAX_UPLOADS = 50


class AppFolder:
    """A fresh temporary folder for one server, removed by [`cleanup`] (also at exit and on SIGTERM, once
    [`remove_on_exit`] was called).

    Creating it points Gradio's upload folder into it (`GRADIO_TEMP_DIR`), so it must exist before the page is built.
    """

    def __init__(self, parent: str | Path | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="taskvec-aesthetics-app-", dir=parent))
        self.gradio = self.root / "gradio"
        self.sessions = self.root / "sessions"
        self.gradio.mkdir()
        self.sessions.mkdir()
        self._previous = os.environ.get("GRADIO_TEMP_DIR")
        os.environ["GRADIO_TEMP_DIR"] = str(self.gradio)
        self._lock = threading.Lock()

    def size(self) -> int:
        """Bytes held in the folder now."""
        return sum(path.stat().st_size for path in self.root.rglob("*") if path.is_file())

    def cleanup(self) -> None:
        """Delete the folder and everything in it (safe to call more than once)."""
        with self._lock:
            if self.root.exists():
                shutil.rmtree(self.root, ignore_errors=True)
                logger.info("Removed the app's temporary files")
            if os.environ.get("GRADIO_TEMP_DIR") == str(self.gradio):  # later Gradio work in this process goes back
                if self._previous is None:
                    os.environ.pop("GRADIO_TEMP_DIR")
                else:
                    os.environ["GRADIO_TEMP_DIR"] = self._previous

    def remove_on_exit(self) -> None:
        """Delete the folder when the process exits, SIGTERM included (a service manager's or a Space's stop)."""
        atexit.register(self.cleanup)
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread

        def stop(signum: int, frame: FrameType | None) -> None:
            self.cleanup()
            raise SystemExit(128 + signum)

        signal.signal(signal.SIGTERM, stop)
