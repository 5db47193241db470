"""What every sender (send, worker, run, the console's test send) shares: the key, the
transport, DKIM."""

from __future__ import annotations

from pathlib import Path

from mailer.config.settings import Environment, Settings
from mailer.core.errors import MissingSecret
from mailer.delivery.transport import SmtpTransport, parse_smtp_url
from mailer.mail.dkim import Sign


def refuse_preview_key(env: Environment) -> None:
    """The preview key is a public constant: a service or sender keyed with it would honour
    every preview and test-mail link, and links anyone can forge."""
    from mailer.core.errors import UserError
    from mailer.mail.links import PREVIEW_KEY

    if PREVIEW_KEY in (env.secret_key, *env.old_secret_keys):
        raise UserError("MAILER_SECRET_KEY (or an old key) is the public preview key: "
                        "choose another secret")


def secret_key(env: Environment) -> str:
    if not env.secret_key:
        raise MissingSecret("MAILER_SECRET_KEY is not set: sending needs it to sign the "
                            "unsubscribe and preference links (any long random string)")
    refuse_preview_key(env)
    return env.secret_key


def smtp_transport(env: Environment, settings: Settings) -> SmtpTransport:
    return SmtpTransport(parse_smtp_url(env.smtp_url), settings.delivery.concurrency)


def signer(settings: Settings, env: Environment, root: Path) -> Sign | None:
    """DKIM signing when mailer.yaml configures it (DESIGN §4.0)."""
    if settings.dkim is None:
        return None
    from mailer.mail.dkim import load_signer

    return load_signer(settings.dkim, env.dkim_key, root)
