"""The HTML pages. They carry no user data: the scripts fetch it and write it with textContent."""

from __future__ import annotations

from quart import Blueprint, redirect, render_template
from werkzeug.wrappers.response import Response as WerkzeugResponse

from securechat.accounts.sessions import current_session
from securechat.state import state

blueprint = Blueprint("pages", __name__)


@blueprint.get("/")
async def index() -> str:
    """What SecureChat is, with links to sign up and log in."""
    return await render_template("index.html", signed_in=await current_session() is not None)


@blueprint.get("/signup")
async def signup() -> str:
    return await render_template("signup.html")


@blueprint.get("/login")
async def login() -> str:
    return await render_template("login.html")


@blueprint.get("/recover")
async def recover() -> str:
    """A forgotten password: a new one set with the recovery key (static/js/pages/recover.js)."""
    return await render_template("recover.html")


@blueprint.get("/chat")
async def chat() -> str | WerkzeugResponse:
    """The signed-in home: conversations and the composer."""
    if await current_session() is None:
        return redirect("/login")
    # The page pings within the server's idle window (chat/socket.js), whatever it is set to,
    # and offers "Delete for everyone" only within the delete window.
    config = state().config
    return await render_template(
        "chat.html", ws_idle_timeout=config.ws_idle_timeout, delete_window=config.delete_window
    )


@blueprint.get("/settings")
async def settings() -> str | WerkzeugResponse:
    """My sessions, with "log out other sessions"."""
    if await current_session() is None:
        return redirect("/login")
    return await render_template("settings.html")
