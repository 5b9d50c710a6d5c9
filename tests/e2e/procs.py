"""Starting the services as separate processes, for the end-to-end tests."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


class Service:
    """One service process; `label` names its log files (replicas of one service need
    different labels)."""

    def __init__(self, name: str, env: dict[str, str], logdir: Path, label: str | None = None) -> None:
        self.name, self.env, self.logdir = name, env, logdir
        self.label = label or name
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self, **extra_env: str) -> "Service":
        self.starts += 1
        self.log = self.logdir / f"{self.label}.{self.starts}.log"
        self.proc = subprocess.Popen([str(BIN / self.name), "serve"], env={**self.env, **extra_env},
                                     stdout=self.log.open("wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while f"{self.name} ready" not in self.log.read_text(errors="replace"):
            assert self.proc.poll() is None, f"{self.name} exited:\n{self.log.read_text()}"
            assert time.monotonic() < deadline, f"{self.name} not ready:\n{self.log.read_text()}"
            time.sleep(0.05)
        return self

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            return self.proc.wait(20)
        return self.proc.returncode if self.proc else 0
