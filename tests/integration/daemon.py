"""Run `dealerd` as a real process for tests: start, read its banner, stop."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from dealer.demo import BANNER_END

BANNER_URL = re.compile(r"listening on (http://\S+)")


@dataclass
class Daemon:
    process: subprocess.Popen[str]
    url: str
    banner: str
    log: Path

    def log_tail(self, lines: int = 40) -> str:
        """The end of the daemon's stderr, for assertion messages."""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        finally:
            if self.process.stdout:
                self.process.stdout.close()


def daemon_env(data_dir: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEALER_")}
    env.update({"DEALER_DATA_DIR": str(data_dir), "DEALER_HTTP_PORT": "0"})
    env.update(settings)
    return env


def start_daemon(env: dict[str, str], *, timeout: float = 60.0) -> Daemon:
    """Start `dealerd run` and wait for its banner (the banner is printed once it listens)."""
    log = Path(env["DEALER_DATA_DIR"]) / f"dealerd-{time.monotonic_ns()}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "dealer.cli", "run"], env=env, stdout=subprocess.PIPE,
            stderr=stderr, text=True,
        )
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    url = None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        match = BANNER_URL.search(line)
        if match:
            url = match.group(1)
        if line.rstrip("\n") == BANNER_END:
            break
    if url is None:
        process.kill()
        raise AssertionError("daemon did not start:\n" + "\n".join(lines) + "\n"
                             + log.read_text(errors="replace")[-4000:])
    return Daemon(process, url, "\n".join(lines), log)


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dealer.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
