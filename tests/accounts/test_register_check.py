"""POST /api/v1/register/check on a real server: the sign-up page's availability check before
key generation, answering exactly what a registration would, on the registration budget."""

from __future__ import annotations

from pathlib import Path

from securechat.client import SecureChatClient
from tests.conftest import MakeClient, SignUp, fast_config
from tests.livesrv import LiveServer

CHECK = "/api/v1/register/check"


async def test_a_free_name_is_available_in_its_normal_form(make_client: MakeClient) -> None:
    """A name nobody has answers 200 with the name as it would be registered."""
    response = await make_client().request("POST", CHECK, {"username": "ＡＬＩＣＥ"})
    assert response.status_code == 200
    assert response.json() == {"username": "alice", "available": True}


async def test_a_taken_name_answers_as_registration_does(
    signed_up: SignUp, make_client: MakeClient
) -> None:
    """A registered name answers the 409 username_taken a registration gets."""
    await signed_up("alice")
    response = await make_client().request("POST", CHECK, {"username": "Alice"})
    assert response.status_code == 409
    assert response.json()["error"] == "username_taken"


async def test_a_deleted_accounts_name_stays_taken(signed_up: SignUp) -> None:
    """A name held in quarantine after its account was deleted answers 409."""
    alice = await signed_up("alice")
    await alice.delete_account("correct horse battery")
    response = await alice.request("POST", CHECK, {"username": "alice"})
    assert (response.status_code, response.json()["error"]) == (409, "username_taken")


async def test_a_malformed_name_is_400(make_client: MakeClient) -> None:
    """A name the rules refuse answers 400 invalid for the username field."""
    response = await make_client().request("POST", CHECK, {"username": "<b>x"})
    assert response.status_code == 400
    assert (response.json()["error"], response.json()["field"]) == ("invalid", "username")


async def test_checks_spend_the_registration_budget(tmp_path: Path) -> None:
    """With room for two registrations per address, two checks leave none: the third request
    answers 429 whatever the name, so names cannot be tried faster than registered."""
    config = fast_config(tmp_path / "data", registrations_per_address=2)
    with LiveServer(config).start() as server:
        async with SecureChatClient(server.url) as client:
            for name in ("alice", "bob"):
                assert (await client.request("POST", CHECK, {"username": name})).status_code == 200
            refused = await client.request("POST", CHECK, {"username": "carol"})
            assert refused.status_code == 429
            assert refused.headers["Retry-After"]
