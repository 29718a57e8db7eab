"""`access_log_redact` / `--access-log-redact`: the names reach the access log from the file
or the flag (the flag wins, replacing the list), a name that cannot be one is refused at
its line, and a reload applies a new list."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from node.accesslog import access_log
from node.checkconfig import check_file
from node.cli import _given, build_parser, main
from node.config import NodeConfig, from_mapping, load_config
from node.errors import ConfigError
from node.http import Headers, Request, Response
from node.logsetup import configure, flush
from node.querysecrets import DEFAULT_NAMES
from node.reload import needs_restart


def flags(*argv: str) -> dict[str, object]:
    return _given(build_parser().parse_args(["node", *argv]))


def test_the_default_is_the_default_list() -> None:
    assert NodeConfig().access_log_redact == list(DEFAULT_NAMES)
    assert NodeConfig().access_log_redact is not NodeConfig().access_log_redact


@pytest.mark.parametrize(("value", "names"), [
    ("jwt,User", ["jwt", "User"]),
    (" jwt , user ,", ["jwt", "user"]),  # as typed in a shell
    ("default,jwt", ["default", "jwt"]),
    ("none", ["none"]),
    ("", []),
])
def test_the_flag_is_a_comma_separated_list(value: str, names: list[str]) -> None:
    assert flags("--access-log-redact", value) == {"access_log_redact": names}
    assert load_config(None, flags("--access-log-redact", value)).access_log_redact == names


def test_the_file_gives_a_list_and_the_flag_replaces_it(tmp_path: Path) -> None:
    f = tmp_path / "node.toml"
    f.write_text('access_log_redact = ["password", "jwt"]\n')
    assert load_config(str(f)).access_log_redact == ["password", "jwt"]
    assert load_config(str(f), flags("--access-log-redact", "user")).access_log_redact == ["user"]
    assert load_config(str(f), flags("--id", "n")).access_log_redact == ["password", "jwt"]
    f.write_text('access-log-redact = []\n')  # - or _, as every key
    assert load_config(str(f)).access_log_redact == []


@pytest.mark.parametrize(("doc", "message"), [
    ({"access_log_redact": "password"},
     "node.toml: 'access_log_redact' must be a list of strings, not 'password'"),
    ({"access_log_redact": ["password="]},
     "node.toml: 'access_log_redact': 'password=' is not a query parameter name (give it "
     "percent-decoded; no spaces, control characters or = & ; # ? %)"),
    ({"access_log_redact": ["none", "jwt"]},
     "node.toml: 'access_log_redact': 'none' (hide nothing) goes alone, not with other names"),
])
def test_errors_name_the_key_and_the_entry(doc: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        from_mapping(doc, "node.toml")
    assert str(err.value) == message


def test_check_config_points_at_the_line(tmp_path: Path) -> None:
    f = tmp_path / "node.toml"
    f.write_text('id = "a"\nlog_format = "json"\naccess_log_redact = ["token", "api key"]\n')
    ok, message = check_file(str(f))
    assert not ok
    assert message.startswith(f"{f}:3: 'access_log_redact': 'api key' is not a query "
                              "parameter name"), message


def test_a_bad_flag_is_one_line_naming_the_flag(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "node.toml"
    f.write_text('id = "a"\n')
    assert main(["node", "--check-config", str(f), "--access-log-redact", "none,jwt"]) == 2
    assert capsys.readouterr().err == (f"{f}: command line: --access-log-redact: 'none' (hide "
                                       "nothing) goes alone, not with other names\n")
    assert main(["node", "--check-config", str(f), "--access-log-redact", "jwt,user"]) == 0


def test_help_names_the_flag_the_key_and_the_defaults() -> None:
    node = build_parser()._subparsers._group_actions[0].choices["node"]  # type: ignore[union-attr]
    text = " ".join(node.format_help().split())
    assert "--access-log-redact NAMES" in text
    assert 'access_log_redact = ["password", "token"]' in text
    assert "'none' hides nothing" in text and "'default,NAME' adds to it" in text
    assert "default: password, passwd," in text and "code, ticket" in text


def test_a_reload_applies_a_new_list(capsys: pytest.CaptureFixture[str]) -> None:
    old = from_mapping({})
    new = from_mapping({"access_log_redact": ["jwt"]})
    assert needs_restart(old, new) == []  # reloadable, as the other log settings
    level = logging.getLogger().level
    request = Request("GET", "/a?password=p&jwt=j", Headers([("Host", "h")]), host="h")
    try:
        for config in (old, new):  # as node.server does at start and on SIGHUP
            log = configure(config, "n1")
            assert log is not None
            log.log(request, Response(200, outcome="local"), sent_bytes=1, duration=0.0)
            flush()
    finally:
        configure(from_mapping({"access_log": False}), "n1")
        access_log.disabled = False
        access_log.propagate = True
        logging.getLogger().setLevel(level)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert '"GET /a?password=***&jwt=j"' in lines[0] and '"GET /a?password=p&jwt=***"' in lines[1]


def test_the_operator_guide_lists_the_default_names() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    guide = " ".join(readme.split("- **Access log**", 1)[1].split("- **Metrics**", 1)[0].split())
    listed = guide.split("by default ", 1)[1].split(" (passwords", 1)[0]
    assert listed.replace(" and ", ", ").split(", ") == list(DEFAULT_NAMES)
