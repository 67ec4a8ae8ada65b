"""Real OBS Studio for integration tests: its own Xvfb display, a throwaway HOME, obs-websocket on a free port.

    with ObsStudio() as obs:            # or ObsStudio(password="secret"), ObsStudio(port=...)
        cl = obs.client()               # an obsws_python.ReqClient, disconnected on exit
        cl.create_scene("test")
        obs.restart(crash=True)         # SIGKILL OBS, start it again on the same port

The harness lives in vprod.obs_peer, so `vprod bench control --surfaces obs` starts OBS the same way.
"""

from vprod.obs_peer import ObsStudio, free_port  # noqa: F401
