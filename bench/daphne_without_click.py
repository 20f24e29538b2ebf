"""Run daphne as a production install would: without the click package.

click comes into the benchmark's environment with uvicorn (the bench
extra); the project's own dependencies do not install it. When click is
importable, autobahn colours the arguments of a debug log line on every
frame it sends, even with debug logging off, which cost about a tenth of
daphne's CPU in a burst. Making `import click` fail here leaves daphne as
it runs in production. Arguments are daphne's.
"""

import sys

sys.modules["click"] = None  # `import click` now raises ImportError

from daphne.cli import CommandLineInterface  # noqa: E402

if __name__ == "__main__":
    CommandLineInterface.entrypoint()
