"""Free ports come from below the kernel's ephemeral range and are never handed out twice."""

from __future__ import annotations

import socket
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from node.freeport import ephemeral_low, free_port


def test_ports_are_below_the_ephemeral_range_and_distinct() -> None:
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    assert all(p < ephemeral_low() for p in ports)


def test_a_free_preferred_port_is_taken_and_a_busy_one_is_not() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", free_port()))
        busy.listen()
        taken = busy.getsockname()[1]
        assert free_port(preferred=taken) != taken
    wanted = free_port()  # handed out once already: a second preference for it is refused
    assert free_port(preferred=wanted) != wanted


def test_the_range_is_read_from_the_kernel_file(tmp_path: Path) -> None:
    f = tmp_path / "range"
    f.write_text("40000\t60999\n")
    assert ephemeral_low(f) == 40000
    assert ephemeral_low(tmp_path / "missing") == 32768


@given(st.text(max_size=40))
def test_any_file_content_gives_a_port_number_or_the_default(text: str) -> None:
    import tempfile

    with tempfile.NamedTemporaryFile("w", delete=False) as f:
        f.write(text)
    low = ephemeral_low(Path(f.name))
    Path(f.name).unlink()
    assert isinstance(low, int)
