"""Open and click tracking in a rendered mail (DESIGN §6). Pure: keys are passed in.

Every `http(s)` link of the HTML part becomes a signed click link whose token
carries the target, so the redirect can only ever lead where the mail pointed
(no open redirect); the store's own signed links (unsubscribe, preferences,
browser, ratings) and `mailto:` stay as they are. An open pixel goes before
`</body>`. The text part is left alone: a plain-text reader sees real URLs.
"""

from __future__ import annotations

import html
import re

from mailer.mail.links import signed_url

_HREF = re.compile(r'(<a\b[^>]*?\bhref=")(https?://[^"]+)(")', re.IGNORECASE)


def tracked(body: str, *, base_url: str, customer: str, campaign: str, message: str,
            key: str, clicks: bool = True, opens: bool = True) -> str:
    """BODY (an HTML part) with its links turned into click links and an open pixel."""
    own = base_url.rstrip("/") + "/"

    def wrap(match: re.Match[str]) -> str:
        target = match.group(2)
        if "&" in target:  # html.unescape costs more than the test
            target = html.unescape(target)
        if target.startswith(own):
            return match.group(0)
        url = signed_url(base_url, "click", customer, campaign, message, key, target)
        return f"{match.group(1)}{url}{match.group(3)}"

    if clicks:
        body = _HREF.sub(wrap, body)
    if opens:
        pixel = signed_url(base_url, "open", customer, campaign, message, key)
        tag = (f'<img src="{pixel}" width="1" height="1" alt="" '
               'style="display:block;border:0;width:1px;height:1px">')
        at = body.lower().rfind("</body>")
        body = body + tag if at < 0 else body[:at] + tag + body[at:]
    return body
