"""The venue's SMTP server: one message out, or a MailError saying why not.

`SMTP_URL` names the server and how to talk to it:

    smtp://host[:25]                 plain SMTP (a relay on the venue's network)
    smtp+starttls://user:pw@host[:587]  STARTTLS, then login
    smtps://user:pw@host[:465]       TLS from the first byte, then login

User and password are percent-decoded (`%40` for an `@` in a user name). Sending is one
connection per message: the box mails a few players a day, not a newsletter.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

TIMEOUT_S = 20.0
_PORTS = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}


class MailError(Exception):
    """Sending failed; `str(exc)` is one line for the booking's history (never the address)."""


@dataclass(frozen=True)
class Attachment:
    filename: str
    data: bytes
    maintype: str
    subtype: str
    cid: str | None = None  # set: shown inline by the HTML part (<img src="cid:...">)


@dataclass(frozen=True)
class Mail:
    to: str
    subject: str
    text: str
    html: str | None = None
    attachments: list[Attachment] = field(default_factory=list)


class Mailer:
    def __init__(self, url: str, sender: str, *, timeout_s: float = TIMEOUT_S) -> None:
        parts = urlsplit(url)
        if parts.scheme not in _PORTS or not parts.hostname:
            raise MailError(
                "EZREC_SMTP_URL must be smtp://, smtp+starttls:// or smtps:// with a host"
            )
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or _PORTS[parts.scheme]
        self.user = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.sender = sender
        self.timeout_s = timeout_s

    def __repr__(self) -> str:  # never the password
        return f"Mailer({self.scheme}://{self.host}:{self.port})"

    def message(self, mail: Mail) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = self.sender
        msg["To"] = mail.to
        msg["Subject"] = mail.subject
        msg.set_content(mail.text)
        if mail.html is not None:
            msg.add_alternative(mail.html, subtype="html")
            html_part = msg.get_payload()[-1]
            for att in (a for a in mail.attachments if a.cid):
                html_part.add_related(att.data, att.maintype, att.subtype, cid=f"<{att.cid}>",
                                      filename=att.filename)  # fmt: skip
        for att in (a for a in mail.attachments if not a.cid):
            msg.add_attachment(att.data, maintype=att.maintype, subtype=att.subtype,
                               filename=att.filename)  # fmt: skip
        return msg

    def _open(self) -> smtplib.SMTP:
        """A connection ready to send: TLS as the scheme says, logged in when a user is set."""
        if self.scheme == "smtps":
            context = ssl.create_default_context()
            server: smtplib.SMTP = smtplib.SMTP_SSL(
                self.host, self.port, timeout=self.timeout_s, context=context
            )
        else:
            server = smtplib.SMTP(self.host, self.port, timeout=self.timeout_s)
        try:
            if self.scheme == "smtp+starttls":
                server.starttls(context=ssl.create_default_context())
            if self.user is not None:
                server.login(self.user, self.password or "")
        except BaseException:
            server.close()
            raise
        return server

    def check(self) -> str:
        """For `ezrec doctor`: connect, log in, NOOP, quit (nothing is sent)."""
        try:
            with self._open() as server:
                server.noop()
        except (OSError, smtplib.SMTPException) as exc:
            raise MailError(f"mail via {self.host}:{self.port} failed: {_one_line(exc)}") from None
        login = f" as {self.user}" if self.user else ""
        return f"SMTP {self.host}:{self.port} answers{login}; mail from {self.sender}"

    def send(self, mail: Mail) -> None:
        msg = self.message(mail)
        try:
            with self._open() as server:
                refused = server.send_message(msg)
        except (OSError, smtplib.SMTPException) as exc:
            # The text goes into the booking's history, which is public: no address in it.
            raise MailError(f"mail via {self.host}:{self.port} failed: {_one_line(exc)}") from None
        if refused:
            codes = ", ".join(str(code) for code, _ in refused.values())
            raise MailError(f"{self.host} refused the recipient ({codes})")


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else (
            str(exc.smtp_error)
        )
        return f"{exc.smtp_code} {text}".replace("\n", " ")
    return (str(exc) or type(exc).__name__).replace("\n", " ")
