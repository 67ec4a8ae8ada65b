"""A real JACK server (dummy driver: no sound card) for MIDI integration tests, under a name of its own.

    with JackServer() as jack:                  # jackd -n <unique> -r -d dummy -r 48000 -p 1024, ready on return
        env = jack.env()                        # JACK_DEFAULT_SERVER + MIDO_BACKEND for every child process

Stopped by process id on exit (SIGTERM, then SIGKILL). The harness lives in vprod.jack_peer, so
`vprod bench control --surfaces midi` starts JACK the same way.
"""

from vprod.jack_peer import JACK_BACKEND, JackServer, server_running  # noqa: F401
