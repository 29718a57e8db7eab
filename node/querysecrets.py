"""Secret query values kept out of the logs: `?user=a&password=hunter2` is logged as
`?user=a&password=***`.

A parameter is secret when its name — percent-decoded, lower-cased — is one of the
operator's names (`access_log_redact`, `--access-log-redact`: DEFAULT_NAMES unless set;
`default` among them stands for that list, `none` alone hides nothing), or, for the
nested forms of Rails, PHP and qs (`user[password]`, `token[]`), when one of its
bracketed parts is. Its value becomes `***`; everything else stays byte for byte: the
name as sent, the order, `&` and `;` separators, empty values (nothing to hide),
parameters without `=`, the path and any fragment. Names match whole, not as substrings
(Rails' filter_parameters style), so `keyword`, `author` and `passenger` stay readable;
an operator adds the names of their own applications instead.

The access log calls `hide_secrets` once a request, so it is built for the common case:
no `?`, or no `=` after it, returns the target itself; otherwise one pass over
the lower-cased names with a set lookup each (a decode only for a name with `%`), no
regex, and the query is rebuilt only when something is hidden. It never raises, whatever
the text (bad escapes, non-ASCII, surrogates), and hiding twice is hiding once. Only the
logged text changes: the request itself is never touched.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote

MASK = "***"

# The names that carry credentials in query strings in the wild, whole-name matches:
DEFAULT_NAMES: tuple[str, ...] = (
    # passwords of GET forms and basic "?user=&pass=" APIs
    "password", "passwd", "pwd", "pass", "passphrase",
    # shared secrets and bearer tokens: OAuth 2.0 client secrets (RFC 6749 2.3.1), tokens
    # in the URI (RFC 6750 2.3), OpenID Connect id tokens, generic auth parameters
    "secret", "client_secret", "token", "access_token", "refresh_token", "id_token",
    "auth", "authorization", "auth_token",
    # API keys (Google's `key=`, most SaaS APIs' api_key / apikey)
    "api_key", "apikey", "key",
    # session ids put in URLs when cookies are off (Java's jsessionid, PHP's PHPSESSID)
    "session", "sessionid", "session_id", "sid", "jsessionid", "phpsessid",
    # presigned URLs: anyone holding one can use it until it expires (AWS SigV4, Google
    # Cloud Storage V4, Azure SAS `sig`, CloudFront `Signature`)
    "signature", "sig", "x-amz-signature", "x-amz-credential", "x-amz-security-token",
    "x-goog-signature", "x-goog-credential",
    # OAuth 2.0 authorization codes (RFC 6749 4.1.2): one use, but a bearer secret
    # until it is redeemed; CAS service tickets likewise
    "code", "ticket",
)
# Not listed: `state` and `nonce` (anti-forgery values, worthless once used and useful
# when debugging a login), and personal data such as `email` (another policy, not a
# credential).

# What a name the operator lists may not contain: it is matched against one parameter's
# decoded name, so a separator or a space in it is a typo (`password=`, `a;b`), and a `%`
# an encoded name that would never match (`pass%77ord` is `password`).
_NOT_IN_A_NAME = frozenset("=&;#?% \t")


def secret_names(names: Iterable[str]) -> frozenset[str]:
    """The operator's names as `hide_secrets` takes them: lower-cased, `default` standing
    for DEFAULT_NAMES; `none` alone, or no name, hides nothing. ValueError, naming the
    entry, for a name that cannot be one (empty, a space, control characters, `= & ; #
    ? %`), or for `none` among other names."""
    listed = list(names)
    out: set[str] = set()
    for name in listed:
        lowered = name.lower()
        if lowered == "none":
            if len(listed) > 1:
                raise ValueError("'none' (hide nothing) goes alone, not with other names")
        elif lowered == "default":
            out.update(DEFAULT_NAMES)
        elif not name or not name.isprintable() or _NOT_IN_A_NAME.intersection(name):
            raise ValueError(f"{name!r} is not a query parameter name (give it "
                             f"percent-decoded; no spaces, control characters or = & ; # ? %)")
        else:
            out.add(lowered)
    return frozenset(out)


DEFAULT_SECRETS = secret_names(DEFAULT_NAMES)


def hide_secrets(target: str, secrets: frozenset[str] = DEFAULT_SECRETS) -> str:
    """`target` with the value of each secret query parameter shown as `***`."""
    start = target.find("?") + 1
    if not start or not secrets:
        return target
    end = target.find("#", start)
    if end < 0:
        end = len(target)
    query = target[start:end]
    if "=" not in query:
        return target
    # Look before building: one pass over the names, no list of pieces kept (most
    # queries hide nothing). The pass is _param's test, on the names alone.
    low = query.lower()
    for piece in (low.replace(";", "&") if ";" in low else low).split("&"):
        name, _, value = piece.partition("=")
        if value and (name in secrets
                      or (("%" in name or "[" in name) and _secret(name, secrets))):
            shown = _hidden(query, secrets)
            return target if shown is None else target[:start] + shown + target[end:]
    return target


def _hidden(query: str, secrets: frozenset[str]) -> str | None:
    """The query with secret values masked; None when nothing was secret."""
    pieces = query.split("&")
    changed = False
    for i, piece in enumerate(pieces):
        if ";" in piece:  # the HTML 4 separator some servers still take: hide through it
            parts = piece.split(";")
            hid = False
            for j, part in enumerate(parts):
                shown = _param(part, secrets)
                if shown is not None:
                    parts[j], hid = shown, True
            if hid:
                pieces[i], changed = ";".join(parts), True
        else:
            shown = _param(piece, secrets)
            if shown is not None:
                pieces[i], changed = shown, True
    return "&".join(pieces) if changed else None


def _param(param: str, secrets: frozenset[str]) -> str | None:
    """`name=***` for a secret parameter with a value; None to keep it as it is."""
    eq = param.find("=")
    if eq < 0 or eq == len(param) - 1:
        return None  # no value, or an empty one: nothing to hide
    name = param[:eq].lower()
    if name in secrets or (("%" in name or "[" in name) and _secret(name, secrets)):
        return param[:eq + 1] + MASK
    return None


def _secret(name: str, secrets: frozenset[str]) -> bool:
    """The slower checks of a lower-cased name: percent-encoded, or nested in brackets."""
    if "%" in name:
        name = unquote(name).lower()  # never raises: bad escapes stay, bad UTF-8 is replaced
        if name in secrets:
            return True
    if "[" in name:  # user[password], password[], a[b][token]
        return any(part in secrets for part in name.replace("]", "[").split("["))
    return False


_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/?#@]*@")


def shown_target(target: str) -> str:
    """An absolute-form target's user info (a password a client put in the URL, refused
    with a 400) as `***`."""
    if "@" in target and "://" in target:
        return _USERINFO.sub(r"\1***@", target, count=1)
    return target


def logged_target(target: str, secrets: frozenset[str] = DEFAULT_SECRETS) -> str:
    """A request target as any log line may quote it: no user info, no secret values."""
    return hide_secrets(shown_target(target), secrets)
