"""The web console: server-rendered pages over the API's own services, served by the same process at ``/``.

``api.console.app.install`` adds it to the API's app (kept out of this file: ``api.state`` imports the sessions).
"""
