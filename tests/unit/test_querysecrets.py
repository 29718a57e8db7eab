"""Secret query values never reach the log; everything else of the target stays byte for byte.

A table of what operators send, then properties over generated targets: each target is
built from a list of parameters, so the test knows which are secret and what the
line must show, independently of how `hide_secrets` finds them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from node.querysecrets import (
    DEFAULT_NAMES,
    DEFAULT_SECRETS,
    MASK,
    hide_secrets,
    secret_names,
)


@pytest.mark.parametrize(("target", "shown"), [
    ("/login?user=a&password=hunter2", "/login?user=a&password=***"),
    ("/static/app.js", "/static/app.js"),
    ("/search?q=shoes&page=2", "/search?q=shoes&page=2"),
    ("/a?password", "/a?password"),  # no value: nothing to hide
    ("/a?password=", "/a?password="),  # empty value: nothing to hide
    ("/a?password=&b=1", "/a?password=&b=1"),
    ("/a?PassWord=x&TOKEN=y", "/a?PassWord=***&TOKEN=***"),
    ("/a?pass%77ord=x", "/a?pass%77ord=***"),  # the name as sent, matched decoded
    ("/a?pass%2577ord=x", "/a?pass%2577ord=x"),  # decoded once, as a server does
    ("/a?x=1;token=t;y=2&z=3", "/a?x=1;token=***;y=2&z=3"),  # ; separators kept
    ("/a?token=a=b=c&x==1", "/a?token=***&x==1"),
    ("/a?user[password]=x&token[]=y&a[b][sig]=z",
     "/a?user[password]=***&token[]=***&a[b][sig]=***"),
    ("/a?user%5Bpassword%5D=x", "/a?user%5Bpassword%5D=***"),
    ("/a?keyword=k&author=me&passenger=p", "/a?keyword=k&author=me&passenger=p"),  # whole names
    ("/a?code=abc&state=xyz", "/a?code=***&state=xyz"),
    ("/s3/o?X-Amz-Credential=AKIA%2F20260101&X-Amz-Signature=f00d&X-Amz-Expires=60",
     "/s3/o?X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Expires=60"),
    ("/a?token=t#token=u", "/a?token=***#token=u"),  # the fragment is left as it is
    ("/a#frag?token=t", "/a#frag?token=***"),  # the first ? starts what the server reads
    ("/a?&&;;=&==", "/a?&&;;=&=="),
    ("/a?%zz=1&%=2&%E2%82=3&token=%ff", "/a?%zz=1&%=2&%E2%82=3&token=***"),
    ("/a?q=caf\u00e9&token=\u00e9\ud800", "/a?q=caf\u00e9&token=***"),
    ("http://***@a.test/p?password=x", "http://***@a.test/p?password=***"),
])
def test_what_the_log_shows(target: str, shown: str) -> None:
    assert hide_secrets(target) == shown
    assert hide_secrets(shown) == shown


def test_the_operator_s_names_replace_the_defaults() -> None:
    mine = secret_names(["jwt", "User"])
    assert hide_secrets("/a?user=bob&password=x&JWT=e.y.j", mine) == \
        "/a?user=***&password=x&JWT=***"
    assert hide_secrets("/a?password=x", secret_names([])) == "/a?password=x"
    assert hide_secrets("/a?password=x", secret_names(["none"])) == "/a?password=x"
    both = secret_names(["default", "jwt"])
    assert both == DEFAULT_SECRETS | {"jwt"}
    assert hide_secrets("/a?password=x&jwt=y", both) == "/a?password=***&jwt=***"


@pytest.mark.parametrize(("names", "fragment"), [
    ([""], "'' is not a query parameter name"),
    (["password="], "'password=' is not a query parameter name"),
    (["a b"], "no spaces"),
    (["a;b"], "= & ; # ? %"),
    (["pass%77ord"], "give it percent-decoded"),
    (["tab\t"], "'tab\\t'"),
    (["none", "password"], "'none' (hide nothing) goes alone"),
])
def test_names_that_cannot_be_names_are_refused(names: list[str], fragment: str) -> None:
    with pytest.raises(ValueError) as err:
        secret_names(names)
    assert fragment in str(err.value)


def test_the_default_list_is_lower_case_whole_names() -> None:
    assert len(set(DEFAULT_NAMES)) == len(DEFAULT_NAMES)
    assert all(name == name.lower() for name in DEFAULT_NAMES)
    assert frozenset(DEFAULT_NAMES) == DEFAULT_SECRETS
    assert {"password", "token", "access_token", "api_key", "key", "sig", "code",
            "x-amz-signature", "x-amz-security-token", "sessionid"} <= DEFAULT_SECRETS


def test_a_huge_target() -> None:
    plain = "/a?" + "&".join(f"p{i}=v{i}" for i in range(20_000))
    assert hide_secrets(plain) is plain
    secret = plain + "&token=" + "t" * 100_000 + ";x=" + "%" * 50_000
    assert hide_secrets(secret) == plain + "&token=***;x=" + "%" * 50_000


# Generated targets: a path, a query built from (name, value) pairs, maybe a fragment.

MARK = "\u00a7"  # only ever in a secret value, so it must never be in the output
_ANY = st.characters(exclude_categories=(), exclude_characters=MARK)  # surrogates too
_TEXT = st.text(_ANY, max_size=12)
_PIECE = st.text(st.one_of(_ANY, st.sampled_from("%=?&;#[]")), max_size=12)


def _no(chars: str) -> st.SearchStrategy[str]:
    return st.text(st.characters(exclude_categories=(), exclude_characters=MARK + chars),
                   max_size=12)


def named_secret(name: str, secrets: frozenset[str]) -> bool:
    """The rule, said once more for the tests: the decoded, lower-cased name, or one of
    its bracketed parts, is listed."""
    decoded = unquote(name).lower()
    return bool({decoded, *re.split(r"[\[\]]", decoded)} & secrets)


@st.composite
def spelled(draw: st.DrawFn, name: str) -> str:
    """`name` as a client may send it: any case, some characters percent-encoded, maybe
    nested (`user[name]`, `name[]`)."""
    out = []
    for ch in name:
        how = draw(st.sampled_from(["as is", "upper", "escaped", "Escaped"]))
        if how == "upper":
            out.append(ch.upper())
        elif how == "escaped":
            out.append(f"%{ord(ch):02x}")
        elif how == "Escaped":
            out.append(f"%{ord(ch):02X}")
        else:
            out.append(ch)
    text = "".join(out)
    return draw(st.sampled_from([text, f"user[{text}]", f"{text}[]", f"a[b][{text}]"]))


@dataclass
class Param:
    name: str
    sep: str  # "=" or "" (a parameter without a value)
    value: str
    secret: bool

    def text(self) -> str:
        return f"{self.name}{self.sep}{self.value}"

    def shown(self) -> str:
        return f"{self.name}={MASK}" if self.secret and self.sep and self.value else self.text()


@st.composite
def params(draw: st.DrawFn, secrets: frozenset[str], with_secrets: bool) -> Param:
    if with_secrets and draw(st.booleans()):
        name = draw(spelled(draw(st.sampled_from(sorted(secrets)))))
        value = draw(_no("&;#")) + MARK + draw(_no("&;#"))
        return Param(name, "=", value, True)
    name = draw(_no("&;=#"))
    assume(not named_secret(name, secrets))
    if draw(st.booleans()):
        return Param(name, "", "", False)
    return Param(name, "=", draw(_no("&;#")), False)


@dataclass
class Target:
    path: str
    params: list[Param]
    seps: list[str]
    fragment: str | None

    def text(self, shown: bool = False) -> str:
        query = ""
        for i, p in enumerate(self.params):
            query += (self.seps[i - 1] if i else "") + (p.shown() if shown else p.text())
        return self.path + "?" + query + ("" if self.fragment is None else "#" + self.fragment)


@st.composite
def targets(draw: st.DrawFn, secrets: frozenset[str] = DEFAULT_SECRETS,
            with_secrets: bool = True) -> Target:
    ps = draw(st.lists(params(secrets, with_secrets), max_size=8))
    seps = draw(st.lists(st.sampled_from("&;"), min_size=len(ps), max_size=len(ps)))
    fragment = draw(st.none() | _PIECE)
    return Target(draw(_no("?#")), ps, seps, fragment)


_OPERATOR_NAMES = st.frozensets(
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="=&;#?%[]"),
            min_size=1, max_size=8).filter(lambda n: n.lower() not in ("none", "default")),
    min_size=1, max_size=4).map(secret_names)


@given(st.text(st.one_of(_ANY, st.sampled_from("?&;=%#[]")), max_size=80)
       | st.builds(lambda t: t.text(), targets()))
def test_never_raises_and_hiding_twice_is_hiding_once(target: str) -> None:
    shown = hide_secrets(target)
    assert isinstance(shown, str)
    assert hide_secrets(shown) == shown


@given(targets(with_secrets=False))
def test_a_target_without_secret_names_is_left_as_it_is(target: Target) -> None:
    text = target.text()
    assert hide_secrets(text) == text


@given(targets())
def test_secret_values_never_appear_and_the_rest_is_byte_for_byte(target: Target) -> None:
    shown = hide_secrets(target.text())
    assert MARK not in shown
    assert shown == target.text(shown=True)  # names, order, separators, fragment as sent


@given(_OPERATOR_NAMES.flatmap(lambda names: st.tuples(st.just(names), targets(names))))
def test_the_operator_s_names_are_hidden_and_no_others(case: tuple[frozenset[str], Target]) \
        -> None:
    secrets, target = case
    shown = hide_secrets(target.text(), secrets)
    assert MARK not in shown and shown == target.text(shown=True)
    assert hide_secrets(shown, secrets) == shown


@given(st.text(max_size=40))
def test_no_question_mark_or_no_equals_is_the_target_itself(text: str) -> None:
    assume("?" not in text or "=" not in text.partition("?")[2])
    assert hide_secrets(text) is text
