"""The patient's pages: server-rendered HTML, one small stylesheet and one small script of ours.

Nothing is loaded from the internet.  Every page has a ``<title>``, a ``lang``, a main landmark
and labelled controls, and works with the keyboard alone (plain links, buttons and forms; the
script only tidies the code as it is typed).  Every value put in a page is HTML-escaped.

:func:`unavailable_page` is the one page for a link that cannot be used, whatever the reason
(unknown, not started, expired, exhausted, locked, revoked): it never says which.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Final

from .core import CODE_CHARS, Share
from .seen import SeenEntry

# Sent with every page, script, style and download of a share (see routes.share_headers).
SECURITY_HEADERS: Final = {
    "Referrer-Policy": "no-referrer",  # the link's token must never leave in a Referer
    "Cache-Control": "no-store",  # no browser or proxy keeps a copy of a patient's page
    "Pragma": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}

STYLE: Final = "\n".join(
    [
        "body { font-family: system-ui, sans-serif; margin: 0; color: #1b1b1b; background: #fafafa;"
        " line-height: 1.5; }",
        "main { max-width: 52rem; margin: 0 auto; padding: 1.5rem; }",
        "h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2rem; }",
        "label { display: block; font-weight: 600; margin-bottom: .25rem; }",
        "input[type=text] { font-size: 1.4rem; letter-spacing: .15em; padding: .4rem; width: 12ch;"
        " text-transform: uppercase; }",
        "button, a.button { font-size: 1rem; padding: .5rem 1rem; margin: .25rem .5rem .25rem 0;"
        " border: 2px solid #0b5394; background: #0b5394; color: #fff; border-radius: 4px;"
        " text-decoration: none; display: inline-block; cursor: pointer; }",
        "button.secondary { background: #fff; color: #0b5394; }",
        ":focus-visible { outline: 3px solid #e69138; outline-offset: 2px; }",
        ".error { color: #a61c00; font-weight: 600; }",
        "table { border-collapse: collapse; width: 100%; }",
        "th, td { text-align: left; padding: .35rem .5rem; border-bottom: 1px solid #ccc; }",
        ".ok { color: #274e13; } .bad { color: #a61c00; }",
        ".visually-hidden { position: absolute; width: 1px; height: 1px; overflow: hidden;"
        " clip: rect(0 0 0 0); }",
    ]
)

SCRIPT: Final = f"""
// Tidy the code as it is typed: upper case, a dash after four characters. Nothing else.
(function () {{
  var input = document.getElementById('code');
  if (!input) {{ return; }}
  input.addEventListener('input', function () {{
    var raw = input.value.toUpperCase().replace(/[^A-Z0-9]/g, '').slice(0, {CODE_CHARS});
    input.value = raw.length > 4 ? raw.slice(0, 4) + '-' + raw.slice(4) : raw;
  }});
  input.focus();
}})();
"""


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{html.escape(title)}</title>"
        '<link rel="stylesheet" href="/share-static/share.css"></head>'
        f'<body><main id="main">{body}</main>'
        '<script src="/share-static/share.js"></script></body></html>'
    )


def unavailable_page() -> str:
    """The page for any link that cannot be used: the same words whatever the reason."""
    return _page(
        "This link cannot be used",
        "<h1>This link cannot be used</h1>"
        "<p>This link to medical images cannot be used. If you need your images, please ask the "
        "hospital or clinic that gave you the link.</p>",
    )


def busy_page(retry_after_s: float) -> str:
    """Too many wrong codes from this network lately."""
    minutes = max(1, round(retry_after_s / 60))
    return _page(
        "Please wait",
        f"<h1>Please wait</h1><p>Too many wrong codes were entered from your network. "
        f"Please try again in about {minutes} minute(s).</p>",
    )


def code_page(action: str, error: str = "") -> str:
    """The form that asks for the code given with the link."""
    problem = f'<p class="error" role="alert" id="code-error">{html.escape(error)}</p>' if error else ""
    described = ' aria-describedby="code-error"' if error else ""
    return _page(
        "Enter your code",
        "<h1>Your medical images</h1>"
        "<p>Enter the code you were given with this link (on paper or in person).</p>"
        f'<form method="post" action="{html.escape(action)}">'
        f"{problem}"
        '<label for="code">Code</label>'
        f'<input type="text" id="code" name="code" autocomplete="off" autocapitalize="characters" '
        f'spellcheck="false" inputmode="text" maxlength="{CODE_CHARS + 1}" required{described}>'
        '<p><button type="submit">Show my images</button></p></form>',
    )


def study_page(
    share: Share,
    institution: str,
    *,
    base: str,
    viewer_links: Sequence[str],
    seen: Sequence[SeenEntry],
    expires: str,
) -> str:
    """The page after the code: the studies, the viewer, the download, and who has seen them."""
    esc = html.escape
    items = []
    for index, link in enumerate(viewer_links, 1):
        items.append(
            f"<li>Study {index} of {len(viewer_links)}: "
            f'<a class="button" href="{esc(link)}" rel="noreferrer">View study {index} in the viewer</a></li>'
        )
    studies = (
        f"<ul>{''.join(items)}</ul>" if items else "<p>The viewer is not available on this node yet.</p>"
    )
    download = (
        f'<p><a class="button" href="{esc(base)}/download" rel="noreferrer" download>'
        "Download the files (ZIP with DICOMDIR)</a></p>"
        if share.terms.download
        else "<p>This link lets you view the images; it does not allow downloading them.</p>"
    )
    label = f"<p>{esc(share.label)}</p>" if share.label else ""
    rows = []
    for entry in seen:
        proof = (
            '<span class="ok">verified</span>'
            if entry.verified
            else f'<span class="bad">not verified: {esc(entry.problem)}</span>'
        )
        rows.append(
            f"<tr><td>{esc(entry.date)}</td><td>{esc(entry.institution)}</td><td>{esc(entry.role)}</td>"
            f"<td>{esc(entry.action)}</td><td>{esc(entry.purpose_words)}</td><td>{proof}</td></tr>"
        )
    table = (
        '<table aria-describedby="seen-note"><caption class="visually-hidden">Every recorded access</caption>'
        '<thead><tr><th scope="col">Date</th><th scope="col">Institution</th><th scope="col">Role</th>'
        '<th scope="col">What</th><th scope="col">Purpose</th><th scope="col">Proof</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
        if rows
        else "<p>No access is recorded yet.</p>"
    )
    return _page(
        "Your medical images",
        f"<h1>Your medical images from {esc(institution)}</h1>{label}"
        f"<p>This link works until {esc(expires)}; it was opened {share.opens} of "
        f"{share.terms.max_opens} times allowed.</p>"
        f"<h2>Your studies</h2>{studies}{download}"
        '<h2 id="seen">Who has seen my images</h2>'
        '<p id="seen-note">Every access to these studies recorded on the hospitals\' shared ledger: '
        "which institution, in which role, why and when. Each line's proof of being on the ledger "
        "was checked.</p>"
        f"{table}"
        f'<form method="post" action="{esc(base)}/leave"><p>'
        '<button type="submit" class="secondary">Leave (forget this session)</button></p></form>',
    )
