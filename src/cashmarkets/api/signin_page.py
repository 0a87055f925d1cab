"""The page an emailed sign-in link opens: it signs nobody in by itself.

Opening the link (`GET /api/v1/signin/post?token=…`) only shows whose account it is for and a
"Sign in" button; the button posts the token as JSON to `POST /api/v1/signin/link`, which uses the
link and sets the session cookies. So a link that a mail scanner prefetches stays usable, and a
page of another site that makes the browser open someone's link (login CSRF) signs nobody in: the
POST is same-origin JSON, checked by api/csrf.py, and the page cannot be framed for a click.

The page is self-contained (no external resources), its inline script and style are allowed by
their hashes only, and everything it shows is HTML-escaped.
"""

from __future__ import annotations

import base64
import hashlib
import html
from typing import Final

_STYLE: Final = (
    "body{font-family:system-ui,sans-serif;margin:0;display:flex;min-height:100vh;"
    "align-items:center;justify-content:center;background:#f5f5f7;color:#111}"
    "main{background:#fff;padding:2rem 2.5rem;border-radius:12px;max-width:26rem;"
    "box-shadow:0 1px 4px rgba(0,0,0,.12)}"
    "h1{font-size:1.3rem;margin-top:0}"
    "button{font-size:1rem;padding:.6rem 1.4rem;border:0;border-radius:8px;background:#111;"
    "color:#fff;cursor:pointer}"
    "button:disabled{opacity:.5;cursor:default}"
    ".note{color:#666;font-size:.85rem}"
)

# Posts the token (from the escaped data attribute) as JSON to ./link, same-origin, then goes to
# the site; a refusal shows the problem's detail as text (never as HTML).
_SCRIPT: Final = """
(function () {
  var main = document.getElementById("signin");
  var button = document.getElementById("go");
  var status = document.getElementById("status");
  button.addEventListener("click", function () {
    button.disabled = true;
    status.textContent = "Signing in\\u2026";
    fetch("link", {
      method: "POST",
      credentials: "same-origin",
      cache: "no-store",
      headers: {"content-type": "application/json"},
      body: JSON.stringify({token: main.dataset.token})
    }).then(function (response) {
      if (response.ok) {
        window.location.replace(main.dataset.next);
        return;
      }
      return response.json().then(function (problem) {
        status.textContent = (problem && problem.detail) || "This sign-in link cannot be used.";
      }, function () {
        status.textContent = "This sign-in link cannot be used.";
      });
    }, function () {
      status.textContent = "The server could not be reached; try again.";
      button.disabled = false;
    });
  });
})();
"""


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


CONTENT_SECURITY_POLICY: Final = (
    f"default-src 'none'; script-src {_csp_hash(_SCRIPT)}; style-src {_csp_hash(_STYLE)}; "
    "connect-src 'self'; img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
}


def confirmation_page(*, email: str, token: str, next_url: str) -> str:
    """The HTML of the page; every value is escaped for its place (text or a quoted attribute)."""

    def attr(value: str) -> str:
        return html.escape(value, quote=True)

    return (
        "<!doctype html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="referrer" content="no-referrer">\n'
        "<title>Sign in to Cash Markets</title>\n"
        f"<style>{_STYLE}</style>\n</head>\n<body>\n"
        f'<main id="signin" data-token="{attr(token)}" data-next="{attr(next_url)}">\n'
        "<h1>Sign in to Cash Markets</h1>\n"
        f"<p>Sign in as <strong>{html.escape(email)}</strong>?</p>\n"
        '<button id="go" type="button">Sign in</button>\n'
        '<p id="status" role="status"></p>\n'
        '<p class="note">If you did not ask for this link, close this page: nothing happens '
        "until you press the button.</p>\n"
        "</main>\n"
        f"<script>{_SCRIPT}</script>\n</body>\n</html>\n"
    )


__all__ = ["CONTENT_SECURITY_POLICY", "HEADERS", "confirmation_page"]
