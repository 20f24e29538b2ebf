"""Database connections in a long-lived ASGI process.

Every database keeps its connections for CONN_MAX_AGE, which pays off in
the WebSocket consumers' database pool: a few long-lived threads that never
send request_finished. HTTP requests are the opposite case.
"""

from django.db import connections


def close_request_connections(sender, **kwargs):
    """Close this thread's connections when an HTTP request ends.

    Under ASGI, Django runs each request's synchronous code in a thread of
    its own (asgiref's ThreadSensitiveContext), so a connection opened
    there is never reused: keeping it for CONN_MAX_AGE only leaves it open
    until the garbage collector finds it.
    """
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close()
