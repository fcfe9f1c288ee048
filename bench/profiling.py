"""Optional py-spy sampling of a server during a measured phase.

``py-spy record --format raw`` writes collapsed stacks; :func:`summarize`
turns them into the functions with the most samples on top of the stack
(self) and anywhere on it (inclusive). Profiled runs are marked as such:
sampling costs the server a little CPU.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

__all__ = ["Sampler", "summarize"]

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _short(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match['func']} ({path})"


def summarize(raw_path: Path, top: int = 20) -> dict[str, Any]:
    """Top functions by self and inclusive samples, as percentages."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    with contextlib.suppress(OSError):
        for line in raw_path.read_text(errors="replace").splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = [_short(f) for f in stack.split(";") if f]
            if not frames:
                continue
            total += count
            own[frames[-1]] += count
            for name in set(frames):
                inclusive[name] += count

    def rows(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": name, "percent": round(100 * n / total, 1)}
            for name, n in counter.most_common(top)
        ]

    return {"samples": total, "self": rows(own), "inclusive": rows(inclusive)}


class Sampler:
    """``py-spy record`` attached to ``pid`` until :meth:`stop`."""

    def __init__(self, pid: int, output: Path, rate: int = 250) -> None:
        self.output = output
        self.process: subprocess.Popen[bytes] | None = None
        binary = shutil.which("py-spy")
        if binary is None:
            venv_bin = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "py-spy"
            binary = str(venv_bin) if venv_bin.exists() else None
        self.available = binary is not None
        if binary is not None:
            output.parent.mkdir(parents=True, exist_ok=True)
            self.process = subprocess.Popen(
                [binary, "record", "--pid", str(pid), "--rate", str(rate), "--nonblocking",
                 "--format", "raw", "--output", str(output)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )

    def stop(self) -> dict[str, Any] | None:
        """Stop sampling; the summary, or None when py-spy was unavailable."""
        if self.process is None:
            return None
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return summarize(self.output)
