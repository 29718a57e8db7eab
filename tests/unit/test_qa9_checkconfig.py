"""`--check-config` (and so a reload, which builds the same) refuses what nginx -t would:
a static prefix mounted twice, and one HOST[/PREFIX] rule sent to two services; either
way the second would never take a request, silently."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.checkconfig import check_file


@pytest.mark.parametrize(("text", "line", "fragment"), [
    ('static = ["/s={a}", "/s/={b}"]\n', 1, "'/s/' is mounted twice"),
    ('routes = ["w.test=www", "W.test=api"]\n', 1, "mapped to both 'www' and 'api'"),
    ('routes = ["w.test/shop=www"]\n\n[services.api]\nroutes = ["w.test/shop"]\n', 4,
     "[services.api] route 'w.test/shop' is mapped to both 'www' and 'api'"),
    ('[services.www]\nroutes = ["w.test"]\n[services.api]\ntimeout = 3\nroutes = ["w.test"]\n',
     5, "mapped to both 'www' and 'api'"),
])
def test_a_rule_or_mount_given_twice_is_refused(tmp_path: Path, text: str, line: int,
                                                fragment: str) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    path = tmp_path / "node.toml"
    path.write_text(text.format(a=tmp_path / "a", b=tmp_path / "b"))
    ok, message = check_file(str(path))
    assert not ok and message.startswith(f"{path}:{line}: "), message
    assert fragment in message, message


def test_the_same_rule_for_the_same_service_twice_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text('routes = ["w.test=www"]\n[services.www]\nroutes = ["w.test"]\n')
    ok, message = check_file(str(path))
    assert ok, message
