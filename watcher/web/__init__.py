"""The service's HTTP port: ``/healthz``, Prometheus ``/metrics`` and the status page.

``serve_web`` (watcher.web.app) is what the service loop starts; the rest is imported from
the modules themselves, so that loading the configuration does not import aiohttp's server.
"""
