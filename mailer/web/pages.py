"""The pages `mailer serve` shows a recipient: small, plain, readable on a phone.

Rendered with Jinja's autoescaping (these are our templates, not the marketer's),
no scripts, no cookies, no third-party resources.
"""

from __future__ import annotations

from typing import Any

import jinja2

_LAYOUT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{{ title }} · {{ store }}</title>
<style>
body{font-family:Georgia,'Times New Roman',serif;background:#f6f3ee;color:#222;margin:0}
main{max-width:34rem;margin:3rem auto;background:#fff;padding:2rem 2.2rem;border-radius:8px;
box-shadow:0 1px 4px rgba(0,0,0,.08);overflow-wrap:anywhere}
@media (max-width:30rem){main{margin:0;padding:1.2rem 1rem;border-radius:0}}
h1{font-size:1.5rem;margin-top:0}
button,.button{font:inherit;background:#24553d;color:#fff;border:0;border-radius:4px;
padding:.6rem 1.2rem;cursor:pointer;text-decoration:none;display:inline-block}
button.quiet{background:#fff;color:#24553d;border:1px solid #24553d}
label{display:block;margin:.5rem 0}
textarea{width:100%;box-sizing:border-box;min-height:6rem;font:inherit}
.note{color:#666;font-size:.9rem}
.scores{display:flex;gap:.5rem;font-size:1.4rem}
.score{padding:.3rem .8rem;border-radius:4px;border:1px solid #ccc}
.score.chosen{background:#24553d;color:#fff}
fieldset{border:0;margin:0 0 1.2rem;padding:0;min-width:0}
legend{font-weight:bold;margin-bottom:.4rem;padding:0}
.scale{display:flex;flex-wrap:wrap;gap:.4rem}
.scale label,.options label{margin:0;border:1px solid #ccc;border-radius:4px;
padding:.35rem .6rem;cursor:pointer}
.scale label{min-width:1.6rem;text-align:center}
.ends{display:flex;justify-content:space-between;color:#666;font-size:.85rem;gap:1rem}
.options{display:flex;flex-wrap:wrap;gap:.4rem}
.problem{color:#8a1c1c;border-left:3px solid #8a1c1c;padding-left:.6rem}
</style></head>
<body><main>{% block body %}{% endblock %}
<p class="note">{{ store }}</p></main></body></html>
"""

PAGES = {
    "layout.html": _LAYOUT,
    "unsubscribe.html": """{% extends "layout.html" %}{% block body %}
<h1>Unsubscribe?</h1>
<p>Stop all marketing mail from {{ store }} to <strong>{{ email }}</strong>.</p>
<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">
<button type="submit" id="unsubscribe">Unsubscribe</button></form>
<p class="note">Rather hear from us less often, or only about some things?
<a href="{{ preferences }}">Choose here</a>.</p>
{% endblock %}""",
    "keep_subscribed.html": """{% extends "layout.html" %}{% block body %}
<h1>Keep hearing from us?</h1>
<p>Keep {{ store }}'s mail coming to <strong>{{ email }}</strong>.</p>
<form method="post"><button type="submit" id="keep-subscribed">Keep me subscribed</button></form>
<p class="note">Rather hear from us less often? <a href="{{ preferences }}">Choose here</a>.</p>
{% endblock %}""",
    "kept_subscribed.html": """{% extends "layout.html" %}{% block body %}
<h1>Thank you</h1>
<p><strong>{{ email }}</strong> stays on {{ store }}'s list.</p>
{% endblock %}""",
    "confirm.html": """{% extends "layout.html" %}{% block body %}
<h1>Confirm your subscription</h1>
<p>Get {{ store }}'s mail at <strong>{{ email }}</strong>.</p>
<form method="post"><button type="submit" id="confirm">Yes, subscribe me</button></form>
<p class="note">Did not ask for it? Close this page: without your confirmation we send
you nothing more.</p>
{% endblock %}""",
    "confirmed.html": """{% extends "layout.html" %}{% block body %}
<h1 id="confirmed">You are subscribed</h1>
<p>Thank you: <strong>{{ email }}</strong> now gets {{ store }}'s mail.</p>
<p class="note">Every mail has a link to unsubscribe, whenever you like.</p>
{% endblock %}""",
    "confirm_expired.html": """{% extends "layout.html" %}{% block body %}
<h1>This link has expired</h1>
<p>A confirmation link works for {{ days }} days, and nothing was changed. Sign up
again at the shop and you get a new one.</p>
{% endblock %}""",
    "confirm_closed.html": """{% extends "layout.html" %}{% block body %}
<h1>Nothing to confirm</h1>
<p><strong>{{ email }}</strong> is not waiting for a confirmation any more (the
request was withdrawn, or the address unsubscribed since), so nothing was changed.</p>
{% endblock %}""",
    "unsubscribed.html": """{% extends "layout.html" %}{% block body %}
<h1>You are unsubscribed</h1>
<p><strong>{{ email }}</strong> gets no more marketing mail from {{ store }}.</p>
<p class="note">Orders and receipts still reach you.</p>
{% endblock %}""",
    "preferences.html": """{% extends "layout.html" %}{% block body %}
<h1>Your mail from {{ store }}</h1>
<p>For <strong>{{ email }}</strong>{% if opted_out %} (unsubscribed){% endif %}.</p>
<form method="post">
<label><input type="checkbox" name="pause" value="30d" {% if paused %}checked{% endif %}>
Pause all mails for 30 days{% if paused %} (paused until {{ paused }}){% endif %}</label>
<label>At most <select name="weekly_cap" id="weekly_cap">
<option value="">as many as the store sends</option>
{% for n in (1, 2, 3) %}<option value="{{ n }}" {% if cap == n %}selected{% endif %}>
{{ n }}</option>{% endfor %}</select> mails a week</label>
<fieldset><legend>What would you like to hear about?</legend>
{% for topic in all_topics %}<label><input type="checkbox" name="topic" value="{{ topic }}"
{% if topics is none or topic in topics %}checked{% endif %}> {{ topic }}</label>
{% endfor %}</fieldset>
<p><button type="submit" id="save">Save</button></p></form>
<form method="post" action="{{ unsubscribe }}">
<input type="hidden" name="List-Unsubscribe" value="One-Click">
<button class="quiet" type="submit" id="unsubscribe-all">Unsubscribe from everything</button>
</form>{% if saved %}<p id="saved">Saved.</p>{% endif %}
{% endblock %}""",
    "rated.html": """{% extends "layout.html" %}{% block body %}
<h1>Thank you!</h1>
<p>You gave us <strong>{{ score }} of 5</strong>.</p>
<div class="scores">{% for n in range(1, 6) %}
<span class="score{% if n == score %} chosen{% endif %}">{{ n }}</span>{% endfor %}</div>
{% if commented %}<p id="commented">Thank you for your words: we read every one.</p>
{% else %}<form method="post"><label for="comment">Anything you want to tell us? (optional)</label>
<textarea id="comment" name="comment" maxlength="2000"></textarea>
<p><button type="submit" id="send">Send</button></p></form>{% endif %}
{% endblock %}""",
    "rate.html": """{% extends "layout.html" %}{% block body %}
<h1>Your rating</h1>
<p>You chose <strong>{{ score }} of 5</strong>.</p>
<div class="scores">{% for n in range(1, 6) %}
<span class="score{% if n == score %} chosen{% endif %}">{{ n }}</span>{% endfor %}</div>
<form method="post"><label for="comment">Anything you want to tell us? (optional)</label>
<textarea id="comment" name="comment" maxlength="2000"></textarea>
<p><button type="submit" id="send">Send</button></p></form>
{% endblock %}""",
    "survey.html": """{% extends "layout.html" %}{% block body %}
<h1>{{ title }}</h1>
{% if problem %}<p class="problem" id="problem">{{ problem }}</p>{% endif %}
<form method="post" id="survey">
{% for q in questions %}<fieldset id="q-{{ q.id }}"><legend>{{ q.ask }}</legend>
{% if q.kind in scales %}{% set scale = scales[q.kind] %}<div class="scale">
{% for n in scale %}<label for="{{ q.id }}-{{ n }}"><input type="radio" name="{{ q.id }}"
id="{{ q.id }}-{{ n }}" value="{{ n }}"{% if chosen.get(q.id) == n|string %} checked{% endif %}>
{{ n }}</label>{% endfor %}</div>
<div class="ends"><span>{{ "not at all likely" if q.kind == "nps" else "not at all" }}</span>
<span>{{ "very likely" if q.kind == "nps" else "very" }}</span></div>
{% elif q.kind == "choice" %}<div class="options">
{% for option in q.options %}<label for="{{ q.id }}-{{ loop.index }}"><input type="radio"
name="{{ q.id }}" id="{{ q.id }}-{{ loop.index }}" value="{{ option }}"
{% if chosen.get(q.id) == option %} checked{% endif %}> {{ option }}</label>{% endfor %}</div>
{% else %}<textarea id="{{ q.id }}" name="{{ q.id }}" maxlength="{{ limit }}"
aria-label="{{ q.ask }}">{{ chosen.get(q.id, "") }}</textarea>
<p class="note">Optional; up to {{ "{:,}".format(limit) }} characters.</p>{% endif %}
</fieldset>{% endfor %}
<p><button type="submit" id="send">Send my answers</button></p>
<p class="note">Answer what you like: every question is optional. You can come back
to this page from the mail and change your answers.</p>
</form>
{% endblock %}""",
    "answered.html": """{% extends "layout.html" %}{% block body %}
<h1 id="thanks">Thank you!</h1>
<p>We have your {{ answered }} answer{{ "" if answered == 1 else "s" -}}
{% if answered < asked %} (of {{ asked }} questions){% endif %}. We read every one.</p>
<p class="note">Changed your mind? Open the link in the mail again and send the page once
more: your new answers replace the old ones.</p>
{% endblock %}""",
    "bad_form.html": """{% extends "layout.html" %}{% block body %}
<h1>This form could not be read</h1>
<p>Nothing was changed. Open the link from the mail again and send the form from there.</p>
<p class="note">{{ problem }}</p>
{% endblock %}""",
    "unavailable.html": """{% extends "layout.html" %}{% block body %}
<h1>Please try again in a moment</h1>
<p>We could not reach our records just now, so nothing was changed yet.
Try again in a minute: your link keeps working.</p>
{% endblock %}""",
    "timeout.html": """{% extends "layout.html" %}{% block body %}
<h1>That took too long</h1>
<p>Your request arrived too slowly and was not handled. Please try again.</p>
{% endblock %}""",
    "error.html": """{% extends "layout.html" %}{% block body %}
<h1>Something went wrong on our side</h1>
<p>Nothing was changed. Please try again later, or reply to the mail and we will help.</p>
{% endblock %}""",
    "view_failed.html": """{% extends "layout.html" %}{% block body %}
<h1>This mail cannot be shown here</h1>
<p>We could not put this mail together again just now. The copy in your inbox is
still the one to read; its links keep working.</p>
{% endblock %}""",
    "busy.html": """{% extends "layout.html" %}{% block body %}
<h1>Please try again in a moment</h1>
<p>We are showing many mails just now. Open the link again in a minute: it keeps
working.</p>
{% endblock %}""",
    "invalid.html": """{% extends "layout.html" %}{% block body %}
<h1>This link does not work</h1>
<p>It may have been cut off by your mail program. Open the link from the mail again,
or reply to the mail and we will help.</p>
{% endblock %}""",
}

_ENV = jinja2.Environment(loader=jinja2.DictLoader(PAGES), autoescape=True,
                          undefined=jinja2.StrictUndefined)


def page(name: str, **values: Any) -> str:
    """A page, its values escaped."""
    return _ENV.get_template(name).render(values)
