"""Django settings for chatproject.

Everything that differs between machines comes from environment variables
read through the strict helpers in chatproject.env. With none of
DATABASE_URL, MESSAGE_SHARD_URLS and REDIS_URL set, the project runs on the
embedded default: SQLite files under var/ and the in-memory channel layer.
That default is the only place with development conveniences (DEBUG on, a
generated secret key); any other configuration must name its secrets.
"""

import re
import secrets
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

from chatproject.databases import build_channel_layer, build_databases, check_redis_url, redis_pool_options
from chatproject.env import env_bool, env_choice, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("CHAT_DATA_DIR", str(BASE_DIR / "var"))).resolve()

DATABASE_URL = env_str("DATABASE_URL")
MESSAGE_SHARD_URLS = env_list("MESSAGE_SHARD_URLS")
REDIS_URL = env_str("REDIS_URL")
EMBEDDED = not (DATABASE_URL or MESSAGE_SHARD_URLS or REDIS_URL)

DEBUG = env_bool("DJANGO_DEBUG", default=EMBEDDED)


def _secret_key() -> str:
    key = env_str("DJANGO_SECRET_KEY")
    if key:
        if len(key) < 32:
            raise ImproperlyConfigured("DJANGO_SECRET_KEY must be at least 32 characters long.")
        return key
    if not EMBEDDED:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY (or DJANGO_SECRET_KEY_FILE) is required outside the embedded default."
        )
    # The embedded default keeps a generated key under var/ so sessions
    # survive restarts; it is never used when any server URL is set.
    path = DATA_DIR / "dev-secret-key"
    if not path.exists():
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50), encoding="utf-8")
        path.chmod(0o600)
    return path.read_text(encoding="utf-8").strip()


SECRET_KEY = _secret_key()

ALLOWED_HOSTS = env_list(
    "DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if EMBEDDED else []
)
if not ALLOWED_HOSTS:
    raise ImproperlyConfigured("DJANGO_ALLOWED_HOSTS is required outside the embedded default.")
for _host in ALLOWED_HOSTS:
    if "://" in _host or "/" in _host:
        raise ImproperlyConfigured(
            f"DJANGO_ALLOWED_HOSTS has {_host!r}; give host names only, such as chat.example.com."
        )
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")
for _origin in CSRF_TRUSTED_ORIGINS:
    if not _origin.startswith(("http://", "https://")):
        raise ImproperlyConfigured(
            f"DJANGO_CSRF_TRUSTED_ORIGINS has {_origin!r}; give origins with a scheme, such as https://chat.example.com."
        )
CORS_ALLOWED_ORIGINS = env_list("CORS_ALLOWED_ORIGINS")

SECURE_COOKIES = env_bool("DJANGO_SECURE_COOKIES", default=not EMBEDDED)
SESSION_COOKIE_SECURE = SECURE_COOKIES
CSRF_COOKIE_SECURE = SECURE_COOKIES
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("DJANGO_BEHIND_TLS_PROXY", False) else None
SESSION_COOKIE_AGE = env_int("DJANGO_SESSION_COOKIE_AGE", 14 * 24 * 3600, minimum=60)
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "channels",
    "accounts",
    "rooms",
    "messaging",
    "presence",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "chatproject.urls"
ASGI_APPLICATION = "chatproject.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Databases: "default" contains users, rooms and memberships. The message
# shards are "shard_0", "shard_1", ... in the order of MESSAGE_SHARD_URLS.
DATABASES, MESSAGE_SHARDS = build_databases(
    data_dir=DATA_DIR,
    database_url=DATABASE_URL,
    shard_urls=MESSAGE_SHARD_URLS,
    conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0),
)
DATABASE_ROUTERS = ["chatproject.routers.MessageShardRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Number of virtual buckets that rooms hash into; buckets, not rooms, are
# assigned to shards. Changing it after messages exist would move rooms
# between buckets, so it is fixed at deployment time.
MESSAGE_BUCKETS = env_int("MESSAGE_BUCKETS", 1024, minimum=1, maximum=65536)

# Worker id for the 64-bit message ids: each server process needs its own.
# Unset, a process leases a free one from the main database at start.
CHAT_WORKER_ID = env_int("CHAT_WORKER_ID", None, minimum=0, maximum=1023)

# Threads per process for the WebSocket consumers' database work; each keeps
# its own connection to every database, so this also caps connections.
CHAT_DB_THREADS = env_int("CHAT_DB_THREADS", 4, minimum=1, maximum=64)

# Redis carries the channel layer and Django's cache, which holds the
# sessions and whatever other modules cache. The pool size and socket
# timeout are explicit because redis-py's defaults (a pool of 100, a 5 s
# socket timeout) raise "Too many connections" under load and can time out
# the core layer's 5 s blocking reads (docs/deployment.md).
REDIS_MAX_CONNECTIONS = env_int("REDIS_MAX_CONNECTIONS", 500, minimum=10, maximum=100_000)
REDIS_SOCKET_TIMEOUT = env_int("REDIS_SOCKET_TIMEOUT", 15, minimum=6, maximum=300)

if REDIS_URL:
    check_redis_url(REDIS_URL)
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "chat",
            "OPTIONS": {
                **redis_pool_options(REDIS_MAX_CONNECTIONS, REDIS_SOCKET_TIMEOUT),
                "pool_class": "chatproject.redis_pool.SharedConnectionPool",
            },
        }
    }
    # Sessions are read from Redis and written through to the main
    # database, so a Redis restart logs no one out. While Redis is down,
    # chatproject.sessions reads and writes the database alone.
    SESSION_ENGINE = "chatproject.sessions"
    CHANNEL_LAYERS = {
        "default": build_channel_layer(
            env_choice(
                "CHANNEL_LAYER_BACKEND",
                "channels_redis.pubsub.RedisPubSubChannelLayer",
                (
                    "channels_redis.pubsub.RedisPubSubChannelLayer",
                    "channels_redis.core.RedisChannelLayer",
                ),
            ),
            REDIS_URL,
            REDIS_MAX_CONNECTIONS,
            REDIS_SOCKET_TIMEOUT,
        )
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    # NOTE: the in-memory layer reaches only sockets of this one process and
    # scans every channel on each receive; it is for the embedded default and tests.
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            # A process's room hub (messaging.fanout) receives every room
            # event of the process on one channel, so it may queue far more
            # than a socket's channel.
            # (Channels' in-memory layer takes the compiled form, a list of
            # (regular expression, capacity) pairs.)
            "CONFIG": {"channel_capacity": [(re.compile(r"^chathub"), 10000)]},
        }
    }

AUTH_USER_MODEL = "accounts.User"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "rooms:mine"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en"
LANGUAGES = [("en", _("English"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# WhiteNoise serves straight from the finders, so no collectstatic step is
# needed to run. Only `collectstatic` needs STATIC_ROOT (a production image
# may run it to pre-compress files).
STATIC_ROOT = env_str("DJANGO_STATIC_ROOT")
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework_simplejwt.authentication.JWTAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
}

LOG_LEVEL = env_choice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR"))
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        name: {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False}
        for name in ("accounts", "rooms", "messaging", "presence", "chatproject")
    },
}
