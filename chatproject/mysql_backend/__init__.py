"""Django's MySQL backend with the connection checks a long-lived ASGI process needs."""
