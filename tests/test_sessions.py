"""The session engine keeps working on the database alone while Redis is down."""

import pytest
from django.contrib.sessions.models import Session
from django.core.cache import caches
from django.test import override_settings

from chatproject.sessions import SessionStore

# Nothing listens on port 1, so every cache call fails at once.
UNREACHABLE_REDIS = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": "redis://127.0.0.1:1/0",
    }
}

pytestmark = pytest.mark.django_db


@pytest.fixture
def redis_down():
    with override_settings(CACHES=UNREACHABLE_REDIS, SESSION_ENGINE="chatproject.sessions"):
        caches.close_all()
        yield
    caches.close_all()


def test_save_and_load_without_cache(redis_down):
    store = SessionStore()
    store["answer"] = 42
    store.save()

    assert Session.objects.filter(session_key=store.session_key).exists()
    assert SessionStore(store.session_key).load() == {"answer": 42}
    assert SessionStore().exists(store.session_key)


def test_delete_without_cache(redis_down):
    store = SessionStore()
    store["answer"] = 42
    store.save()

    store.delete()

    assert not Session.objects.filter(session_key=store.session_key).exists()
    assert SessionStore(store.session_key).load() == {}


def test_login_page_without_cache(redis_down, client, alice):
    response = client.post("/accounts/login/", {"username": "alice", "password": "pw-alicealicealice"})

    assert response.status_code == 302
    assert client.get("/").status_code == 200
