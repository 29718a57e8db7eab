"""What every benchmark needs: wrk runs, a private nginx, CPU time of a process.

Benchmarks here compare against a reference measured in the same invocation
(nginx, the origin directly) and print ratios, because these machines are
shared and noisy. Every run is bounded in time; every process we start is
stopped by its own PID.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # socket errors + non-2xx/3xx responses
    requests: int

    def row(self, name: str, cpu_us: float | None = None) -> str:
        cpu = f"{cpu_us:8.1f}" if cpu_us is not None else "       -"
        return (
            f"{name:<34} {self.rps:10.0f} {self.p50_ms:8.2f} {self.p99_ms:8.2f} "
            f"{cpu} {self.errors:7d}"
        )


HEADER = f"{'target':<34} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'CPU µs':>8} {'errors':>7}"


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    return float(m.group(1)) * _UNIT[m.group(2)] if m else float("nan")


# What Chrome sends for a page (a typical visitor): 13 fields, the usual load on a front
# door's request-head handling. wrk itself sends only Host.
BROWSER_HEADERS = (
    'sec-ch-ua: "Chromium";v="131", "Not_A Brand";v="24"',
    "sec-ch-ua-mobile: ?0",
    'sec-ch-ua-platform: "Linux"',
    "Upgrade-Insecure-Requests: 1",
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
    "*/*;q=0.8",
    "Sec-Fetch-Site: none",
    "Sec-Fetch-Mode: navigate",
    "Sec-Fetch-User: ?1",
    "Sec-Fetch-Dest: document",
    "Accept-Encoding: gzip, deflate, br, zstd",
    "Accept-Language: en-GB,en;q=0.9",
)


def wrk(
    url: str,
    *,
    seconds: float = 5,
    connections: int = 50,
    threads: int = 1,
    headers: Sequence[str] = (),
    script: Path | None = None,
    script_args: Sequence[str] = (),
) -> WrkResult:
    """Run wrk against `url` and parse its --latency report; `headers` ("Name: value")
    are sent with every request; `script`, a wrk Lua script, is given `script_args`."""
    args = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        *(arg for h in headers for arg in ("-H", h)),
        *(("-s", str(script)) if script is not None else ()),
        url,
        *(("--", *script_args) if script_args else ()),
    ]
    out = subprocess.run(
        args, check=True, capture_output=True, text=True, timeout=seconds + 30
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    reqs = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = 0
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(x) for x in m.groups())
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(m.group(1))
    return WrkResult(rps, p50, p99, errors, reqs)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process (and its reaped children) has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / ticks


def children(pid: int) -> list[int]:
    """The PIDs of `pid`'s child processes (none once it is gone)."""
    kids = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in kids.read_text().split()] if kids.exists() else []


def wait_http(url: str, timeout: float = 15.0, *, success: bool = False) -> None:
    """Poll until `url` answers any HTTP status (with `success`, a 2xx: e.g. once a
    worker has joined)."""
    import urllib.error
    import urllib.request

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except urllib.error.HTTPError:
            if not success:
                return
            time.sleep(0.05)
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def origin_upstream(port: int, name: str = "origin") -> str:
    """An nginx `upstream` block for an origin on `port`, kept alive as an operator would
    set it up: without `keepalive` (and HTTP/1.1 with an empty Connection header in the
    location), nginx opens a new connection to the origin for every request, which cost
    it 56-71 µs of CPU a request here instead of ~30 and made every ratio against it
    flatter us. Use with `proxy_pass http://NAME` and `KEEPALIVE_PROXYING`."""
    return f"upstream {name} {{ server 127.0.0.1:{port}; keepalive 64; }}"


KEEPALIVE_PROXYING = 'proxy_http_version 1.1; proxy_set_header Connection "";'


class Nginx:
    """A private nginx (one worker process) with a config we write, in a temp dir."""

    def __init__(self, server_block: str, *, cache: bool = False) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="scale0-bench-nginx-"))
        cache_conf = (
            f"proxy_cache_path {self.dir}/cache levels=1:2 keys_zone=z:10m max_size=1g;"
            if cache
            else ""
        )
        (self.dir / "nginx.conf").write_text(f"""
worker_processes 1;
daemon off;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {self.dir}/body;
  proxy_temp_path {self.dir}/proxy;
  fastcgi_temp_path {self.dir}/fastcgi;
  uwsgi_temp_path {self.dir}/uwsgi;
  scgi_temp_path {self.dir}/scgi;
  {cache_conf}
  {server_block}
}}
""")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["nginx", "-c", str(self.dir / "nginx.conf"), "-p", str(self.dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def worker_pids(self) -> list[int]:
        if self.proc is None:
            return []
        return children(self.proc.pid)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)
