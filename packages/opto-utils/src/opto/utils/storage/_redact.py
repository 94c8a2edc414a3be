"""Hide credentials in storage URLs before they reach messages, logs or a terminal.

A password can sit in a URL's userinfo (`postgresql://user:secret@host/db`) or in its
query string (`postgresql://host/db?password=secret`, as libpq accepts); both are shown
as `***`. Only the standard library is used, so this works on URLs that do not parse.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

__all__ = ["SECRET_MASK", "redact_url"]

#: What a hidden secret is shown as (the same mask SQLAlchemy uses for passwords).
SECRET_MASK = "***"

# scheme://user:password@host — user without ':', '/' or '@'; the password runs to the last
# '@' that is followed by a host (so an unescaped '@' in it is hidden too).
_USERINFO = re.compile(
    r"^(?P<head>[A-Za-z][\w+.\-]*://[^:/@?#]*:)(?P<password>.*)(?=@[^@/?#]*(?:[/?#]|$))"
)
# scheme://userinfo@ (with the password already masked).
_AUTHORITY_USER = re.compile(r"^[A-Za-z][\w+.\-]*://[^/?#]*@")
# Query keys whose values are secrets: password, passwd, pwd, sslpassword, api_key, token...
_SECRET_KEY = re.compile(r"pass|pwd|secret|token|key|auth|cred", re.IGNORECASE)


def redact_url(url: str) -> str:
    """`url` with the password of its userinfo and secret query values shown as `***`."""
    text = _USERINFO.sub(lambda m: m["head"] + (SECRET_MASK if m["password"] else ""), url, 1)
    start = _query_start(text)
    if start < 0:
        return text
    query, hash_, fragment = text[start + 1 :].partition("#")
    parts = []
    for part in query.split("&"):
        key, equals, value = part.partition("=")
        if equals and value and _SECRET_KEY.search(unquote_plus(key)):
            part = f"{key}={SECRET_MASK}"
        parts.append(part)
    return text[: start + 1] + "&".join(parts) + hash_ + fragment


def _query_start(url: str) -> int:
    """Index of the '?' that starts the query (after any userinfo), or -1."""
    userinfo = _AUTHORITY_USER.match(url)
    return url.find("?", userinfo.end() if userinfo else 0)
