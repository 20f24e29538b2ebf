import pytest

from tests.conftest import open_socket

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


async def test_send_and_receive(alice, bob, general):
    a, hello_a = await open_socket(alice)
    b, hello_b = await open_socket(bob)
    assert hello_a["type"] == "hello"
    assert [room["name"] for room in hello_a["rooms"]] == ["general"]
    await a.send_json_to({"type": "message.send", "room": general.pk, "body": "hi 👋🏽", "client_id": "c1"})
    ack = await a.receive_json_from(timeout=5)
    new_a = await a.receive_json_from(timeout=5)
    new_b = await b.receive_json_from(timeout=5)
    assert ack["type"] == "message.ack"
    assert new_b["type"] == "message.new"
    assert new_b["message"] == ack["message"] == new_a["message"]
    assert ack["message"]["seq"] == 1
    await a.disconnect()
    await b.disconnect()
